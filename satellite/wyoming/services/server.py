"""The services server (port 10701): it listens, announces itself with zeroconf, keeps at most
MAX_CONNECTIONS connections (`connection.Connection` each) and the model's worker pool shared
by them (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging

from satellite.engine.model import Model
from satellite.engine.template import VOICES, Tokens
from satellite.safety.policy import Policy
from satellite.settings import Settings
from satellite.wyoming.announce import Announcer
from satellite.wyoming.framing import MAX_HEADER_BYTES, stop_serving
from satellite.wyoming.satellite_server import WyomingServerError
from satellite.wyoming.services.common import Engine, Gone, ServicesConfig
from satellite.wyoming.services.connection import Connection
from satellite.wyoming.services.conversation import Conversations
from satellite.wyoming.services.info import services_info
from satellite.wyoming.speech import ServiceEngine
from satellite.wyoming.workers import JobFailed, WorkerPool

_LOG = logging.getLogger("satellite.wyoming.services")

MAX_CONNECTIONS = 64
"""Connections at once. One more closes the oldest connection without a request in progress
(`error` code `busy`), so idle sockets never lock a new request out; when every one has a
request, the new connection gets the `error` instead."""


class ServicesServer:
    """See the module docstring."""

    def __init__(self, model: Model, tokens: Tokens, config: ServicesConfig) -> None:
        if config.voice not in VOICES:
            raise ValueError(f"voice {config.voice!r} is not one of {', '.join(VOICES)}")
        self.model = model
        self.tokens = tokens
        self.config = config
        self.pool: WorkerPool[ServiceEngine] = WorkerPool(
            lambda: ServiceEngine(model, tokens, config.limits),
            config.workers,
            config.queue,
            name="services",
        )
        self.engine = Engine(config, self.pool)
        self.conversations = Conversations(config.conversation_timeout)
        self.info = services_info(model.manifest.name, home_control=config.home_control)
        self._info_event = self.info.event()
        self._server: asyncio.Server | None = None
        self._connections: dict[int, Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)
        self.announcer: Announcer | None = None
        self.errors = 0
        """`error` events sent."""

    @property
    def connections(self) -> int:
        return len(self._connections)

    @property
    def sample_rate(self) -> int:
        """Of the generated audio (the detokenizer's)."""
        return self.engine.sample_rate

    @property
    def bound_port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self.config.port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Open the sessions in a worker (so they open once, not in several at the same time),
        listen, announce."""
        warm = self.pool.submit(
            lambda engine, job: job.post((engine.sample_rate, engine.asr.encoder.mel))
        )
        async for item in warm:
            if isinstance(item, JobFailed):
                raise WyomingServerError(f"Wyoming services: the model cannot run: {item.error}")
            self.engine.sample_rate, self.engine.mel = item
        try:
            self._server = await asyncio.start_server(
                self._serve, self.config.host, self.config.port, limit=MAX_HEADER_BYTES
            )
        except OSError as err:
            await asyncio.to_thread(self.pool.close)
            raise WyomingServerError(
                f"wyoming.services_port: cannot listen on {self.config.host}:{self.config.port}: "
                f"{err.strerror or err}"
            ) from None
        _LOG.info(
            "Wyoming services (stt, tts, conversation) listening on %s:%d with %d worker(s)",
            self.config.host,
            self.bound_port,
            self.config.workers,
        )
        if self.config.zeroconf_name:
            self.announcer = Announcer(self.config.zeroconf_name, self.bound_port, self.config.host)
            await self.announcer.start()

    async def stop(self) -> None:
        """Stop announcing and listening, close every connection (cancelling their jobs), and
        wait for the workers."""
        if self.announcer is not None:
            with contextlib.suppress(Exception):
                await self.announcer.stop()
            self.announcer = None
        await stop_serving(self._server, self._tasks)
        self._server = None
        await asyncio.to_thread(self.pool.close)

    def _count_error(self) -> None:
        self.errors += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        connection = Connection(
            next(self._numbers),
            reader,
            writer,
            self.engine,
            self.conversations,
            self._info_event,
            self._count_error,
        )
        self._connections[connection.number] = connection
        reason = "closed by the client"
        try:
            if len(self._connections) > MAX_CONNECTIONS:
                idle = next((c for c in self._connections.values()
                             if c is not connection and not c.in_request), None)  # fmt: skip
                if idle is None:
                    await connection.error(f"too many connections (over {MAX_CONNECTIONS})", "busy")
                    reason = "too many connections"
                    return
                self._connections.pop(idle.number, None)
                await idle.error(f"too many connections (over {MAX_CONNECTIONS}); "
                                 "closing the oldest idle one", "busy")  # fmt: skip
                idle.writer.close()
            _LOG.debug("services: connection %d from %s", connection.number, connection.peer)
            reason = await connection.serve()
        except Gone as err:
            reason = f"the client stopped reading ({err})"
        except asyncio.CancelledError:  # `stop`: ends here (asyncio's stream callback would
            reason = "the server is stopping"  # log a cancelled connection task as an error)
        finally:
            self._tasks.discard(task)
            self._connections.pop(connection.number, None)
            await connection.stop()
            writer.close()
            _LOG.debug("services: connection %d closed (%s)", connection.number, reason)


async def start_services(
    settings: Settings,
    model: Model,
    tokens: Tokens,
    *,
    home_control: bool = False,
    policy: Policy | None = None,
) -> ServicesServer | None:
    """The daemon's hook: the services on `model` started when `wyoming.services_enabled`,
    else None; `policy`: the daemon's safety rules (else the settings' own)."""
    if not settings.wyoming.services_enabled:
        return None
    config = ServicesConfig.from_settings(settings, home_control, policy)
    server = ServicesServer(model, tokens, config)
    await server.start()
    return server
