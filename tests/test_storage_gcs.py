"""The label job on gs:// against a real GCS JSON-API server (``gcp-storage-emulator`` on
127.0.0.1, reached through ``STORAGE_EMULATOR_HOST`` as gcsfs reads it): glob and URL-list
inputs, checkpoint and every table on the bucket, ``daq-label validate`` on the bucket, resume,
a kill mid-run then a rerun (no temporaries left, the same rows), and a network failure reported
as one line naming the host."""

from __future__ import annotations

from pathlib import Path

import pytest

import tests.storage_scenario as sc
from tests.storage_servers import free_port, gcs_server  # noqa: F401 - the server fixture


@pytest.fixture(scope="module")
def bucket(gcs_server) -> sc.Bucket:
    return sc.Bucket("gs", "daq-test", {"project": "test-project"}, dict(gcs_server.env))


@pytest.fixture(scope="module")
def corpus(bucket: sc.Bucket, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return sc.prepare(bucket, tmp_path_factory.mktemp("gcs_corpus"))


def test_glob_input_labels_every_video_into_the_bucket(bucket: sc.Bucket, corpus: dict) -> None:
    sc.check_glob_run(bucket, corpus)


def test_rerun_skips_done_videos_and_changes_nothing(bucket: sc.Bucket, corpus: dict) -> None:
    sc.check_rerun_changes_nothing(bucket, corpus)


def test_url_list_then_kill_and_rerun_gives_the_same_rows(bucket: sc.Bucket, corpus: dict, tmp_path: Path) -> None:
    sc.check_url_list_kill_and_rerun(bucket, corpus, tmp_path)


@pytest.mark.slow  # gcsfs retries a refused connection for ~30 s before giving up
def test_unreachable_host_is_one_line_naming_it(gcs_server, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = {**gcs_server.env, "STORAGE_EMULATOR_HOST": dead}
    proc = sc.start_label_process(["gs://daq-test/videos/*.mp4", "gs://daq-test/out_dead",
                                   "--checkpoint", str(sc.CASE / "weights.pt"),
                                   "--config", str(sc.CASE / "config.yaml")], env, tmp_path)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, output
    errors = [line for line in output.splitlines() if "ERROR jobs.label" in line]
    assert len(errors) == 1, output
    assert "matches no file" not in output and "Traceback" not in output, output
    assert dead in errors[0] and "daq-test" in errors[0] and "Cannot connect" in errors[0], errors[0]
