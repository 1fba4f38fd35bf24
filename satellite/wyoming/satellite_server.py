"""The Wyoming satellite endpoint Home Assistant connects to (port 10700).

The server owns connections and liveness; what events mean is the daemon's business (it gets
them through `SatelliteEvents`). Home Assistant's Wyoming integration, as a client:

- connects, sends `run-satellite`, then `describe`, and a `ping` about 2 s after each `pong`;
  it gives up on a satellite that sends nothing for 5 s and reconnects 3 s later;
- on teardown or mute sends `pause-satellite`.

Here:

- any connection gets `describe` answered with `info` and `ping` with `pong`, also while
  another one is active (Home Assistant's config flow probes with a second connection);
- the connection that sent `run-satellite` last is the active one: its other events go to the
  daemon, and `send` writes to it; a new `run-satellite` elsewhere takes over and the old
  connection is closed;
- the active connection counts as gone after `silence_timeout` (5 s) without an event (Home
  Assistant pings every ~2 s, so silence means it is gone), other connections after
  `idle_timeout` (10 s: Home Assistant's config flow asks `describe` and leaves, and its
  satellite connection sends `run-satellite` at once); the satellite goes on working and takes
  the next connection;
- at most `MAX_CONNECTIONS` are open: one more closes the oldest connection that is not the
  active one (`error` code `busy`), so idle sockets can neither lock Home Assistant out nor
  take its place, nor run the process out of file descriptors;
- writes go through a bounded outbox per connection, so a slow peer never blocks the audio
  path: when the outbox is full the event is dropped and counted;
- a malformed event gets one `error` (code `protocol` or `bad-event`) and one log line (the
  first `LOGGED_MALFORMED` a connection, then a count); the connection goes on where the
  event could be read whole (`framing.ProtocolError.in_step`, or a bad value in a well-formed
  event) and is closed where the stream cannot be trusted;
- after each event from the active connection the server waits for the daemon's `room()`
  before reading the next: audio Home Assistant streams to be played is read no faster than
  it plays, with 10 s ahead (`satellite.wyoming.incoming`), so a fast sender is held back by
  TCP. Home Assistant's events behind that audio (its pings among them) wait too, and it drops
  a satellite it has heard nothing from for 5 s, so while the server waits it sends a `ping`
  every `KEEPALIVE_SECONDS` (Home Assistant answers pings, and any event counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import Protocol

from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.satellite import RunSatellite

from satellite.errors import UserError
from satellite.wyoming.framing import (
    MAX_HEADER_BYTES,
    ProtocolError,
    read_event,
    stop_serving,
    write_event,
)

_LOG = logging.getLogger("satellite.wyoming")

SILENCE_TIMEOUT = 5.0
IDLE_TIMEOUT = 10.0
MAX_CONNECTIONS = 16
KEEPALIVE_SECONDS = 2.0
"""While the daemon has no room, a `ping` to the active connection this often."""
LOGGED_MALFORMED = 10
"""Malformed events logged one by one per connection; the rest are counted."""
OUTBOX_EVENTS = 512
"""Events a connection may have waiting to be written (10 s of 20 ms audio chunks)."""


class WyomingServerError(UserError):
    """The server cannot listen (port taken, address not on this machine)."""


class SatelliteEvents(Protocol):
    """What the daemon hears from the server."""

    def on_connected(self) -> None:
        """A connection sent `run-satellite` and is now the active one."""

    def on_event(self, event: Event) -> None:
        """An event from the active connection (not describe, ping or pong)."""

    def on_disconnected(self, reason: str) -> None:
        """The active connection is gone (closed, silent too long, or replaced)."""

    async def room(self) -> None:
        """Return once the daemon can take the next event (audio it plays is taken no
        faster than it plays)."""


class _Connection:
    def __init__(
        self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.number = number
        self.reader = reader
        self.writer = writer
        self.outbox: asyncio.Queue[Event | None] = asyncio.Queue(OUTBOX_EVENTS)
        self.dropped = 0
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.closed = asyncio.Event()
        self.last_queued = time.monotonic()
        """When an event was last queued for this peer."""
        self.malformed = 0

    def refuse(self, text: str, code: str) -> None:
        """Answer a malformed event with one `error`, and log it (counted past a few)."""
        self.malformed += 1
        if self.malformed <= LOGGED_MALFORMED:
            _LOG.warning("connection %d (%s): %s", self.number, self.peer, text)
            if self.malformed == LOGGED_MALFORMED:
                _LOG.warning("connection %d (%s): further malformed events are counted, not "
                             "logged", self.number, self.peer)  # fmt: skip
        self.queue(Error(text=text[:500], code=code).event())

    def queue(self, event: Event) -> bool:
        try:
            self.outbox.put_nowait(event)
            self.last_queued = time.monotonic()
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                _LOG.warning(
                    "connection %d (%s) is not reading; %d events dropped",
                    self.number,
                    self.peer,
                    self.dropped,
                )
            return False
        return True

    async def write_loop(self) -> None:
        try:
            while (event := await self.outbox.get()) is not None:
                await write_event(event, self.writer)
        except (ConnectionError, OSError) as err:
            _LOG.debug("connection %d: write failed: %s", self.number, err)
        finally:
            self.closed.set()
            self.writer.close()


class SatelliteServer:
    """See the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        info: Callable[[], Info],
        events: SatelliteEvents,
        *,
        silence_timeout: float = SILENCE_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.info = info
        self.events = events
        self.silence_timeout = silence_timeout
        self.idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._active: _Connection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)
        self._open: dict[int, _Connection] = {}
        """Connections open now, oldest first."""
        self.evicted = 0
        """Connections closed to make room for a new one."""
        self.last_event: float | None = None
        """`time.monotonic()` of the last event from the active connection."""

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._open)

    @property
    def connected(self) -> bool:
        """Home Assistant is connected (a live connection sent `run-satellite`)."""
        return self._active is not None

    @property
    def bound_port(self) -> int:
        """The port listened on (the real one when `port` was 0)."""
        if self._server is None or not self._server.sockets:
            return self.port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, limit=MAX_HEADER_BYTES
            )
        except OSError as err:
            raise WyomingServerError(
                f"wyoming.satellite_port: cannot listen on {self.host}:{self.port}: "
                f"{err.strerror or err}"
            ) from None
        _LOG.info("Wyoming satellite listening on %s:%d", self.host, self.bound_port)

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        await stop_serving(self._server, self._tasks)
        self._server = None

    def send(self, event: Event) -> bool:
        """Queue `event` for Home Assistant; False when none is connected or it was dropped."""
        if self._active is None:
            return False
        return self._active.queue(event)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _Connection(next(self._numbers), reader, writer)
        self._open[conn.number] = conn
        if len(self._open) > MAX_CONNECTIONS:
            self._evict(conn)
        _LOG.debug("connection %d from %s", conn.number, conn.peer)
        writing = asyncio.create_task(conn.write_loop())
        reason = "closed by the peer"
        try:
            reason = await self._read_loop(conn)
        except asyncio.CancelledError:
            reason = "the satellite is stopping"
            raise
        finally:
            self._open.pop(conn.number, None)
            self._tasks.discard(task)
            with contextlib.suppress(asyncio.QueueFull):
                conn.outbox.put_nowait(None)
            closing = asyncio.ensure_future(conn.closed.wait())
            await asyncio.wait([closing], timeout=1.0)  # let the outbox flush
            closing.cancel()
            writing.cancel()
            writer.close()
            if self._active is conn:
                self._active = None
                self.last_event = None
                _LOG.info("Home Assistant disconnected (%s)", reason)
                self.events.on_disconnected(reason)
            else:
                _LOG.debug("connection %d closed (%s)", conn.number, reason)
            if conn.malformed > LOGGED_MALFORMED:
                _LOG.info("connection %d (%s): %d malformed events in all", conn.number,
                          conn.peer, conn.malformed)  # fmt: skip

    def _evict(self, newcomer: _Connection) -> None:
        """Close the oldest connection that is neither the active one nor `newcomer`."""
        victim = next(
            (c for c in self._open.values() if c is not self._active and c is not newcomer), None
        )
        if victim is None:
            return
        self.evicted += 1
        if self.evicted == 1 or self.evicted % 100 == 0:
            _LOG.warning("over %d connections: closed the oldest idle one (%d so far)",
                         MAX_CONNECTIONS, self.evicted)  # fmt: skip
        self._open.pop(victim.number, None)
        victim.queue(Error(text=f"too many connections (over {MAX_CONNECTIONS}); closing the "
                           "oldest idle one", code="busy").event())  # fmt: skip
        try:
            victim.outbox.put_nowait(None)  # the write loop sends the error, then closes
        except asyncio.QueueFull:
            victim.writer.close()  # not reading what it is sent: closed without the error

    async def _read_loop(self, conn: _Connection) -> str:
        while not conn.closed.is_set():
            timeout = self.silence_timeout if self._active is conn else self.idle_timeout
            try:
                async with asyncio.timeout(timeout):
                    event = await read_event(conn.reader)
            except TimeoutError:
                return f"nothing received for {timeout:g} s"
            except ProtocolError as err:
                if err.in_step:
                    conn.refuse(f"malformed event: {err}", "protocol")
                    continue
                conn.refuse(f"malformed event: {err}; closing the connection", "protocol")
                return f"protocol error: {err}"
            except (ConnectionError, OSError) as err:
                return f"connection error: {err}"
            if event is None:
                return "closed by the peer"
            if self._active is conn:
                self.last_event = time.monotonic()
            self._dispatch(conn, event)
            if self._active is conn:
                await self._wait_for_room(conn)
        return "closed"

    async def _wait_for_room(self, conn: _Connection) -> None:
        """Until the daemon has room; meanwhile the connection hears from the satellite at
        least every KEEPALIVE_SECONDS (a `ping`), however many short waits it takes."""
        waiting = asyncio.ensure_future(self.events.room())
        try:
            for _ in range(1_000_000):  # bounded: the daemon's stream ends within its limits
                quiet = time.monotonic() - conn.last_queued
                if quiet >= KEEPALIVE_SECONDS:
                    conn.queue(Ping().event())
                    quiet = 0.0
                done, _ = await asyncio.wait([waiting], timeout=KEEPALIVE_SECONDS - quiet)
                if done or conn.closed.is_set() or self._active is not conn:
                    return
        finally:
            waiting.cancel()

    def _dispatch(self, conn: _Connection, event: Event) -> None:
        try:
            self._handle(conn, event)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            what = f"{type(err).__name__}: {err}" if isinstance(err, KeyError) else str(err)
            conn.refuse(f"malformed {event.type[:40]} event: {what[:200]}", "bad-event")
        except Exception as err:  # a fault of the satellite's, not the peer's: keep serving
            _LOG.exception("connection %d: %s event failed", conn.number, event.type[:40])
            conn.queue(Error(text=f"{event.type[:40]} failed: {err}"[:500], code="failed").event())

    def _handle(self, conn: _Connection, event: Event) -> None:
        if Describe.is_type(event.type):
            conn.queue(self.info().event())
        elif Ping.is_type(event.type):
            conn.queue(Pong(text=Ping.from_event(event).text).event())
        elif Pong.is_type(event.type):
            pass
        elif RunSatellite.is_type(event.type):
            self._activate(conn)
        elif self._active is conn:
            self.events.on_event(event)
        else:
            _LOG.debug(
                "connection %d: %s ignored (not the active connection)", conn.number, event.type
            )

    def _activate(self, conn: _Connection) -> None:
        old = self._active
        if old is conn:
            self.events.on_event(RunSatellite().event())
            return
        self._active = conn
        self.last_event = time.monotonic()
        if old is not None:
            _LOG.info("Home Assistant reconnected from %s; closing the old connection", conn.peer)
            old.writer.close()
            self.events.on_disconnected("replaced by a new connection")
        _LOG.info("Home Assistant connected from %s", conn.peer)
        self.events.on_connected()
