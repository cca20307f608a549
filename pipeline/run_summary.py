"""The end-of-run summary of a local label job: counts, frames, tracks, wall time, compute per
video-minute and the projected cost of the whole corpus.

Counts come from the job's Beam counters (:class:`pipeline.job.JobSummary`); durations, model and
CPU seconds from the done markers of this run's videos (:class:`pipeline.progress.VideoDone`).
CPU seconds are measured by the workers around each video (:mod:`pipeline.cpu_time`: the model
process's CPU time, all threads, plus the worker thread's); model seconds are wall time in the
model (GPU-seconds on a GPU).

Projection: compute seconds per video-minute of this run x the corpus's video minutes, where the
corpus is every video INPUT names (labelled now, done before, or by another job) and its minutes
are estimated as that count x this run's mean minutes per video. It is a projection from the
videos of this run, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from pipeline.progress import VideoDone


@dataclass(frozen=True)
class RunFigures:
    videos: int  # labelled by this run (ok + partial + failed)
    ok: int
    partial: int
    failed: int
    already_done: int
    frames: int
    tracks: int
    wall_s: float
    corpus_videos: int  # every video INPUT names
    measured: int  # this run's videos whose marker was read
    video_s: float  # summed duration of this run's videos (where known)
    with_duration: int
    cpu_s: float
    with_cpu: int
    model_s: float
    basis: str = "cpu"  # "cpu": CPU-seconds; "gpu": model seconds on a GPU
    cost_per_hour: float | None = None
    error_types: dict[str, int] = field(default_factory=dict)

    @classmethod
    def collect(cls, summary: Any, records: Iterable[VideoDone], basis: str = "cpu",
                cost_per_hour: float | None = None) -> "RunFigures":
        records = list(records)
        durations = [r.duration_s for r in records if r.duration_s]
        cpus = [r.cpu_seconds for r in records if r.cpu_seconds is not None]
        corpus = summary.videos + summary.already_done + getattr(summary, "claimed_elsewhere", 0)
        return cls(summary.videos, summary.ok, summary.partial, summary.failed, summary.already_done,
                   summary.frames, summary.tracks, summary.wall_s, corpus, len(records),
                   float(sum(durations)), len(durations), float(sum(cpus)), len(cpus),
                   float(sum(r.model_seconds or 0.0 for r in records)), basis, cost_per_hour,
                   dict(summary.error_types))

    # -------------------------------------------------------------- figures

    @property
    def video_minutes(self) -> float:
        return self.video_s / 60.0

    @property
    def compute_s(self) -> float:
        """The cost basis: CPU seconds, or model (GPU) seconds."""
        return self.model_s if self.basis == "gpu" else self.cpu_s

    @property
    def unit(self) -> str:
        return "GPU-s" if self.basis == "gpu" else "CPU-s"

    def per_video_minute(self, seconds: float) -> float | None:
        return seconds / self.video_minutes if self.video_minutes > 0 else None

    @property
    def corpus_minutes(self) -> float | None:
        """The corpus's video minutes: this run's known minutes per video x the corpus's videos."""
        if not self.with_duration or not self.measured:
            return None
        return self.video_minutes / self.measured * self.corpus_videos

    @property
    def projected_hours(self) -> float | None:
        rate = self.per_video_minute(self.compute_s)
        if rate is None or self.corpus_minutes is None:
            return None
        return rate * self.corpus_minutes / 3600.0

    @property
    def projected_usd(self) -> float | None:
        hours = self.projected_hours
        return None if hours is None or self.cost_per_hour is None else hours * self.cost_per_hour

    # -------------------------------------------------------------- text

    def lines(self) -> list[str]:
        errors = (" (by error_type: " + ", ".join(f"{k} {v}" for k, v in self.error_types.items()) + ")"
                  if self.error_types else "")
        fps = self.frames / self.wall_s if self.wall_s > 0 else 0.0
        out = [f"summary: {self.videos} video(s) labelled in {self.wall_s:.1f}s wall: ok {self.ok}, "
               f"partial {self.partial}, failed {self.failed}{errors}; {self.already_done} already done",
               f"  {self.frames} frames ({fps:.1f} frames/s of wall time), {self.tracks} tracks; "
               f"{self.video_minutes:.3g} video-minutes ({self.with_duration} of {self.videos} "
               f"video(s) with a duration)"]
        if not self.videos:
            return out + ["  no video labelled by this run: no compute or cost figures"]
        cpu_rate, model_rate = self.per_video_minute(self.cpu_s), self.per_video_minute(self.model_s)
        out.append(f"  CPU {self.cpu_s:.1f}s, measured by the workers around each video (decode + "
                   f"model + masks, not start-up or model loading; {self.with_cpu} of {self.videos} video(s))"
                   + (f" = {cpu_rate:.1f} CPU-s per video-minute" if cpu_rate is not None else "")
                   + f"; model time {self.model_s:.1f}s"
                   + (f" = {model_rate:.1f} model-s per video-minute" if model_rate is not None else ""))
        hours = self.projected_hours
        if hours is None:
            out.append("  no cost projection: no video of this run has a known duration")
            return out
        basis, hour = (("GPU-hours (model time)", "GPU-hour") if self.basis == "gpu"
                       else ("CPU-hours", "CPU-hour"))
        usd = self.projected_usd
        out.append(f"  projected from {self.measured} video(s) of this run: the corpus's "
                   f"{self.corpus_videos} video(s), about {self.corpus_minutes:.3g} video-minutes at "
                   f"this run's mean length, need about {hours:.3g} {basis}"
                   + (f", about {_usd(usd)} at ${self.cost_per_hour:g} per {hour}"
                      if usd is not None else " (--cost-per-hour USD gives a price)"))
        return out


def _usd(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.3g}"
