"""The Wyoming services endpoint (port 10701): speech-to-text, text-to-speech and conversation
from the local model, for any Home Assistant voice pipeline.

It is a separate server from the satellite's (Home Assistant loads no STT/TTS from an endpoint
whose `info` has a satellite) with its own zeroconf name. Home Assistant, as a client, opens a
new connection per request and may `describe` first (5 s timeout). Per connection:

- `describe` -> `info`; `ping` -> `pong` (any time);
- ASR: `transcribe{language}`, `audio-start`, `audio-chunk`..., `audio-stop` -> `transcript-start`,
  a `transcript-chunk` per generated piece of text, `transcript-stop`, `transcript{text}`. Audio
  of any rate, width and channel count is converted to 16 kHz mono and turned into log-mel
  frames as it arrives (`StreamingLogMel`); the encoder attends over the whole utterance and
  the features are normalised over it, so the rest waits for `audio-stop`, which hands the
  request to a worker at once;
- TTS: `synthesize{text, voice{name}}` -> `audio-start`, an `audio-chunk` per generated frame
  (80 ms), `audio-stop`. Streaming: `synthesize-start`, `synthesize-chunk`... (each complete
  sentence is spoken as soon as it is there, `audio-start/chunk/stop` per sentence), the whole
  text again in `synthesize` (Home Assistant's backward-compatible copy: ignored),
  `synthesize-stop` -> the rest, then `synthesize-stopped`. 16-bit mono at 24 kHz, or at the
  rate a request names in an extra `rate` field of its data;
- conversation: `transcript{text, context}` -> `handled{text, context}` (or `not-handled`);
  `context.conversation_id` keeps a multi-turn conversation with the model.

Requests run in a `WorkerPool` (`workers` threads sharing the one loaded model, a bounded
queue; a full queue is answered with `error` at once). A request has `request_timeout` seconds
(waiting included); a client that sends nothing for `client_timeout` (while no request of its
own runs) or does not take what is written for that long is disconnected. A client that goes
away mid-request has its job cancelled before the model's next step.

Bad input is answered with a Wyoming `error` whose text names the problem. A request that
ends in an `error` (refused, failed, timed out, the queue full) also closes its connection
once the `error` is written: Home Assistant's STT and TTS clients ignore `error` events and
wait for a transcript, audio or the connection's end (`../shared/FINDINGS.md` §2), so a
connection left open stalled its pipeline for 30 s. A malformed event that could be read
whole (bad JSON data, a missing or wrongly typed field) outside a request gets its `error`
and the connection goes on; one that leaves the stream untrustworthy (framing) closes it.
Nothing a client sends stops the server or touches other connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
)

from satellite.audio.convert import (
    SUPPORTED_WIDTHS,
    AudioFormatError,
    StreamResampler,
    float_to_pcm16,
    pcm_to_float,
)
from satellite.engine.mel import LogMel, StreamingLogMel
from satellite.engine.model import Model
from satellite.engine.template import VOICES, Tokens, control_token_in
from satellite.engine.textstream import printable
from satellite.settings import Settings
from satellite.wyoming.announce import Announcer
from satellite.wyoming.framing import (
    MAX_HEADER_BYTES,
    ProtocolError,
    read_event,
    stop_serving,
    write_event,
)
from satellite.wyoming.satellite_server import WyomingServerError
from satellite.wyoming.sentences import pieces, split_complete
from satellite.wyoming.services_info import services_info
from satellite.wyoming.speech import (
    LANGUAGES,
    AudioBlock,
    Conversation,
    Finished,
    Limits,
    ServiceEngine,
    TextPiece,
    language_ok,
)
from satellite.wyoming.workers import Job, JobFailed, PoolFull, WorkerPool

_LOG = logging.getLogger("satellite.wyoming.services")

MIN_AUDIO_SECONDS = 0.1
MAX_CONNECTIONS = 64
"""Connections at once. One more closes the oldest connection without a request in progress
(`error` code `busy`), so idle sockets never lock a new request out; when every one has a
request, the new connection gets the `error` instead."""
MAX_CONVERSATIONS = 8
"""Conversations kept at once (each holds its decoder cache: about 25 kB per position at
full size); the least recently used idle one is dropped for a new one."""
MIN_RATE, MAX_RATE = 1000, 384000
MAX_CHANNELS = 16


class _Gone(Exception):
    """The client cannot be written to any more."""


class BadRequest(Exception):
    """A request the services refuse; the message is sent as the `error` text."""

    def __init__(self, text: str, code: str = "bad-request", *, close: bool = False) -> None:
        super().__init__(text)
        self.code = code
        self.close = close
        """Close the connection after the error (the client has stalled)."""


_DEFAULTS = Settings()
"""The defaults of `ServicesConfig` are the config's own (`wyoming.services_*` and the rest),
read from the settings' dataclasses, never written out again here."""


