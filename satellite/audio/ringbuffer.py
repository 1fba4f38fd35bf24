"""A fixed-size ring of samples between an audio callback and a reader thread.

The writer (a PortAudio callback) copies into a preallocated numpy array with at most two slice
assignments and never waits for the reader: samples that do not fit are dropped and counted as
an overflow. The reader blocks, with a timeout, until a whole chunk is there. One lock guards
the two positions; it is held only for the copy.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt


class RingBuffer:
    """`capacity` samples of `dtype` (int16 for capture, float32 for playback)."""

    def __init__(self, capacity: int, dtype: npt.DTypeLike = np.int16) -> None:
        if capacity < 1:
            raise ValueError(f"ring buffer capacity {capacity} must be at least 1")
        self.array: npt.NDArray[Any] = np.zeros(capacity, dtype=dtype)
        """The preallocated storage; the same array for the buffer's whole life."""
        self.capacity = capacity
        self.overflows = 0
        """Writes that did not fit whole (their excess was dropped)."""
        self.dropped = 0
        """Samples dropped by overflows."""
        self._start = 0
        self._size = 0
        self._closed = False
        self._ready = threading.Condition(threading.Lock())

    def __len__(self) -> int:
        return self._size

    @property
    def space(self) -> int:
        """Samples that can be written without overflow."""
        return self.capacity - self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, samples: npt.NDArray[Any], keep_newest: bool = False) -> int:
        """Append `samples` (1-D); never blocks for the reader and allocates no sample storage.
        Returns how many were stored; the rest are dropped and counted. `keep_newest`: what
        does not fit makes room by dropping the oldest samples instead (counted the same), so
        that what is held stays contiguous with the newest: a queue whose reader is late
        keeps the last `capacity` samples, not the first."""
        count = int(samples.shape[0])
        with self._ready:
            if keep_newest and count > self.capacity - self._size:
                if count > self.capacity:
                    samples = samples[count - self.capacity :]
                    self.dropped += count - self.capacity
                    count = self.capacity
                old = count - (self.capacity - self._size)
                self._start = (self._start + old) % self.capacity
                self._size -= old
                self.overflows += 1
                self.dropped += old
            stored = min(count, self.capacity - self._size)
            if stored < count:
                self.overflows += 1
                self.dropped += count - stored
            if stored:
                end = (self._start + self._size) % self.capacity
                first = min(stored, self.capacity - end)
                self.array[end : end + first] = samples[:first]
                if stored > first:
                    self.array[: stored - first] = samples[first:stored]
                self._size += stored
                self._ready.notify()
        return stored

    def read_into(self, out: npt.NDArray[Any]) -> int:
        """Copy up to `len(out)` samples into `out` without waiting; returns how many."""
        with self._ready:
            return self._take(out)

    def _take(self, out: npt.NDArray[Any]) -> int:
        taken = min(int(out.shape[0]), self._size)
        if taken:
            first = min(taken, self.capacity - self._start)
            out[:first] = self.array[self._start : self._start + first]
            if taken > first:
                out[first:taken] = self.array[: taken - first]
            self._start = (self._start + taken) % self.capacity
            self._size -= taken
        return taken

    def read(self, count: int, timeout: float) -> npt.NDArray[Any] | None:
        """Wait up to `timeout` seconds for `count` samples and return them (a new array).
        None on timeout, or when the buffer is closed with fewer than `count` left."""
        if not 1 <= count <= self.capacity:
            raise ValueError(f"cannot read {count} samples from a ring of {self.capacity}")
        with self._ready:
            if not self._ready.wait_for(
                lambda: self._size >= count or self._closed, timeout=max(timeout, 0.0)
            ):
                return None
            if self._size < count:
                return None
            out = np.empty(count, dtype=self.array.dtype)
            self._take(out)
            return out

    def clear(self) -> None:
        """Forget what is buffered (the counters stay)."""
        with self._ready:
            self._start = self._size = 0

    def close(self) -> None:
        """Wake a waiting reader; later reads return what is left, then None."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def reopen(self) -> None:
        """Accept reads again after `close` (a restarted stream), emptied."""
        with self._ready:
            self._closed = False
            self._start = self._size = 0
