"""Crash and hang isolation: videos are decoded and labelled in a long-lived child process.

A native crash (segfault or abort in FFmpeg, PyAV, PyTorch) or a hang while one video is decoded
or run through the model must take down neither the Beam worker nor the other videos. With
isolation on (the default), each worker process starts one child process (a fresh interpreter,
``python -c``: no fork of a process that already runs torch or Beam threads, and no re-import of
the parent's main module as multiprocessing's ``spawn`` would do). The child loads the
model once and labels videos one at a time with :func:`pipeline.labeler.label_video`; decoded
frames never leave it, only the compact :class:`~pipeline.tables.VideoLabels` (Arrow tables,
pickled) come back through a pipe.

The parent waits for each video under a time limit derived from its length::

    limit = base_s                                   until the first frame batch reaches the model
    limit = base_s + per_video_second x duration     from then on (duration = frames / fps from
                                                     the container header, as the model is told)
    limit = unknown_length_s                         when the header gives no length

When the child dies (any nonzero exit status or signal) or overruns the limit, the parent kills it,
records the video ``failed`` with ``error_type`` :data:`WORKER_CRASHED` (the message names the
signal) or :data:`TIMEOUT`, and starts a fresh child for the next video.

Fault injection (for tests only): the environment variable :data:`FAULT_ENV`, a ``;``-separated
list of ``ACTION:SUBSTRING`` (ACTION one of ``segfault``, ``abort``, ``exit``, ``hang``), makes the
process that runs the model do ACTION when it pushes the first frame batch of a video whose URL
contains SUBSTRING. It is read once per model load; nothing reads it unless it is set.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable

from pipeline.inputs import VideoRef
from pipeline.labeler import LabelSettings, failed_labels, label_video
from daq_model.config import DAQConfig
from pipeline.model_source import ModelSpec, local_checkpoint
from pipeline.tables import Provenance, VideoLabels

logger = logging.getLogger(__name__)

WORKER_CRASHED = "worker_crashed"
TIMEOUT = "timeout"
FAULT_ENV = "DAQ_LABEL_FAULT_INJECTION"
FAULT_ACTIONS = ("segfault", "abort", "exit", "hang")
#: frames per second assumed when the header gives a frame count but no rate
ASSUMED_FPS = 30.0
#: the directory holding the ``pipeline`` package (put first on the child's path)
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class IsolationSettings:
    """Where videos run and how long one may take (see the module docstring)."""

    enabled: bool = True
    base_s: float = 600.0
    per_video_second: float = 60.0
    unknown_length_s: float = 3 * 3600.0
    start_timeout_s: float = 900.0  # the child's start: imports and model load
    log_level: str = "INFO"  # of our loggers in the child (--quiet: WARNING, --verbose: DEBUG)

    def __post_init__(self) -> None:
        for name in ("base_s", "per_video_second", "unknown_length_s", "start_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"isolation {name} must be > 0, got {getattr(self, name)}")

    def limit_s(self, num_frames: int | None, fps: float | None) -> float:
        """The time limit of a video whose header says ``num_frames`` at ``fps``."""
        if not num_frames:
            return self.unknown_length_s
        duration = num_frames / (fps if fps and fps > 0 else ASSUMED_FPS)
        return self.base_s + self.per_video_second * duration


# ---------------------------------------------------------------------------- the model


@dataclass
class LoadedModel:
    """What one worker process holds: the predictor and its config."""

    predictor: Any
    config: DAQConfig
    device: str
    faults: tuple[tuple[str, str], ...] = ()  # test-only fault injection (pipeline.isolation)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_predictor(spec: ModelSpec, device: str, storage_options: dict[str, Any] | None = None) -> LoadedModel:
    """Build the predictor from the checkpoint (copied locally and checksum-verified first)."""
    from daq_model.predictor import VideoPredictor

    resolved = resolve_device(device)
    path = local_checkpoint(spec.checkpoint, spec.checkpoint_sha256, storage_options)
    predictor = VideoPredictor.from_checkpoint(path, spec.config, device=resolved)
    return LoadedModel(predictor, spec.config, resolved)



# ---------------------------------------------------------------------------- fault injection


def parse_faults(text: str | None) -> tuple[tuple[str, str], ...]:
    """``"segfault:a.mp4;hang:b.mp4"`` -> (("segfault", "a.mp4"), ("hang", "b.mp4"))."""
    faults = []
    for item in (text or "").split(";"):
        if not item.strip():
            continue
        action, sep, pattern = item.strip().partition(":")
        if not sep or action not in FAULT_ACTIONS or not pattern:
            raise ValueError(f"{FAULT_ENV}: {item!r} is not ACTION:SUBSTRING with ACTION in {FAULT_ACTIONS}")
        faults.append((action, pattern))
    return tuple(faults)


def do_fault(action: str) -> None:
    logger.warning("fault injection (%s): %s in process %d", FAULT_ENV, action, os.getpid())
    if action == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif action == "abort":
        os.abort()
    elif action == "exit":
        os._exit(3)
    while action == "hang":
        time.sleep(3600)


class _ObservedSession:
    """A predictor session that reports its first push and injects the configured fault."""

    def __init__(self, session: Any, on_push: Callable[[], None]) -> None:
        self._session = session
        self._on_push = on_push

    def push(self, frames: Any) -> Any:
        if self._on_push is not None:
            on_push, self._on_push = self._on_push, None
            on_push()
        return self._session.push(frames)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class ObservedPredictor:
    """Wraps the predictor for one video: ``on_start(video_info)`` when the model is told the
    video's size and length, the fault (if any) at the first push."""

    def __init__(self, predictor: Any, url: str, faults: tuple[tuple[str, str], ...],
                 on_start: Callable[[Any], None] | None = None) -> None:
        self._predictor = predictor
        self._on_start = on_start
        self._fault = next((action for action, pattern in faults if pattern in url), None)

    def start_video(self, info: Any, *args: Any, **kwargs: Any) -> Any:
        if self._on_start is not None:
            self._on_start(info)
        session = self._predictor.start_video(info, *args, **kwargs)
        fault = self._fault
        return _ObservedSession(session, (lambda: do_fault(fault)) if fault else lambda: None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictor, name)


