"""Progress of a local label job, watched from its OUTPUT.

Workers are separate processes (FnApiRunner ``multi_processing``), so the launcher does not see
their work directly; it watches what they write. Every video recorded done gets a marker
``OUTPUT/_done/<video_id>.json`` holding its status, error_type, frames, tracks, duration, model
and CPU seconds and the id of the job that wrote it (:class:`pipeline.transforms.MarkDone`).
:class:`OutputWatcher` lists ``_done/`` about once a second (a listing, no reads of known markers;
it waits longer when a listing is slow), reads only the markers it has not seen, and counts those
of this job. The total comes from INPUT listed on the launcher (local runs only), in a thread of
its own so the job never waits on it; videos already done before the run (markers present when it
started) are counted apart. Any fsspec URL works: listings go through :func:`iter_files` (paged on
GCS and S3) after dropping fsspec's directory cache.

Reporters: :class:`BarReporter` (a tqdm bar on a terminal: videos done of total, frames/s, ETA,
failures so far) and :class:`LogReporter` (a plain log line every few seconds when stderr is not
a terminal).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, TextIO

from pipeline.listing import iter_files
from pipeline.storage import OutputLayout

logger = logging.getLogger(__name__)

#: markers of an earlier failed run re-read per poll at most (``--retry-failed`` rewrites them)
MAX_REREADS_PER_POLL = 200


@dataclass(frozen=True)
class VideoDone:
    """What one done marker of this job says."""

    video_id: str
    status: str
    error_type: str | None
    frames: int
    tracks: int
    duration_s: float | None
    model_seconds: float | None
    cpu_seconds: float | None

    @classmethod
    def from_marker(cls, marker: dict[str, Any]) -> "VideoDone":
        def number(key: str) -> float | None:
            value = marker.get(key)
            return float(value) if isinstance(value, (int, float)) else None

        status = str(marker.get("status"))
        return cls(str(marker.get("video_id")), status, marker.get("error_type"),
                   int(marker.get("frames_decoded") or 0) if status != "failed" else 0,
                   int(marker.get("num_tracks") or 0), number("duration_s"), number("model_seconds"),
                   number("cpu_seconds"))


@dataclass(frozen=True)
class Progress:
    """A snapshot: ``total`` is what this run has to label (None while INPUT is being listed)."""

    elapsed_s: float
    total: int | None
    done_before: int
    done: int
    ok: int
    partial: int
    failed: int
    frames: int
    tracks: int
    done_elsewhere: int = 0
    error_types: dict[str, int] = field(default_factory=dict)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def remaining(self) -> int | None:
        if self.total is None:
            return None
        return max(0, self.total - self.done - self.done_elsewhere)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at this run's mean rate so far (None before the first video)."""
        if self.remaining is None or self.done == 0:
            return None
        return self.remaining * self.elapsed_s / self.done

    def line(self) -> str:
        total = "?" if self.total is None else str(self.total)
        eta = "?" if self.eta_s is None else _clock(self.eta_s)
        return (f"progress: {self.done}/{total} videos (ok {self.ok}, partial {self.partial}, "
                f"failed {self.failed}), {self.frames} frames, {self.frames_per_s:.1f} frames/s, "
                f"elapsed {_clock(self.elapsed_s)}, ETA {eta}"
                + (f"; {self.done_before} already done" if self.done_before else "")
                + (f"; {self.done_elsewhere} done by another job" if self.done_elsewhere else ""))


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Reporter(Protocol):
    def update(self, progress: Progress) -> None: ...

    def close(self, progress: Progress, report: bool = True) -> None: ...


