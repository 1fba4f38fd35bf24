"""Items from a worker thread to the event loop, and a cancel flag back: the one handoff the
engine's threads use (the satellite's reply, `satellite.reply`; the Wyoming services' jobs,
`satellite.wyoming.workers`).

The worker `post`s what it makes (`call_soon_threadsafe`) and looks at `cancelled` before each
step; `finish` ends the stream. The loop reads `async for item in handoff` until then. Once the
loop is closed nobody is listening any more: a post then cancels the work instead of raising
in the worker.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Generic, TypeVar, cast

T = TypeVar("T")

_FINISHED = object()


class Handoff(Generic[T]):
    """See the module docstring."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """`loop`: the loop that reads the items (default: the running one)."""
        self._loop = loop or asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._cancel = threading.Event()
        self.finished = False
        """The reader has seen the end of the stream."""

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Stop the work before its next step (thread-safe, idempotent)."""
        self._cancel.set()

    def post(self, item: T) -> None:
        """From the worker: hand `item` to the loop."""
        self._put(item)

    def finish(self) -> None:
        """From the worker: the stream ends after what was posted."""
        self._put(_FINISHED)

    def _put(self, item: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._cancel.set()

    async def __aiter__(self) -> AsyncIterator[T]:
        while not self.finished:
            item = await self._queue.get()
            if item is _FINISHED:
                self.finished = True
                return
            yield cast(T, item)  # anything but the end marker was posted as a T