# ---------------------------------------------------------------------------- the child


def _exit_when_orphaned(parent: int) -> None:
    """The child dies with its parent (a killed Beam worker leaves no labeller behind)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def child_entry(fd: int) -> None:
    """Entry point of the child process (``python -c``; see :meth:`IsolatedLabeler.start`)."""
    conn = Connection(fd)
    parent, path, spec, provenance, settings, device, torch_threads, log_level = conn.recv()
    sys.path[:] = path
    level = logging.getLevelName(log_level)
    logging.basicConfig(level=max(logging.INFO, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for ours in ("pipeline", "daq_model"):
        logging.getLogger(ours).setLevel(level)
    child_main(conn, parent, spec, provenance, settings, device, torch_threads)


def child_main(conn: Connection, parent: int, spec: ModelSpec, provenance: Provenance,
               settings: LabelSettings, device: str, torch_threads: int) -> None:
    """The child: load the model, then label the videos the parent sends until the pipe closes."""
    _exit_when_orphaned(parent)
    try:
        if torch_threads > 0:
            import torch

            torch.set_num_threads(torch_threads)
        start = time.perf_counter()
        model = load_predictor(spec, device, settings.options)
        faults = parse_faults(os.environ.get(FAULT_ENV))
    except BaseException as exc:  # noqa: BLE001 - told to the parent, which raises
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", time.perf_counter() - start, model.device))
    while True:
        try:
            ref = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        predictor = ObservedPredictor(model.predictor, ref.url, faults,
                                      lambda info: conn.send(("started", info.num_frames, info.fps)))
        labels = label_video(ref, predictor, model.config, provenance, settings)
        conn.send(("labels", labels))


# ---------------------------------------------------------------------------- the parent


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "it stopped answering"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name} (exit code {exitcode})"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class IsolatedLabeler:
    """Labels videos in a child process (see the module docstring); the child starts lazily and
    again after each crash or timeout."""

    def __init__(self, spec: ModelSpec, provenance: Provenance, settings: LabelSettings,
                 device: str, torch_threads: int, isolation: IsolationSettings) -> None:
        self.spec = spec
        self.provenance = provenance
        self.settings = settings
        self.device = device
        self.torch_threads = torch_threads
        self.isolation = isolation
        self._process: Any = None
        self._conn: Connection | None = None
        self.restarts = 0

    # -------------------------------------------------------------- child lifecycle

    def start(self) -> "IsolatedLabeler":
        parent_sock, child_sock = socket.socketpair()
        code = (f"import sys; sys.path[:0] = {[str(PACKAGE_ROOT)]!r}; "
                f"from pipeline.isolation import child_entry; child_entry({child_sock.fileno()})")
        start = time.perf_counter()
        try:
            process = subprocess.Popen([sys.executable, "-c", code], pass_fds=(child_sock.fileno(),),
                                       stdin=subprocess.DEVNULL)
        finally:
            child_sock.close()
        conn = Connection(parent_sock.detach())
        self._process, self._conn = process, conn
        conn.send((os.getpid(), list(sys.path), self.spec, self.provenance, self.settings, self.device,
                   self.torch_threads, self.isolation.log_level))
        message = self._receive(time.monotonic() + self.isolation.start_timeout_s)
        if message is None or message[0] != "ready":
            reason = message[1] if message and message[0] == "error" else describe_exit(process.poll())
            self.stop()
            raise RuntimeError(f"the model process did not start: {reason}")
        logger.info("model process %d loaded %s on %s in %.1fs (started in %.1fs)", process.pid,
                    self.spec.model_name, message[2], message[1], time.perf_counter() - start)
        return self

    def stop(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait(10)

    @property
    def pid(self) -> int | None:
        """The model process's pid (None while none runs)."""
        return self._process.pid if self._process is not None else None

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _receive(self, deadline: float, tick: Callable[[], None] | None = None,
                 tick_s: float = 30.0) -> Any:
        """The child's next message; None when it dies (its end of the pipe closes) or the
        deadline passes (``tick`` runs at least every ``tick_s`` while waiting)."""
        conn = self._conn
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if wait([conn], timeout=min(remaining, tick_s)):
                try:
                    return conn.recv()
                except (EOFError, OSError):
                    try:
                        self._process.wait(5)
                    except subprocess.TimeoutExpired:
                        pass
                    return None
            if tick is not None:
                tick()

    # -------------------------------------------------------------- one video

    def label(self, ref: VideoRef, tick: Callable[[], None] | None = None) -> VideoLabels:
        """Label one video in the child; a crash or a timeout becomes a ``failed`` video."""
        if not self.alive():
            if self._process is not None:
                self.stop()
            self.start()
        began = time.monotonic()
        limit = self.isolation.base_s
        self._conn.send(ref)
        while True:
            message = self._receive(began + limit, tick)
            if message is None:
                return self._lost(ref, time.monotonic() - began, limit)
            if message[0] == "started":
                limit = self.isolation.limit_s(message[1], message[2])
                continue
            return message[1]

    def _lost(self, ref: VideoRef, elapsed: float, limit: float) -> VideoLabels:
        process = self._process
        timed_out = process is not None and process.poll() is None
        if timed_out:
            process.kill()
            process.wait(10)
        exitcode = process.poll() if process is not None else None
        self.stop()
        self.restarts += 1
        if timed_out:
            kind = TIMEOUT
            message = (f"{ref.url}: took longer than its time limit of {limit:.0f}s (base + "
                       "per-video-second x duration); the labelling process was killed")
        else:
            kind = WORKER_CRASHED
            message = (f"{ref.url}: the labelling process died while decoding or labelling this "
                       f"video after {elapsed:.1f}s: {describe_exit(exitcode)}")
        logger.error("%s (%s): failed: %s; starting a new model process for the next video",
                     ref.url, ref.video_id, message)
        return failed_labels(ref, self.provenance, kind, message)
