"""Claims and attempt markers: several jobs on one OUTPUT split the work, retries make progress.

Layout (under OUTPUT)::

    _claims/<video_id>/<generation>.json   who is labelling the video now (job id, host, process,
                                           expiry); refreshed while the video is worked on
    _attempts/<video_id>/<uuid>.json       one per start of the video that has not finished yet

**Claims.** Before a video starts, the job claims it: it reads the newest generation of the
video's claim; a claim of another job that is still *live* (not expired and, on this host, its
process still running) means that job is labelling it, so this job skips it (counter
``videos_claimed_elsewhere``). Otherwise the job creates the next generation, exclusively: one job
wins each generation. The exclusive create is atomic on local disks (``os.link`` of a complete
file), on GCS (``ifGenerationMatch=0``) and on S3 (``If-None-Match: *``, honoured by AWS since
2024), through fsspec's ``mode="create"``; on other filesystems it is check-then-write (two jobs
may rarely both label a video). Results stay exactly once whatever claims do: every file has a
deterministic name and is committed whole, so a second labelling replaces, never duplicates.
A claim of a job that died lapses when it expires (``ttl_s``), at once on the same host (its
process is gone). Claims of the same job (a retried bundle) are taken over.

**Attempts (poison-video quarantine).** Just before a video's labelling starts, the worker
writes an attempt marker, and removes it when labelling comes back (whatever its status); the done
marker removes any left. A video that already has ``max_attempts`` markers was
started that often and never finished (its worker died each time: a crash isolation could not
catch, the job killed): it is recorded failed, ``repeated_worker_crash``, without being run
again, so a retried bundle always makes progress.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pipeline.storage import OutputLayout, is_local, join
from schemas.tables import ATTEMPTS_DIR, CLAIMS_DIR

logger = logging.getLogger(__name__)

REPEATED_WORKER_CRASH = "repeated_worker_crash"
HOST = socket.gethostname()


@dataclass(frozen=True)
class ClaimSettings:
    """How long a claim lives without a refresh, and when a video is quarantined."""

    ttl_s: float = 600.0
    max_attempts: int = 2

    def __post_init__(self) -> None:
        if not self.ttl_s > 0:
            raise ValueError(f"claim ttl must be > 0 seconds, got {self.ttl_s}")
        if self.max_attempts < 1:
            raise ValueError(f"max attempts must be >= 1, got {self.max_attempts}")


def process_started(pid: int) -> str | None:
    """An identifier of when process ``pid`` started (Linux ``/proc``), None if unknown or gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()  # field 22: start time in clock ticks since boot
    except (OSError, IndexError):
        return None


def process_alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or process_started(pid) in (None, started)


def claim_is_live(claim: dict[str, Any], now: float | None = None) -> bool:
    """Not expired, and (on this host) its process still runs."""
    if float(claim.get("expires_at", 0)) <= (time.time() if now is None else now):
        return False
    if claim.get("host") == HOST and isinstance(claim.get("pid"), int):
        return process_alive(claim["pid"], claim.get("pid_started"))
    return True


