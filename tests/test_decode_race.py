"""The decode/close race (issue 27, item 1): the container is never freed under a running demuxer.

A fake model raises at a random frame while the prefetch thread is decoding ahead; before the fix
``finally: decoder.close()`` freed the PyAV container under that thread and libavformat crashed
the process (exit 139). Each scenario runs in a child process, so a native crash is an exit code
the test can see, not a dead test runner.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.made_videos import make_video

ROOT = Path(__file__).resolve().parents[1]
RUNS = 200


class _Failing(Exception):
    pass


class _Session:
    def __init__(self, raise_at: int, error: type[BaseException]) -> None:
        self.raise_at, self.error, self.seen = raise_at, error, 0

    def push(self, frames: np.ndarray) -> list[Any]:
        self.seen += len(frames)
        if self.seen > self.raise_at:
            raise self.error(f"fake model fails at frame {self.raise_at}")
        return []

    def flush(self) -> list[Any]:
        return []

    def finish(self, replay: Any = None) -> Any:
        raise self.error("fake model fails at the end")


class FailingPredictor:
    """A predictor whose session raises once ``raise_at`` frames have been pushed."""

    def __init__(self, raise_at: int, error: type[BaseException]) -> None:
        self.raise_at, self.error = raise_at, error

    def start_video(self, info: Any, frame_masks: bool = True) -> _Session:
        return _Session(self.raise_at, self.error)


def child(video: str, seed: int, runs: int) -> dict[str, int]:
    """Label ``video`` ``runs`` times with a model failing at a random frame (prefetch on)."""
    from daq_model.config import DAQConfig
    from pipeline import decode
    from pipeline.decode import StreamingDecoder
    from pipeline.inputs import make_ref
    from pipeline.labeler import LabelSettings, label_video
    from pipeline.tables import Provenance

    rng = random.Random(seed)
    ref = make_ref(video)
    provenance = Provenance("fake", "0" * 64, "0" * 16, "0", "fake")
    cfg = DAQConfig()
    counts = {"model_error": 0, "interrupted": 0, "abandoned": 0, "closed_from_thread": 0}
    with StreamingDecoder(video) as probe:
        total = sum(len(b.frames) for b in probe.batches())
    for run in range(runs):
        settings = LabelSettings(frames_per_push=rng.choice([1, 2, 3]), prefetch_batches=rng.choice([1, 2, 4]))
        case = run % 4
        if case in (0, 1):  # model error: a failed row, and the process lives on
            labels = label_video(ref, FailingPredictor(rng.randrange(total), RuntimeError), cfg,
                                 provenance, settings)
            assert labels.video_row["status"] == "failed", labels.video_row
            assert labels.video_row["error_type"] == decode.MODEL_ERROR, labels.video_row
            counts["model_error"] += 1
        elif case == 2:  # an interrupt raised by the model propagates, the decoder still closes
            try:
                label_video(ref, FailingPredictor(rng.randrange(total), KeyboardInterrupt), cfg,
                            provenance, settings)
            except KeyboardInterrupt:
                counts["interrupted"] += 1
        else:  # an abandoned iterator, and a close() called from another thread while decoding
            decoder = StreamingDecoder(video, settings.frames_per_push).__enter__()
            batches = decoder.batches(prefetch=settings.prefetch_batches)
            for _ in range(rng.randrange(1, 4)):
                next(batches, None)
            if rng.random() < 0.5:
                decoder.close()  # the iterator is never closed by its consumer
                assert not any(t.name == "decode-prefetch" for t in threading.enumerate())
                counts["abandoned"] += 1
            else:
                closer = threading.Timer(rng.random() * 0.002, decoder.close)
                closer.start()
                for _ in batches:  # ends early (closed) or at the end of the video
                    pass
                closer.join()
                decoder.close()
                counts["closed_from_thread"] += 1
    return counts


def _run_child(video: Path, seed: int, runs: int, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.test_decode_race", str(video), str(seed), str(runs)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_model_failing_at_a_random_frame_never_crashes_the_process(tmp_path: Path) -> None:
    video = make_video(tmp_path / "noise.mp4")
    proc = _run_child(video, seed=27, runs=RUNS)
    assert proc.returncode == 0, f"child exited {proc.returncode} (139 = segfault)\n{proc.stderr[-3000:]}"
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sum(counts.values()) == RUNS
    assert counts["model_error"] == RUNS // 2 and counts["interrupted"] == RUNS // 4
    assert counts["abandoned"] + counts["closed_from_thread"] == RUNS // 4


def test_close_joins_the_prefetch_thread_and_ends_the_iterator(tmp_path: Path) -> None:
    from pipeline.decode import StreamingDecoder

    video = make_video(tmp_path / "noise.mp4", frames=30)
    decoder = StreamingDecoder(str(video), 2).__enter__()
    batches = decoder.batches(prefetch=2)
    first = next(batches)
    assert first.frames.shape == (2, 48, 64, 3)
    decoder.close()
    assert not any(t.name == "decode-prefetch" for t in threading.enumerate())
    assert list(batches) == []  # a closed decoder's iterator is finished, not an error
    assert decoder.stats.frames < 30
    decoder.close()  # idempotent


@pytest.mark.parametrize("prefetch", [0, 3])
def test_prefetch_yields_the_same_frames_as_plain_decoding(tmp_path: Path, prefetch: int) -> None:
    from pipeline.decode import StreamingDecoder

    video = make_video(tmp_path / "noise.mp4", frames=25)
    with StreamingDecoder(str(video), 4) as plain:
        expected = np.concatenate([b.frames for b in plain.batches()])
    with StreamingDecoder(str(video), 4) as decoder:
        got = np.concatenate([b.frames for b in decoder.batches(prefetch=prefetch)])
    assert got.shape[0] == 25 and np.array_equal(got, expected)
    assert decoder.stats.frames == 25


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
