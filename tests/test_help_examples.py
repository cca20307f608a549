"""Every ``daq-label`` example in the commands' ``--help`` texts and in the README is current: it
parses with today's options, its presets exist and the repository paths it names exist; the
README's two commands are the ones CI runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from daq_model.presets import PRESET_NAMES
from jobs.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
REPO_PATHS = ("samples/", "tests/data/", "scripts/", "research/", "daq_model/", "docs/", "benchmarks/")


def _help_text(command: str) -> str:
    parser = build_parser([command])
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[command].format_help()


def _examples(text: str) -> list[str]:
    """Example invocations: lines starting ``daq-label`` (or ``$D``/``.venv/bin/daq-label``),
    with their backslash continuations joined and trailing comments dropped."""
    found: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        match = re.match(r"^(?:\.venv/bin/)?daq-label (?=[a-z])", line)
        if match:
            joined = line
            while joined.endswith("\\") and i + 1 < len(lines):
                i += 1
                joined = joined[:-1] + " " + lines[i].strip()
            found.append(joined.split(" #", 1)[0].strip())
        i += 1
    return found


def _check(example: str) -> None:
    words = shlex.split(example)
    argv = words[1:]
    parser = build_parser([argv[0]])
    args = parser.parse_args(argv)  # argparse exits (SystemExit) on an unknown or wrong option
    if argv[0] == "label":
        from jobs.label import _unknown_beam_args

        assert not _unknown_beam_args(list(getattr(args, "beam_args", []))), example
    for flag in ("--config", "--preset"):
        if flag in argv:
            value = argv[argv.index(flag) + 1]
            if not value.endswith((".yaml", ".yml")):
                assert value in PRESET_NAMES or argv[0] in ("synth",), f"{example}: preset {value}"
    for word in argv:
        if word.startswith(REPO_PATHS) and "*" not in word:
            assert (ROOT / word).exists(), f"{example}: {word} does not exist"


HELP_EXAMPLES = [(name, ex) for name, _m, _h in COMMANDS for ex in _examples(_help_text(name))]


def test_help_texts_have_examples() -> None:
    assert {name for name, _ in HELP_EXAMPLES} >= {"label", "predict"}


@pytest.mark.parametrize("command, example", HELP_EXAMPLES, ids=[f"{c}:{i}" for i, (c, _) in enumerate(HELP_EXAMPLES)])
def test_help_example_parses(command: str, example: str) -> None:
    _check(example)


def _readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    out: list[str] = []
    for block in blocks:
        for part in _examples(block.replace("&& .venv/bin/daq-label", "\n.venv/bin/daq-label")):
            out.append(part.replace(".venv/bin/daq-label", "daq-label", 1))
    return out


def test_readme_examples_parse() -> None:
    examples = _readme_examples()
    assert any(e.startswith("daq-label label samples/videos") for e in examples)
    for example in examples:
        if re.search(r"\b[A-Z]{4,}\b|\[", example):
            continue  # a synopsis line (INPUT OUTPUT [options]), not a runnable example
        if "gs://" in example and "--runner DataflowRunner" in example:
            continue  # the Dataflow command is checked by tests/test_dataflow_build.py
        _check(example)


def test_readme_test_command_is_what_ci_runs() -> None:
    text = (ROOT / "README.md").read_text()
    quick = text[text.index("## Quick start"):text.index("## Label a corpus")]
    commands = re.findall(r"```bash\n(.*?)\n```", quick, flags=re.S)
    assert len(commands) == 2, commands
    setup_and_label, tests = commands
    assert "daq-label label samples/videos" in setup_and_label
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests.strip() in ci, "the README's test command must be the one .ci/run calls"
