"""The label job on gs:// against a real GCS JSON-API server (``gcp-storage-emulator`` on
127.0.0.1, reached through ``STORAGE_EMULATOR_HOST`` as gcsfs reads it): glob and URL-list
inputs, checkpoint and every table on the bucket, ``daq-label validate`` on the bucket, resume,
a kill mid-run then a rerun (no temporaries left, the same rows), and a network failure reported
as one line naming the host."""

from __future__ import annotations

from pathlib import Path

import pytest

import storage_scenario as sc
from storage_servers import free_port, gcs_server  # noqa: F401 - the server fixture


@pytest.fixture(scope="module")
def bucket(gcs_server) -> sc.Bucket:
    return sc.Bucket("gs", "daq-test", {"project": "test-project"}, dict(gcs_server.env))


@pytest.fixture(scope="module")
def corpus(bucket: sc.Bucket, tmp_path_factory: pytest.TempPathFactory) -> dict:
    corpus = sc.upload_corpus(bucket, tmp_path_factory.mktemp("gcs_corpus"))
    rc, out = sc.label([corpus["glob"], bucket.url("out_glob"), *corpus["model"], *bucket.cli_options, *sc.FAST])
    corpus["glob_run"] = (rc, out)
    return corpus


def test_glob_input_labels_every_video_into_the_bucket(bucket: sc.Bucket, corpus: dict) -> None:
    rc, out = corpus["glob_run"]
    assert rc == 0, out
    assert sc.summary_counts(out) == (3, 3, 0, 0, 0)
    tables = sc.read_tables(bucket, "out_glob")
    assert {r["source_url"].rsplit("/", 1)[1] for r in tables["videos"].to_pylist()} == set(corpus["names"])
    assert all(u.startswith("gs://daq-test/videos/") for u in tables["videos"]["source_url"].to_pylist())
    assert tables["tracks"].num_rows > 0
    assert len(bucket.fs.find(bucket.path("out_glob", "_done"))) == 3
    assert bucket.fs.exists(bucket.path("out_glob", "_provenance.json"))
    assert sc.tmp_files(bucket, "out_glob") == []
    rc, report = sc.validate(bucket, "out_glob")
    assert rc == 0 and "OK: 3 video(s)" in report, report


def test_rerun_skips_done_videos_and_changes_nothing(bucket: sc.Bucket, corpus: dict) -> None:
    before = sc.object_bytes(bucket, "out_glob")
    rc, out = sc.label([corpus["glob"], bucket.url("out_glob"), *corpus["model"], *bucket.cli_options, *sc.FAST])
    assert rc == 0 and sc.summary_counts(out) == (0, 0, 0, 0, 3), out
    assert sc.object_bytes(bucket, "out_glob") == before


def test_url_list_then_kill_and_rerun_gives_the_same_rows(bucket: sc.Bucket, corpus: dict, tmp_path: Path) -> None:
    """A URL list on the bucket labels the same videos as the glob (same ids, same rows); a run
    of it killed after its first table reached the bucket, plus a stray temporary, is finished
    by a rerun: temporaries cleared, each video once, rows equal to the uninterrupted run's."""
    base = [*corpus["model"], *bucket.cli_options, *sc.FAST]
    rc, out = sc.label([corpus["list"], bucket.url("out_list"), *base])
    assert rc == 0 and sc.summary_counts(out) == (3, 3, 0, 0, 0), out
    reference = sc.read_tables(bucket, "out_list")
    glob_tables = sc.read_tables(bucket, "out_glob")
    for name in ("tracks", "track_summary"):
        assert sc.rows(reference[name]) == sc.rows(glob_tables[name])

    proc = sc.start_label_process([corpus["list"], bucket.url("out_kill"), *base], bucket.env, tmp_path)
    assert sc.kill_after_first_table(bucket, proc, "out_kill"), proc.stdout.read()
    done_before = len(bucket.fs.find(bucket.path("out_kill", "_done")))
    assert done_before < 3
    bucket.fs.pipe(bucket.path("out_kill", "_tmp", "deadbeef.videos__x.parquet"), b"half a file")
    rc, out = sc.label([corpus["list"], bucket.url("out_kill"), *base])
    assert rc == 0, out
    labelled, ok, _partial, _failed, already = sc.summary_counts(out)
    assert (labelled, already) == (3 - done_before, done_before) and ok == labelled
    assert sc.tmp_files(bucket, "out_kill") == []
    after = sc.read_tables(bucket, "out_kill")
    for name in ("tracks", "track_summary"):
        assert sc.rows(after[name]) == sc.rows(reference[name])
    assert sc.rows(after["videos"], sc.TIMING) == sc.rows(reference["videos"], sc.TIMING)
    rc, report = sc.validate(bucket, "out_kill")
    assert rc == 0 and "OK: 3 video(s)" in report, report


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
