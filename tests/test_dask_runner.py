"""The label job on a real Dask cluster (``--runner DaskRunner --dask_client_address ADDR``): a
``dask.distributed`` LocalCluster of two worker processes (one thread each) labels three edge-case
videos through ``daq-label label``; the labelling runs on both workers, the summary counts come
from the Beam metrics the runner gathers, the tables validate and equal the local runner's rows,
and a rerun finds everything done."""

from __future__ import annotations

import re
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from dask.distributed import Client, LocalCluster

from jobs.cli import main as cli_main
from pipeline.dask_runner import TASK_PREFIX, DaskClusterRunner
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
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
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


@pytest.mark.slow
def test_long_video_in_chunks_on_a_dask_cluster(cluster: LocalCluster, tmp_path: Path, capsys) -> None:
    """--chunk-frames: the chunk planner's tagged outputs and the GroupByKey that stitches the
    chunks back run on the cluster; the stitched video is one row like any other."""
    out = tmp_path / "out"
    rc, counts = _label([str(EDGE / "odd_321x183.webm"), str(out), *MODEL, "--chunk-frames", "12",
                         "--chunk-overlap", "4", "--runner", "DaskRunner",
                         f"--dask_client_address={cluster.scheduler_address}"], capsys)
    assert rc == 0 and counts[:5] == (1, 1, 0, 0, 0) and counts[5] == 30
    assert validate_output(str(out), deep=True).ok
    (row,) = pq.read_table(out / "videos").to_pylist()
    assert row["frames_decoded"] == 30 and row["status"] == "ok"
    frames = {r["frame_index"] for r in pq.read_table(out / "tracks").to_pylist()}
    assert frames and max(frames) >= 24  # the last chunk's frames are there


class _Split(beam.DoFn):
    """Odd numbers to the main output, even ones tagged; each call logged to a file."""

    def __init__(self, log: str) -> None:
        self.log = log
        self.calls = Metrics.counter("test", "calls")

    def process(self, x: int):
        with open(self.log, "a") as handle:
            handle.write(f"{x}\n")
        self.calls.inc()
        yield x if x % 2 else beam.pvalue.TaggedOutput("even", x)


def test_tagged_outputs_metrics_and_work_done_once(tmp_path: Path) -> None:
    """Beam's DaskRunner merges a multi-output ParDo's outputs and reports no metrics; ours keeps
    each tag apart, gathers the metrics, spreads a Reshuffle over the partitions and runs the
    ParDo once per element although three consumers read it."""
    log, sink = tmp_path / "calls.txt", tmp_path / "sink.txt"

    def write(item: tuple[str, int]) -> tuple[str, int]:
        with open(sink, "a") as handle:
            handle.write(f"{item[0]} {item[1]}\n")
        return item

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as local:
        options = PipelineOptions([f"--dask_client_address={local.scheduler_address}", "--dask_npartitions=4"])
        pipeline = beam.Pipeline(runner=DaskClusterRunner(), options=options)
        split = (pipeline | beam.Create([0]) | "Expand" >> beam.FlatMap(lambda _: range(12))
                 | beam.Reshuffle() | "Split" >> beam.ParDo(_Split(str(log))).with_outputs("even", main="odd"))
        odd = split.odd | "Odd" >> beam.Map(lambda x: ("odd", x))
        even = split.even | "Even" >> beam.Map(lambda x: ("even", x))
        count = (split.odd | "Count" >> beam.combiners.Count.Globally()
                 | "CountOut" >> beam.Map(lambda n: ("count", n)))
        _ = (odd, even, count) | beam.Flatten() | "Write" >> beam.Map(write)
        with Client(local) as observer:
            observer.get_task_stream()
            result = pipeline.run()
            assert result.wait_until_finish() == "DONE"
            stream = observer.get_task_stream()
    bundles = {task["key"] for task in stream if _key_name(task["key"]).startswith(f"{TASK_PREFIX}Split")}
    assert len(bundles) == 4  # Reshuffle -> --dask_npartitions partitions, one bundle each
    assert sorted(int(x) for x in log.read_text().split()) == list(range(12))  # once each
    expected = sorted(f"{'odd' if x % 2 else 'even'} {x}" for x in range(12)) + ["count 6"]
    assert sorted(sink.read_text().splitlines()) == sorted(expected)  # each tag apart, once
    counters = {m.key.metric.name: m.committed
                for m in result.metrics().query(MetricsFilter().with_namespace("test"))["counters"]}
    assert counters == {"calls": 12}
