"""The Wyoming services (issue 7): speech-to-text, text-to-speech and conversation from the local
model, driven by the real `wyoming` client library the way Home Assistant drives them (DESIGN §4:
a new connection per request, `describe` first with a 5 s timeout), on the tiny model.

Everything runs on the default tiny model (`tiny_model()`, the demo's: random weights with the
special rows shaped so that it reaches `<|audio_start|>` and end-of-audio), with a fixed seed:
its text is gibberish but real generated text, its speech noise but real generated audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Describe, Info
from wyoming.ping import Ping
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from satellite import __version__
from satellite.daemon.core import Daemon
from satellite.engine.detokenize import StreamingDetokenizer
from satellite.engine.mel import LogMel, StreamingLogMel
from satellite.engine.model import Model
from satellite.engine.sessions import SessionConfig
from satellite.engine.template import Tokens
from satellite.settings import DeviceControlSettings
from satellite.wyoming.satellite_server import WyomingServerError
from satellite.wyoming.sentences import pieces, split_complete
from satellite.wyoming.services.common import ServicesConfig
from satellite.wyoming.services.server import ServicesServer
from satellite.wyoming.speech import Finished, Limits, ServiceEngine
from satellite.wyoming.workers import Job, PoolFull, WorkerPool
from tests.paths import REPO
from tests.satellite_support import daemon_settings, tiny_model, unshaped_model

pytestmark = pytest.mark.slow

HA_TIMEOUT = 5.0
"""Home Assistant's timeout for `describe` (and a generous bound on every read here)."""
LIMITS = Limits(asr_tokens=24, speech_seconds=3.0, reply_tokens=80, seed=1)
SAMPLES_PER_FRAME = 1920
MAX_EVENTS = 5000


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    return tiny_model()


def load(directory: Path) -> tuple[Model, Tokens]:
    model = Model.load(directory, SessionConfig(threads=1))
    return model, Tokens(model.tokenizer(), str(directory))


