"""Audio I/O (issue 5, point 1): the capture ring buffer, the playback jitter buffer, the null,
file and sounddevice backends, and `lfm-satellite devices`.

The sounddevice backend's streams are driven here by a stand-in module whose streams call the
backend's callbacks the way PortAudio does (this machine has no sound card); the real
PortAudio library is exercised by `lfm-satellite devices`, and its absence is simulated in a
subprocess where importing sounddevice raises the OSError it raises without libportaudio.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from satellite.audio.backends import (
    AudioBackend,
    AudioBackendError,
    DeviceNotFoundError,
    FileBackend,
    NullBackend,
    SoundDeviceBackend,
    find_device,
    list_devices,
    load_sounddevice,
)
from satellite.audio.convert import resample
from satellite.audio.jitter import JitterBuffer
from satellite.audio.ringbuffer import RingBuffer
from satellite.audio.wavfile import read_wav, wav_info, write_wav
from satellite.cli.audio import format_devices
from satellite.settings import AudioSettings
from tests.paths import REPO

ROOT = REPO


def _collect(backend: AudioBackend, limit: int = 10_000) -> list[np.ndarray]:
    async def run() -> list[np.ndarray]:
        got: list[np.ndarray] = []
        async with backend:
            async for chunk in backend.chunks():
                got.append(chunk)
                if len(got) >= limit:
                    break
        return got

    return asyncio.run(run())


def _noise(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pcm = rng.integers(-20000, 20000, int(seconds * rate)).astype(np.int16)
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


# ring buffer


def test_ring_wraps_around_and_keeps_order() -> None:
    ring = RingBuffer(10)
    assert ring.write(np.arange(7, dtype=np.int16)) == 7
    first = ring.read(5, timeout=0.1)
    assert first is not None and first.tolist() == [0, 1, 2, 3, 4]
    assert ring.write(np.arange(7, 14, dtype=np.int16)) == 7  # wraps past the end
    rest = ring.read(9, timeout=0.1)
    assert rest is not None and rest.tolist() == list(range(5, 14))
    assert len(ring) == 0 and ring.overflows == 0


def test_ring_counts_overflows_and_drops_the_excess() -> None:
    ring = RingBuffer(8)
    ring.write(np.arange(6, dtype=np.int16))
    assert ring.write(np.arange(6, 11, dtype=np.int16)) == 2
    assert (ring.overflows, ring.dropped) == (1, 3)
    assert ring.write(np.ones(4, np.int16)) == 0
    assert (ring.overflows, ring.dropped) == (2, 7)
    out = ring.read(8, timeout=0.1)
    assert out is not None and out.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]


def test_ring_keeping_the_newest_drops_the_oldest() -> None:
    ring = RingBuffer(8, np.float32)
    ring.write(np.arange(6, dtype=np.float32))
    assert ring.write(np.arange(6, 11, dtype=np.float32), keep_newest=True) == 5
    assert ring.overflows == 1 and ring.dropped == 3
    out = np.empty(8, np.float32)
    assert ring.read_into(out) == 8
    assert out.tolist() == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    ring.write(np.arange(20, dtype=np.float32), keep_newest=True)  # more than it holds
    assert ring.read_into(out) == 8 and out.tolist() == list(range(12, 20))


def test_ring_write_uses_the_preallocated_array() -> None:
    ring = RingBuffer(48_000)
    storage = ring.array
    block = np.full(4_000, 7, np.int16)
    ring.write(block)  # warm up
    ring.read(4_000, timeout=0.1)
    tracemalloc.start()
    try:
        for _ in range(30):  # 120k samples through a 48k ring: wraps twice
            ring.write(block)
            ring.read_into(np.empty(0, np.int16))
            ring.clear()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ring.array is storage
    assert peak < 2_000, f"write path allocated {peak} bytes at peak (a block is 8000 bytes)"


def test_ring_read_times_out_and_close_wakes_it() -> None:
    ring = RingBuffer(16)
    ring.write(np.ones(3, np.int16))
    start = time.monotonic()
    assert ring.read(4, timeout=0.05) is None
    assert time.monotonic() - start >= 0.04
    ring.close()
    assert ring.read(4, timeout=5.0) is None  # closed with too few: returns at once
    assert ring.read(3, timeout=5.0) is not None


# jitter buffer


def test_jitter_starts_on_the_first_frame_and_counts_underruns() -> None:
    jitter = JitterBuffer(1_000)
    out = np.ones(100, np.float32)
    assert jitter.pull(out) == 0 and not out.any()
    assert jitter.underruns == 0, "idle silence is not an underrun"
    jitter.write(np.full(150, 0.5, np.float32))
    assert jitter.playing and not jitter.drained.is_set()
    assert jitter.pull(out) == 100 and np.all(out == 0.5), "no pre-fill wait"
    assert jitter.pull(out) == 50
    assert np.all(out[:50] == 0.5) and not out[50:].any()
    assert jitter.underruns == 1
    assert jitter.pull(out) == 0 and jitter.underruns == 2


def test_jitter_drains_then_goes_idle() -> None:
    jitter = JitterBuffer(1_000)
    jitter.volume = 0.5
    jitter.write(np.ones(250, np.float32))
    jitter.finish()
    out = np.empty(100, np.float32)
    pulled = [jitter.pull(out) for _ in range(4)]
    assert pulled == [100, 100, 50, 0]
    assert jitter.underruns == 0, "the end of a reply is not an underrun"
    assert jitter.drained.is_set() and not jitter.playing
    assert jitter.played == 250
    jitter.write(np.ones(10, np.float32))
    assert jitter.pull(out) == 10 and out[0] == 0.5
    jitter.stop()
    assert jitter.buffered == 0 and jitter.drained.is_set()


# file backend


@pytest.mark.parametrize("file_rate", [16000, 48000])
def test_file_capture_matches_the_wav_chunk_by_chunk(tmp_path: Path, file_rate: int) -> None:
    audio = _noise(0.33, file_rate)
    path = tmp_path / "in.wav"
    write_wav(path, audio, file_rate)
    settings = AudioSettings(backend="file", input_file=str(path), chunk_ms=20, realtime=False)
    chunks = _collect(FileBackend(settings))
    expected = resample(read_wav(path).samples, file_rate, 16000)
    expected_pcm = np.round(np.clip(expected, -1, 32767 / 32768) * 32768).astype(np.int16)
    assert all(c.dtype == np.int16 and c.shape == (320,) for c in chunks)
    assert len(chunks) == -(-expected_pcm.size // 320)
    got = np.concatenate(chunks)
    assert np.array_equal(got[: expected_pcm.size], expected_pcm)
    assert not got[expected_pcm.size :].any(), "the last chunk is padded with silence"


def test_file_capture_paces_in_real_time(tmp_path: Path) -> None:
    path = tmp_path / "in.wav"
    write_wav(path, _noise(0.5, 16000), 16000)
    timings = {}
    for realtime in (True, False):
        settings = AudioSettings(backend="file", input_file=str(path), realtime=realtime)
        start = time.monotonic()
        chunks = _collect(FileBackend(settings))
        timings[realtime] = time.monotonic() - start
        assert len(chunks) == 25
    assert timings[True] >= 0.4, f"real time took {timings[True]:.3f} s for 0.5 s of audio"
    assert timings[False] < timings[True] / 3, f"as fast as possible took {timings[False]:.3f} s"


def test_file_playback_writes_the_wav(tmp_path: Path) -> None:
    src, out = tmp_path / "in.wav", tmp_path / "out.wav"
    write_wav(src, _noise(0.1, 16000), 16000)
    settings = AudioSettings(
        backend="file", input_file=str(src), output_file=str(out), output_rate=24000
    )

    async def run() -> None:
        async with FileBackend(settings) as backend:
            await backend.play(_noise(0.2, 24000), 24000)
            await backend.play(_noise(0.1, 24000), 24000)
            await backend.drain()
            await backend.play(_noise(0.5, 16000), 16000)  # resampled to 24 kHz
            start = time.monotonic()
            await backend.drain()
            assert time.monotonic() - start >= 0.3, "real-time drain lasts as long as the audio"
            played = backend.stats().played
            assert abs(played - 19200) <= 2, f"{played} samples counted, expected ~19200"

    asyncio.run(run())
    info = wav_info(out)
    assert (info.rate, info.channels, info.bits) == (24000, 1, 16)
    assert abs(info.frames - (7200 + 12000)) <= 2, f"{info.frames} samples, expected ~19200"


def test_file_backend_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(AudioBackendError, match=r"audio\.input_file"):
        FileBackend(AudioSettings(backend="file"))
    backend = FileBackend(AudioSettings(backend="file", input_file=str(tmp_path / "nope.wav")))
    with pytest.raises(AudioBackendError, match=r"audio.input_file: .*nope.wav: no such file"):
        asyncio.run(backend.start())


# null backend


def test_null_backend_gives_silence_and_counts_output() -> None:
    backend = NullBackend(AudioSettings(backend="null", input_rate=8000, chunk_ms=10), False)
    chunks = _collect(backend, limit=50)
    assert len(chunks) == 50 and all(c.shape == (80,) and not c.any() for c in chunks)

    async def run() -> int:
        async with NullBackend(AudioSettings(backend="null"), realtime=True) as null:
            await null.play(np.ones(2400, np.float32), 24000)
            start = time.monotonic()
            await null.drain()
            assert time.monotonic() - start >= 0.07, "real-time drain of 0.1 s"
            return null.stats().played

    assert asyncio.run(run()) == 2400


def test_null_capture_ends_on_close() -> None:
    async def run() -> int:
        backend = NullBackend(AudioSettings(backend="null"), realtime=True)
        count = 0
        async with backend:
            async for _ in backend.chunks():
                count += 1
                if count == 3:
                    await backend.close()
                assert count < 10, "capture went on after close"
        return count

    assert asyncio.run(run()) == 3


# sounddevice backend on a stand-in PortAudio


class FakePortAudioError(Exception):
    pass


class FakeStream:
    def __init__(self, fake: FakeSd, kind: str, **kwargs: Any) -> None:
        self.fake, self.kind, self.kwargs = fake, kind, kwargs
        self.callback = kwargs["callback"]
        self.started = self.closed = False

    def start(self) -> None:
        if self.fake.failures:
            self.fake.failures -= 1
            raise FakePortAudioError(
                "Error starting stream: Device unavailable [PaErrorCode -9985]"
            )
        self.started = True
        self.fake.streams.append(self)

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


class FakeSd:
    PortAudioError = FakePortAudioError

    def __init__(self, devices: list[dict[str, Any]], failures: int = 0) -> None:
        self.devices, self.failures = devices, failures
        self.streams: list[FakeStream] = []
        self.default = SimpleNamespace(device=[0, 1])

    def query_devices(self) -> list[dict[str, Any]]:
        return self.devices

    def query_hostapis(self) -> list[dict[str, Any]]:
        return [{"name": "ALSA"}]

    def InputStream(self, **kwargs: Any) -> FakeStream:
        return FakeStream(self, "input", **kwargs)

    def OutputStream(self, **kwargs: Any) -> FakeStream:
        return FakeStream(self, "output", **kwargs)


DEVICES = [
    {"name": "USB Mic", "max_input_channels": 2, "max_output_channels": 0,
     "default_samplerate": 48000.0, "hostapi": 0},
    {"name": "Speaker", "max_input_channels": 0, "max_output_channels": 2,
     "default_samplerate": 44100.0, "hostapi": 0},
]  # fmt: skip


def test_sounddevice_backend_moves_audio_through_the_callbacks() -> None:
    fake = FakeSd(DEVICES, failures=1)
    delays: list[float] = []

    async def no_wait(delay: float) -> None:
        delays.append(delay)

    settings = AudioSettings(input_device="usb", output_device=1, input_channels=2, volume=0.5)

    async def run() -> tuple[list[np.ndarray], np.ndarray]:
        backend = SoundDeviceBackend(settings, sd=fake, sleep=no_wait)
        async with backend:
            mic, speaker = fake.streams
            assert mic.kwargs["device"] == 0 and speaker.kwargs["device"] == 1
            assert speaker.kwargs["latency"] == 0.1, "audio.output_latency_ms, in seconds"
            stereo = np.stack([np.arange(640), np.arange(640) + 2], axis=1).astype(np.int16)
            for block in (stereo[:320], stereo[320:]):
                mic.callback(block, 320, None, None)
            got = []
            async for chunk in backend.chunks():
                got.append(chunk)
                if len(got) == 2:
                    break
            await backend.play(np.ones(480, np.float32), 24000)
            out = np.zeros((480, 1), np.float32)
            speaker.callback(out, 480, None, None)
            assert backend.stats().underruns == 0
            assert np.all(out == 0.5), "the volume is applied"
            speaker.callback(out, 480, None, None)  # nothing finished the reply: an underrun
            stats = backend.stats()
            assert (stats.underruns, stats.played, stats.chunks, stats.restarts) == (1, 480, 2, 1)
        assert not mic.started and mic.closed
        return got, out

    got, _ = asyncio.run(run())
    assert delays == [0.5], "one failed start, one retry after the first backoff"
    assert np.array_equal(np.concatenate(got), np.arange(640, dtype=np.int16) + 1)


def test_sounddevice_backend_gives_up_after_bounded_retries() -> None:
    fake = FakeSd(DEVICES, failures=100)

    async def no_wait(delay: float) -> None:
        return None

    backend = SoundDeviceBackend(AudioSettings(), sd=fake, sleep=no_wait)
    with pytest.raises(AudioBackendError, match=r"cannot open the audio input stream: .*-9985"):
        asyncio.run(backend.start())
    assert fake.failures == 100 - 9 and backend.stats().restarts == 8


def test_unknown_device_lists_the_available_ones() -> None:
    devices = list_devices(FakeSd(DEVICES))  # type: ignore[arg-type]
    assert find_device(devices, "speaker", "output") == 1
    assert find_device(devices, "1", "output") == 1
    assert find_device(devices, None, "input") is None
    with pytest.raises(DeviceNotFoundError) as err:
        find_device(devices, "Blue Yeti", "input")
    assert str(err.value) == (
        "audio.input_device: no input device is named 'Blue Yeti'; input devices: "
        '0 "USB Mic" (2 ch, 48000 Hz) (see `lfm-satellite devices`)'
    )
    with pytest.raises(
        DeviceNotFoundError, match="no output device has index 0; output devices: 1"
    ):
        find_device(devices, 0, "output")
    with pytest.raises(DeviceNotFoundError, match="named 'Speaker'"):
        SoundDeviceBackend(AudioSettings(input_device="Speaker"), sd=FakeSd(DEVICES))._resolve()  # type: ignore[arg-type]
    listing = format_devices(devices, (0, -1))
    assert "inputs:\n    0  USB Mic  2 ch  48000 Hz  [ALSA]  (default)" in listing
    assert "outputs:\n    1  Speaker  2 ch  44100 Hz  [ALSA]" in listing
    assert format_devices([], (-1, -1)) == (
        "no audio input devices found\nno audio output devices found"
    )


def test_unknown_device_on_this_machine() -> None:
    real = list_devices(load_sounddevice())
    with pytest.raises(DeviceNotFoundError, match="no input device is named 'no such mic'"):
        find_device(real, "no such mic", "input")


# the command


def _cli(*argv: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"import sys\n{prelude}\nfrom satellite.cli import main\nsys.exit(main({list(argv)!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_devices_command_runs_here() -> None:
    done = _cli("devices")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines and (lines[0] == "inputs:" or lines[0] == "no audio input devices found")
    assert "outputs:" in lines or "no audio output devices found" in lines


MISSING_PORTAUDIO = """
import builtins
_real = builtins.__import__
def _import(name, *args, **kwargs):
    if name == "sounddevice":
        raise OSError("PortAudio library not found")
    return _real(name, *args, **kwargs)
builtins.__import__ = _import
"""


def test_devices_without_portaudio_is_a_clear_error() -> None:
    done = _cli("devices", prelude=MISSING_PORTAUDIO)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: the PortAudio library (libportaudio) was not found")
    assert "sudo apt install libportaudio2" in done.stderr
    done = _cli("devices", prelude="sys.modules['sounddevice'] = None")
    assert done.returncode == 2 and "package sounddevice is not installed" in done.stderr
