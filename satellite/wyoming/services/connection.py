"""One client connection to the services (as wyoming's `AsyncEventHandler` is one per
connection): it reads events, answers `describe` and `ping`, hands each request to its kind
(`SpeechToText`, `TextToSpeech`, `Conversing`) and runs one request at a time; it answers bad
input with `error` and decides when the connection ends (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from satellite.wyoming.framing import ProtocolError, read_event, write_event
from satellite.wyoming.services.asr import SpeechToText
from satellite.wyoming.services.common import BadRequest, Engine, Gone
from satellite.wyoming.services.conversation import Conversations, Conversing
from satellite.wyoming.services.tts import TextToSpeech
from satellite.wyoming.workers import PoolFull

_LOG = logging.getLogger("satellite.wyoming.services")


class Connection:
    """See the module docstring. `serve()` until the connection ends; it returns why."""

    def __init__(
        self,
        number: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        engine: Engine,
        conversations: Conversations,
        info: Event,
        on_error: Callable[[], None],
    ) -> None:
        self.number = number
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.engine = engine
        self.timeout = engine.config.client_timeout
        self.info = info
        self.on_error = on_error
        """Counts an `error` sent (the server's total)."""
        self.task: asyncio.Task[None] | None = None
        """The request running."""
        self.asr = SpeechToText(self, engine)
        self.tts = TextToSpeech(self, engine)
        self.conversing = Conversing(self, engine, conversations)
        self._write = asyncio.Lock()

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def in_request(self) -> bool:
        """A request has begun (its audio or text is coming in) or is running."""
        return self.busy or self.asr.utterance is not None or self.tts.stream is not None

    async def send(self, event: Event) -> None:
        """Write `event`; raises Gone when the client does not take it within the client
        timeout."""
        async with self._write:
            try:
                async with asyncio.timeout(self.timeout):
                    await write_event(event, self.writer)
            except (TimeoutError, ConnectionError, OSError, RuntimeError) as err:
                self.writer.close()
                raise Gone(str(err) or type(err).__name__) from None

    async def error(self, text: str, code: str = "bad-request") -> None:
        """Send an `error` (a client that is gone is let go)."""
        self.on_error()
        _LOG.info("services: connection %d: error: %s", self.number, text)
        with contextlib.suppress(Gone):
            await self.send(Error(text=text, code=code).event())

    def start(self, request: Coroutine[Any, Any, None], what: str) -> None:
        if self.busy:
            request.close()  # never started: closed, not left for the collector to warn about
            raise BadRequest(
                f"{what}: a request is already in progress on this connection; send one request "
                "at a time (or open another connection)",
                "busy",
            )
        self.task = asyncio.create_task(self._guard(request))

    async def stop(self) -> None:
        """Cancel the request running, if any, and wait for it."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _guard(self, request: Awaitable[None]) -> None:
        try:
            await request
        except Gone:
            self.writer.close()
        except BadRequest as err:
            await self.error(str(err), err.code)
            self.writer.close()
        except PoolFull as err:
            await self.error(str(err), "busy")
            self.writer.close()
        except Exception as err:
            _LOG.exception("services: connection %d: request failed", self.number)
            await self.error(f"the request failed: {err}", "failed")
            self.writer.close()

    # -- reading ----------------------------------------------------------------------------

    async def serve(self) -> str:
        """Read and handle events until the connection ends; why it ended."""
        reading: asyncio.Future[Event | None] = asyncio.ensure_future(read_event(self.reader))
        idle_since = time.monotonic()
        try:
            for _ in itertools.count():
                waits: set[asyncio.Future[Any]] = {reading}
                timeout: float | None = None
                if self.busy:
                    assert self.task is not None
                    waits.add(self.task)
                else:
                    timeout = max(0.0, self.timeout - (time.monotonic() - idle_since))
                done, _ = await asyncio.wait(
                    waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    await self.error(f"nothing received for {self.timeout:g} s", "timeout")
                    return "idle"
                if reading not in done:  # the request finished
                    idle_since = time.monotonic()
                    continue
                try:
                    event = reading.result()
                except ProtocolError as err:
                    _LOG.warning("services: connection %d (%s): %s", self.number, self.peer, err)
                    await self.error(f"protocol error: {err}", "protocol")
                    if err.in_step and not self.in_request:
                        reading = asyncio.ensure_future(read_event(self.reader))
                        continue
                    return f"protocol error: {err}"
                except (ConnectionError, OSError) as err:
                    return f"connection error: {err}"
                if event is None:
                    return "closed by the client"
                idle_since = time.monotonic()
                reading = asyncio.ensure_future(read_event(self.reader))
                try:
                    await self.handle_event(event)
                except BadRequest as err:
                    await self.error(str(err), err.code)
                    if err.code != "unknown-event" or self.in_request:
                        return f"request refused: {err}"
                except (KeyError, TypeError, ValueError, AttributeError) as err:
                    await self.error(
                        f"malformed {event.type[:40]} event: {type(err).__name__}: {err}"
                    )
                    if self.in_request:
                        return "malformed event during a request"
            return "closed"  # pragma: no cover - the loop above only ends by returning
        finally:
            reading.cancel()
            with contextlib.suppress(BaseException):
                await reading

    async def handle_event(self, event: Event) -> None:
        kind = event.type
        if Describe.is_type(kind):
            await self.send(self.info)
        elif Ping.is_type(kind):
            await self.send(Pong(text=Ping.from_event(event).text).event())
        elif Pong.is_type(kind):
            pass
        elif Transcribe.is_type(kind):
            self.asr.on_transcribe(Transcribe.from_event(event))
        elif AudioStart.is_type(kind):
            self.asr.on_audio_start(event)
        elif AudioChunk.is_type(kind):
            self.asr.on_audio_chunk(event)
        elif AudioStop.is_type(kind):
            self.asr.on_audio_stop()
        elif Synthesize.is_type(kind):
            self.tts.on_synthesize(event)
        elif SynthesizeStart.is_type(kind):
            self.tts.on_synthesize_start(event)
        elif SynthesizeChunk.is_type(kind):
            self.tts.on_synthesize_chunk(event)
        elif SynthesizeStop.is_type(kind):
            self.tts.on_synthesize_stop()
        elif Transcript.is_type(kind):
            self.conversing.on_transcript(Transcript.from_event(event))
        else:
            raise BadRequest(
                f"unknown event type {kind!r}: this endpoint serves describe, ping, transcribe "
                "+ audio-start/chunk/stop, synthesize(-start/-chunk/-stop) and transcript",
                "unknown-event",
            )
