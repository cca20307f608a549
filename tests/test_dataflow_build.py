"""The Dataflow job, built offline and checked (issue #26, item 2).

The README's Dataflow command runs here as written, plus Beam's ``--dry_run=True --no_auth``,
against a real GCS server on 127.0.0.1 (the bucket names are the README's): Beam's
DataflowRunner builds the job and the portable pipeline proto and returns before any staging or
service call. We check the transforms, the environment's container image, the accelerator hint,
the worker options (also through the Dataflow ``Environment`` message Beam would send), that the
launcher listed nothing and wrote nothing to OUTPUT, and that the workers get our package: the
image the Dockerfile builds (its Beam and Python versions are the launcher's), or, for a CPU job
without a container, our wheel staged with ``--extra_package``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", exc_type=ImportError,
                    reason="needs apache-beam[gcp] (pip install -e '.[dataflow]')")

import apache_beam  # noqa: E402
from apache_beam.options.pipeline_options import DebugOptions, WorkerOptions  # noqa: E402

import pipeline.dataflow as dataflow  # noqa: E402
from jobs.cli import main as cli_main  # noqa: E402
from tests.storage_servers import gcs_server  # noqa: E402,F401 - the server fixture
from tests.conftest_outputs import labelled_output  # noqa: E402,F401 - fixture

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ["--dry_run=True", "--no_auth"]
TRANSFORMS = ("MatchVideos", "AssignVideoIds", "SkipDone", "Reshuffle", "ClaimVideos", "LabelVideos",
              "WriteVideoTables", "MarkDone")


def readme_dataflow_command() -> list[str]:
    """The README's Dataflow command (the ``daq-label label`` line naming DataflowRunner)."""
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("daq-label label ") and "\\" in line:
            joined, j = line, i
            while joined.endswith("\\"):
                j += 1
                joined = joined[:-1] + " " + lines[j].strip()
            if "DataflowRunner" in joined:
                return shlex.split(joined)[1:]
    raise AssertionError("README.md has no 'daq-label label ... --runner DataflowRunner' command")


def _value(argv: list[str], name: str) -> str:
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {argv}")


class _Capture:
    """Keeps what :func:`pipeline.dataflow.submit` returned (the real call, unchanged)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.results: list = []
        real = dataflow.submit

        def submit(*args, **kwargs):
            result = real(*args, **kwargs)
            self.results.append(result)
            return result

        monkeypatch.setattr(dataflow, "submit", submit)


def _bucket_with_videos(argv: list[str]) -> tuple[object, str, str]:
    """Upload two small videos where the command's INPUT glob points; (fs, bucket, OUTPUT path)."""
    import fsspec

    input_url, output_url = argv[1], argv[2]
    fs = fsspec.filesystem("gs")
    bucket = input_url.split("/")[2]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    directory = input_url.rsplit("/", 1)[0].removeprefix("gs://")
    for name in ("one_frame.mp4", "rotated_90.mp4"):
        fs.put_file(str(ROOT / "tests" / "data" / "videos_edge" / name), f"{directory}/{name}")
    return fs, bucket, output_url.removeprefix("gs://")


@pytest.fixture(scope="module")
def built(gcs_server, tmp_path_factory: pytest.TempPathFactory) -> dict:
    argv = readme_dataflow_command()
    fs, bucket, output = _bucket_with_videos(argv)
    monkeypatch = pytest.MonkeyPatch()
    capture = _Capture(monkeypatch)
    listed: list[str] = []
    from pipeline.inputs import InputSpec

    real_entries = InputSpec.entries
    monkeypatch.setattr(InputSpec, "entries", lambda self: listed.append(self.url) or real_entries(self))
    try:
        rc = cli_main([*argv, *OFFLINE])
    finally:
        monkeypatch.undo()
    fs.invalidate_cache()
    return {"argv": argv, "rc": rc, "remote": capture.results, "listed": listed,
            "output_objects": fs.find(output) if fs.exists(output) else [], "fs": fs}


def test_readme_command_builds_a_dataflow_job_offline(built: dict) -> None:
    assert built["rc"] == 0
    assert len(built["remote"]) == 1 and built["remote"][0].dry_run
    job = built["remote"][0].result.job
    assert type(job).__module__ == "apache_beam.runners.dataflow.internal.apiclient"
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    for name in TRANSFORMS:
        assert name in names, (name, sorted(n for n in names if "/" not in n))
    assert "LabelVideos/RunInference/BeamML_RunInference" in names or any(
        n.startswith("LabelVideos/") and "RunInference" in n for n in names)