@dataclass(frozen=True)
class ServicesConfig:
    """What the services server runs with: the `wyoming.services_*` settings and the few
    others it needs (`from_settings`), with the config's defaults."""

    host: str = _DEFAULTS.wyoming.services_host
    port: int = _DEFAULTS.wyoming.services_port
    workers: int = _DEFAULTS.wyoming.services_workers
    queue: int = _DEFAULTS.wyoming.services_queue
    request_timeout: float = _DEFAULTS.wyoming.services_request_timeout_seconds
    client_timeout: float = _DEFAULTS.wyoming.services_client_timeout_seconds
    max_text: int = _DEFAULTS.wyoming.services_max_text
    max_audio_seconds: float = _DEFAULTS.wyoming.services_max_audio_seconds
    voice: str = _DEFAULTS.model.voice
    """Voice of a `synthesize` that names none (`model.voice`)."""
    conversation_timeout: float = _DEFAULTS.satellite.conversation_timeout_seconds
    """A conversation idle this long is forgotten."""
    home_control: bool = False
    """Device control is configured (`supports_home_control`)."""
    zeroconf_name: str | None = None
    """Announce with this zeroconf instance name; None: no announcement."""
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_settings(cls, settings: Settings, home_control: bool = False) -> ServicesConfig:
        w = settings.wyoming
        name = None
        if w.zeroconf:
            name = (
                w.services_zeroconf_name or f"{w.zeroconf_name or settings.satellite.name} Services"
            )
        return cls(
            host=w.services_host,
            port=w.services_port,
            workers=w.services_workers,
            queue=w.services_queue,
            request_timeout=w.services_request_timeout_seconds,
            client_timeout=w.services_client_timeout_seconds,
            max_text=w.services_max_text,
            max_audio_seconds=w.services_max_audio_seconds,
            voice=settings.model.voice,
            conversation_timeout=settings.satellite.conversation_timeout_seconds,
            home_control=home_control,
            zeroconf_name=name,
            limits=Limits(speech_seconds=settings.safety.max_reply_seconds),
        )


@dataclass
class _AsrInput:
    language: str | None
    rate: int = 0
    width: int = 0
    channels: int = 0
    started: bool = False
    resampler: StreamResampler | None = None
    mel: StreamingLogMel | None = None
    """The utterance's log-mel, computed as the audio comes in."""
    seconds: float = 0.0


@dataclass
class _TtsStream:
    voice: str
    rate: int
    buffer: str = ""
    characters: int = 0
    sentences: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    stopped: bool = False


