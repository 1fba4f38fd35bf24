"""PCM conversion and resampling: every width and channel layout lands as the same mono
signal at 16 kHz."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from satellite.audio.convert import (
    AudioFormatError,
    StreamResampler,
    float_to_pcm16,
    pcm_to_float,
    resample,
    to_model_input,
)
from satellite.audio.wavfile import read_wav


def tone(rate: int, seconds: float = 0.5, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def encode(samples: np.ndarray, width: int, channels: int) -> bytes:
    """Independent encoder through the standard library's `wave` + sox for 24-bit."""
    stereo = np.repeat(samples[:, None], channels, axis=1).reshape(-1)
    if width == 1:
        return (np.round(stereo * 127) + 128).astype(np.uint8).tobytes()
    if width == 2:
        return (np.round(stereo * 32767)).astype("<i2").tobytes()
    if width == 3:
        ints = np.round(stereo * (2**23 - 1)).astype("<i4")
        return b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    return (np.round(stereo.astype(np.float64) * (2**31 - 1))).astype("<i4").tobytes()


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
def test_every_width_and_channel_count(width: int, channels: int) -> None:
    signal = tone(16000)
    decoded = pcm_to_float(encode(signal, width, channels), width, channels)
    tolerance = {1: 1.0 / 100, 2: 1e-4, 3: 1e-6, 4: 1e-6}[width]
    assert decoded.shape == signal.shape
    assert np.abs(decoded - signal).max() < tolerance


def test_resampling_keeps_the_tone() -> None:
    for rate in (8000, 22050, 44100, 48000):
        out = to_model_input(encode(tone(rate), 2, 1), rate, 2, 1)
        assert abs(out.size - 8000) <= 1
        spectrum = np.abs(np.fft.rfft(out[1000:7000]))
        peak_hz = spectrum.argmax() * 16000 / 6000
        assert abs(peak_hz - 440) < 3, (rate, peak_hz)


def test_stream_resampler_matches_one_shot() -> None:
    signal = tone(48000, 1.0)
    stream = StreamResampler(48000, 16000)
    pieces = [stream.process(signal[i : i + 960]) for i in range(0, signal.size, 960)]
    pieces.append(stream.process(np.zeros(0, np.float32), last=True))
    streamed = np.concatenate(pieces)
    whole = resample(signal, 48000, 16000)
    n = min(streamed.size, whole.size)
    assert abs(streamed.size - whole.size) <= 2
    assert np.abs(streamed[100 : n - 100] - whole[100 : n - 100]).max() < 1e-3


def test_wav_written_by_sox_is_read_back(tmp_path: Path) -> None:
    """A real 24-bit stereo 44.1 kHz file from sox comes out as the same tone at 16 kHz."""
    path = tmp_path / "tone.wav"
    subprocess.run(
        [
            "sox",
            "-n",
            "-r",
            "44100",
            "-b",
            "24",
            "-c",
            "2",
            str(path),
            "synth",
            "0.5",
            "sine",
            "440",
            "vol",
            "0.5",
        ],
        check=True,
        timeout=30,
    )
    audio = read_wav(path)
    assert (audio.rate, audio.channels) == (44100, 2)
    out = resample(audio.samples, audio.rate, 16000)
    expected = tone(16000)
    assert abs(out.size - expected.size) <= 1
    n = min(out.size, expected.size)
    assert np.abs(out[200 : n - 200] - expected[200 : n - 200]).max() < 2e-3


@pytest.mark.parametrize(
    "encoding", [["-b", "16"], ["-b", "8"], ["-e", "floating-point", "-b", "32"]]
)
def test_wav_encodings(tmp_path: Path, encoding: list[str]) -> None:
    path = tmp_path / "x.wav"
    subprocess.run(
        [
            "sox",
            "-n",
            "-r",
            "16000",
            *encoding,
            "-c",
            "1",
            str(path),
            "synth",
            "0.5",
            "sine",
            "440",
            "vol",
            "0.5",
        ],
        check=True,
        timeout=30,
    )
    audio = read_wav(path)
    # sox's own decoding of the same file, as raw float32
    raw = subprocess.run(
        ["sox", str(path), "-t", "f32", "-"], capture_output=True, check=True, timeout=30
    )
    expected = np.frombuffer(raw.stdout, dtype="<f4")
    assert audio.samples.shape == expected.shape
    assert np.abs(audio.samples - expected).max() < 1e-6


def test_not_a_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(AudioFormatError, match=r"notes.txt: not a WAV file"):
        read_wav(path)


def test_round_trip_pcm16() -> None:
    signal = tone(16000)
    assert np.abs(pcm_to_float(float_to_pcm16(signal), 2, 1) - signal).max() <= 1 / 32768
    assert float_to_pcm16(np.array([2.0, -2.0])) == b"\xff\x7f\x00\x80"


@pytest.mark.parametrize(
    ("data", "width", "channels", "words"),
    [
        (b"\x00\x00\x00", 2, 1, "not a whole number of frames"),
        (b"\x00" * 6, 2, 2, "not a whole number of frames"),
        (b"\x00" * 4, 5, 1, "width 5 bytes is not supported"),
        (b"\x00" * 4, 2, 0, "channel count 0"),
    ],
)
def test_bad_formats_are_named(data: bytes, width: int, channels: int, words: str) -> None:
    with pytest.raises(AudioFormatError, match=words):
        pcm_to_float(data, width, channels)
