"""Helpers for the daemon's tests: spoken input files, settings, and a Home Assistant played by
the real `wyoming` client library the way its Wyoming integration drives a satellite."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lfm_toolchain.cache import cached_model
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.satellite import PauseSatellite, RunSatellite

from satellite.audio.convert import resample
from satellite.audio.wavfile import read_wav, write_wav
from satellite.cli.demo import espeak
from satellite.settings import MqttSettings, Settings, loopback_wyoming

TTS_RATE = 22050
CHUNK_BYTES = 2048
"""Home Assistant sends TTS and announcements as 2048-byte chunks at 22,050 Hz."""
PING_DELAY = 2.0
"""Home Assistant pings 2 s after each pong (assist_satellite.py `_PING_SEND_DELAY`)."""

Segment = tuple[str, float | str]
"""("silence", seconds) or ("say", text)."""


def tiny_model() -> Path:
    """The tiny 4-bit model, built once per test run: the default one (the demo's and the
    commands'), random weights shaped so that its replies reach audio and end by themselves."""
    return cached_model("tiny", "q4")


def unshaped_model() -> Path:
    """The tiny 4-bit model with its special rows as drawn (seed 0, not shaped): what it
    generates runs to its limit (a transcript to its token limit, a spoken reply, in audio after
    its first text run, to `safety.max_reply_seconds`; a TTS reply never starts its audio). For
    tests that need a reply still playing at a given moment (barge-in, the stop word, the gated
    mic, a follow-up after a 2 s reply, pacing over long replies) or a transcript of many
    pieces: the default model's replies may end by themselves (end of audio, then
    `<|im_end|>`) at a point no test can count on, and its transcripts stop after a few
    tokens."""
    return cached_model("tiny", "q4", 0, shaped=False)


def spoken(text: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "speech.wav"
        espeak(text, wav)
        audio = read_wav(wav)
    return resample(audio.samples, audio.rate, 16000)


def script_wav(path: Path, segments: Sequence[Segment]) -> float:
    """Write a 16 kHz WAV of espeak-ng speech and silences; returns its length in seconds."""
    parts = [
        np.zeros(int(float(value) * 16000), np.float32) if kind == "silence" else spoken(str(value))
        for kind, value in segments
    ]
    samples = np.concatenate(parts)
    write_wav(path, samples, 16000)
    return samples.size / 16000


def wake_and_ask(question: str = "turn on the kitchen lights", after: float = 2.0) -> list[Segment]:
    return [("silence", 1.0), ("say", "okay nabu"), ("silence", 0.6), ("say", question),
            ("silence", after)]  # fmt: skip


def daemon_settings(
    model: Path,
    *,
    mode: str = "local",
    backend: str = "file",
    input_file: Path | None = None,
    output_file: Path | None = None,
    max_reply_seconds: float = 2.0,
    state_file: str | None = None,
    mqtt: MqttSettings | None = None,
    **audio: Any,
) -> Settings:
    base = Settings()
    replace = dataclasses.replace
    return replace(
        base,
        satellite=replace(
            base.satellite,
            name="Test Satellite",
            area="Kitchen",
            mode=mode,  # type: ignore[arg-type]
            state_file=state_file
            or str(Path(tempfile.mkdtemp(prefix="lfm-state-")) / "state.json"),
        ),
        audio=replace(
            base.audio,
            backend=backend,  # type: ignore[arg-type]
            input_file=str(input_file) if input_file else None,
            output_file=str(output_file) if output_file else None,
            realtime=True,
            **audio,
        ),
        model=replace(base.model, directory=str(model), threads=1),
        wyoming=loopback_wyoming(base.wyoming),
        safety=replace(base.safety, max_reply_seconds=max_reply_seconds),
        mqtt=mqtt or replace(base.mqtt, enabled=False),
    )


async def run_to_end(settings: Settings, timeout: float) -> tuple[Any, list[str]]:
    """Run a daemon on `settings` until its input file has ended and it stops by itself (at
    most `timeout` seconds); returns the daemon and the kinds of what it reported, in order."""
    from satellite.daemon.core import Daemon

    daemon = Daemon(settings)
    seen: list[str] = []
    daemon.observe(lambda event: seen.append(event.kind))
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.wait_stopped(), timeout)
    finally:
        await daemon.close()
    return daemon, seen


@dataclass
class Received:
    event: Event
    time: float


@dataclass
class HomeAssistant:
    """Home Assistant's side of a satellite connection: `run-satellite`, `describe`, then a
    `ping` 2 s after every `pong`; every event received is recorded with its time."""

    port: int
    ping: bool = True
    received: list[Received] = field(default_factory=list)
    client: AsyncTcpClient | None = None
    _task: asyncio.Task[None] | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    async def connect(self, run: bool = True) -> None:
        self.client = AsyncTcpClient("127.0.0.1", self.port)
        await self.client.connect()
        if run:
            await self.send(RunSatellite().event())
            await self.send(Describe().event())
        self._task = asyncio.create_task(self._loop())

    async def send(self, event: Event) -> None:
        assert self.client is not None
        await self.client.write_event(event)

    async def _loop(self) -> None:
        assert self.client is not None
        next_ping = time.monotonic() + PING_DELAY if self.ping else float("inf")
        reading = asyncio.ensure_future(self.client.read_event())
        try:
            for _ in range(100_000):
                timeout = (
                    None if next_ping == float("inf") else max(0.0, next_ping - time.monotonic())
                )
                done, _ = await asyncio.wait([reading], timeout=timeout)
                if not done:
                    if self.ping:
                        await self.send(Ping().event())
                    next_ping = float("inf")
                    continue
                event = reading.result()
                if event is None:
                    self.closed = True
                    self._arrived.set()
                    return
                reading = asyncio.ensure_future(self.client.read_event())
                self.received.append(Received(event, time.monotonic()))
                self._arrived.set()
                if Pong.is_type(event.type) and self.ping:
                    next_ping = time.monotonic() + PING_DELAY
        except (ConnectionError, OSError):
            self.closed = True
            self._arrived.set()
        finally:
            reading.cancel()

    def types(self) -> list[str]:
        return [r.event.type for r in self.received]

    def of(self, kind: str) -> list[Received]:
        return [r for r in self.received if r.event.type == kind]

    async def wait_for(self, kind: str, timeout: float, count: int = 1) -> list[Received]:
        """The first `count` events of `kind`; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.of(kind)) < count:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(
                    f"no {count} x {kind} within {timeout} s (closed={self.closed}); got {self.types()}"
                )
            self._arrived.clear()
            try:
                async with asyncio.timeout(left):
                    await self._arrived.wait()
            except TimeoutError:
                pass
        return self.of(kind)[:count]

    async def wait_closed(self, timeout: float) -> float:
        """Seconds until the satellite closed the connection."""
        start = time.monotonic()
        while not self.closed:
            if time.monotonic() - start > timeout:
                raise AssertionError(f"the connection was not closed within {timeout} s")
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                pass
        return time.monotonic() - start

    async def close(self, pause: bool = True) -> None:
        if self.client is not None and not self.closed and pause:
            with contextlib.suppress(ConnectionError, OSError):
                await self.send(PauseSatellite().event())
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.client is not None:
            with contextlib.suppress(ConnectionError, OSError):
                await self.client.disconnect()


def with_services(settings: Settings) -> Settings:
    """`settings` with the Wyoming services on loopback, on a port the system picks."""
    wyoming = dataclasses.replace(
        settings.wyoming, services_enabled=True, services_host="127.0.0.1", services_port=0
    )
    return dataclasses.replace(settings, wyoming=wyoming)


def tone(seconds: float, rate: int = TTS_RATE) -> bytes:
    """A 440 Hz tone as 16-bit mono PCM."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()


async def send_audio(
    ha: HomeAssistant, pcm: bytes, rate: int = TTS_RATE, stop: bool = True
) -> None:
    """What Home Assistant sends for TTS or an announcement (its `async_announce`):
    audio-start, 2048-byte chunks as fast as the socket takes them, audio-stop (left out to
    play a sender that stops)."""
    await ha.send(AudioStart(rate=rate, width=2, channels=1, timestamp=0).event())
    for offset in range(0, len(pcm), CHUNK_BYTES):
        chunk = AudioChunk(rate=rate, width=2, channels=1, audio=pcm[offset : offset + CHUNK_BYTES])
        await ha.send(chunk.event())
    if stop:
        await ha.send(AudioStop().event())


@contextlib.asynccontextmanager
async def home_assistant(port: int) -> AsyncIterator[HomeAssistant]:
    """A HomeAssistant connected (its `info` received), closed at the end."""
    ha = HomeAssistant(port)
    await ha.connect()
    try:
        await ha.wait_for("info", 5)
        yield ha
    finally:
        await ha.close()