class _Client:
    def __init__(
        self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.number = number
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.task: asyncio.Task[None] | None = None
        self.asr: _AsrInput | None = None
        self.tts: _TtsStream | None = None
        self._write = asyncio.Lock()

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def in_request(self) -> bool:
        """A request has begun (its audio or text is coming in) or is running."""
        return self.busy or self.asr is not None or self.tts is not None

    async def send(self, event: Event, timeout: float) -> None:
        """Write `event`; raises _Gone when the client does not take it within `timeout`."""
        async with self._write:
            try:
                async with asyncio.timeout(timeout):
                    await write_event(event, self.writer)
            except (TimeoutError, ConnectionError, OSError, RuntimeError) as err:
                self.writer.close()
                raise _Gone(str(err) or type(err).__name__) from None


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
        self.info = services_info(model.manifest.name, home_control=config.home_control)
        self._info_event = self.info.event()
        self._server: asyncio.Server | None = None
        self._clients: dict[int, _Client] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)
        self._conversations: OrderedDict[str, Conversation] = OrderedDict()
        self.announcer: Announcer | None = None
        self.errors = 0
        """`error` events sent."""
        self.sample_rate = 24000
        """Of the generated audio (the detokenizer's)."""
        self.mel = LogMel()
        """The model's audio front end (its input rate and mel bands)."""

    @property
    def connections(self) -> int:
        return len(self._clients)

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
            self.sample_rate, self.mel = item
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

    # -- connections --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        client = _Client(next(self._numbers), reader, writer)
        self._clients[client.number] = client
        reason = "closed by the client"
        try:
            if len(self._clients) > MAX_CONNECTIONS:
                idle = next((c for c in self._clients.values()
                             if c is not client and not c.in_request), None)  # fmt: skip
                if idle is None:
                    await self._error(
                        client, f"too many connections (over {MAX_CONNECTIONS})", "busy"
                    )
                    reason = "too many connections"
                    return
                self._clients.pop(idle.number, None)
                await self._error(idle, f"too many connections (over {MAX_CONNECTIONS}); "
                                  "closing the oldest idle one", "busy")  # fmt: skip
                idle.writer.close()
            _LOG.debug("services: connection %d from %s", client.number, client.peer)
            reason = await self._read_loop(client)
        except _Gone as err:
            reason = f"the client stopped reading ({err})"
        except asyncio.CancelledError:  # `stop`: ends here (asyncio's stream callback would
            reason = "the server is stopping"  # log a cancelled connection task as an error)
        finally:
            self._tasks.discard(task)
            self._clients.pop(client.number, None)
            if client.task is not None and not client.task.done():
                client.task.cancel()
                await asyncio.gather(client.task, return_exceptions=True)
            writer.close()
            _LOG.debug("services: connection %d closed (%s)", client.number, reason)

    async def _read_loop(self, client: _Client) -> str:
        reading: asyncio.Future[Event | None] = asyncio.ensure_future(read_event(client.reader))
        idle_since = time.monotonic()
        try:
            for _ in itertools.count():
                waits: set[asyncio.Future[Any]] = {reading}
                timeout: float | None = None
                if client.busy:
                    assert client.task is not None
                    waits.add(client.task)
                else:
                    timeout = max(0.0, self.config.client_timeout - (time.monotonic() - idle_since))
                done, _ = await asyncio.wait(
                    waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    await self._error(
                        client, f"nothing received for {self.config.client_timeout:g} s", "timeout"
                    )
                    return "idle"
                if reading not in done:  # the request finished
                    idle_since = time.monotonic()
                    continue
                try:
                    event = reading.result()
                except ProtocolError as err:
                    _LOG.warning(
                        "services: connection %d (%s): %s", client.number, client.peer, err
                    )
                    await self._error(client, f"protocol error: {err}", "protocol")
                    if err.in_step and not client.in_request:
                        reading = asyncio.ensure_future(read_event(client.reader))
                        continue
                    return f"protocol error: {err}"
                except (ConnectionError, OSError) as err:
                    return f"connection error: {err}"
                if event is None:
                    return "closed by the client"
                idle_since = time.monotonic()
                reading = asyncio.ensure_future(read_event(client.reader))
                try:
                    await self._dispatch(client, event)
                except BadRequest as err:
                    await self._error(client, str(err), err.code)
                    if err.code != "unknown-event" or client.in_request:
                        return f"request refused: {err}"
                except (KeyError, TypeError, ValueError, AttributeError) as err:
                    await self._error(
                        client, f"malformed {event.type[:40]} event: {type(err).__name__}: {err}"
                    )
                    if client.in_request:
                        return "malformed event during a request"
            return "closed"  # pragma: no cover - the loop above only ends by returning
        finally:
            reading.cancel()
            with contextlib.suppress(BaseException):
                await reading

    async def _error(self, client: _Client, text: str, code: str = "bad-request") -> None:
        self.errors += 1
        _LOG.info("services: connection %d: error: %s", client.number, text)
        with contextlib.suppress(_Gone):
            await client.send(Error(text=text, code=code).event(), self.config.client_timeout)

    async def _send(self, client: _Client, event: Event) -> None:
        await client.send(event, self.config.client_timeout)

    def _start(self, client: _Client, request: Coroutine[Any, Any, None], what: str) -> None:
        if client.busy:
            request.close()  # never started: closed, not left for the collector to warn about
            raise BadRequest(
                f"{what}: a request is already in progress on this connection; send one request "
                "at a time (or open another connection)",
                "busy",
            )
        client.task = asyncio.create_task(self._guard(client, request))

    async def _guard(self, client: _Client, request: Awaitable[None]) -> None:
        try:
            await request
        except _Gone:
            client.writer.close()
        except BadRequest as err:
            await self._error(client, str(err), err.code)
            client.writer.close()
        except PoolFull as err:
            await self._error(client, str(err), "busy")
            client.writer.close()
        except Exception as err:
            _LOG.exception("services: connection %d: request failed", client.number)
            await self._error(client, f"the request failed: {err}", "failed")
            client.writer.close()

    # -- events -------------------------------------------------------------------------------

    async def _dispatch(self, client: _Client, event: Event) -> None:
        kind = event.type
        if Describe.is_type(kind):
            await self._send(client, self._info_event)
        elif Ping.is_type(kind):
            await self._send(client, Pong(text=Ping.from_event(event).text).event())
        elif Pong.is_type(kind):
            pass
        elif Transcribe.is_type(kind):
            self._on_transcribe(client, Transcribe.from_event(event))
        elif AudioStart.is_type(kind):
            self._on_audio_start(client, event)
        elif AudioChunk.is_type(kind):
            self._on_audio_chunk(client, event)
        elif AudioStop.is_type(kind):
            self._on_audio_stop(client)
        elif Synthesize.is_type(kind):
            self._on_synthesize(client, event)
        elif SynthesizeStart.is_type(kind):
            self._on_synthesize_start(client, event)
        elif SynthesizeChunk.is_type(kind):
            self._on_synthesize_chunk(client, SynthesizeChunk.from_event(event).text)
        elif SynthesizeStop.is_type(kind):
            self._on_synthesize_stop(client)
        elif Transcript.is_type(kind):
            self._on_transcript(client, Transcript.from_event(event))
        else:
            raise BadRequest(
                f"unknown event type {kind!r}: this endpoint serves describe, ping, transcribe "
                "+ audio-start/chunk/stop, synthesize(-start/-chunk/-stop) and transcript",
                "unknown-event",
            )

    # ASR

    def _on_transcribe(self, client: _Client, request: Transcribe) -> None:
        if client.busy or client.asr is not None:
            raise BadRequest("transcribe: a request is already in progress on this connection")
        if not language_ok(request.language):
            raise BadRequest(
                f"transcribe: language {request.language!r} is not supported; the model "
                f"transcribes {', '.join(LANGUAGES)}",
                "unsupported-language",
            )
        client.asr = _AsrInput(request.language)

    def _on_audio_start(self, client: _Client, event: Event) -> None:
        if client.asr is None:
            if client.busy:
                raise BadRequest("audio-start: a request is already in progress")
            client.asr = _AsrInput(None)  # audio without `transcribe`: the default language
        asr = client.asr
        if asr.started:
            raise BadRequest("audio-start: audio has already started; send audio-stop first")
        start = AudioStart.from_event(event)
        try:
            self._check_format(start.rate, start.width, start.channels)
        except BadRequest:
            client.asr = None
            raise
        asr.rate, asr.width, asr.channels = start.rate, start.width, start.channels
        asr.resampler = StreamResampler(start.rate, self.mel.settings.sample_rate)
        asr.mel = StreamingLogMel(self.mel)
        asr.started = True

    @staticmethod
    def _check_format(rate: Any, width: Any, channels: Any) -> None:
        for key, value, low, high in (
            ("rate", rate, MIN_RATE, MAX_RATE),
            ("width", width, 1, 4),
            ("channels", channels, 1, MAX_CHANNELS),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise BadRequest(f"audio {key} {value!r} is not supported; expected {low}..{high}")
        if width not in SUPPORTED_WIDTHS:  # pragma: no cover - 1..4 are all supported
            raise BadRequest(f"audio width {width} is not supported")

    def _on_audio_chunk(self, client: _Client, event: Event) -> None:
        asr = client.asr
        if asr is None or asr.resampler is None or asr.mel is None:
            raise BadRequest("audio-chunk: no audio-start before it")
        chunk = AudioChunk.from_event(event)
        if (chunk.rate, chunk.width, chunk.channels) != (asr.rate, asr.width, asr.channels):
            client.asr = None
            raise BadRequest(
                f"audio-chunk: format {chunk.rate} Hz/{chunk.width} bytes/{chunk.channels} ch "
                f"differs from audio-start's {asr.rate}/{asr.width}/{asr.channels}; "
                "the transcription is abandoned"
            )
        try:
            samples = pcm_to_float(chunk.audio or b"", asr.width, asr.channels)
        except AudioFormatError as err:
            client.asr = None
            raise BadRequest(f"audio-chunk: {err}; the transcription is abandoned") from None
        asr.seconds += samples.size / asr.rate
        if asr.seconds > self.config.max_audio_seconds:
            client.asr = None
            raise BadRequest(
                f"audio is longer than the {self.config.max_audio_seconds:g} s limit; "
                "the transcription is abandoned",
                "too-long",
            )
        asr.mel.push(np.clip(asr.resampler.process(samples), -1.0, 1.0))

    def _on_audio_stop(self, client: _Client) -> None:
        asr, client.asr = client.asr, None
        if asr is None or asr.resampler is None or asr.mel is None:
            raise BadRequest("audio-stop: no audio-start before it")
        asr.mel.push(np.clip(asr.resampler.process(np.zeros(0, np.float32), last=True), -1, 1))
        rate = self.mel.settings.sample_rate
        if asr.mel.samples == 0:
            raise BadRequest("no audio: the audio stream was empty (0 s)", "no-audio")
        if asr.mel.samples < MIN_AUDIO_SECONDS * rate:
            raise BadRequest(
                f"audio too short: {asr.mel.samples / rate:.3f} s; at least "
                f"{MIN_AUDIO_SECONDS:g} s is needed",
                "no-audio",
            )
        features = asr.mel.finish()
        self._start(client, self._transcribe(client, features, asr.language), "audio-stop")

    async def _transcribe(
        self, client: _Client, features: np.ndarray, language: str | None
    ) -> None:
        # the reply starts at once; then the worker (which competes for the GIL) gets the job
        self.pool.check()
        await self._send(client, TranscriptStart(language=language).event())
        job = self.pool.submit(lambda engine, job: engine.transcribe(features, job))
        text = ""
        try:
            async with self._deadline(job):
                async for item in job:
                    if isinstance(item, TextPiece):
                        piece = printable(item.text, one_line=False).replace("\n", " ")
                        await self._send(client, TranscriptChunk(text=piece).event())
                    elif isinstance(item, Finished):
                        text = item.text
                    elif isinstance(item, JobFailed):
                        raise BadRequest(f"transcription failed: {item.error}", "failed")
            await self._send(client, TranscriptStop().event())
            await self._send(client, Transcript(text=text, language=language).event())
        finally:
            job.cancel()

    @contextlib.asynccontextmanager
    async def _deadline(self, job: Job) -> Any:
        try:
            async with asyncio.timeout(self.config.request_timeout):
                yield
        except TimeoutError:
            job.cancel()
            raise BadRequest(
                f"the request took longer than {self.config.request_timeout:g} s "
                "(services_request_timeout_seconds) and was stopped",
                "timeout",
            ) from None

    # TTS

    def _voice(self, data: dict[str, Any], what: str) -> tuple[str, int]:
        voice = data.get("voice") or {}
        if not isinstance(voice, dict):
            raise BadRequest(f'{what}: voice must be an object like {{"name": "us_female"}}')
        name, speaker, language = voice.get("name"), voice.get("speaker"), voice.get("language")
        if name is not None:
            key = str(name).strip().lower().replace("-", "_")
            if key not in VOICES:
                raise BadRequest(
                    f"{what}: unknown voice {name!r}; voices: {', '.join(VOICES)}", "unknown-voice"
                )
            if speaker not in (None, ""):
                raise BadRequest(f"{what}: voice {name!r} has no speakers (got {speaker!r})")
        else:
            if not language_ok(language if language is None else str(language)):
                raise BadRequest(
                    f"{what}: language {language!r} is not supported; voices speak "
                    f"{', '.join(LANGUAGES)}",
                    "unsupported-language",
                )
            key = self.config.voice
        rate = data.get("rate", self.sample_rate)
        if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 192000:
            raise BadRequest(f"{what}: rate {rate!r} is not supported; expected 8000..192000 Hz")
        return key, rate

    def _check_text(self, text: Any, what: str) -> str:
        if not isinstance(text, str):
            raise BadRequest(f"{what}: text must be a string")
        if not text.strip():
            raise BadRequest(f"{what}: the text is empty", "empty-text")
        if len(text) > self.config.max_text:
            raise BadRequest(
                f"{what}: the text is {len(text)} characters long; the limit is "
                f"{self.config.max_text} (services_max_text)",
                "too-long",
            )
        special = control_token_in(text)
        if special is not None:
            raise BadRequest(f"{what}: the text holds the model's control token {special}")
        return text.strip()

    def _on_synthesize(self, client: _Client, event: Event) -> None:
        if client.tts is not None:  # Home Assistant's copy of the streamed text
            _LOG.debug("services: connection %d: synthesize inside a stream ignored", client.number)
            return
        text = self._check_text(event.data.get("text"), "synthesize")
        voice, rate = self._voice(event.data, "synthesize")
        self._start(client, self._speak(client, pieces(text), voice, rate), "synthesize")

    async def _speak(
        self, client: _Client, texts: list[str], voice: str, rate: int, stream: bool = False
    ) -> None:
        """Speak `texts` in one job: audio-start at the first audio, a chunk per frame,
        audio-stop. With no audio at all: an `error` (unless `stream`)."""
        job = self.pool.submit(lambda engine, job: engine.speak(texts, voice, job))
        resampler = StreamResampler(self.sample_rate, rate)
        started = False
        finished: Finished | None = None
        try:
            async with self._deadline(job):
                async for item in job:
                    if isinstance(item, AudioBlock):
                        pcm = float_to_pcm16(resampler.process(item.samples))
                        if not started:
                            await self._send(client, AudioStart(rate, 2, 1).event())
                            started = True
                        if pcm:
                            await self._send(client, AudioChunk(rate, 2, 1, pcm).event())
                    elif isinstance(item, Finished):
                        finished = item
                    elif isinstance(item, JobFailed):
                        raise BadRequest(f"speech synthesis failed: {item.error}", "failed")
        finally:
            job.cancel()
        if started:
            tail = float_to_pcm16(resampler.process(np.zeros(0, np.float32), last=True))
            if tail:
                await self._send(client, AudioChunk(rate, 2, 1, tail).event())
            await self._send(client, AudioStop().event())
        elif not stream:
            reason = finished.reason if finished is not None else "no result"
            raise BadRequest(f"the model gave no audio for this text ({reason})", "no-audio")

    def _on_synthesize_start(self, client: _Client, event: Event) -> None:
        if client.busy or client.tts is not None:
            raise BadRequest("synthesize-start: a request is already in progress", "busy")
        voice, rate = self._voice(event.data, "synthesize-start")
        stream = _TtsStream(voice, rate)
        client.tts = stream
        self._start(client, self._speak_stream(client, stream), "synthesize-start")

    def _on_synthesize_chunk(self, client: _Client, text: Any) -> None:
        stream = client.tts
        if stream is None or stream.stopped:
            raise BadRequest("synthesize-chunk: no synthesize-start before it")
        if not isinstance(text, str):
            raise BadRequest("synthesize-chunk: text must be a string")
        stream.characters += len(text)
        if stream.characters > self.config.max_text:
            stream.stopped = True
            stream.sentences.put_nowait(None)
            raise BadRequest(
                f"synthesize-chunk: the streamed text is over the limit of "
                f"{self.config.max_text} characters (services_max_text); the rest is dropped",
                "too-long",
            )
        special = control_token_in(stream.buffer + text)
        if special is not None:
            raise BadRequest(f"synthesize-chunk: the text holds the control token {special}")
        complete, stream.buffer = split_complete(stream.buffer + text)
        for sentence in complete:
            stream.sentences.put_nowait(sentence)

    def _on_synthesize_stop(self, client: _Client) -> None:
        stream = client.tts
        if stream is None:
            raise BadRequest("synthesize-stop: no synthesize-start before it")
        if not stream.stopped:
            stream.stopped = True
            if stream.buffer.strip():
                stream.sentences.put_nowait(stream.buffer.strip())
            stream.buffer = ""
            stream.sentences.put_nowait(None)

    async def _speak_stream(self, client: _Client, stream: _TtsStream) -> None:
        try:
            for _ in itertools.count():
                try:
                    async with asyncio.timeout(self.config.client_timeout):
                        sentence = await stream.sentences.get()
                except TimeoutError:
                    raise BadRequest(
                        f"synthesize-stop did not come: no text for {self.config.client_timeout:g} s",
                        "timeout",
                        close=True,
                    ) from None
                if sentence is None:
                    break
                await self._speak(client, pieces(sentence), stream.voice, stream.rate, stream=True)
            await self._send(client, SynthesizeStopped().event())
        finally:
            if client.tts is stream:
                client.tts = None

    # conversation

    def _on_transcript(self, client: _Client, request: Transcript) -> None:
        text = self._check_text(request.text, "transcript")
        if not language_ok(request.language):
            raise BadRequest(
                f"transcript: language {request.language!r} is not supported; the model "
                f"speaks {', '.join(LANGUAGES)}",
                "unsupported-language",
            )
        context = request.context if isinstance(request.context, dict) else {}
        key = context.get("conversation_id")
        key = str(key) if key not in (None, "") else uuid.uuid4().hex
        conversation = self._conversation(key)
        if conversation.busy:
            raise BadRequest(f"conversation {key!r} is busy with another request", "busy")
        reply_context = {**context, "conversation_id": key}
        self._start(client, self._handle(client, conversation, text, reply_context), "transcript")

    def _conversation(self, key: str) -> Conversation:
        now = time.monotonic()
        for old in list(self._conversations.values()):
            if not old.busy and now - old.last_used > self.config.conversation_timeout:
                del self._conversations[old.key]
        conversation = self._conversations.get(key)
        if conversation is None:
            idle = [c for c in self._conversations.values() if not c.busy]
            while len(self._conversations) >= MAX_CONVERSATIONS and idle:
                del self._conversations[idle.pop(0).key]
            conversation = Conversation(key)
            self._conversations[key] = conversation
        self._conversations.move_to_end(key)
        conversation.last_used = now
        return conversation

    async def _handle(
        self, client: _Client, conversation: Conversation, text: str, context: dict[str, Any]
    ) -> None:
        def done() -> None:
            conversation.busy = False
            conversation.last_used = time.monotonic()

        conversation.busy = True
        try:
            job = self.pool.submit(
                lambda engine, job: engine.converse(conversation, text, job), on_end=done
            )
        except PoolFull:
            conversation.busy = False
            raise
        reply = ""
        try:
            async with self._deadline(job):
                async for item in job:
                    if isinstance(item, Finished):
                        reply = item.text
                    elif isinstance(item, JobFailed):
                        raise BadRequest(f"the conversation failed: {item.error}", "failed")
        finally:
            job.cancel()
        if reply:
            await self._send(client, Handled(text=reply, context=context).event())
        else:
            await self._send(
                client, NotHandled(text="The model gave no answer.", context=context).event()
            )


async def start_services(
    settings: Settings, model: Model, tokens: Tokens, *, home_control: bool = False
) -> ServicesServer | None:
    """The daemon's hook: the services on `model` started when `wyoming.services_enabled`,
    else None."""
    if not settings.wyoming.services_enabled:
        return None
    server = ServicesServer(model, tokens, ServicesConfig.from_settings(settings, home_control))
    await server.start()
    return server
