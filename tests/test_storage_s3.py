"""The label job on s3:// against a real S3 server (moto's, on 127.0.0.1). The server is reached
through ``--storage-option`` alone (endpoint and keys as s3fs options, no environment), so these
tests also show the options reaching listing, reading the videos and the checkpoint, writing the
tables and validating, on the launcher and in the job's workers. Without an endpoint or
credentials the job stops with one line naming the bucket and what failed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tests.storage_scenario as sc
from tests.storage_servers import s3_server, s3_storage_options  # noqa: F401 - the server fixture

#: no ambient AWS configuration may help (or slow) the client: the options must do it all
UNSET_AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
             "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_PROFILE")
NO_AWS_ENV: dict[str, str | None] = {
    **{name: None for name in UNSET_AWS}, "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


@pytest.fixture(scope="module")
def bucket(s3_server) -> sc.Bucket:
    saved = {name: os.environ.pop(name) for name in UNSET_AWS if name in os.environ}
    yield sc.Bucket("s3", "daq-test", s3_storage_options(s3_server), NO_AWS_ENV)
    os.environ.update(saved)


@pytest.fixture(scope="module")
def corpus(bucket: sc.Bucket, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return sc.prepare(bucket, tmp_path_factory.mktemp("s3_corpus"))


def test_glob_input_labels_every_video_into_the_bucket(bucket: sc.Bucket, corpus: dict) -> None:
    sc.check_glob_run(bucket, corpus)


def test_rerun_skips_done_videos_and_changes_nothing(bucket: sc.Bucket, corpus: dict) -> None:
    sc.check_rerun_changes_nothing(bucket, corpus)


def test_url_list_then_kill_and_rerun_gives_the_same_rows(bucket: sc.Bucket, corpus: dict, tmp_path: Path) -> None:
    sc.check_url_list_kill_and_rerun(bucket, corpus, tmp_path)


def test_no_endpoint_and_no_credentials_is_one_line(tmp_path: Path) -> None:
    """Before: a 149-line botocore traceback. Now: exit 2 and one line with bucket, host, cause."""
    proc = sc.start_label_process(["s3://daq-test/videos/*.mp4", "s3://daq-test/out_none",
                                   "--checkpoint", str(sc.CASE / "weights.pt"),
                                   "--config", str(sc.CASE / "config.yaml")], NO_AWS_ENV, tmp_path)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, output
    assert "Traceback" not in output and "matches no file" not in output, output
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1, output
    assert "'daq-test'" in errors[0] and "Unable to locate credentials" in errors[0], errors[0]
    assert "no endpoint_url" in errors[0], errors[0]


def test_unreachable_endpoint_names_the_host(tmp_path: Path) -> None:
    """An endpoint nobody listens on: exit 2, one line naming that endpoint and the bucket."""
    from tests.storage_servers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    options = ["--storage-option", "key=testing", "--storage-option", "secret=testing",
               "--storage-option", f'client_kwargs={{"endpoint_url": "{dead}"}}',
               "--storage-option", 'config_kwargs={"retries": {"max_attempts": 1}}']
    proc = sc.start_label_process(["s3://daq-test/videos/*.mp4", "s3://daq-test/out_dead", *options,
                                   "--checkpoint", str(sc.CASE / "weights.pt"),
                                   "--config", str(sc.CASE / "config.yaml")], NO_AWS_ENV, tmp_path)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, output
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "Traceback" not in output, output
    assert dead in errors[0] and "'daq-test'" in errors[0], errors[0]
