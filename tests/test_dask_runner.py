"""The label job on a real Dask cluster (``--runner DaskRunner --dask_client_address ADDR``): a
``dask.distributed`` LocalCluster of two worker processes (one thread each) labels three edge-case
videos through ``daq-label label``; the labelling runs on both workers, the summary counts come
from the Beam metrics the runner gathers, the tables validate and equal the local runner's rows,
and a rerun finds everything done."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dask.distributed import Client, LocalCluster

from jobs.cli import main as cli_main
from pipeline.dask_runner import TASK_PREFIX
from pipeline.inputs import make_ref
from schemas.validate import validate_output

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "data" / "reference_case1" / "online"
MODEL = ["--checkpoint", str(CASE / "weights.pt"), "--config", str(CASE / "config.yaml"), "--torch-threads", "1"]
EDGE = ROOT / "tests" / "data" / "videos_edge"
VIDEOS = ["one_frame.mp4", "odd_321x183.webm", "not_a_video.mp4"]
SUMMARY = re.compile(r"daq-label label: (\d+) video\(s\) labelled \(ok (\d+), partial (\d+), failed (\d+)\), "
                     r"(\d+) already done, (\d+) frames, (\d+) tracks")
TIMING = ("decode_seconds", "model_seconds", "cpu_seconds")


def _label(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, tuple[int, ...]]:
    rc = cli_main(["label", *args])
    out = capsys.readouterr().out
    match = SUMMARY.search(out)
    assert match, out
    return rc, tuple(int(g) for g in match.groups())


def _rows(path: Path, table: str, drop: tuple[str, ...] = ()) -> list[dict]:
    rows = [{k: v for k, v in r.items() if k not in drop} for r in pq.read_table(path / table).to_pylist()]
    return sorted(rows, key=repr)


def _key_name(key: object) -> str:
    return str(key[0] if isinstance(key, tuple) else key)


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


@pytest.mark.slow
def test_label_job_on_a_dask_cluster(cluster: LocalCluster, tmp_path: Path, capsys) -> None:
    listing = tmp_path / "videos.txt"
    listing.write_text("".join(f"{EDGE / name}\n" for name in VIDEOS))
    out = tmp_path / "out"
    dask_args = ["--runner", "DaskRunner", f"--dask_client_address={cluster.scheduler_address}"]
    with Client(cluster) as observer:
        observer.get_task_stream()  # starts recording the scheduler's task stream
        rc, counts = _label([str(listing), str(out), *MODEL, *dask_args], capsys)
        stream = observer.get_task_stream()
    assert rc == 0
    videos, ok, partial, failed, done, frames, tracks = counts
    assert (videos, ok, partial, failed, done) == (3, 2, 0, 1, 0)  # counts from the gathered metrics
    assert frames == 1 + 30 and tracks > 0
    label_workers = {task["worker"] for task in stream  # keys: (name, partition)
                     if _key_name(task["key"]).startswith(f"{TASK_PREFIX}LabelVideos/")}
    assert len(label_workers) == 2, label_workers  # Reshuffle spread the videos over both workers

    report = validate_output(str(out), deep=True)
    assert report.ok and report.videos == 3, report.errors[:5]
    rows = {Path(r["source_url"]).name: r for r in pq.read_table(out / "videos").to_pylist()}
    assert (rows["not_a_video.mp4"]["status"], rows["not_a_video.mp4"]["error_type"]) == ("failed", "not_a_video")
    assert (rows["odd_321x183.webm"]["width"], rows["odd_321x183.webm"]["frames_decoded"]) == (321, 30)
    summary = pq.read_table(out / "track_summary").to_pylist()
    assert len(summary) == sum(r["num_tracks"] for r in rows.values()) == tracks
    claims = out / "_claims"
    assert not claims.exists() or not any(claims.iterdir())  # every claim released

    # the same videos on the local runner: the same rows
    local = tmp_path / "local"
    rc, local_counts = _label([str(listing), str(local), *MODEL, "--workers", "1"], capsys)
    assert rc == 0 and local_counts[:5] == counts[:5]
    for table in ("tracks", "track_summary"):
        assert _rows(out, table) == _rows(local, table)
    assert _rows(out, "videos", TIMING) == _rows(local, "videos", TIMING)

    # a rerun on the cluster finds every video done and rewrites nothing
    before = {p: p.read_bytes() for p in out.rglob("*.parquet")}
    rc, counts = _label([str(listing), str(out), *MODEL, *dask_args], capsys)
    assert rc == 0 and counts[:5] == (0, 0, 0, 0, 3)
    assert {p: p.read_bytes() for p in out.rglob("*.parquet")} == before
    assert make_ref(str(EDGE / "one_frame.mp4")).video_id in {p.stem for p in (out / "_done").iterdir()}


def test_dask_runner_refuses_local_runner_options(tmp_path: Path, caplog) -> None:
    """--workers belongs to the local runner: exit 2 before anything starts or is written."""
    out = tmp_path / "out"
    rc = cli_main(["label", str(EDGE / "one_frame.mp4"), str(out), "--workers", "2",
                   "--runner", "DaskRunner", "--dask_client_address=tcp://127.0.0.1:1"])
    assert rc == 2
    assert "--workers is for the local runner" in caplog.text
    assert not out.exists()