def test_launcher_listed_nothing_and_wrote_nothing(built: dict) -> None:
    assert built["listed"] == [], "the launcher listed INPUT; the job must"
    assert built["output_objects"] == [], built["output_objects"]


def test_workers_run_our_image_with_the_gpu_hint(built: dict) -> None:
    job, argv = built["remote"][0].result.job, built["argv"]
    image = _value(argv, "--sdk_container_image")
    gpu = dataflow.GpuRequest.parse(_value(argv, "--gpu"))
    environments = list(job.proto_pipeline.components.environments.values())
    assert environments and all(e.urn == "beam:env:docker:v1" for e in environments)
    from apache_beam.portability.api import beam_runner_api_pb2

    for env in environments:
        payload = beam_runner_api_pb2.DockerPayload.FromString(env.payload)
        assert payload.container_image == image
        hint = env.resource_hints["beam:resources:accelerator:v1"].decode()
        assert hint == f"type:{gpu.type};count:1;install-nvidia-driver"
    worker = job.options.view_as(WorkerOptions)
    assert worker.machine_type == dataflow.GPU_MACHINE_TYPES[gpu.type]
    assert worker.sdk_container_image == image
    debug = job.options.view_as(DebugOptions)
    assert debug.number_of_worker_harness_threads == 1
    assert "no_use_multiple_sdk_containers" in (debug.experiments or [])
    assert job.options.get_all_options()["sdk_location"] == "container"


def test_the_dataflow_environment_message_carries_the_worker_options(built: dict) -> None:
    """Beam's own translation of the options into the worker pool Dataflow would create."""
    from apache_beam.runners.dataflow.internal import apiclient

    job = built["remote"][0].result.job
    env = apiclient.Environment([], job.options, apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
                                "gs://staged/pipeline.pb", job.proto_pipeline)
    pool = env.proto.worker_pools[0]
    assert pool.machine_type == "g2-standard-4"
    assert pool.num_threads_per_worker == 1
    images = [c.container_image for c in pool.sdk_harness_container_images]
    assert images == [_value(built["argv"], "--sdk_container_image")]
    assert "no_use_multiple_sdk_containers" in list(env.proto.experiments)


def test_dockerfile_matches_the_launcher_and_installs_the_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    beam = re.search(r"^ARG BEAM_VERSION=(\S+)$", text, re.M).group(1)
    python = re.search(r"^ARG PYTHON_VERSION=(\S+)$", text, re.M).group(1)
    assert re.search(r"^FROM apache/beam_python\$\{PYTHON_VERSION\}_sdk:\$\{BEAM_VERSION\}$", text, re.M)
    assert beam == apache_beam.__version__, "the worker image's Beam must be the launcher's"
    assert python == f"{sys.version_info.major}.{sys.version_info.minor}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert f"apache-beam[gcp]=={beam}" in project["project"]["optional-dependencies"]["dataflow"]
    torch_pin = next(d for d in project["project"]["dependencies"] if d.startswith("torch"))
    assert f'"{torch_pin}"' in text
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert re.search(rf"^COPY {package} /opt/daq-label/{package}$", text, re.M), f"{package} not in the image"
    assert 'pip install --no-cache-dir "/opt/daq-label[dataflow]"' in text


def test_gpu_needs_a_container_and_a_remote_runner() -> None:
    with pytest.raises(dataflow.RemoteSetupError, match="--sdk_container_image"):
        dataflow.remote_beam_args(["--runner", "DataflowRunner"], "nvidia-l4")
    with pytest.raises(dataflow.RemoteSetupError, match="for the Dataflow runner, not DirectRunner"):
        dataflow.remote_beam_args([], "nvidia-l4")
    with pytest.raises(dataflow.RemoteSetupError, match="for the Dataflow runner, not DaskRunner"):
        dataflow.remote_beam_args(["--runner=DaskRunner", "--sdk_container_image=i"], "nvidia-l4")
    assert dataflow.remote_beam_args(["--runner=FlinkRunner"], None) == ["--runner=FlinkRunner"]
    legacy = dataflow.remote_beam_args(["--runner=DataflowRunner", "--worker_harness_container_image=i"], "nvidia-l4")
    assert "--sdk_location=container" in legacy
    with pytest.raises(dataflow.RemoteSetupError, match="one GPU per worker"):
        dataflow.GpuRequest.parse("nvidia-l4:2")
    args = dataflow.remote_beam_args(["--runner=DataflowRunner", "--sdk_container_image=i", "--machine_type=g2-standard-8"],
                                     "nvidia-tesla-t4")
    assert "--machine_type=g2-standard-8" in args and not any(a.startswith("--machine_type=n1") for a in args)


