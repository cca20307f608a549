"""Draw the next training clip and run the frozen segmenter on it while this step trains.

In the tracker stage about half of every step is the frozen segmenter's forward pass (no
gradient). :class:`SegmenterPrefetcher` moves it, together with drawing and decoding the next
clip, onto one background thread, so that on a machine whose intra-op threads scale poorly (this
model's tensors are small) the second core does useful work. Results are unchanged: clips are
drawn from the same sampler in the same order, and the sampler state that is saved for a resume
is the one from before the pending draw, so a resumed run draws the same clips as an
uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from daq_train.sampler import Clip, ClipSampler, ClipSettings

T = TypeVar("T")


@dataclass
class _Pending(Generic[T]):
    iteration: int
    sampler_state: dict
    future: Future[tuple[Clip, T]]


class SegmenterPrefetcher(Generic[T]):
    """``get(iteration)`` -> ``(clip, segment(clip))``, computing iteration + 1 in the background.

    ``segment`` must not touch state that the training step changes (the frozen segmenter under
    ``no_grad`` qualifies). ``prefetch_from`` is the first iteration whose clip may be prepared
    early; before it (always, if None) every call is synchronous (e.g. a phase whose step draws
    more randomness from the clip). Stands in for the sampler in the resumable state (``state_dict``); while it
    is in use nothing else may draw from or rewind the sampler.
    """

    def __init__(self, sampler: ClipSampler, settings: ClipSettings, segment: Callable[[Clip], T],
                 prefetch_from: int | None = 0) -> None:
        self.sampler = sampler
        self.settings = settings
        self.segment = segment
        self.prefetch_from = prefetch_from
        self._pool: ThreadPoolExecutor | None = None
        self._pending: _Pending[T] | None = None

    def _compute(self, iteration: int) -> tuple[Clip, T]:
        clip = self.sampler.sample_clip(iteration, self.settings)
        return clip, self.segment(clip)

    def draw(self, iteration: int) -> Clip:
        """The clip alone, drawn now (for iterations before ``prefetch_from``)."""
        self._forget_pending()
        clip = self.sampler.sample_clip(iteration, self.settings)
        self._schedule(iteration + 1)
        return clip

    def get(self, iteration: int) -> tuple[Clip, T]:
        if self._pending is not None and self._pending.iteration == iteration:
            result = self._pending.future.result()
            self._pending = None
        else:
            self._forget_pending()
            result = self._compute(iteration)
        self._schedule(iteration + 1)
        return result

    def _forget_pending(self) -> None:
        """Wait for an early draw nobody asked for and rewind the sampler to before it."""
        if self._pending is not None:
            self._pending.future.result()
            self.sampler.load_state_dict(self._pending.sampler_state)
            self._pending = None

    def _schedule(self, iteration: int) -> None:
        if self.prefetch_from is None or iteration < self.prefetch_from:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segmenter-prefetch")
        state = self.sampler.state_dict()
        self._pending = _Pending(iteration, state, self._pool.submit(self._compute, iteration))

    def state_dict(self) -> dict:
        return self._pending.sampler_state if self._pending is not None else self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._forget_pending()
        self.sampler.load_state_dict(state)

    def close(self) -> None:
        """Drop an early draw (the sampler is left as if it never happened) and stop the thread."""
        self._forget_pending()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
