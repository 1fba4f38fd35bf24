"""The numpy audio front end and ISTFT against the reference implementation's torch modules
(liquid-audio 1.3.0, unpacked at test time by tests/reference.py).

Bounds reached: log-mel features within 1e-4 of the reference's (float32) preprocessor on
real speech and tones at ordinary levels (the reference itself computes in float32; on very
quiet input its own rounding grows past that); ISTFT within 1e-6 of full scale, and the
streamed ISTFT equal to the one-shot one.
"""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from satellite.audio.convert import resample
from satellite.audio.wavfile import read_wav
from satellite.engine.istft import StreamingIstft, istft
from satellite.engine.mel import LogMel
from tests.reference import liquid_audio

pytestmark = pytest.mark.parity

MEL_BOUND = 1e-4


@pytest.fixture(scope="module")
def reference_mel() -> Any:
    liquid_audio()
    processor = importlib.import_module("liquid_audio.model.conformer.processor")
    return processor.AudioToMelSpectrogramPreprocessor(
        sample_rate=16000,
        normalize="per_feature",
        window_size=0.025,
        window_stride=0.01,
        window="hann",
        features=128,
        n_fft=512,
        log=True,
        frame_splicing=1,
        dither=1e-5,
        pad_to=0,
        pad_value=0.0,
    ).eval()


def reference_features(module: Any, audio: np.ndarray) -> np.ndarray:
    signal = torch.from_numpy(audio.astype(np.float32))[None]
    features, _ = module(input_signal=signal, length=torch.tensor([audio.size]))
    return np.asarray(features[0].T.numpy())


def speech(tmp_path: Path, text: str, voice: str = "en-us") -> np.ndarray:
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, timeout=60)
    audio = read_wav(wav)
    return resample(audio.samples, audio.rate, 16000)


def test_mel_matches_reference_on_speech(tmp_path: Path, reference_mel: Any) -> None:
    for voice, text in [("en-us", "turn on the kitchen lights"), ("en-gb", "what time is it")]:
        audio = speech(tmp_path, text, voice)
        ours = LogMel()(audio)
        theirs = reference_features(reference_mel, audio)
        assert ours.shape == theirs.shape == (1 + audio.size // 160, 128)
        error = float(np.abs(ours - theirs).max())
        assert error <= MEL_BOUND, f"{voice}: max abs error {error:.2e} > {MEL_BOUND}"


@pytest.mark.parametrize("samples", [320, 16000, 16123, 24000])
def test_mel_lengths_and_quirks(reference_mel: Any, samples: int) -> None:
    """1 s -> 101 frames, 1.5 s -> 151; the last frame is zero; the shortest input works."""
    t = np.arange(samples) / 16000
    rng = np.random.default_rng(samples)
    audio = 0.3 * np.sin(2 * np.pi * 300 * t) + 0.05 * rng.standard_normal(samples)
    ours = LogMel()(audio)
    theirs = reference_features(reference_mel, audio)
    assert ours.shape == theirs.shape == (1 + samples // 160, 128)
    assert not ours[-1].any()
    error = float(np.abs(ours - theirs).max())
    assert error <= MEL_BOUND, f"{samples} samples: max abs error {error:.2e}"


def test_mel_refuses_too_short_audio() -> None:
    with pytest.raises(ValueError, match="audio too short"):
        LogMel()(np.zeros(100))


@pytest.fixture(scope="module")
def reference_istft() -> Any:
    liquid_audio()
    detokenizer = importlib.import_module("liquid_audio.detokenizer")
    return detokenizer.ISTFT(1280, 320, 1280, padding="same")


def stft_features(frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    log_abs = rng.normal(-2.0, 1.0, (frames, 641))
    angle = rng.uniform(-np.pi, np.pi, (frames, 641))
    return np.concatenate([log_abs, angle], axis=1).astype(np.float32)


@pytest.mark.parametrize("frames", [6, 36, 61])
def test_istft_matches_reference(reference_istft: Any, frames: int) -> None:
    features = stft_features(frames)
    log_abs, angle = torch.chunk(torch.from_numpy(features).T[None].contiguous(), 2, 1)
    theirs = reference_istft(torch.polar(log_abs.exp(), angle))[0].numpy()
    ours = istft(features)
    assert ours.shape == theirs.shape == (frames * 320,)
    error = float(np.abs(ours - theirs).max())
    assert error <= 1e-6, f"max abs error {error:.2e}"


def test_streaming_istft_equals_one_shot() -> None:
    features = stft_features(48, seed=1)
    stream = StreamingIstft()
    pieces = [stream.push(features[i : i + 6]) for i in range(0, 48, 6)]
    pieces.append(stream.finish())
    # first 80 ms frame: 60 ms out at once; then 80 ms per frame; the last 20 ms at the end
    assert [p.size for p in pieces] == [1440] + [1920] * 7 + [480]
    assert np.array_equal(np.concatenate(pieces), istft(features))