@contextlib.asynccontextmanager
async def running(directory: Path, **options: Any) -> AsyncIterator[ServicesServer]:
    model, tokens = load(directory)
    config = ServicesConfig(**{"host": "127.0.0.1", "port": 0, "limits": LIMITS, **options})
    server = ServicesServer(model, tokens, config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def connect(server: ServicesServer) -> AsyncIterator[AsyncTcpClient]:
    async with AsyncTcpClient("127.0.0.1", server.bound_port) as client:
        yield client


async def read(client: AsyncTcpClient, timeout: float = HA_TIMEOUT) -> Event | None:
    return await asyncio.wait_for(client.read_event(), timeout)


async def read_until(
    client: AsyncTcpClient, *stop: str, timeout: float = 30.0
) -> list[tuple[float, Event]]:
    """(arrival time, event) until one of the `stop` types (included) or `error`."""
    events: list[tuple[float, Event]] = []
    deadline = time.monotonic() + timeout
    for _ in range(MAX_EVENTS):
        event = await read(client, max(0.01, deadline - time.monotonic()))
        assert event is not None, f"connection closed after {[e.type for _, e in events]}"
        events.append((time.monotonic(), event))
        if event.type in stop or Error.is_type(event.type):
            return events
    raise AssertionError("too many events")


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def speechlike(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Noise shaped by a slow envelope (the tiny model hears noise as well as speech)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.3 * envelope * rng.standard_normal(t.size)).astype(np.float32)


async def ha_transcribe(
    client: AsyncTcpClient,
    pcm: bytes,
    rate: int = 16000,
    width: int = 2,
    channels: int = 1,
    language: str | None = "en",
) -> list[tuple[float, Event]]:
    """Home Assistant's stt.py: transcribe, audio-start, chunks, audio-stop, read."""
    await client.write_event(Transcribe(language=language).event())
    await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    step = 1024 * width * channels
    for i in range(0, len(pcm), step):
        chunk = AudioChunk(rate=rate, width=width, channels=channels, audio=pcm[i : i + step])
        await client.write_event(chunk.event())
    await client.write_event(AudioStop().event())
    return await read_until(client, "transcript")


def audio_of(events: list[tuple[float, Event]]) -> bytes:
    return b"".join(AudioChunk.from_event(e).audio for _, e in events if AudioChunk.is_type(e.type))


def types(events: list[tuple[float, Event]]) -> list[str]:
    return [e.type for _, e in events]


class Gate:
    """Holds `ServiceEngine.<method>` in the worker until `open()` (to keep a worker busy)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
        self.entered = threading.Event()
        self._open = threading.Event()
        original = getattr(ServiceEngine, method)

        def held(engine: ServiceEngine, *args: Any) -> None:
            self.entered.set()
            self._open.wait(30)
            original(engine, *args)

        monkeypatch.setattr(ServiceEngine, method, held)

    def open(self) -> None:
        self._open.set()


def record_finished(monkeypatch: pytest.MonkeyPatch, method: str) -> list[Finished]:
    """The `Finished` items the engine's `method` posts, in order."""
    seen: list[Finished] = []
    original = Job.post

    def post(job: Job, item: Any) -> None:
        if isinstance(item, Finished) and threading.current_thread().name.startswith("services"):
            seen.append(item)
        original(job, item)

    monkeypatch.setattr(Job, "post", post)
    return seen


# -- info ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("home_control", [False, True])
async def test_describe_gives_asr_tts_and_handle(tiny_dir: Path, home_control: bool) -> None:
    """A new connection, `describe` with Home Assistant's 5 s timeout: asr (the model's
    languages, transcript streaming), tts (four voices with languages, synthesize streaming),
    handle (home control only when configured), versions and attribution, and no satellite."""
    async with running(tiny_dir, home_control=home_control) as server, connect(server) as client:
        await client.write_event(Describe().event())
        event = await read(client)
        assert event is not None and Info.is_type(event.type)
        info = Info.from_event(event)
    assert info.satellite is None and not info.mic and not info.snd and not info.wake
    (asr,) = info.asr
    assert asr.installed and asr.supports_transcript_streaming and asr.version == __version__
    assert asr.attribution.name and asr.attribution.url
    assert [m.languages for m in asr.models] == [["en"]]
    assert asr.models[0].name == "lfm2.5-audio-tiny-random"
    (tts,) = info.tts
    assert tts.installed and tts.supports_synthesize_streaming and tts.version == __version__
    assert {v.name: v.languages for v in tts.voices} == {
        "us_female": ["en"], "us_male": ["en"], "uk_female": ["en"], "uk_male": ["en"],
    }  # fmt: skip
    assert all(v.description and v.installed for v in tts.voices)
    (handle,) = info.handle
    assert handle.installed and handle.supports_home_control is home_control
    assert handle.models[0].languages == ["en"] and handle.version == __version__


# -- speech to text -------------------------------------------------------------------------


async def test_home_assistant_stt_flow() -> None:
    """stt.py's flow on its own connection: transcript-start, a transcript-chunk per piece of
    generated text, transcript-stop, then the final transcript holding the same text. On the
    unshaped model, whose transcript runs to the token limit in many pieces (the default
    model's ends after a few tokens, in one piece or two)."""
    async with running(unshaped_model()) as server:
        async with connect(server) as client:
            await client.write_event(Describe().event())
            assert (await read(client)) is not None
        async with connect(server) as client:
            events = await ha_transcribe(client, pcm16(speechlike(1.5)))
    kinds = types(events)
    assert kinds[0] == "transcript-start" and kinds[-2:] == ["transcript-stop", "transcript"]
    chunks = [e.data["text"] for _, e in events if e.type == "transcript-chunk"]
    assert len(chunks) >= 2 and set(kinds[1:-2]) == {"transcript-chunk"}
    final = Transcript.from_event(events[-1][1])
    assert final.language == "en" and final.text
    assert " ".join("".join(chunks).split()) == final.text


async def test_stt_converts_any_format(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stereo, 8-bit, 24-bit, 32-bit and 44.1/48/8 kHz audio all reach the model as 16 kHz mono
    (log-mel frames computed as it arrives: 101 for a second); the same signal as 16 kHz stereo
    16-bit gives the same features and transcript as mono, and the features are those of the
    whole utterance at once."""
    heard: list[np.ndarray] = []
    original = ServiceEngine.transcribe

    def spy(engine: ServiceEngine, features: np.ndarray, job: Job) -> None:
        heard.append(features)
        original(engine, features, job)

    monkeypatch.setattr(ServiceEngine, "transcribe", spy)
    mono = speechlike(1.0)
    ints = (np.clip(mono, -1, 1) * 32767).astype("<i2")
    stereo = np.repeat(ints, 2).tobytes()
    async with running(tiny_dir) as server:
        results = []
        for pcm, channels in ((ints.tobytes(), 1), (stereo, 2)):
            async with connect(server) as client:
                events = await ha_transcribe(client, pcm, channels=channels)
                results.append(Transcript.from_event(events[-1][1]).text)
        assert results[0] == results[1]
        np.testing.assert_array_equal(heard[0], heard[1])
        whole = LogMel()(ints.astype(np.float32) / 32768)
        np.testing.assert_allclose(heard[0], whole, atol=1e-4)
        for rate, width, channels in ((44100, 3, 2), (48000, 4, 1), (8000, 1, 1)):
            signal = np.clip(speechlike(1.0, rate), -1, 1).astype(np.float64)
            if width == 1:
                raw = ((signal * 127) + 128).astype(np.uint8).tobytes()
            elif width == 3:
                values = (np.repeat(signal, channels) * (2**23 - 1)).astype("<i4")
                raw = b"".join(v.tobytes()[:3] for v in values)
            else:
                raw = (signal * (2**31 - 1)).astype("<i4").tobytes()
            async with connect(server) as client:
                events = await ha_transcribe(client, raw, rate, width, channels)
            assert events[-1][1].type == "transcript", events[-1][1]
            assert heard[-1].shape in ((100, 128), (101, 128), (102, 128)), heard[-1].shape


# -- text to speech -------------------------------------------------------------------------


async def test_home_assistant_tts_flow(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tts.py's flow: synthesize{text, voice{name}} -> audio-start (24 kHz, 16-bit, mono), an
    audio-chunk per generated frame, audio-stop; the first chunk arrives before the model has
    generated its last frame."""
    pushes: list[float] = []
    push = StreamingDetokenizer.push

    def timed(detok: StreamingDetokenizer, codes: Any) -> Any:
        pushes.append(time.monotonic())
        return push(detok, codes)

    monkeypatch.setattr(StreamingDetokenizer, "push", timed)
    async with running(tiny_dir) as server, connect(server) as client:
        voice = SynthesizeVoice(name="us_female")
        await client.write_event(Synthesize(text="Hello there, how are you?", voice=voice).event())
        events = await read_until(client, "audio-stop")
    kinds = types(events)
    assert kinds[0] == "audio-start" and kinds[-1] == "audio-stop"
    assert set(kinds[1:-1]) == {"audio-chunk"}
    start = AudioStart.from_event(events[0][1])
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)
    chunks = [e for _, e in events if e.type == "audio-chunk"]
    frames = len(pushes)
    assert frames >= 5 and len(chunks) == frames + 1  # a chunk per frame, then the tail
    assert len(audio_of(events)) == frames * SAMPLES_PER_FRAME * 2
    first_chunk = next(t for t, e in events if e.type == "audio-chunk")
    assert first_chunk < pushes[-1]


async def test_tts_voices_and_rate(tiny_dir: Path) -> None:
    """Each voice speaks; a voice given by language; the rate a request asks for."""
    async with running(tiny_dir) as server:
        for voice in ("us_male", "uk_female", "uk_male"):
            async with connect(server) as client:
                request = Synthesize(text="Hello there, how are you?", voice=SynthesizeVoice(voice))
                await client.write_event(request.event())
                events = await read_until(client, "audio-stop")
                assert types(events)[-1] == "audio-stop" and audio_of(events)
        async with connect(server) as client:
            request = Synthesize(text="Hello there, how are you?", voice=SynthesizeVoice("us_male"))
            event = request.event()
            await client.write_event(Event(event.type, {**event.data, "rate": 16000}))
            low = await read_until(client, "audio-stop")
        async with connect(server) as client:
            data = {"text": "Hello there, how are you?", "voice": {"language": "en"}}
            await client.write_event(Event("synthesize", data))
            by_language = await read_until(client, "audio-stop")
    assert AudioStart.from_event(low[0][1]).rate == 16000
    assert types(by_language)[-1] == "audio-stop"
    chunk = AudioChunk.from_event(low[1][1])
    assert chunk.rate == 16000 and chunk.width == 2


async def test_streaming_tts_speaks_each_sentence_as_it_arrives(tiny_dir: Path) -> None:
    """Home Assistant 2026's flow: synthesize-start, chunks, the whole text again in
    `synthesize` (ignored), synthesize-stop. The first sentence's audio comes before the text
    has ended; audio-start/chunk/stop per sentence; synthesize-stopped last."""
    async with running(tiny_dir) as server, connect(server) as client:
        voice = SynthesizeVoice(name="us_female")
        await client.write_event(SynthesizeStart(voice=voice).event())
        await client.write_event(SynthesizeChunk(text="Hello there, ").event())
        await client.write_event(SynthesizeChunk(text="how are you? I am").event())
        first = await read_until(client, "audio-stop")  # the first sentence, spoken already
        assert types(first)[0] == "audio-start" and types(first)[-1] == "audio-stop"
        await client.write_event(SynthesizeChunk(text=" fine, thank you.").event())
        whole = "Hello there, how are you? I am fine, thank you."
        await client.write_event(Synthesize(text=whole, voice=voice).event())
        await client.write_event(SynthesizeStop().event())
        rest = await read_until(client, "synthesize-stopped")
    kinds = types(rest)
    assert kinds[-1] == "synthesize-stopped" and "error" not in kinds
    assert kinds.count("audio-start") == 1 and kinds.count("audio-stop") == 1
    assert audio_of(first) and audio_of(rest)


# -- conversation ---------------------------------------------------------------------------


async def test_handle_keeps_a_conversation(tiny_dir: Path) -> None:
    """conversation.py's flow: transcript{text, context} -> handled{text}; the same
    conversation_id continues the model's conversation, another starts a new one; without one
    each request is its own conversation."""
    async with running(tiny_dir) as server:
        replies = []
        for key in ("c1", "c1", "c2"):
            async with connect(server) as client:
                request = Transcript("Turn on the kitchen lights", context={"conversation_id": key})
                await client.write_event(request.event())
                event = await read(client, 30)
                assert event is not None and event.type == "handled", event
                replies.append(event.data)
        async with connect(server) as client:
            await client.write_event(Transcript("What time is it?", language="en").event())
            single = await read(client, 30)
        conversations = server.conversations.by_id()
    assert all(r["text"] for r in replies)
    assert [r["context"]["conversation_id"] for r in replies] == ["c1", "c1", "c2"]
    assert conversations["c1"].turns == 2 and conversations["c2"].turns == 1
    assert conversations["c1"].chat is not None and conversations["c1"].chat.turns == 2
    assert single is not None and single.type == "handled"
    assert single.data["context"]["conversation_id"] not in ("c1", "c2")


# -- concurrency ----------------------------------------------------------------------------


async def test_several_clients_at_once(tiny_dir: Path) -> None:
    """Six clients at once (speech-to-text and conversation) on two workers and a queue of
    four: every one gets its answer."""

    async def stt(server: ServicesServer, seed: int) -> str:
        async with connect(server) as client:
            events = await ha_transcribe(client, pcm16(speechlike(1.0, seed=seed)))
            return events[-1][1].type

    async def handle(server: ServicesServer, n: int) -> str:
        async with connect(server) as client:
            await client.write_event(Transcript(f"Question {n}").event())
            event = await read(client, 30)
            return "" if event is None else event.type

    async with running(tiny_dir, workers=2, queue=4) as server:
        results = await asyncio.gather(
            *(stt(server, n) for n in range(3)), *(handle(server, n) for n in range(3))
        )
        assert server.pool.pending == 0
    assert results == ["transcript"] * 3 + ["handled"] * 3


async def test_a_full_queue_is_answered_with_an_error(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One worker, a queue of one: the third request at once gets `error` (busy), never a
    hang; the held ones finish once the worker is free."""
    gate = Gate(monkeypatch, "converse")
    async with (
        running(tiny_dir, workers=1, queue=1) as server,
        connect(server) as first,
        connect(server) as second,
    ):
        await first.write_event(Transcript("one", context={"conversation_id": "a"}).event())
        await asyncio.to_thread(gate.entered.wait, 5)
        await second.write_event(Transcript("two", context={"conversation_id": "b"}).event())
        for _ in range(100):  # until the second request is queued
            if server.pool.pending == 2:
                break
            await asyncio.sleep(0.01)
        async with connect(server) as third:
            await third.write_event(Transcript("three").event())
            refused = await read(third)
        gate.open()
        answers = [await read(first, 30), await read(second, 30)]
    assert refused is not None and refused.type == "error"
    assert refused.data["code"] == "busy" and "busy" in refused.data["text"]
    assert [a.type if a else None for a in answers] == ["handled", "handled"]
    assert server.pool.refused == 1


async def test_a_client_that_leaves_frees_its_worker(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that disconnects mid-request has its generation stopped at the next step; the
    one worker takes the next request. The request is held in the worker until the client has
    left (a random model may end its reply on its own within a few tokens)."""
    finished = record_finished(monkeypatch, "converse")
    gate = Gate(monkeypatch, "converse")
    long = Limits(reply_tokens=100_000, seed=1)
    async with running(tiny_dir, workers=1, queue=0, limits=long) as server:
        async with connect(server) as client:
            await client.write_event(Transcript("Tell me a long story").event())
            assert await asyncio.to_thread(gate.entered.wait, 5)
            assert server.pool.pending == 1
        await asyncio.sleep(0.3)  # the server sees the connection close
        gate.open()
        for _ in range(500):
            if not server.pool.pending:
                break
            await asyncio.sleep(0.01)
        assert server.pool.pending == 0
        assert [f.reason for f in finished] == ["cancelled"]
        async with connect(server) as client:
            events = await ha_transcribe(client, pcm16(speechlike(1.0)))
        assert events[-1][1].type == "transcript"


async def test_timeouts(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request over `request_timeout` is stopped with `error` (timeout) and its worker freed;
    a client that stalls mid-request (no audio-stop, no synthesize-stop) is told and
    disconnected after `client_timeout`, holding no worker meanwhile."""
    finished = record_finished(monkeypatch, "converse")
    gate = Gate(monkeypatch, "converse")  # held past the timeout (see the test above)
    long = Limits(reply_tokens=100_000, seed=1)
    async with running(
        tiny_dir, workers=1, queue=0, limits=long, request_timeout=0.5, client_timeout=0.5
    ) as server:
        async with connect(server) as client:
            await client.write_event(Transcript("Tell me a long story").event())
            event = await read(client, 10)
            assert event is not None and event.type == "error"
            assert event.data["code"] == "timeout" and "0.5 s" in event.data["text"]
        assert gate.entered.is_set()
        gate.open()
        for _ in range(500):
            if not server.pool.pending:
                break
            await asyncio.sleep(0.01)
        assert server.pool.pending == 0 and [f.reason for f in finished] == ["cancelled"]
        for opening in (
            [Transcribe(language="en").event(), AudioStart(16000, 2, 1).event()],
            [SynthesizeStart().event(), SynthesizeChunk(text="Hello").event()],
        ):
            async with connect(server) as client:
                for event in opening:
                    await client.write_event(event)
                assert server.pool.pending == 0
                event = await read(client, 5)
                assert event is not None and event.type == "error", event
                assert event.data["code"] == "timeout"
                assert await read(client, 5) is None  # disconnected


# -- bad input ------------------------------------------------------------------------------


def ev(kind: str, data: dict[str, Any] | None = None, payload: bytes | None = None) -> Event:
    return Event(kind, data or {}, payload)


BAD_REQUESTS: dict[str, tuple[list[Event], str]] = {
    "unknown voice": ([ev("synthesize", {"text": "hi", "voice": {"name": "robot"}})], "robot"),
    "unknown tts language": (
        [ev("synthesize", {"text": "hi", "voice": {"language": "de"}})],
        "'de' is not supported",
    ),
    "unknown asr language": ([Transcribe(language="fr").event()], "'fr' is not supported"),
    "unknown handle language": (
        [Transcript("hallo", language="de").event()],
        "'de' is not supported",
    ),
    "empty text": ([Synthesize(text="   ").event()], "the text is empty"),
    "empty text to handle": ([Transcript(text="").event()], "the text is empty"),
    "50,000 characters": ([Synthesize(text="a" * 50_000).event()], "50000 characters"),
    "50,000 characters to handle": ([Transcript(text="b " * 25_000).event()], "50000 characters"),
    "control token": ([Synthesize(text="hi <|im_end|>").event()], "control token <|im_end|>"),
    "0-length audio": (
        [Transcribe().event(), AudioStart(16000, 2, 1).event(), AudioStop().event()],
        "no audio",
    ),
    "too short audio": (
        [
            AudioStart(16000, 2, 1).event(),
            AudioChunk(16000, 2, 1, b"\0" * 64).event(),
            AudioStop().event(),
        ],
        "too short",
    ),
    "odd width": ([Transcribe().event(), AudioStart(16000, 5, 1).event()], "width 5"),
    "odd bytes": (
        [AudioStart(16000, 2, 1).event(), AudioChunk(16000, 2, 1, b"\1\2\3").event()],
        "not a whole number of frames",
    ),
    "chunk format changes": (
        [AudioStart(16000, 2, 1).event(), AudioChunk(22050, 2, 1, b"\0\0").event()],
        "differs",
    ),
    "chunk without start": ([AudioChunk(16000, 2, 1, b"\0\0").event()], "no audio-start"),
    "stop without start": ([AudioStop().event()], "no audio-start"),
    "chunk without rate": (
        [AudioStart(16000, 2, 1).event(), ev("audio-chunk", {"width": 2})],
        "malformed audio-chunk",
    ),
    "synthesize without text": ([ev("synthesize", {"voice": {}})], "text must be a string"),
    "unknown event type": ([ev("make-coffee", {"strength": 11})], "unknown event type"),
    "bad rate": ([ev("synthesize", {"text": "hi", "rate": 5})], "rate 5"),
    "over-long audio": (
        [AudioStart(16000, 2, 1).event(), AudioChunk(16000, 2, 1, b"\0" * 64_000 * 4).event()],
        "longer than",
    ),
}


KEPT_OPEN = {"unknown event type"}
"""Errors outside any request: the connection goes on. Every other error ends a request,
and its connection closes after the `error` (Home Assistant's clients wait for the end)."""


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
async def test_bad_requests_get_an_error(tiny_dir: Path, case: str) -> None:
    """Each bad request gets a Wyoming `error` whose text names the problem, then its
    connection closes at once (an unknown event outside a request leaves it open: it still
    answers `describe`); another client is unaffected."""
    events, expected = BAD_REQUESTS[case]
    async with (
        running(tiny_dir, max_audio_seconds=5.0) as server,
        connect(server) as bystander,
        connect(server) as client,
    ):
        for event in events:
            await client.write_event(event)
        error = await read_until(client, "error", timeout=10)
        assert error[-1][1].type == "error", types(error)
        assert expected in error[-1][1].data["text"], error[-1][1].data
        if case in KEPT_OPEN:
            await client.write_event(Describe().event())
            assert (info := await read(client)) is not None and info.type == "info"
        else:
            assert await read(client, HA_TIMEOUT) is None, "closed after the error"
        await bystander.write_event(Ping(text="still there?").event())
        pong = await read(bystander)
        assert pong is not None and pong.data == {"text": "still there?"}


def _with_data(data: bytes, kind: str = "transcribe") -> bytes:
    """A frame of `kind` whose data section is `data`, its length right."""
    return json.dumps({"type": kind, "data_length": len(data)}).encode() + b"\n" + data


IN_STEP_FRAMES: dict[str, tuple[bytes, str]] = {
    "header without type": (b'{"data": {}}\n', "no `type`"),
    "data not JSON": (b'{"type": "transcribe", "data_length": 5}\n{{{{{', "not JSON"),
    "data nested too deeply": (_with_data(b"[" * 30_000 + b"]" * 30_000), "nested too deeply"),
    "data with a 5,000-digit number": (_with_data(b'{"n": ' + b"9" * 5000 + b"}"), "digits"),
    "data not an object": (_with_data(b"[]"), "not a JSON object"),
}


@pytest.mark.parametrize("case", list(IN_STEP_FRAMES))
async def test_malformed_events_read_whole_keep_the_connection(tiny_dir: Path, case: str) -> None:
    """An event whose lengths could be read (so the stream is still in step) but whose data
    is malformed: one `error` naming the problem, and the same connection goes on (before,
    deep nesting and long integers raised out of the frame reader and dropped it unanswered)."""
    raw, expected = IN_STEP_FRAMES[case]
    async with running(tiny_dir) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(raw)
        await writer.drain()
        first = await asyncio.wait_for(async_read_event(reader), HA_TIMEOUT)
        assert first is not None and first.type == "error", first
        assert expected in first.data["text"], first.data
        assert first.data["code"] == "protocol"
        await async_write_event(Describe().event(), writer)
        info = await asyncio.wait_for(async_read_event(reader), HA_TIMEOUT)
        assert info is not None and info.type == "info"
        writer.close()


RAW_FRAMES: dict[str, tuple[bytes, str]] = {
    "header not JSON": (b"this is not json\n", "not JSON"),
    "header nested too deeply": (b"[" * 20_000 + b"]" * 20_000 + b"\n", "nested too deeply"),
    "header with a 5,000-digit length": (
        b'{"type": "audio-chunk", "payload_length": ' + b"9" * 5000 + b"}\n",
        "digits",
    ),
    "100 MB payload": (
        b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, '
        b'"payload_length": 100000000}\n',
        "over the limit",
    ),
    "negative length": (b'{"type": "audio-chunk", "payload_length": -4}\n', "non-negative"),
    "truncated data": (
        b'{"type": "synthesize", "data_length": 100}\n{"text": "hi"',
        "ended inside the event",
    ),
    "truncated header": (b'{"type": "synthe', "ended inside an event header"),
}


@pytest.mark.parametrize("case", list(RAW_FRAMES))
async def test_malformed_frames_close_only_their_connection(tiny_dir: Path, case: str) -> None:
    """Malformed or truncated frames (the client closes its side mid-event), and a 100 MB
    payload_length (refused from its header, nothing read): an `error` naming the problem,
    then that connection closes; the server and a client beside it go on."""
    raw, expected = RAW_FRAMES[case]
    async with running(tiny_dir) as server, connect(server) as bystander:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(raw)
        await writer.drain()
        if case.startswith("truncated"):
            writer.write_eof()
        started = time.monotonic()
        first = await asyncio.wait_for(async_read_event(reader), HA_TIMEOUT)
        assert first is not None and first.type == "error", first
        assert expected in first.data["text"], first.data
        assert first.data["code"] == "protocol"
        assert await asyncio.wait_for(async_read_event(reader), HA_TIMEOUT) is None
        assert time.monotonic() - started < HA_TIMEOUT
        writer.close()
        await bystander.write_event(Describe().event())
        assert (info := await read(bystander)) is not None and info.type == "info"
        assert server.connections == 1


# -- old clients, the daemon, pieces --------------------------------------------------------

OLD_CLIENT = r"""
import asyncio, json, sys
from importlib.metadata import version
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

async def main(port):
    out = {"version": version("wyoming")}
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        info = Info.from_event(await client.read_event())
        out["asr"] = [m.languages for m in info.asr[0].models]
        out["voices"] = [v.name for v in info.tts[0].voices]
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(16000, 2, 1).event())
        await client.write_event(AudioChunk(16000, 2, 1, bytes(range(256)) * 125).event())
        await client.write_event(AudioStop().event())
        for _ in range(1000):
            event = await client.read_event()
            if Transcript.is_type(event.type):
                out["transcript"] = Transcript.from_event(event).text
                break
    async with AsyncTcpClient("127.0.0.1", port) as client:
        voice = SynthesizeVoice(name="uk_male")
        await client.write_event(Synthesize("Hello there, how are you?", voice=voice).event())
        audio = b""
        for _ in range(10000):
            event = await client.read_event()
            if AudioChunk.is_type(event.type):
                audio += AudioChunk.from_event(event).audio
            elif AudioStop.is_type(event.type):
                break
        out["audio_bytes"] = len(audio)
    print(json.dumps(out))

asyncio.run(main(int(sys.argv[1])))
"""


@pytest.fixture(scope="module")
def old_wyoming(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """wyoming 1.5.4 (the protocol of older Home Assistant releases) in a folder of its own."""
    target = tmp_path_factory.mktemp("wyoming-1.5.4")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), "wyoming==1.5.4"],
        check=True, timeout=300,
    )  # fmt: skip
    return target


async def test_old_protocol_client(tiny_dir: Path, old_wyoming: Path, tmp_path: Path) -> None:
    """A wyoming 1.5.4 client (no transcript or synthesize streaming in its protocol) still
    describes, transcribes and synthesizes."""
    script = tmp_path / "old_client.py"
    script.write_text(OLD_CLIENT)
    async with running(tiny_dir) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(script), str(server.bound_port),
            env={"PYTHONPATH": str(old_wyoming), "PATH": "/usr/bin:/bin"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    out = json.loads(stdout)
    assert out["version"] == "1.5.4"
    assert out["asr"] == [["en"]] and "uk_male" in out["voices"]
    assert isinstance(out["transcript"], str)
    assert out["audio_bytes"] > 0 and out["audio_bytes"] % (SAMPLES_PER_FRAME * 2) == 0


async def test_daemon_serves_both_ports(tiny_dir: Path) -> None:
    """With `wyoming.services_enabled` the daemon serves the satellite and the services on two
    ports from one model; the satellite's info has the satellite, the services' has none and
    offers home control because device control is configured."""
    import dataclasses

    settings = daemon_settings(tiny_dir, backend="null")
    settings = dataclasses.replace(
        settings,
        wyoming=dataclasses.replace(
            settings.wyoming, services_enabled=True, services_host="127.0.0.1", services_port=0
        ),
        device_control=DeviceControlSettings(
            enabled=True, allowlist_file=str(REPO / "devices.example.yaml")
        ),
    )
    daemon = Daemon(settings)
    await daemon.start()
    try:
        services = daemon.services
        assert services is not None and daemon.responder is not None
        assert services.model is daemon.responder.model
        assert services.bound_port != daemon.server.bound_port
        infos = []
        for port in (daemon.server.bound_port, services.bound_port):
            async with AsyncTcpClient("127.0.0.1", port) as client:
                await client.write_event(Describe().event())
                event = await read(client)
                assert event is not None
                infos.append(Info.from_event(event))
        async with AsyncTcpClient("127.0.0.1", services.bound_port) as client:
            events = await ha_transcribe(client, pcm16(speechlike(1.0)))
    finally:
        await daemon.close()
    assert infos[0].satellite is not None and not infos[0].asr
    assert infos[1].satellite is None and infos[1].asr and infos[1].tts and infos[1].handle
    assert infos[1].handle[0].supports_home_control
    assert events[-1][1].type == "transcript"
    assert daemon.services is not None and daemon.services._server is None


def test_sentences() -> None:
    assert split_complete("Hello there. How are") == (["Hello there."], "How are")
    assert split_complete("It costs 3.50 euros! Yes?\nNo") == (
        ["It costs 3.50 euros!", "Yes?"],
        "No",
    )
    assert split_complete("") == ([], "")
    assert pieces("One. Two three") == ["One.", "Two three"]
    long = pieces("word " * 200, limit=50)
    assert all(len(p) <= 50 for p in long) and " ".join(long).split() == ["word"] * 200
    assert pieces("x" * 120, limit=50) == ["x" * 50, "x" * 50, "x" * 20]


async def test_pool_bounds_and_cancels_queued_jobs() -> None:
    """`workers + queue` jobs at most; a queued job cancelled before it starts never runs its
    work, still ends its stream and calls `on_end`."""
    release = threading.Event()
    ran: list[str] = []
    ended: list[str] = []
    pool: WorkerPool[str] = WorkerPool(lambda: "engine", workers=1, queue=1)

    def work(name: str) -> Callable[[str, Job], None]:
        def run(engine: str, job: Job) -> None:
            release.wait(10)
            ran.append(name)
            job.post(engine)

        return run

    first = pool.submit(work("first"), on_end=lambda: ended.append("first"))
    second = pool.submit(work("second"), on_end=lambda: ended.append("second"))
    with pytest.raises(PoolFull, match="busy"):
        pool.submit(work("third"))
    second.cancel()
    release.set()
    assert [item async for item in first] == ["engine"]
    assert [item async for item in second] == []
    await asyncio.to_thread(pool.close)
    assert ran == ["first"] and ended == ["first", "second"] and pool.pending == 0


def test_streaming_log_mel_equals_one_shot() -> None:
    """Log-mel computed piece by piece as audio arrives equals the one-shot front end, for any
    piece size and length (the frame count, the zeroed last frame and the normalisation
    included)."""
    rng = np.random.default_rng(3)
    for length in (320, 321, 1599, 16000, 16123):
        audio = (0.2 * rng.standard_normal(length)).astype(np.float32)
        whole = LogMel()(audio)
        for step in (7, 160, 1024, length):
            stream = StreamingLogMel()
            for i in range(0, length, step):
                stream.push(audio[i : i + step])
            features = stream.finish()
            assert features.shape == whole.shape
            np.testing.assert_allclose(features, whole, atol=1e-5)
            assert stream.frames == whole.shape[0]
    with pytest.raises(ValueError, match="too short"):
        StreamingLogMel().finish()


def test_bench_services(tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`lfm-satellite bench services` prints and saves the services' figures (a server in a
    child process, the wyoming client in this one)."""
    from satellite.cli import main

    saved = tmp_path / "services.json"
    args = ["bench", "services", "--model", str(tiny_dir), "--requests", "2", "--threads", "1"]
    assert main([*args, "--json", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "audio-stop -> transcript-start ms" in out and "transcriptions at once" in out
    figures = json.loads(saved.read_text())
    assert figures["asr_ms"]["transcript"]["count"] == 2
    assert figures["asr_ms"]["start"]["p50"] <= figures["asr_ms"]["transcript"]["p50"]
    assert figures["handle_ms"]["count"] == 2
    assert figures["concurrent_asr_seconds_workers_2"] > 0
    assert figures["tts"]["requests_without_audio"] + len(figures["tts"]["first_audio_ms"]) == 3


async def test_a_busy_port_is_refused_with_the_key(tiny_dir: Path) -> None:
    async with running(tiny_dir) as first:
        model, tokens = load(tiny_dir)
        config = ServicesConfig(host="127.0.0.1", port=first.bound_port, limits=LIMITS)
        second = ServicesServer(model, tokens, config)
        with pytest.raises(WyomingServerError, match=r"wyoming\.services_port: cannot listen on"):
            await second.start()
        assert second.pool.pending == 0


# -- Home Assistant's own client paths ------------------------------------------------------


async def ha_stt(port: int, language: str, audio: bytes) -> str | None:
    """What Home Assistant's `WyomingSttProvider.async_process_audio_stream`
    (homeassistant/components/wyoming/stt.py, 2025.4-2026.11) does with a services endpoint:
    transcribe, audio-start, chunks, audio-stop, then read until a transcript (its text) or
    the connection's end (None: the pipeline's STT error). `error` events are ignored."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language=language).event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        for offset in range(0, len(audio), 2048):
            chunk = AudioChunk(16000, 2, 1, audio[offset : offset + 2048])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        for _ in range(10_000):
            event = await client.read_event()
            if event is None:
                return None
            if Transcript.is_type(event.type):
                return Transcript.from_event(event).text
    raise AssertionError("no end")


async def ha_tts(port: int, text: str) -> bytes | None:
    """What Home Assistant's `WyomingTtsProvider.async_get_tts_audio` (tts.py) does: synthesize,
    then read until audio-stop (the audio) or the connection's end (None: no TTS).
    `error` events are ignored."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Synthesize(text=text).event())
        audio = b""
        for _ in range(100_000):
            event = await client.read_event()
            if event is None:
                return None
            if AudioStop.is_type(event.type):
                return audio
            if AudioChunk.is_type(event.type):
                audio += AudioChunk.from_event(event).audio
    raise AssertionError("no end")


async def test_a_failed_request_fails_home_assistants_pipeline_at_once(tiny_dir: Path) -> None:
    """Issue 16, point 7: Home Assistant's STT and TTS clients ignore `error`, so a request
    that failed and left its connection open stalled the pipeline until HA's own 30 s timeout
    ("No TTS from tts.…"). Each failing request now ends its connection right after the
    `error`: HA's loops end at once with their error result; good requests still work."""
    speech = (np.sin(np.arange(16000) / 5.0) * 8000).astype("<i2").tobytes()
    async with running(tiny_dir) as server:
        port = server.bound_port
        for name, request in (
            ("unsupported STT language", ha_stt(port, "fr", speech)),
            ("empty STT audio", ha_stt(port, "en", b"")),
            ("TTS of a control token", ha_tts(port, "hi <|im_end|>")),
            ("empty TTS text", ha_tts(port, "   ")),
        ):
            started = time.monotonic()
            result = await asyncio.wait_for(request, 30)
            took = time.monotonic() - started
            assert result is None, f"{name}: {result!r}"
            assert took < 1.0, f"{name}: Home Assistant waited {took:.1f} s"
        assert await asyncio.wait_for(ha_stt(port, "en", speech), 60) is not None
        audio = await asyncio.wait_for(ha_tts(port, "Hello there, how are you?"), 60)
        assert audio is not None and len(audio) > 0