def create_exclusive(layout: OutputLayout, path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists (see the module docstring); False when
    it existed."""
    fs = layout.fs
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    if is_local(fs):
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    return True


class VideoClaims:
    """Claims and attempt markers of one job (``job_id``) on one OUTPUT."""

    def __init__(self, layout: OutputLayout, job_id: str, settings: ClaimSettings) -> None:
        self.layout = layout
        self.job_id = job_id
        self.settings = settings

    def __getstate__(self) -> dict[str, Any]:
        return {"layout": self.layout, "job_id": self.job_id, "settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["layout"], state["job_id"], state["settings"])  # type: ignore[misc]

    # -------------------------------------------------------------- claims

    def claim_dir(self, video_id: str) -> str:
        return join(self.layout.root, CLAIMS_DIR, video_id)

    def _generations(self, video_id: str) -> list[int]:
        fs, folder = self.layout.fs, self.claim_dir(video_id)
        try:
            names = [posixpath.basename(p) for p in fs.ls(folder, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def current(self, video_id: str) -> tuple[int, dict[str, Any]] | None:
        """The newest claim of the video (generation, content), None when unclaimed."""
        for generation in reversed(self._generations(video_id)):
            try:
                return generation, self.layout.read_json(join(self.claim_dir(video_id), f"{generation}.json"))
            except (OSError, ValueError):  # removed meanwhile, or half-written by a non-atomic store
                continue
        return None

    def _content(self) -> bytes:
        pid = os.getpid()
        return json.dumps({"job_id": self.job_id, "host": HOST, "pid": pid,
                           "pid_started": process_started(pid), "claimed_at": time.time(),
                           "expires_at": time.time() + self.settings.ttl_s}).encode()

    def try_claim(self, video_id: str) -> tuple[bool, dict[str, Any] | None]:
        """(True, None) when this job now holds the video; (False, holder) when another live job
        does."""
        now = self.current(video_id)
        if now is not None:
            generation, holder = now
            if holder.get("job_id") != self.job_id and claim_is_live(holder):
                return False, holder
            next_generation = generation + 1
        else:
            next_generation = 0
        path = join(self.claim_dir(video_id), f"{next_generation}.json")
        if create_exclusive(self.layout, path, self._content()):
            KEEPER.hold(self, video_id, path)
            return True, None
        winner = self.current(video_id)
        return False, winner[1] if winner else None

    def refresh(self, video_id: str, path: str) -> bool:
        """Extend our claim; False if another job took the video over meanwhile."""
        newest = self._generations(video_id)
        if not newest or join(self.claim_dir(video_id), f"{newest[-1]}.json") != path:
            logger.warning("video %s: our claim was taken over by another job (ours lapsed)", video_id)
            return False
        self.layout.fs.pipe_file(path, self._content())
        return True

    def release(self, video_id: str) -> None:
        """Drop the video's claims and attempt markers (its done marker is written)."""
        KEEPER.drop(self, video_id)
        for folder in (self.claim_dir(video_id), self.attempt_dir(video_id)):
            try:
                self.layout.fs.rm(folder, recursive=True)
            except FileNotFoundError:
                pass
            except OSError as exc:  # harmless: the done marker decides
                logger.warning("could not remove %s: %s", folder, exc)

    def abandon(self) -> int:
        """Give up the claims this job holds in this process (its run stopped before their
        videos were done): they are no longer refreshed and their files go, so a rerun in the
        same process (whose id makes them look live) can take the videos at once. Attempt markers
        stay. Returns how many were given up."""
        abandoned = KEEPER.held_videos(self)
        for video_id in abandoned:
            KEEPER.drop(self, video_id)
            try:
                self.layout.fs.rm(self.claim_dir(video_id), recursive=True)
            except FileNotFoundError:
                pass
            except OSError as exc:  # the claim lapses at its expiry instead
                logger.warning("could not remove the claim of %s: %s", video_id, exc)
        if abandoned:
            logger.info("gave up %d claim(s) of videos this run did not finish", len(abandoned))
        return len(abandoned)

    # -------------------------------------------------------------- attempts

    def attempt_dir(self, video_id: str) -> str:
        return join(self.layout.root, ATTEMPTS_DIR, video_id)

    def attempts(self, video_id: str) -> int:
        try:
            return sum(1 for p in self.layout.fs.ls(self.attempt_dir(video_id), detail=False)
                       if p.endswith(".json"))
        except FileNotFoundError:
            return 0

    def record_attempt(self, video_id: str) -> str:
        """Mark that labelling of the video starts now; returns the marker's path for
        :meth:`end_attempt`."""
        path = join(self.attempt_dir(video_id), f"{uuid.uuid4().hex}.json")
        self.layout.fs.makedirs(self.attempt_dir(video_id), exist_ok=True)
        self.layout.fs.pipe_file(path, json.dumps({"job_id": self.job_id, "host": HOST,
                                                   "pid": os.getpid(), "started_at": time.time()}).encode())
        return path

    def end_attempt(self, path: str) -> None:
        """Labelling came back (with any status): that start no longer counts against the video,
        whatever later happens to the bundle it is in (a crash of another video in the same
        bundle loses its result, not its good name)."""
        try:
            self.layout.fs.rm_file(path)
        except FileNotFoundError:
            pass


class _ClaimKeeper:
    """One thread per process refreshes the claims this process holds every ``ttl / 3``."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str, str], tuple[VideoClaims, str]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, claims: VideoClaims, video_id: str, path: str) -> None:
        with self._lock:
            self._held[(claims.layout.url, claims.job_id, video_id)] = (claims, path)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="claim-keeper", daemon=True)
                self._thread.start()

    def drop(self, claims: VideoClaims, video_id: str) -> None:
        with self._lock:
            self._held.pop((claims.layout.url, claims.job_id, video_id), None)

    def held_videos(self, claims: VideoClaims) -> list[str]:
        """The videos whose claims of ``claims``' job this process holds."""
        with self._lock:
            return [key[2] for key in self._held if key[:2] == (claims.layout.url, claims.job_id)]

    def _run(self) -> None:
        while True:
            with self._lock:
                held = list(self._held.items())
            period = min((c.settings.ttl_s for _, (c, _p) in held), default=60.0) / 3
            time.sleep(max(0.5, period))
            for key, (claims, path) in held:
                try:
                    if not claims.refresh(key[2], path):
                        self.drop(claims, key[2])
                except Exception as exc:  # noqa: BLE001 - try again next round
                    logger.warning("could not refresh the claim of %s: %s", key[2], exc)


KEEPER = _ClaimKeeper()


def clear_stale_tmp(layout: OutputLayout, claims: VideoClaims, min_age_s: float = 10.0) -> int:
    """Remove what killed runs left in ``_tmp/``: every temporary file except those of videos a
    live job holds a claim on and files younger than ``min_age_s`` (another job's start-up)."""
    fs = layout.fs
    if not fs.exists(layout.tmp_dir):
        return 0
    removed = 0
    now = time.time()
    for path in fs.find(layout.tmp_dir, detail=False):
        name = posixpath.basename(path)
        stem = name.rsplit(".", 1)[0]
        video_id = stem.rsplit("__", 1)[1] if "__" in stem else None
        if video_id is not None:
            held = claims.current(video_id)
            if held is not None and claim_is_live(held[1]) and held[1].get("job_id") != claims.job_id:
                continue
        else:
            try:
                if now - fs.modified(path).timestamp() < min_age_s:
                    continue
            except (OSError, NotImplementedError):
                pass
        try:
            fs.rm(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed
