"""Where the satellite's audio comes from and goes to.

Every backend gives the same two halves, used from asyncio:

- capture: `async for chunk in backend.chunks()` yields 16-bit mono chunks of exactly
  `chunk_samples` samples at `input_rate` (int16 numpy arrays) until the source ends or
  `close` is called;
- playback: `await backend.play(samples, rate)` queues float32 mono audio at any rate
  (resampled to `output_rate`); `await backend.drain()` waits until it has been played.
  A reply runs from its first `play` to `drain` (or `stop_playback`); a gap in it, where the
  speaker had nothing to play, is an underrun, unless `hold_playback` said it is meant (the
  reply player holds audio back so that the rest keeps up: `satellite.audio.player`).

Backends: `null` (silence in, output counted and dropped), `file` (a WAV file in, a WAV file
out, paced at real time or as fast as possible) and `sounddevice` (PortAudio). The PortAudio
callbacks only copy: capture into a `RingBuffer`, playback out of a `JitterBuffer`. A missing
PortAudio library, an unknown device or a stream that fails are `AudioBackendError`s with a
message a person can act on; a stream that fails or stalls while running is logged and
reopened with a bounded backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from satellite.audio.convert import AudioFormatError, FloatArray, StreamResampler, resample
from satellite.audio.jitter import JitterBuffer
from satellite.audio.ringbuffer import RingBuffer
from satellite.audio.wavfile import WavWriter, read_wav
from satellite.errors import UserError
from satellite.settings import AudioSettings

_LOG = logging.getLogger("satellite.audio")

Int16Array = npt.NDArray[np.int16]
Kind = Literal["input", "output"]

PORTAUDIO_HINT = "install it, e.g. `sudo apt install libportaudio2`"
CAPTURE_SECONDS = 2.0
"""Capture ring size: audio the reader may fall behind by before samples are dropped."""
PLAYBACK_SECONDS = 30.0
"""Playback buffer size; `play` waits for room beyond it."""
STALL_SECONDS = 2.0
"""A stream that delivers (input) or takes (output) nothing for this long is reopened."""
OUTPUT_CHECK_SECONDS = 0.5
DEFAULT_BLOCK_SECONDS = 0.02
"""The sound card's block before its callback has run."""
GAP_SECONDS = 0.001
"""A simulated speaker (`file`, `null` at real time) counts a gap this long or longer."""
"""A capture stream that delivers nothing for this long is reopened."""
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0)
"""Waits before each attempt to reopen a failed stream; after the last, the error stands."""


class AudioBackendError(UserError):
    """Audio that cannot be set up (no PortAudio, no such device, a file that cannot be used)."""


class PortAudioMissingError(AudioBackendError):
    """The PortAudio shared library (or the sounddevice package) is not installed."""


