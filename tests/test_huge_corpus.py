"""Huge corpora (issue #26, item 5): listing a bucket with many thousands of videos holds one
page of names at a time, not the listing; resume lists the done markers by name and reads none.

On real object stores (moto's S3 server and gcp-storage-emulator on 127.0.0.1), 10,000 small
objects each: peak memory (traced Python allocations, and the peak RSS of a fresh listing process)
and listing time of the job's paged listing against fsspec's ``find``.
"""

from __future__ import annotations

import logging
import time
import tracemalloc
from typing import Any, Callable

import fsspec
import pytest

from pipeline import listing
from pipeline.inputs import InputSpec
from pipeline.storage import OutputLayout
from tests.storage_servers import gcs_fill, gcs_server, s3_server, s3_storage_options  # noqa: F401 - fixtures

logger = logging.getLogger(__name__)


def _fill(fs: Any, root: str, count: int, per_dir: int = 1000) -> None:
    fs.pipe({f"{root}/{i // per_dir:03d}/v{i:06d}.mp4": b"x" for i in range(count)}, batch_size=64)
    fs.pipe({f"{root}/{i // per_dir:03d}/notes.txt": b"n" for i in range(0, count, per_dir)})


def _peak(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        value = fn()
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return value, seconds, peak / 1e6


@pytest.fixture(scope="module")
def s3_corpus(s3_server) -> tuple[Any, dict, str]:
    options = s3_storage_options(s3_server)
    fs = fsspec.filesystem("s3", **options)
    bucket = "huge-corpus"
    fs.mkdir(bucket)
    _fill(fs, f"{bucket}/videos", 10_000)
    return fs, options, bucket


@pytest.mark.slow
def test_listing_10k_objects_holds_one_page(s3_corpus) -> None:
    fs, options, bucket = s3_corpus
    spec = InputSpec.resolve(f"s3://{bucket}/videos", options)
    assert spec.kind == "directory"
    # botocore builds its client and loads the listing operation's model on first use: warm
    # both paths up so that only the listings themselves are measured
    first = spec.expand()
    assert next(first).endswith("videos/000/v000000.mp4")
    first.close()
    fs.find(f"{bucket}/videos/000")
    fs.invalidate_cache()
    urls, seconds, peak_mb = _peak(lambda: sum(1 for _ in spec.expand()))
    fs.invalidate_cache()
    found, find_seconds, find_mb = _peak(lambda: len(fs.find(f"{bucket}/videos")))
    print(f"10,000 objects on S3: paged listing {seconds:.1f} s, peak {peak_mb:.1f} MB traced; "
          f"fs.find {find_seconds:.1f} s, peak {find_mb:.1f} MB")
    assert urls == 10_000 and found == 10_010
    assert peak_mb < find_mb / 2  # one page, not the listing
    glob = InputSpec.resolve(f"s3://{bucket}/videos/00[0-4]/*.mp4", options)
    assert sum(1 for _ in glob.expand()) == 5_000
    assert next(glob.expand()).endswith("videos/000/v000000.mp4")


@pytest.mark.slow
def test_memory_per_page_is_bounded_by_the_page_size(s3_corpus, monkeypatch) -> None:
    fs, _options, bucket = s3_corpus
    sizes: list[int] = []
    real = listing._s3_pages

    def counting(fs_: Any, bucket_: str, prefix: str):
        for page in real(fs_, bucket_, prefix):
            sizes.append(len(page))
            yield page

    monkeypatch.setattr(listing, "_s3_pages", counting)
    monkeypatch.setattr(listing, "PAGE_SIZE", 500)
    assert sum(1 for _ in listing.iter_files(fs, f"{bucket}/videos")) == 10_010
    assert max(sizes) == 500 and len(sizes) == 21
    one_dir = list(listing.iter_files(fs, f"{bucket}/videos/009", maxdepth=1))
    assert len(one_dir) == 1_001 and one_dir == sorted(one_dir)  # S3 lists in key order
    assert one_dir[0].endswith("009/notes.txt") and one_dir[-1].endswith("009/v009999.mp4")


@pytest.mark.slow
def test_resume_lists_done_markers_by_name_only(s3_corpus, monkeypatch) -> None:
    fs, options, bucket = s3_corpus
    layout = OutputLayout(f"s3://{bucket}/labels", options)
    fs.pipe({f"{bucket}/labels/_done/{i:020x}.json": b'{"status": "ok"}' for i in range(2_000)},
            batch_size=64)
    opened: list[str] = []
    real_open = type(fs)._open

    def spy(self: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        opened.append(path)
        return real_open(self, path, *args, **kwargs)

    monkeypatch.setattr(type(fs), "_open", spy)
    ids = [video_id for video_id, _ in layout.iter_done_ids()]
    assert len(ids) == 2_000 and ids[0] == f"{0:020x}" and opened == []


_RSS_CHILD = """
import json, resource, sys, time
import fsspec
from pipeline.inputs import InputSpec
from tests.storage_servers import _use_plain_gcsfs
_use_plain_gcsfs()  # as the fixture does in the test process
url, how = sys.argv[1], sys.argv[2]
spec = InputSpec.resolve(url)
fs = fsspec.filesystem("gs")
first = spec.expand(); next(first); first.close()          # client and first page: warm
fs.find(url.removeprefix("gs://") + "/000"); fs.invalidate_cache()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
count = sum(1 for _ in spec.expand()) if how == "paged" else len(fs.find(url.removeprefix("gs://")))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"count": count, "seconds": seconds, "rss_growth_mb": (peak - before) / 1024,
                  "peak_rss_mb": peak / 1024}))
"""


def _listing_in_child(url: str, how: str) -> dict:
    """List ``url`` in a fresh process; its peak RSS growth over the warmed-up process."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _RSS_CHILD, url, how], cwd=root, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def gcs_corpus(gcs_server) -> tuple[Any, str]:
    fs = fsspec.filesystem("gs", project="test-project")
    bucket = "huge-corpus-gcs"
    fs.mkdir(bucket)
    names = [f"videos/{i // 1000:03d}/v{i:06d}.mp4" for i in range(10_000)]
    gcs_fill(gcs_server, bucket, names + [f"videos/{i:03d}/notes.txt" for i in range(10)])
    fs.invalidate_cache()
    return fs, bucket


@pytest.mark.slow
def test_gcs_listing_10k_objects_time_and_peak_rss(gcs_corpus) -> None:
    """The issue's measurement: 10,000 objects on the local GCS server, listed by the job's
    paged listing and by fs.find, each in a fresh process (peak RSS growth, listing time)."""
    fs, bucket = gcs_corpus
    url = f"gs://{bucket}/videos"
    paged = _listing_in_child(url, "paged")
    found = _listing_in_child(url, "find")
    print(f"10,000 objects on the GCS emulator: paged listing {paged['seconds']:.1f} s, peak RSS "
          f"+{paged['rss_growth_mb']:.1f} MB (peak {paged['peak_rss_mb']:.0f} MB); fs.find "
          f"{found['seconds']:.1f} s, +{found['rss_growth_mb']:.1f} MB (peak {found['peak_rss_mb']:.0f} MB)")
    assert paged["count"] == 10_000 and found["count"] == 10_010
    assert paged["rss_growth_mb"] < max(2.0, found["rss_growth_mb"] / 2), (paged, found)
    spec = InputSpec.resolve(url)
    fs.invalidate_cache()
    count, seconds, peak_mb = _peak(lambda: sum(1 for _ in spec.expand()))
    fs.invalidate_cache()
    _, _, find_mb = _peak(lambda: len(fs.find(f"{bucket}/videos")))
    print(f"traced Python memory: paged {peak_mb:.1f} MB, fs.find {find_mb:.1f} MB")
    assert count == 10_000 and peak_mb < find_mb / 2


@pytest.mark.slow
def test_gcs_listing_pages_through_the_bucket(gcs_corpus, monkeypatch) -> None:
    fs, bucket = gcs_corpus
    monkeypatch.setattr(listing, "PAGE_SIZE", 700)
    pages: list[int] = []
    real = listing._gcs_pages

    def counting(fs_: Any, bucket_: str, prefix: str):
        for page in real(fs_, bucket_, prefix):
            pages.append(len(page))
            yield page

    monkeypatch.setattr(listing, "_gcs_pages", counting)
    spec = InputSpec.resolve(f"gs://{bucket}/videos")
    urls = list(spec.expand())
    assert len(urls) == 10_000 and urls[0] == f"gs://{bucket}/videos/000/v000000.mp4"
    assert max(pages) == 700 and sum(pages) == 10_010 and len(pages) == 15
    glob = InputSpec.resolve(f"gs://{bucket}/videos/001/*.mp4")
    assert len(list(glob.expand())) == 1_000
