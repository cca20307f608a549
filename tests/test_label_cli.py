"""``daq-label label`` start-up: unusable arguments fail fast (exit 2) with a clear message,
before any worker starts and before OUTPUT is touched."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from jobs.cli import build_parser, main as cli_main

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "data" / "reference_case1" / "online"
MODEL = ["--checkpoint", str(CASE / "weights.pt"), "--config", str(CASE / "config.yaml")]
SAMPLES = ROOT / "samples" / "videos"


def _label(args: list[str], caplog: pytest.LogCaptureFixture) -> tuple[int, str]:
    caplog.clear()
    with caplog.at_level(logging.INFO):
        rc = cli_main(["label", *args])
    return rc, caplog.text


def test_beam_options_pass_through_the_cli() -> None:
    args = build_parser(["label"]).parse_args(
        ["label", "in/*.mp4", "gs://b/out", "--checkpoint", "c.pt", "--runner", "DataflowRunner",
         "--project", "p", "--temp_location=gs://b/tmp", "--retry-failed"])
    assert (args.input, args.output, args.checkpoint, args.retry_failed) == ("in/*.mp4", "gs://b/out", "c.pt", True)
    assert args.beam_args == ["--runner", "DataflowRunner", "--project", "p", "--temp_location=gs://b/tmp"]


def test_label_help_documents_inputs_outputs_and_runners(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(["label", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for words in ("INPUT", "OUTPUT", "--checkpoint", "--config", "DataflowRunner", "Prism", "resume"):
        assert words.lower() in text.lower(), words


@pytest.mark.parametrize("case, message", [
    ("no_match", "matches no file"),
    ("missing_input", "does not exist"),
    ("unknown_option", "unknown option(s) --chekpoint"),
    ("missing_config", "neither a preset"),
    ("missing_checkpoint", "does not exist"),
    ("bad_checkpoint", "cannot load the model"),
    ("bad_workers", "--workers must be >= 1"),
])
def test_unusable_arguments_exit_2_before_writing(tmp_path: Path, caplog, case: str, message: str) -> None:
    out = tmp_path / "out"
    args = [str(SAMPLES / "*.mp4"), str(out), *MODEL]
    if case == "no_match":
        args[0] = str(SAMPLES / "*.nothing")
    elif case == "missing_input":
        args[0] = str(tmp_path / "missing.txt")
    elif case == "unknown_option":
        args += ["--chekpoint", "x"]
    elif case == "missing_config":
        args[5] = str(tmp_path / "nope.yaml")
    elif case == "missing_checkpoint":
        args[3] = str(tmp_path / "nope.pt")
    elif case == "bad_checkpoint":
        broken = tmp_path / "broken.pt"
        broken.write_bytes((CASE / "weights.pt").read_bytes()[:100000])
        args[3] = str(broken)
    elif case == "bad_workers":
        args += ["--workers", "0"]
    rc, log = _label(args, caplog)
    assert rc == 2 and message in log, log
    assert not out.exists()


def test_output_of_another_model_is_refused(tmp_path: Path, caplog) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "_provenance.json").write_text(json.dumps({"provenance_key": "0000000000000000",
                                                      "model_name": "other"}))
    rc, log = _label([str(SAMPLES / "01_dog.mp4"), str(out), *MODEL], caplog)
    assert rc == 2 and "holds labels of another model" in log
    assert sorted(p.name for p in out.iterdir()) == ["_provenance.json"]


def _no_shipped_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import pipeline.model_source as model_source

    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    monkeypatch.setattr(model_source, "PRETRAINED_DIR", pretrained)
    return pretrained


def test_without_a_shipped_model_checkpoint_is_required(tmp_path: Path, caplog, monkeypatch) -> None:
    _no_shipped_model(monkeypatch, tmp_path)
    rc, log = _label([str(SAMPLES / "01_dog.mp4"), str(tmp_path / "out")], caplog)
    assert rc == 2 and "no default model is shipped" in log and "--checkpoint" in log


def test_shipped_model_with_a_card_is_the_default(tmp_path: Path, monkeypatch) -> None:
    from pipeline.model_source import resolve_model

    pretrained = _no_shipped_model(monkeypatch, tmp_path)
    (pretrained / "tiny.pt").write_bytes((CASE / "weights.pt").read_bytes())
    (pretrained / "tiny.yaml").write_text((CASE / "config.yaml").read_text())
    (pretrained / "tiny.json").write_text(json.dumps({"name": "daq-tiny-v1"}))
    spec = resolve_model(None, None)
    assert (spec.origin, spec.model_name, spec.checkpoint) == ("shipped", "daq-tiny-v1", str(pretrained / "tiny.pt"))
    assert spec.config.num_classes == 5
    assert spec.provenance().key == resolve_model(None, None).provenance().key


def test_config_stored_in_the_checkpoint_is_used(tmp_path: Path, monkeypatch) -> None:
    from daq_model.checkpoint import save_checkpoint
    from daq_model.config import load_config
    from daq_model.dvis_daq import create_model
    from pipeline.model_source import resolve_model

    pretrained = _no_shipped_model(monkeypatch, tmp_path)
    cfg = load_config(str(CASE / "config.yaml"))
    save_checkpoint(create_model(cfg, str(CASE / "weights.pt")), pretrained / "model.pt", config=cfg)
    spec = resolve_model(None, None)
    assert spec.config.config_hash() == cfg.config_hash() and spec.model_name == "model"