class OutputWatcher:
    """Counts this job's done markers under OUTPUT while the job runs (see the module docstring).

    ``input_ids``: a function listing the video ids INPUT names (run in a thread; None: no
    total). ``job_id``: markers of this job are this run's work; other markers that appear are
    videos another job on the same OUTPUT did."""

    def __init__(self, layout: OutputLayout, job_id: str, input_ids: Callable[[], Iterable[str]] | None = None,
                 retry_failed: bool = False, interval_s: float = 1.0, reporter: Reporter | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.layout, self.job_id, self.retry_failed = layout, job_id, retry_failed
        self.interval_s, self.reporter, self.clock = interval_s, reporter, clock
        self._input_ids = input_ids
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._before: set[str] = set()  # markers present at the start
        self._seen: set[str] = set()
        self._rereads: deque[str] = deque()  # failed markers of earlier runs (retry_failed)
        self._ids: set[str] | None = None  # INPUT's video ids, once listed
        self._done_before = 0
        self.records: dict[str, VideoDone] = {}  # this job's videos, by id
        self._elsewhere: set[str] = set()
        self._start = clock()
        self.polls = 0
        self.markers_read = 0

    # -------------------------------------------------------------- lifecycle

    def start(self) -> "OutputWatcher":
        """List the markers already there (before the job writes any), then watch in a thread."""
        self._start = self.clock()
        self._before = set(self._list())
        self._seen = set(self._before)
        if self._input_ids is not None:
            self._spawn(self._list_input, "progress-input")
        self._spawn(self._watch, "progress-watch")
        return self

    def stop(self, report: bool = True) -> "OutputWatcher":
        """One last poll (everything the job wrote) and the reporter's last word; ``report``
        False (the job did not run): the reporter closes saying nothing."""
        self._stop.set()
        for thread in self._threads:  # the watch thread, then the listing if it is almost done
            thread.join(timeout=30 if thread.name == "progress-watch" else 1)
        if report:
            try:
                self.poll(report=False)
            except Exception as exc:  # noqa: BLE001 - progress must never fail the job
                logger.debug("last progress poll failed: %s", exc)
        if self.reporter is not None:
            self.reporter.close(self.snapshot(), report)
        return self

    def __enter__(self) -> "OutputWatcher":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -------------------------------------------------------------- work

    def _list(self) -> list[str]:
        fs = self.layout.fs
        fs.invalidate_cache(self.layout.done_dir)  # fsspec caches listings: never a stale one
        if not fs.exists(self.layout.done_dir):
            return []
        return [posixpath.basename(p)[: -len(".json")] for p in iter_files(fs, self.layout.done_dir)
                if p.endswith(".json")]

    def _read(self, video_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        paths = [self.layout.done_path(v) for v in video_ids]
        if not paths:
            return {}
        found = self.layout.fs.cat(paths, on_error="omit")  # concurrent on object stores
        markers = {}
        for path, data in found.items():
            try:
                markers[posixpath.basename(path)[: -len(".json")]] = json.loads(data)
            except ValueError:  # a marker being replaced, or not ours: skipped
                continue
        self.markers_read += len(markers)
        return markers

    def _list_input(self) -> None:
        ids: set[str] = set()
        try:
            for video_id in self._input_ids():  # type: ignore[misc]
                ids.add(video_id)
                if len(ids) % 1000 == 0 and self._stop.is_set():
                    return  # the job ended first: no total
        except Exception as exc:  # noqa: BLE001 - no total then; the job reports its own errors
            logger.debug("progress: INPUT not listed (%s); no total", exc)
            return
        old = ids & self._before
        failed_before: list[str] = []
        if self.retry_failed and old:  # those are labelled again: not done before
            markers = self._read(old)
            failed_before = [v for v in old if markers.get(v, {}).get("status") == "failed"]
        with self._lock:
            self._rereads.extend(v for v in failed_before if v not in self.records)
            self._done_before = len(old) - len(failed_before)
            self._ids = ids

    def _watch(self) -> None:
        while not self._stop.is_set():
            began = self.clock()
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - a flaky listing: try again next time
                logger.debug("progress poll failed: %s", exc)
            took = self.clock() - began
            self._stop.wait(max(self.interval_s, 2 * took))  # listings never take over the job

    def poll(self, report: bool = True) -> Progress:
        """List ``_done/`` once, read the new markers (and some to re-check), report."""
        names = self._list()
        with self._lock:
            new = [v for v in names if v not in self._seen]
            rereads = [self._rereads.popleft() for _ in range(min(len(self._rereads), MAX_REREADS_PER_POLL))]
        markers = self._read(new + rereads)
        with self._lock:
            self.polls += 1
            self._seen.update(new)
            for video_id in rereads:
                if markers.get(video_id, {}).get("job_id") != self.job_id:
                    self._rereads.append(video_id)  # not rewritten by this job yet
            for video_id, marker in markers.items():
                if marker.get("job_id") == self.job_id:
                    self.records[video_id] = VideoDone.from_marker(marker)
                elif video_id in new:
                    self._elsewhere.add(video_id)
        progress = self.snapshot()
        if self.reporter is not None and report:
            self.reporter.update(progress)
        return progress

    def snapshot(self) -> Progress:
        with self._lock:
            ids = self._ids
            records = [r for r in self.records.values() if ids is None or r.video_id in ids]
            status = Counter(r.status for r in records)
            errors = Counter(r.error_type for r in records if r.error_type)
            elsewhere = len(self._elsewhere if ids is None else self._elsewhere & ids)
            return Progress(
                elapsed_s=self.clock() - self._start, total=None if ids is None else len(ids) - self._done_before,
                done_before=self._done_before, done=len(records), ok=status["ok"], partial=status["partial"],
                failed=status["failed"], frames=sum(r.frames for r in records),
                tracks=sum(r.tracks for r in records), done_elsewhere=elsewhere,
                error_types=dict(sorted(errors.items())))


# ------------------------------------------------------------------ reporters


class LogReporter:
    """A plain progress line every ``every_s`` seconds, and one at the end."""

    def __init__(self, log: logging.Logger | None = None, every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.every_s, self.clock = log or logger, every_s, clock
        self._last: float | None = None
        self._last_counts: tuple[Any, ...] | None = None

    def update(self, progress: Progress) -> None:
        now = self.clock()
        if self._last is None or now - self._last >= self.every_s:
            self._emit(progress)
            self._last = now

    def close(self, progress: Progress, report: bool = True) -> None:
        if report and self._counts(progress) != self._last_counts:  # the end, if not said yet
            self._emit(progress)

    @staticmethod
    def _counts(progress: Progress) -> tuple[Any, ...]:
        return (progress.total, progress.done, progress.frames, progress.done_elsewhere)

    def _emit(self, progress: Progress) -> None:
        self.log.info("%s", progress.line())
        self._last_counts = self._counts(progress)


class BarReporter:
    """A tqdm bar on ``stream`` (a terminal): videos done of total, frames/s, failures, ETA."""

    def __init__(self, stream: TextIO, mininterval_s: float = 0.5) -> None:
        from tqdm import tqdm

        try:
            size = os.get_terminal_size(stream.fileno())
            sized = size.columns > 0 and size.lines > 0
        except (AttributeError, OSError, ValueError):
            sized = False
        # a terminal that reports no size (some pseudo-terminals) gets a fixed one: tqdm draws
        # nothing on a 0-column or 0-row screen
        self.bar = tqdm(total=None, unit="video", desc="labelling", file=stream, dynamic_ncols=sized,
                        ncols=None if sized else 100, nrows=None if sized else 24,
                        mininterval=mininterval_s, smoothing=0.1, leave=True)

    def update(self, progress: Progress) -> None:
        bar = self.bar
        if progress.total is not None and bar.total != progress.total:
            bar.total = progress.total
        bar.set_postfix_str(f"{progress.frames_per_s:.1f} frames/s, failed {progress.failed}"
                            + (f", {progress.done_before} already done" if progress.done_before else ""),
                            refresh=False)
        if progress.done > bar.n:
            bar.update(progress.done - bar.n)
        else:
            bar.refresh()

    def close(self, progress: Progress, report: bool = True) -> None:
        if report:
            self.update(progress)
        else:
            self.bar.leave = False  # the job did not run: no bar left behind
        self.bar.close()


def input_video_ids(input_url: str, storage_options: dict[str, Any] | None = None,
                    skip_bad_lines: bool = False) -> Iterable[str]:
    """The ids of the videos INPUT names, as the job's MatchVideos and AssignVideoIds make them
    (listed lazily: page by page on object stores)."""
    from pipeline.inputs import InputSpec, make_ref

    spec = InputSpec.resolve(input_url, storage_options, skip_bad_lines)
    for entry in spec.entries():
        yield make_ref(entry, storage_options).video_id
