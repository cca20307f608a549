"""INPUT expansion, stable video ids, atomic commits (a killed writer leaves no final file) and
the runner setup (no Prism download, options pass through)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import fsspec
import pytest

from pipeline.inputs import InputError, InputSpec, make_ref
from pipeline.runner import runner_setup
from pipeline.storage import OutputLayout

EDGE = Path(__file__).resolve().parent / "data" / "videos_edge"
SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "videos"


def test_directory_takes_video_extensions_recursively(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.mp4", "a/b/y.MKV", "a/notes.txt", "a/b/manifest.json", "z.webm"):
        (tmp_path / name).write_bytes(b"")
    spec = InputSpec.resolve(str(tmp_path))
    assert spec.kind == "directory"
    names = sorted(Path(u.split("://", 1)[1]).name for u in spec.expand())
    assert names == ["x.mp4", "y.MKV", "z.webm"]


def test_glob_matches_any_extension_and_is_lazy() -> None:
    spec = InputSpec.resolve(str(EDGE / "*"))
    urls = list(spec.expand())
    assert spec.kind == "glob" and len(urls) == 13  # 10 videos + manifest, LICENSE, NOTICE
    assert spec.first_match() == urls[0]
    assert InputSpec.resolve(str(SAMPLES / "0[12]_*.mp4")).first_match().endswith("01_dog.mp4")
    assert InputSpec.resolve(str(EDGE / "nothing_*.mp4")).first_match() is None


def test_url_list_comments_blank_lines_and_relative_paths(tmp_path: Path) -> None:
    listing = tmp_path / "videos.txt"
    listing.write_text(f"# corpus\n\n{SAMPLES / '01_dog.mp4'}\nrel/clip.mp4\n  gs://bucket/v.mp4  \n")
    spec = InputSpec.resolve(str(listing))
    assert spec.kind == "url_list"
    assert list(spec.expand()) == [str(SAMPLES / "01_dog.mp4"),
                                   f"file://{tmp_path}/rel/clip.mp4", "gs://bucket/v.mp4"]


def test_missing_input_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        InputSpec.resolve(str(tmp_path / "missing.mp4"))
    assert InputSpec.resolve(str(SAMPLES / "01_dog.mp4")).kind == "file"


def test_video_id_is_stable_over_spellings_and_distinct_per_file(tmp_path: Path) -> None:
    a = make_ref(str(SAMPLES / "01_dog.mp4"))
    assert a == make_ref(f"file://{SAMPLES}/01_dog.mp4")
    assert a == make_ref(str(SAMPLES / ".." / "videos" / "01_dog.mp4"))
    assert a.url == f"file://{SAMPLES}/01_dog.mp4"
    assert len(a.video_id) == 20 and int(a.video_id, 16) >= 0
    assert make_ref(str(SAMPLES / "02_cups.mp4")).video_id != a.video_id
    assert make_ref("gs://b/x.mp4").url == "gs://b/x.mp4"
    assert make_ref("memory://b/x.mp4").video_id != make_ref("gs://b/x.mp4").video_id


@pytest.mark.parametrize("base", ["local", "memory"])
def test_atomic_write_replaces_and_cleans_up(tmp_path: Path, base: str) -> None:
    url = str(tmp_path / "out") if base == "local" else "memory://atomic-test/out"
    layout = OutputLayout(url)
    final = layout.table_path("tracks", "vid")
    layout.write_atomic(final, lambda h: h.write(b"first"))
    layout.write_atomic(final, lambda h: h.write(b"second"))
    with layout.fs.open(final, "rb") as handle:
        assert handle.read() == b"second"

    def failing(handle) -> None:
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        layout.write_atomic(layout.table_path("videos", "vid"), failing)
    assert not layout.fs.exists(layout.table_path("videos", "vid"))
    assert layout.fs.find(layout.tmp_dir) == []


def test_killed_writer_leaves_no_final_named_file(tmp_path: Path) -> None:
    """A process killed mid-write (no cleanup runs) leaves only a _tmp/ file; the next run's
    start-up removes it."""
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        from pipeline.storage import OutputLayout
        layout = OutputLayout({str(out)!r})
        def write(handle):
            handle.write(b"x" * 100000)
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        layout.write_atomic(layout.table_path("tracks", "vid"), write)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == -9
    layout = OutputLayout(str(out))
    assert not (out / "tracks" / "vid.parquet").exists()
    assert len(os.listdir(out / "_tmp")) == 1
    assert layout.clear_tmp() == 1 and os.listdir(out / "_tmp") == []


def test_done_markers_are_listed(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path))
    assert list(layout.iter_done_ids()) == []
    layout.write_json_atomic(layout.done_path("abc"), {"status": "ok"})
    assert [vid for vid, _ in layout.iter_done_ids()] == ["abc"]
    assert layout.read_json(layout.done_path("abc")) == {"status": "ok"}


def test_local_runner_is_fnapi_with_all_cores_and_never_prism() -> None:
    from apache_beam.options.pipeline_options import DirectOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    setup = runner_setup([])
    direct = setup.options.view_as(DirectOptions)
    cores = len(os.sched_getaffinity(0))
    assert isinstance(setup.runner, FnApiRunner) and setup.local
    assert direct.direct_num_workers == cores
    assert direct.direct_running_mode == ("multi_processing" if cores > 1 else "in_memory")
    assert setup.torch_threads * setup.workers <= max(cores, 1)
    one = runner_setup(["--runner", "DirectRunner"], workers=1)
    assert one.options.view_as(DirectOptions).direct_running_mode == "in_memory" and one.workers == 1
    threads = runner_setup(["--direct_running_mode=multi_threading", "--direct_num_workers=3"])
    assert threads.workers == 3 and threads.options.view_as(DirectOptions).direct_running_mode == "multi_threading"


def test_other_runners_pass_through_untouched() -> None:
    from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions

    setup = runner_setup(["--runner", "DataflowRunner", "--project", "p", "--region", "r",
                          "--temp_location", "gs://b/tmp"])
    assert setup.runner is None and not setup.local
    assert setup.options.view_as(StandardOptions).runner == "DataflowRunner"
    assert setup.options.view_as(GoogleCloudOptions).project == "p"


def test_memory_filesystem_input_listing() -> None:
    for name in ("a.mp4", "b.mov", "c.txt"):
        with fsspec.open(f"memory://corpus-list/{name}", "wb") as handle:
            handle.write(b"x")
    spec = InputSpec.resolve("memory://corpus-list")
    assert spec.kind == "directory"
    assert [u.rsplit("/", 1)[1] for u in spec.expand()] == ["a.mp4", "b.mov"]
