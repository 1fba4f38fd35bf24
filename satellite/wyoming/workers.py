"""A bounded pool of engine worker threads for the Wyoming services.

`WorkerPool(factory, workers, queue)` runs up to `workers` jobs at once, each in its own thread
with that thread's own engine state (`factory()` is called once per thread, on its first job:
chats and detokenizers are per worker, the loaded model behind them is shared). At most `queue`
more jobs wait; `submit` beyond that raises `PoolFull` at once, so a client is told instead of
left waiting.

A job is a function `work(engine, job)` run in a worker; it hands what it produces to the
event loop with `job.post(item)` (`satellite.handoff`, as the satellite's reply does) and looks
at `job.cancelled` before each step. The loop reads `async for item in job` until the work
returns; an exception in the work ends the stream with `JobFailed`. `job.cancel()` (the client
went away, the request timed out) stops the work before its next step, or before it starts when
it is still queued, so the worker is free again at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from satellite.handoff import Handoff

_LOG = logging.getLogger("satellite.wyoming.workers")

E = TypeVar("E")


class PoolFull(Exception):
    """Every worker is busy and the queue is full."""


@dataclass(frozen=True)
class JobFailed:
    """The last item of a job whose work raised."""

    error: str


class Job(Handoff[Any]):
    """One piece of work in the pool: items out (thread -> loop), cancel in."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_end: Callable[[], None] | None = None
    ) -> None:
        super().__init__(loop)
        self._on_end = on_end
        self.started = threading.Event()
        """Set when a worker takes the job (it waited in the queue until then)."""

    def _end(self) -> None:
        if self._on_end is not None:
            self._on_end()
        self.finish()


class WorkerPool(Generic[E]):
    """See the module docstring."""

    def __init__(
        self, factory: Callable[[], E], workers: int = 1, queue: int = 0, name: str = "service"
    ) -> None:
        if workers < 1 or queue < 0:
            raise ValueError("workers must be >= 1 and queue >= 0")
        self.factory = factory
        self.workers = workers
        self.queue = queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pending = 0
        self.completed = 0
        self.refused = 0

    @property
    def pending(self) -> int:
        """Jobs running or waiting."""
        return self._pending

    def check(self) -> None:
        """Raise PoolFull when `submit` would (to refuse a request before answering it)."""
        with self._lock:
            if self._pending >= self.workers + self.queue:
                self.refused += 1
                raise PoolFull(
                    f"the server is busy: {self.workers} request(s) running and "
                    f"{self.queue} waiting; try again later"
                )

    def submit(
        self, work: Callable[[E, Job], None], on_end: Callable[[], None] | None = None
    ) -> Job:
        """Queue `work`; raises PoolFull when `workers + queue` jobs are already in.
        `on_end` is called (in the worker, or wherever the job is dropped unrun) once the
        job is over, whether its work ran or not."""
        loop = asyncio.get_running_loop()
        self.check()
        with self._lock:
            self._pending += 1
        job = Job(loop, on_end)
        try:
            future = self._executor.submit(self._run, work, job)
        except RuntimeError:  # shut down
            self._done(None, job)
            raise PoolFull("the server is stopping") from None
        future.add_done_callback(lambda f: self._done(f, job))
        return job

    def _done(self, future: Future[None] | None, job: Job) -> None:
        if future is None or future.cancelled():  # never ran: end its stream here
            self._release(job)

    def _release(self, job: Job) -> None:
        """The job is over: its place is free before its stream ends (so a client that has
        its answer finds the pool free again)."""
        with self._lock:
            self._pending -= 1
            self.completed += 1
        job._end()

    def engine(self) -> E:
        """This worker thread's engine (made on first use)."""
        engine: E | None = getattr(self._local, "engine", None)
        if engine is None:
            engine = self.factory()
            self._local.engine = engine
        return engine

    def _run(self, work: Callable[[E, Job], None], job: Job) -> None:
        job.started.set()
        try:
            if not job.cancelled:
                work(self.engine(), job)
        except Exception as err:
            _LOG.debug("job failed", exc_info=True)
            job.post(JobFailed(str(err) or type(err).__name__))
        finally:
            self._release(job)

    def close(self) -> None:
        """Stop taking jobs; wait for those running (callers cancel them first)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