def test_a_remote_job_without_our_package_is_refused(gcs_server, caplog) -> None:
    argv = [a for a in readme_dataflow_command()]
    i = argv.index("--gpu")
    del argv[i:i + 2]
    i = next(k for k, a in enumerate(argv) if a.startswith("--sdk_container_image"))
    del argv[i:i + (1 if "=" in argv[i] else 2)]
    assert cli_main([*argv, *OFFLINE]) == 2
    assert "needs daq-label on its workers" in caplog.text


@pytest.mark.slow  # builds our wheel (~20 s)
def test_cpu_job_without_container_stages_our_wheel(gcs_server, tmp_path: Path, monkeypatch) -> None:
    """The no-container fallback: ``--extra_package`` with our wheel; Beam stages it for the
    workers (the stock Beam image pip-installs it at start)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True)
    wheel = next(tmp_path.glob("daq_label-*.whl"))
    argv = readme_dataflow_command()
    _bucket_with_videos(argv)
    i = argv.index("--gpu")
    del argv[i:i + 2]
    i = next(k for k, a in enumerate(argv) if a.startswith("--sdk_container_image"))
    del argv[i:i + (1 if "=" in argv[i] else 2)]
    capture = _Capture(monkeypatch)
    assert cli_main([*argv, "--extra_package", str(wheel), *OFFLINE]) == 0
    job = capture.results[0].result.job
    staged = []
    for env in job.proto_pipeline.components.environments.values():
        from apache_beam.portability.api import beam_runner_api_pb2

        image = beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
        stock = f"beam_python{sys.version_info.major}.{sys.version_info.minor}_sdk:{apache_beam.__version__}"
        assert image.endswith(stock), (image, "no container given: Dataflow's stock Beam image")
        assert "beam:resources:accelerator:v1" not in env.resource_hints
        for dep in env.dependencies:
            staged.append(beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name)
    assert wheel.name in staged, staged


def test_only_dataflow_jobs_must_ship_the_package() -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    with pytest.raises(dataflow.RemoteSetupError, match="needs daq-label on its workers"):
        dataflow.check_workers_get_the_package(PipelineOptions(["--runner=DataflowRunner"]))
    dataflow.check_workers_get_the_package(PipelineOptions(["--runner=FlinkRunner"]))  # nodes may have it
    dataflow.check_workers_get_the_package(
        PipelineOptions(["--runner=DataflowRunner", "--worker_harness_container_image=i"]))


def test_wait_summarises_a_failed_job_instead_of_raising(tmp_path: Path, caplog) -> None:
    """Beam's Dataflow result raises when the job ends failed: --wait still prints a summary of
    what OUTPUT holds and the launcher exits 1."""
    from pipeline.storage import OutputLayout

    class FailedResult:
        state = "FAILED"

        def wait_until_finish(self):
            raise RuntimeError("Dataflow pipeline failed. State: FAILED, Error:\nworkers lost")

    class Job:
        layout = OutputLayout(str(tmp_path / "out"))

    remote = dataflow.RemoteResult(FailedResult(), "2026-12-06_01", None, False)
    summary = dataflow.wait_and_summarise(Job(), remote)
    assert summary.state == "FAILED" and summary.videos == 0
    assert "remote job 2026-12-06_01 did not succeed: Dataflow pipeline failed" in caplog.text


def test_wait_summary_counts_what_output_holds(labelled_output) -> None:
    """--wait's summary, read from OUTPUT's videos table, agrees with the table row by row."""
    import pyarrow.parquet as pq

    from pipeline.storage import OutputLayout

    rows = pq.read_table(labelled_output / "videos").to_pylist()
    summary = dataflow.summary_from_output(OutputLayout(str(labelled_output)), 1.0, "DONE")
    assert (summary.ok, summary.partial, summary.failed) == tuple(
        sum(r["status"] == s for r in rows) for s in ("ok", "partial", "failed"))
    assert summary.failed == 1 and summary.error_types == {"not_a_video": 1}
    assert summary.frames == sum(r["frames_decoded"] for r in rows)
    assert summary.tracks == sum(r["num_tracks"] for r in rows) > 0
