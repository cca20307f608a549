"""A small real OUTPUT for the API and export tests: the label job (the shipped model, Beam's
FnApiRunner, one worker) on the first 12 frames of two bundled sample clips, plus one file that
is not a video (a failed row, which exports skip). Built once per test session (about 15 s on
2 cores) however many modules ask for it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "videos"
CLIPS = ("03_blocks.mp4", "05_default_juggle.mp4")
CLIP_FRAMES = 12
NOT_A_VIDEO = ROOT / "tests" / "data" / "videos_edge" / "not_a_video.mp4"

_BUILT: dict[str, Path] = {}


def build_labelled_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The OUTPUT directory (built on the first call of the session)."""
    if "output" not in _BUILT:
        from jobs.cli import main as cli_main
        from tests.test_label_e2e import cut_clip

        work = tmp_path_factory.mktemp("labelled_output")
        clips = work / "clips"
        clips.mkdir()
        for name in CLIPS:
            cut_clip(SAMPLES / name, clips / name, CLIP_FRAMES)
        shutil.copy(NOT_A_VIDEO, clips / NOT_A_VIDEO.name)
        output = work / "out"
        rc = cli_main(["label", str(clips), str(output), "--workers", "1", "--torch-threads", "1"])
        assert rc == 0, "the label job failed on the sample clips"
        _BUILT["output"] = output
    return _BUILT["output"]


@pytest.fixture(scope="module")
def labelled_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_labelled_output(tmp_path_factory)
