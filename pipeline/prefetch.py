"""Read an iterator ahead on a background thread, with a stop that joins the thread.

Decoding (PyAV) and inference (PyTorch) both release the GIL, so the next frame batch decodes
while the model runs. The producer thread is the only thread that ever advances (or closes) the
wrapped iterator; :meth:`Prefetcher.close` tells it to stop and waits for it, so whoever owns
the resources behind the iterator (a PyAV container) may free them once ``close`` returns with
:attr:`Prefetcher.alive` false.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Generic, Iterable, Iterator, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_ITEM, _END, _ERROR = "item", "end", "error"
_POLL_S = 0.05  # how often a producer blocked on a full queue checks for a stop
_JOIN_POLL_S = 0.005


class Prefetcher(Generic[T]):
    """Iterate ``items`` in a background thread, ``depth`` items ahead (bounded memory).

    Exceptions of the producer are re-raised in the consumer. ``close()`` (also on garbage
    collection) stops the producer, closes the wrapped iterator in the producer's own thread and
    joins the thread; it is safe to call from any thread, any number of times.
    """

    def __init__(self, items: Iterable[T], depth: int = 2, name: str = "decode-prefetch") -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=_produce, args=(iter(items), self._queue, self._stop),
                                        name=name, daemon=True)
        self._thread.start()

    def __iter__(self) -> "Prefetcher[T]":
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value
        self._done = True
        self._thread.join()
        if kind == _ERROR:
            raise value
        raise StopIteration

    @property
    def alive(self) -> bool:
        """Whether the producer thread still runs (only after an interrupted ``close``)."""
        return self._thread.is_alive()

    def close(self, timeout: float | None = None) -> bool:
        """Stop the producer and join it; True when the thread has ended. With ``timeout``
        (seconds) give up waiting after that long (the thread keeps its stop request)."""
        self._done = True
        self._stop.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._thread.is_alive():
            try:  # drain, so a producer blocked on a full queue sees the stop
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=_JOIN_POLL_S)
            if deadline is not None and time.monotonic() >= deadline:
                break
        try:  # wake a consumer blocked in __next__ (close() called from another thread)
            self._queue.put_nowait((_END, None))
        except queue.Full:
            pass  # it gets that item, then sees the close
        return not self._thread.is_alive()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass


def _put(q: queue.Queue, stop: threading.Event, entry: tuple[str, Any]) -> bool:
    """Hand ``entry`` to the consumer unless stopped first; False when stopped."""
    while not stop.is_set():
        try:
            q.put(entry, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _produce(iterator: Iterator[Any], q: queue.Queue, stop: threading.Event) -> None:
    try:
        for item in iterator:
            if not _put(q, stop, (_ITEM, item)):
                return
            if stop.is_set():
                return
        _put(q, stop, (_END, None))
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer
        _put(q, stop, (_ERROR, exc))
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            try:
                close()  # a generator runs its finally blocks here, in the thread that ran it
            except Exception as exc:  # noqa: BLE001
                logger.debug("closing the prefetched iterator: %s", exc)


def prefetch(items: Iterable[T], depth: int = 2) -> Prefetcher[T]:
    """A :class:`Prefetcher` over ``items``, ``depth`` items ahead."""
    return Prefetcher(items, depth)
