"""The Beam graph: its steps, that it serialises for any runner, and the per-step counters
(on videos that fail before the model runs, so this stays fast)."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter

from pipeline.handler import METRICS_NAMESPACE
from pipeline.inputs import InputSpec
from pipeline.job import LabelJob
from pipeline.model_source import resolve_model
from pipeline.runner import runner_setup

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "data" / "reference_case1" / "online"
EDGE = ROOT / "tests" / "data" / "videos_edge"
STEPS = ["MatchVideos", "AssignVideoIds", "SkipDone", "Reshuffle", "ClaimVideos", "LabelVideos", "WriteVideoTables", "MarkDone"]


@pytest.fixture(scope="module")
def spec():
    return resolve_model(str(CASE / "weights.pt"), str(CASE / "config.yaml"))


def test_graph_has_the_documented_steps_and_serialises(spec, tmp_path: Path) -> None:
    job = LabelJob(str(EDGE), str(tmp_path / "out"), spec)
    setup = runner_setup([], workers=1)
    pipeline = beam.Pipeline(runner=setup.runner, options=setup.options)
    job.build(pipeline, InputSpec.resolve(str(EDGE)))
    proto = pipeline.to_runner_api()  # pickles every DoFn, the model handler included
    names = [proto.components.transforms[t].unique_name for t in proto.components.transforms[
        proto.root_transform_ids[0]].subtransforms]
    assert names == STEPS
    assert not (tmp_path / "out").exists()  # building writes nothing


def _counters(result) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]:
        out[item.key.metric.name] = out.get(item.key.metric.name, 0) + item.committed
    return out


def test_step_counters_and_resume(spec, tmp_path: Path) -> None:
    listing = tmp_path / "bad.txt"
    names = ["empty.mp4", "not_a_video.mp4", "audio_only.m4a"]
    listing.write_text("\n".join(str(EDGE / n) for n in names) + f"\n{EDGE / 'empty.mp4'}\n")
    job = LabelJob(str(listing), str(tmp_path / "out"), spec)
    job.prepare_output()

    def run() -> dict[str, int]:
        setup = runner_setup([], workers=1)
        pipeline = beam.Pipeline(runner=setup.runner, options=setup.options)
        job.build(pipeline, InputSpec.resolve(str(listing)))
        result = pipeline.run()
        result.wait_until_finish()
        return _counters(result)

    first = run()
    assert first["inputs_matched"] == 4 and first["videos_identified"] == 4
    assert first["duplicate_inputs"] == 1 and first["videos_to_label"] == 3
    assert first["videos_failed"] == 3 and first.get("videos_ok", 0) == 0
    assert first["tables_written"] == 9 and first["rows_written_videos"] == 3
    assert first["rows_written_tracks"] == 0 and first["frames_decoded"] == 0
    second = run()
    assert second["videos_already_done"] == 3 and second.get("videos_to_label", 0) == 0
    assert second.get("tables_written", 0) == 0
    # a new run (its own job id, as each `daq-label label` is) with --retry-failed: their
    # markers say failed, so they are labelled again
    job = LabelJob(str(listing), str(tmp_path / "out"), spec, retry_failed=True)
    third = run()
    assert third["failed_videos_retried"] == 3 and third["videos_failed"] == 3
    assert third.get("videos_already_done", 0) == 0


def test_each_video_is_committed_before_the_next_starts(spec, tmp_path: Path, monkeypatch) -> None:
    """Labelling, tables and the done marker form one fused chain: when a video's labelling
    starts, every video labelled before it is already done on disk (not buffered until the end
    of the bundle, which a kill would lose and progress could not see)."""
    from pipeline.handler import DAQModelHandler
    from pipeline.isolation import IsolationSettings

    names = ["not_a_video.mp4", "empty.mp4", "audio_only.m4a", "one_frame.mp4"]
    listing = tmp_path / "videos.txt"
    listing.write_text("".join(f"{EDGE / n}\n" for n in names))
    out = tmp_path / "out"
    done_when_started: list[int] = []
    real_label = DAQModelHandler.label

    def label(self, ref, model):
        done_when_started.append(len(list((out / "_done").glob("*.json"))) if (out / "_done").exists() else 0)
        return real_label(self, ref, model)

    monkeypatch.setattr(DAQModelHandler, "label", label)
    job = LabelJob(str(listing), str(out), spec, isolation=IsolationSettings(enabled=False))
    job.prepare_output()
    setup = runner_setup([], workers=1)  # in-memory: the handler runs in this process
    pipeline = beam.Pipeline(runner=setup.runner, options=setup.options)
    job.build(pipeline, InputSpec.resolve(str(listing)))
    pipeline.run().wait_until_finish()
    assert done_when_started == [0, 1, 2, 3]
    assert len(list((out / "_done").glob("*.json"))) == 4