class DeviceNotFoundError(AudioBackendError):
    """The configured device does not exist; the message lists the ones that do."""


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device, as `lfm-satellite devices` shows it."""

    index: int
    name: str
    inputs: int
    outputs: int
    default_rate: float
    hostapi: str = ""

    def channels(self, kind: Kind) -> int:
        return self.inputs if kind == "input" else self.outputs


@dataclass(frozen=True)
class AudioStats:
    """Counters of one backend since it started."""

    chunks: int
    """Capture chunks delivered."""
    overflows: int
    """Capture overflows: the ring was full (reader too slow) or PortAudio reported one."""
    underruns: int
    """Playback underruns: the speaker asked for audio mid-reply and there was none."""
    played: int
    """Samples played (at `output_rate`)."""
    restarts: int
    """Streams reopened after an error or a stall."""
    holds: int = 0
    """Deliberate gaps in playback (`hold_playback`)."""
    lost: int = 0
    """Samples dropped because the output stream had died (at `output_rate`)."""


def load_sounddevice() -> ModuleType:
    """Import sounddevice; a missing PortAudio library or package is a PortAudioMissingError."""
    try:
        import sounddevice  # noqa: PLC0415 (PortAudio missing is an error for this backend only)
    except OSError as err:
        raise PortAudioMissingError(
            f"the PortAudio library (libportaudio) was not found ({err}); {PORTAUDIO_HINT}, "
            "or use `audio.backend: file` or `null`"
        ) from None
    except ImportError:
        raise PortAudioMissingError(
            "the Python package sounddevice is not installed; `pip install sounddevice` and "
            f"{PORTAUDIO_HINT}"
        ) from None
    module: ModuleType = sounddevice
    return module


def rescan_devices(sd: ModuleType) -> None:
    """Make PortAudio list the devices there are now. It lists them once, when initialised (at
    the import of sounddevice), so an audio server started since (PulseAudio, PipeWire) or a
    microphone plugged in since stays invisible until it is initialised again. sounddevice has
    no public call for this; its `_terminate`/`_initialize` pair is what its author points
    to. Only while this process has no stream open."""
    terminate = getattr(sd, "_terminate", None)
    initialize = getattr(sd, "_initialize", None)
    if callable(terminate) and callable(initialize):
        terminate()
        initialize()


def list_devices(sd: ModuleType | None = None) -> list[DeviceInfo]:
    """Every PortAudio device (inputs and outputs)."""
    sd = sd or load_sounddevice()
    apis = [str(api.get("name", "")) for api in sd.query_hostapis()]
    found: list[DeviceInfo] = []
    for index, dev in enumerate(sd.query_devices()):
        api = int(dev.get("hostapi", -1))
        found.append(
            DeviceInfo(
                index=index,
                name=str(dev["name"]),
                inputs=int(dev["max_input_channels"]),
                outputs=int(dev["max_output_channels"]),
                default_rate=float(dev["default_samplerate"]),
                hostapi=apis[api] if 0 <= api < len(apis) else "",
            )
        )
    return found


def describe_devices(devices: list[DeviceInfo], kind: Kind) -> str:
    """`0 "Mic" (2 ch, 48000 Hz), 3 "USB" (...)` or `none`."""
    usable = [d for d in devices if d.channels(kind)]
    if not usable:
        return "none"
    return ", ".join(
        f'{d.index} "{d.name}" ({d.channels(kind)} ch, {d.default_rate:g} Hz)' for d in usable
    )


def find_device(devices: list[DeviceInfo], spec: str | int | None, kind: Kind) -> int | None:
    """The index of the `kind` device named or numbered by `spec` (None: the system default).
    A name matches exactly (ignoring case) or as a substring. DeviceNotFoundError lists the
    devices there are."""
    if spec is None or spec == "":
        return None
    usable = [d for d in devices if d.channels(kind)]
    if isinstance(spec, int) or spec.strip().isdigit():
        index = int(spec)
        for dev in usable:
            if dev.index == index:
                return index
        what = f"no {kind} device has index {index}"
    else:
        wanted = spec.strip().casefold()
        exact = [d for d in usable if d.name.casefold() == wanted]
        partial = [d for d in usable if wanted in d.name.casefold()]
        if exact or partial:
            return (exact or partial)[0].index
        what = f"no {kind} device is named {spec!r}"
    raise DeviceNotFoundError(
        f"audio.{kind}_device: {what}; {kind} devices: {describe_devices(devices, kind)} "
        "(see `lfm-satellite devices`)"
    )


class AudioBackend:
    """The interface (and shared playback bookkeeping) of every backend."""

    def __init__(self, settings: AudioSettings) -> None:
        self.settings = settings
        self.input_rate = settings.input_rate
        self.output_rate = settings.output_rate
        self.chunk_samples = max(1, settings.input_rate * settings.chunk_ms // 1000)
        self.volume = settings.volume
        self._chunks = 0
        self._overflows = 0
        self._played = 0
        self._restarts = 0
        self._closed = False
        self._resampler: StreamResampler | None = None
        self.realtime = True
        """Playback runs at the speaker's pace (False: as fast as it is queued)."""
        self.on_played: Callable[[FloatArray, float], None] | None = None
        """Told each block the speaker plays as it plays it (mono float32 at `output_rate`,
        volume applied) and the `time.monotonic()` it begins to play: the echo canceller's
        reference. The sound card's backend calls it from its audio thread."""

    @property
    def chunk_seconds(self) -> float:
        return self.chunk_samples / self.input_rate

    async def start(self) -> None:
        """Open the streams or files."""

    async def close(self) -> None:
        """Stop capture (ending `chunks`) and release what was opened."""
        self._closed = True

    def chunks(self) -> AsyncIterator[Int16Array]:
        """Capture chunks, see the module docstring."""
        raise NotImplementedError

    def stats(self) -> AudioStats:
        return AudioStats(self._chunks, self._overflows, 0, self._played, self._restarts)

    @property
    def queued(self) -> int:
        """Samples waiting to be played (at `output_rate`)."""
        return 0

    @property
    def lead_seconds(self) -> float:
        """How far ahead of the sound the speaker takes audio (0: at the moment it plays)."""
        return 0.0

    @property
    def output_silent_seconds(self) -> float:
        """How long the output stream has taken no audio though it should (0: it is alive)."""
        return 0.0

    @property
    def echo_delay_ms(self) -> int:
        """The output's and the input's latencies as the backend knows them: how long after
        `on_played` hears a block its echo can reach the capture, at the least."""
        return 0

    def _to_output(self, samples: npt.ArrayLike, rate: int, last: bool = False) -> FloatArray:
        """`samples` at `rate` -> float32 at `output_rate`, resampler state kept across calls
        of one rate (a new rate starts a new stream)."""
        audio = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._resampler is None or self._resampler.rate_in != rate:
            self._resampler = StreamResampler(rate, self.output_rate)
        return self._resampler.process(audio, last=last)

    async def play(self, samples: npt.ArrayLike, rate: int) -> None:
        """Queue float32 mono `samples` at `rate` Hz for playback."""
        await self._output(self._to_output(samples, rate))

    async def drain(self) -> None:
        """Wait until everything queued has been played; the next `play` starts a new reply."""
        if self._resampler is not None:
            tail = self._resampler.process(np.zeros(0, np.float32), last=True)
            self._resampler = None
            await self._output(tail)
        await self._drain()

    def stop_playback(self) -> None:
        """Drop the audio queued for playback now (barge-in); the next `play` starts afresh."""
        self._resampler = None

    def hold_playback(self) -> None:
        """The next time the speaker runs out of audio in this reply is meant: a hold, not
        an underrun (until the next `play`)."""

    async def _output(self, samples: FloatArray) -> None:
        raise NotImplementedError

    async def _drain(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> AudioBackend:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _PacedBackend(AudioBackend):
    """Capture from an array, paced at real time (the chunk is yielded when its last sample
    would have been recorded, by `time.monotonic`) or as fast as possible. Playback in real
    time behaves like a speaker: queued audio counts as played (and is written) only once its
    time has come, `drain` lasts as long as the audio would, and `stop_playback` drops what
    has not been played yet; as fast as possible, audio is played the moment it is queued."""

    def __init__(self, settings: AudioSettings, realtime: bool) -> None:
        super().__init__(settings)
        self.realtime = realtime
        self._play_until = 0.0
        self._pending: deque[FloatArray] = deque()
        self._pending_samples = 0
        self._in_reply = False
        self._holding = False
        self._hold_from = 0.0
        self._underruns = 0
        self._holds = 0

    def _source(self) -> Int16Array | None:
        """All capture audio at input_rate (None: endless silence)."""
        return None

    async def chunks(self) -> AsyncIterator[Int16Array]:
        source = self._source()
        total = math.ceil(source.shape[0] / self.chunk_samples) if source is not None else None
        start = time.monotonic()
        index = 0
        while not self._closed and (total is None or index < total):
            if source is None:
                chunk = np.zeros(self.chunk_samples, np.int16)
            else:
                chunk = source[index * self.chunk_samples : (index + 1) * self.chunk_samples]
                if chunk.shape[0] < self.chunk_samples:
                    chunk = np.concatenate(
                        [chunk, np.zeros(self.chunk_samples - chunk.shape[0], np.int16)]
                    )
            index += 1
            if self.realtime:
                await asyncio.sleep(max(0.0, start + index * self.chunk_seconds - time.monotonic()))
                self._flush(time.monotonic())  # the speaker plays on in step with the mic
            else:
                await asyncio.sleep(0)
            self._chunks += 1
            yield chunk

    def stats(self) -> AudioStats:
        return AudioStats(self._chunks, self._overflows, self._underruns, self._played,
                          self._restarts, self._holds)  # fmt: skip

    def hold_playback(self) -> None:
        """A gap that began before this call was not meant: it stays an underrun."""
        self._holding = True
        self._hold_from = time.monotonic()

    async def _output(self, samples: FloatArray) -> None:
        samples = samples * np.float32(self.volume)
        if not self.realtime:
            self._emit(samples)
            return
        if not samples.shape[0]:
            return
        now = time.monotonic()
        self._flush(now)
        if self._in_reply and now - self._play_until >= GAP_SECONDS:
            if self._holding and self._play_until >= self._hold_from - GAP_SECONDS:
                self._holds += 1
            else:
                self._underruns += 1
        self._in_reply = True
        self._holding = False
        self._play_until = max(self._play_until, now) + samples.shape[0] / self.output_rate
        self._pending.append(samples)
        self._pending_samples += samples.shape[0]

    def _flush(self, now: float) -> None:
        """In real time: hand on the queued samples whose playing time has come (a speaker
        has played them), oldest first."""
        unplayed = max(0, math.ceil((self._play_until - now) * self.output_rate))
        due = self._pending_samples - unplayed
        at = self._play_until - self._pending_samples / self.output_rate
        while due > 0 and self._pending:
            head = self._pending[0]
            take = min(due, head.shape[0])
            self._emit(head[:take], at)
            at += take / self.output_rate
            due -= take
            self._pending_samples -= take
            if take == head.shape[0]:
                self._pending.popleft()
            else:
                self._pending[0] = head[take:]

    def _emit(self, samples: FloatArray, at: float | None = None) -> None:
        """`samples` played, beginning at `at` (`time.monotonic()`; now unless given)."""
        self._played += samples.shape[0]
        if self.on_played is not None:
            self.on_played(samples, time.monotonic() if at is None else at)
        self._write(samples)

    def _write(self, samples: FloatArray) -> None:
        """Where played audio goes (nowhere by default)."""

    async def _drain(self) -> None:
        if self.realtime:
            await asyncio.sleep(max(0.0, self._play_until - time.monotonic()))
            self._flush(max(time.monotonic(), self._play_until))
        self._in_reply = self._holding = False

    @property
    def queued(self) -> int:
        if not self.realtime:
            return 0
        return max(0, math.ceil((self._play_until - time.monotonic()) * self.output_rate))

    def stop_playback(self) -> None:
        """What has been played so far stays played; the rest is dropped."""
        super().stop_playback()
        now = time.monotonic()
        self._flush(now)
        self._pending.clear()
        self._pending_samples = 0
        self._play_until = now
        self._in_reply = self._holding = False


class NullBackend(_PacedBackend):
    """Silence in (endless, until `close`), output discarded but counted."""

    def __init__(self, settings: AudioSettings, realtime: bool | None = None) -> None:
        super().__init__(settings, settings.realtime if realtime is None else realtime)


class FileBackend(_PacedBackend):
    """`audio.input_file` as the microphone (mono, resampled to input_rate, the last chunk
    padded with silence; its end ends capture), `audio.output_file` as the speaker (16-bit
    mono WAV at output_rate; discarded when unset)."""

    def __init__(self, settings: AudioSettings) -> None:
        super().__init__(settings, settings.realtime)
        if not settings.input_file:
            raise AudioBackendError("audio.input_file: the file backend needs a WAV file to read")
        self.input_path = Path(settings.input_file).expanduser()
        self.output_path = Path(settings.output_file).expanduser() if settings.output_file else None
        self._audio: Int16Array | None = None
        self._writer: WavWriter | None = None

    async def start(self) -> None:
        try:
            wav = read_wav(self.input_path)
        except AudioFormatError as err:
            raise AudioBackendError(f"audio.input_file: {err}") from None
        audio = resample(wav.samples, wav.rate, self.input_rate)
        scaled = np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768.0)
        self._audio = scaled.astype(np.int16)
        if self.output_path is not None:
            try:
                self._writer = WavWriter(self.output_path, self.output_rate)
            except AudioFormatError as err:
                raise AudioBackendError(f"audio.output_file: {err}") from None

    def _source(self) -> Int16Array:
        if self._audio is None:
            raise RuntimeError("FileBackend.start() was not called")
        return self._audio

    def _write(self, samples: FloatArray) -> None:
        if self._writer is not None:
            self._writer.write(samples)

    async def close(self) -> None:
        await super().close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class SoundDeviceBackend(AudioBackend):
    """PortAudio capture and playback through sounddevice.

    The input callback mixes to mono (into a preallocated scratch block when there are several
    channels) and writes into a `RingBuffer`; the output callback pulls from a `JitterBuffer`.
    Neither waits nor allocates sample storage. Streams that fail to open, raise, or stall are
    reopened after `RETRY_DELAYS`; when those run out the error is raised."""

    def __init__(
        self,
        settings: AudioSettings,
        sd: ModuleType | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        super().__init__(settings)
        self.sd = sd or load_sounddevice()
        self._sleep = sleep
        self.ring = RingBuffer(
            max(self.chunk_samples * 4, int(settings.input_rate * CAPTURE_SECONDS))
        )
        self.jitter = JitterBuffer(int(settings.output_rate * PLAYBACK_SECONDS))
        self.jitter.volume = settings.volume
        self._channels = settings.input_channels
        self._mix = np.zeros(self.chunk_samples * 8, dtype=np.int32)
        self._input: Any = None
        self._output_stream: Any = None
        self._input_index: int | None = None
        self._output_index: int | None = None
        self._device_overflows = 0
        self._device_underruns = 0
        self._block = 0
        """The largest block the output callback has asked for."""
        self._last_pull = time.monotonic()
        """When the output callback last ran (a live stream calls it every block)."""
        self._lost = 0
        self._watcher: asyncio.Task[None] | None = None

    def stats(self) -> AudioStats:
        return AudioStats(
            self._chunks,
            self.ring.overflows + self._device_overflows,
            self.jitter.underruns + self._device_underruns,
            self.jitter.played,
            self._restarts,
            self.jitter.holds,
            self._lost,
        )

    def _resolve(self) -> None:
        devices = list_devices(self.sd)
        self._input_index = find_device(devices, self.settings.input_device, "input")
        self._output_index = find_device(devices, self.settings.output_device, "output")
        kinds: tuple[tuple[Kind, int | None], ...] = (
            ("input", self._input_index),
            ("output", self._output_index),
        )
        for kind, index in kinds:
            if index is None and not any(d.channels(kind) for d in devices):
                raise DeviceNotFoundError(
                    f"no audio {kind} device found (is a sound card plugged in?); "
                    "see `lfm-satellite devices`, or use `audio.backend: file` or `null`"
                )

    def _on_input(self, indata: Any, frames: int, when: Any, status: Any) -> None:
        if status and status.input_overflow:
            self._device_overflows += 1
        if self._channels == 1:
            self.ring.write(indata[:, 0])
            return
        mix = self._mix[:frames] if frames <= self._mix.shape[0] else None
        if mix is None:  # a block larger than asked for: rare, allowed to allocate
            mix = np.empty(frames, dtype=np.int32)
        np.sum(indata, axis=1, dtype=np.int32, out=mix)
        mix //= self._channels
        self.ring.write(mix)

    def _on_output(self, outdata: Any, frames: int, when: Any, status: Any) -> None:
        if status and status.output_underflow:
            self._device_underruns += 1
        self._last_pull = time.monotonic()
        self._block = max(self._block, frames)
        self.jitter.pull(outdata[:, 0])
        if self.on_played is not None:
            self.on_played(outdata[:, 0], time.monotonic())

    def _open_input(self) -> None:
        self.ring.reopen()
        stream = self.sd.InputStream(
            device=self._input_index,
            samplerate=self.input_rate,
            channels=self._channels,
            dtype="int16",
            blocksize=self.chunk_samples,
            callback=self._on_input,
        )
        stream.start()
        self._input = stream

    def _open_output(self) -> None:
        stream = self.sd.OutputStream(
            device=self._output_index,
            samplerate=self.output_rate,
            channels=1,
            dtype="float32",
            latency=self.settings.output_latency_ms / 1000 or "high",
            callback=self._on_output,
        )
        stream.start()
        self._output_stream = stream
        self._last_pull = time.monotonic()

    @property
    def echo_delay_ms(self) -> int:
        latency = 0.0
        for stream in (self._input, self._output_stream):
            with contextlib.suppress(Exception):
                latency += float(stream.latency)
        return round(latency * 1000)

    @staticmethod
    def _shut(stream: Any) -> None:
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.stop()
            with contextlib.suppress(Exception):
                stream.close()

    async def _with_retry(self, what: str, opener: Callable[[], None]) -> None:
        """Run `opener` (re-resolving devices before each retry), retrying after errors."""
        errors = (self.sd.PortAudioError, OSError, ValueError)
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
            if delay:
                self._restarts += 1
                await self._sleep(delay)
            try:
                if attempt:
                    self._resolve()
                opener()
                return
            except DeviceNotFoundError as err:
                last = str(err)
            except errors as err:
                last = f"{err}"
            _LOG.warning("audio %s stream: %s (attempt %d)", what, last, attempt + 1)
            if self._closed:
                break
        raise AudioBackendError(f"cannot open the audio {what} stream: {last}")

    async def start(self) -> None:
        rescan_devices(self.sd)
        self._resolve()
        await self._with_retry("input", self._open_input)
        await self._with_retry("output", self._open_output)
        self._watcher = asyncio.create_task(self._watch_output())

    @property
    def output_silent_seconds(self) -> float:
        silent = time.monotonic() - self._last_pull
        return silent if silent > STALL_SECONDS else 0.0

    async def _watch_output(self) -> None:
        """Reopen the output stream when its callback has stopped running (the audio server
        went away, the device was unplugged): a live stream pulls a block every few tens of
        milliseconds, playing or not. What was waiting to be played is lost and counted."""
        while not self._closed:
            await asyncio.sleep(OUTPUT_CHECK_SECONDS)
            if not self.output_silent_seconds:
                continue
            lost = self.jitter.buffered
            self._lost += lost
            if lost:
                self.jitter.underruns += 1  # the listener heard a break
            _LOG.warning("audio output took nothing for %.0f s (the audio server went away?); "
                         "reopening it; %.1f s of sound lost", self.output_silent_seconds,
                         lost / self.output_rate)  # fmt: skip
            self.jitter.stop()
            self._shut(self._output_stream)
            self._output_stream = None
            self._restarts += 1
            try:
                await self._with_retry("output", self._open_output)
                _LOG.info("audio output reopened")
            except AudioBackendError as err:
                _LOG.error("%s; trying again", err)

    async def chunks(self) -> AsyncIterator[Int16Array]:
        stalls = 0
        while not self._closed:
            chunk = await asyncio.to_thread(self.ring.read, self.chunk_samples, STALL_SECONDS)
            if chunk is not None:
                stalls = 0
                self._chunks += 1
                yield chunk
                continue
            if self._closed:
                break
            stalls += 1
            if stalls > len(RETRY_DELAYS):
                raise AudioBackendError(
                    f"the audio input stream delivered nothing for {stalls} tries of "
                    f"{STALL_SECONDS:g} s; check the microphone (`lfm-satellite devices`)"
                )
            _LOG.warning("audio input delivered nothing for %g s; reopening it", STALL_SECONDS)
            self._shut(self._input)
            self._input = None
            self._restarts += 1
            await self._with_retry("input", self._open_input)

    async def _output(self, samples: FloatArray) -> None:
        offset = 0
        deadline = time.monotonic() + PLAYBACK_SECONDS + samples.shape[0] / self.output_rate
        while offset < samples.shape[0] and not self._closed:
            offset += self.jitter.write(samples[offset:])
            if offset < samples.shape[0]:
                if time.monotonic() > deadline:
                    raise AudioBackendError("audio output is not being played (stream stuck)")
                await asyncio.sleep(0.01)

    async def _drain(self) -> None:
        self.jitter.finish()
        limit = self.jitter.buffered / self.output_rate + STALL_SECONDS
        done = await asyncio.to_thread(self.jitter.drained.wait, limit)
        if not done:
            _LOG.warning("audio output did not drain in %.1f s; dropping the rest", limit)
            self.jitter.stop()

    @property
    def queued(self) -> int:
        return self.jitter.buffered

    @property
    def lead_seconds(self) -> float:
        """One callback block (the callback takes a whole block the moment it runs)."""
        return max(self._block / self.output_rate, DEFAULT_BLOCK_SECONDS)

    def stop_playback(self) -> None:
        super().stop_playback()
        self.jitter.stop()

    def hold_playback(self) -> None:
        self.jitter.hold()

    async def close(self) -> None:
        await super().close()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        self.ring.close()
        self.jitter.stop()
        self._shut(self._input)
        self._shut(self._output_stream)
        self._input = self._output_stream = None


def open_backend(settings: AudioSettings) -> AudioBackend:
    """The backend `audio.backend` names (not yet started)."""
    if settings.backend == "null":
        return NullBackend(settings)
    if settings.backend == "file":
        return FileBackend(settings)
    return SoundDeviceBackend(settings)
