"""CPU time of the labelling of one video, measured where it runs.

With isolation (the default) a video is decoded and labelled in the model's child process, one
video at a time, while the worker thread that sent it waits: the video's CPU time is the child's
CPU time (user + system, every thread) over the video, read from ``/proc/<pid>/stat``, plus the
worker thread's own (``time.thread_time``: sending the video, unpickling its tables). Without
isolation the video runs in the worker process itself (decode thread, PyTorch threads), so it is
the whole process's CPU time over the video (``time.process_time``), which also counts any other
harness thread busy at the same time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (all its threads), or None where ``/proc``
    cannot tell (not Linux, the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
        fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class CpuClock:
    """Started before a video, read after it: :meth:`seconds` is the video's CPU time."""

    child_pid: int | None
    child_start: float | None
    own_start: float

    @classmethod
    def start(cls, child_pid: int | None) -> "CpuClock":
        if child_pid is None:
            return cls(None, None, time.process_time())
        return cls(child_pid, process_cpu_seconds(child_pid), time.thread_time())

    def seconds(self, child_pid: int | None) -> float | None:
        """CPU seconds since :meth:`start`; ``child_pid`` is the model process now (another pid
        than at the start: the child died and was restarted, only the new one's time counts).
        None where a child's time cannot be read."""
        if self.child_pid is None:
            return max(0.0, time.process_time() - self.own_start)
        own = max(0.0, time.thread_time() - self.own_start)
        now = process_cpu_seconds(child_pid) if child_pid is not None else 0.0
        if now is None or (self.child_start is None and child_pid == self.child_pid):
            return None
        child = now - (self.child_start or 0.0) if child_pid == self.child_pid else now
        return own + max(0.0, child)
