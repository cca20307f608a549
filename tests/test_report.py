"""``daq-label report``: the page is written from a real OUTPUT (the label job on two clips and a
file that is not a video) and checked as rendered by headless Chromium (Debian's ``chromium``,
driven by Playwright with that executable): no console or page errors, no request leaves the
file, the sections, every image decoded, the failed video's reason, the least confident videos
first, the synthetic-model notice. A full-page screenshot is kept (``DAQ_TEST_ARTIFACTS``).

Without Chromium or Playwright the browser tests skip locally and fail in CI (``CI`` set): .ci/run
installs them."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

from daq_label import open_output
from daq_label.report import ReportSettings, collect_report, is_shipped_model
from daq_label.report_html import SECTIONS, render_report
from jobs.cli import main as cli_main
from tests.conftest_outputs import labelled_output  # noqa: F401 - fixture

CHROMIUM = os.environ.get("DAQ_CHROMIUM", "/usr/bin/chromium")
HOSTILE = 'evil <img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>&amp;.mp4'


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the browser test (.ci/run installs chromium and playwright)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def _open(browser: Any, path: Path) -> tuple[Any, list[str], list[str]]:
    """A page showing ``path``; the console errors/warnings and every URL requested."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri(), wait_until="load")
    return page, problems, requests


def _artifact(source: Path) -> None:
    target = os.environ.get("DAQ_TEST_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, Path(target) / source.name)


def test_report_renders_in_chromium(labelled_output: Path, tmp_path: Path, browser: Any) -> None:  # noqa: F811
    out = open_output(str(labelled_output))
    videos = out.videos().to_pylist()
    summary = out.track_summary().to_pylist()
    report = tmp_path / "report.html"
    assert cli_main(["report", str(labelled_output), "--out", str(report)]) == 0
    text = report.read_text()
    # self-contained: every src/href is a data URI or an in-page anchor
    assert not [u for u in re.findall(r'(?:src|href)="([^"]*)"', text) if not u.startswith(("data:", "#"))]

    page, problems, requests = _open(browser, report)
    assert problems == []
    assert requests and all(u == report.as_uri() or u.startswith("data:") for u in requests), requests
    assert page.locator("h1").inner_text() == "daq-label report"
    assert page.locator("h2").all_inner_texts() == [title for _, title in SECTIONS]

    # thumbnails: every image decoded, 3 per labelled video (12 frames each)
    labelled = [v for v in videos if v["status"] != "failed"]
    images = page.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) == 3 * len(labelled) == 6
    assert all(done and w == 240 and h == round(320 * 240 / 568) for done, w, h in images), images

    # histograms: the track-score bars count every track
    counts = page.evaluate("""[...document.querySelectorAll('svg.chart')].map(
        s => [s.getAttribute('aria-label'), [...s.querySelectorAll('rect.bar')].reduce(
            (n, r) => n + Number(r.dataset.count), 0)])""")
    assert dict(counts) == {"Track scores": len(summary), "Track lengths": len(summary),
                            "Per-video mean score": len(labelled)}

    # counts by status
    shown = {s: int(page.locator(f'td[data-status="{s}"]').inner_text()) for s in ("ok", "partial", "failed")}
    assert shown == {s: Counter(v["status"] for v in videos)[s] for s in shown} == {"ok": 2, "partial": 0, "failed": 1}

    # the failed video comes first under Videos, with its reason exactly as recorded
    failed = next(v for v in videos if v["status"] == "failed")
    first = page.locator("tr.video-row").first
    assert first.get_attribute("data-video-id") == failed["video_id"]
    assert first.locator(".error-type").inner_text() == failed["error_type"] == "not_a_video"
    assert first.locator(".error-message").inner_text() == failed["error_message"]
    assert "not_a_video.mp4" in first.inner_text()

    # least confident first: lowest mean score first, as the videos table has them
    order = [r.get_attribute("data-video-id") for r in page.locator("tr.queue-row").all()]
    expected = [v["video_id"] for v in sorted(labelled, key=lambda v: (v["mean_score"], v["video_id"]))]
    assert order == expected
    scores = [float(r.get_attribute("data-mean-score")) for r in page.locator("tr.queue-row").all()]
    assert scores == sorted(scores)

    notice = page.locator("#synthetic-model-notice")
    assert notice.is_visible() and "synthetic shapes only" in notice.inner_text()

    shot = tmp_path / "report_screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    from PIL import Image

    height = page.evaluate("document.documentElement.scrollHeight")
    assert height > 900 and Image.open(shot).size == (1280, height)  # the whole page
    _artifact(shot)
    page.close()


def test_report_escapes_user_text(labelled_output: Path, tmp_path: Path, browser: Any) -> None:  # noqa: F811
    data = collect_report(open_output(str(labelled_output)), ReportSettings(thumbnails=0))
    videos = [dict(v, source_url=f"file:///corpus/{HOSTILE}", error_message=HOSTILE)
              if v["status"] == "failed" else v for v in data.videos]
    page_html = render_report(dataclasses.replace(data, videos=videos))
    assert "<script" not in page_html and "<img src=x" not in page_html
    path = tmp_path / "hostile.html"
    path.write_text(page_html)
    page, problems, _ = _open(browser, path)
    assert problems == []
    assert page.title().startswith("daq-label report") and "pwned" not in page.title()
    assert page.evaluate("document.images.length") == 0  # no thumbnails asked for, none injected
    assert page.locator("tr.video-row .error-message").first.inner_text() == HOSTILE
    assert page.locator("tr.video-row .url").first.inner_text() == f"file:///corpus/{HOSTILE}"
    page.close()


def test_notice_only_for_the_bundled_model(labelled_output: Path) -> None:  # noqa: F811
    data = collect_report(open_output(str(labelled_output)), ReportSettings(thumbnails=0))
    assert data.provenance is not None and data.provenance["model_origin"] == "shipped"
    assert data.shipped_model and 'id="synthetic-model-notice"' in render_report(data)
    other = dict(data.provenance, model_origin="explicit", checkpoint_sha256="0" * 64)
    assert not is_shipped_model(other) and not is_shipped_model(None)
    # the bundled checkpoint passed with --checkpoint is still the bundled model
    assert is_shipped_model(dict(other, checkpoint_sha256=data.provenance["checkpoint_sha256"]))
    page = render_report(dataclasses.replace(data, provenance=other, shipped_model=False))
    assert "synthetic-model-notice" not in page and "given with --checkpoint" not in page
    assert "explicit" in page


def test_report_of_a_non_output_exits_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert cli_main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "is not a daq-label output" in caplog.text
    assert not (tmp_path / "r.html").exists()


def test_report_to_an_fsspec_url_and_a_new_directory(labelled_output: Path, tmp_path: Path) -> None:  # noqa: F811
    import fsspec

    assert cli_main(["report", str(labelled_output), "--out", "memory://reports/r.html", "--thumbnails", "0"]) == 0
    with fsspec.open("memory://reports/r.html", "rb") as handle:
        page = handle.read().decode()
    assert page.startswith("<!DOCTYPE html>") and "not_a_video.mp4" in page and "<img" not in page
    nested = tmp_path / "a" / "b" / "report.html"
    assert cli_main(["report", str(labelled_output), "--out", str(nested), "--thumbnails", "1",
                     "--frames-per-video", "2"]) == 0
    assert nested.read_text().count("<img ") == 2


def test_report_survives_sources_that_no_longer_decode(labelled_output: Path, tmp_path: Path,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import daq_label.overlay
    from pipeline.decode import VideoError

    class Gone:
        def __init__(self, url: str, *args: Any, **kwargs: Any) -> None:
            raise VideoError("unreadable", f"{url}: file does not exist")

    monkeypatch.setattr(daq_label.overlay, "StreamingDecoder", Gone)
    data = collect_report(open_output(str(labelled_output)), ReportSettings(thumbnails=5))
    assert len(data.thumbnails) == 2
    assert all(not t.images and "file does not exist" in (t.error or "") for t in data.thumbnails.values())
    page = render_report(data)
    assert page.count('class="note thumb-error"') == 2 and "<img" not in page
