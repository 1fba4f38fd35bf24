"""End of speech on real (synthetic) speech: espeak-ng sentences through the pymicro-vad
endpointer: trailing silence, maximum length, preroll, short bursts and chunk sizes."""

from __future__ import annotations

import itertools
import subprocess
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from satellite.audio.convert import FloatArray, float_to_pcm16, resample
from satellite.audio.endpoint import (
    Endpointer,
    EndpointEvent,
    PauseEnded,
    PauseStarted,
    SpeechStarted,
    UtteranceEnded,
)
from satellite.audio.wavfile import read_wav
from satellite.settings import VadSettings

RATE = 16000
ONSET_LEVEL = 0.02
"""|sample| above which espeak-ng's output counts as sound (its silence is exact zeros)."""


@cache
def _speech(text: str, speed: int = 160) -> FloatArray:
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "speech.wav"
        cmd = ["espeak-ng", "-v", "en-us", "-s", str(speed), "-w", str(wav), text]
        subprocess.run(cmd, check=True, timeout=60, capture_output=True)
        audio = read_wav(wav)
    return resample(audio.samples, audio.rate, RATE)


def _silence(seconds: float) -> FloatArray:
    return np.zeros(round(seconds * RATE), np.float32)


def _sound_bounds(audio: FloatArray) -> tuple[float, float]:
    """Seconds of the first and last sample louder than ONSET_LEVEL."""
    loud = np.flatnonzero(np.abs(audio) > ONSET_LEVEL)
    return loud[0] / RATE, (loud[-1] + 1) / RATE


def _run(
    endpointer: Endpointer, pcm: bytes, chunk_ms: float, pauses: bool = False
) -> list[EndpointEvent]:
    """The events of `pcm` fed in `chunk_ms` chunks (pause events only with `pauses`)."""
    size = 2 * round(chunk_ms * RATE / 1000)
    events: list[EndpointEvent] = []
    for start in range(0, len(pcm), size):
        events.extend(endpointer.process(pcm[start : start + size]))
    if pauses:
        return events
    return [e for e in events if not isinstance(e, PauseStarted | PauseEnded)]


def _kinds(events: Sequence[EndpointEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


@pytest.mark.parametrize("snr_db", [None, 20.0])
def test_utterance_ends_after_trailing_silence_with_preroll(snr_db: float | None) -> None:
    """0.8 s silence, a sentence, 1 s silence (clean, or in white noise 20 dB below the speech):
    one start within 50 ms of the first sound, one end by silence 0.7 s (-50/+150 ms) after the
    last sound; the utterance is exactly the input from 300 ms before the first speech frame,
    so it holds the first syllable's onset."""
    settings = VadSettings()
    speech = _speech("turn on the kitchen lights")
    clean = np.concatenate([_silence(0.8), speech, _silence(1.0)])
    onset, last_sound = _sound_bounds(clean)
    audio = clean
    if snr_db is not None:
        rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2)))
        noise = np.random.default_rng(0).standard_normal(clean.size) * rms / 10 ** (snr_db / 20)
        audio = clean + noise.astype(np.float32)
    pcm = float_to_pcm16(audio)
    events = _run(Endpointer(settings), pcm, 20)
    assert _kinds(events) == ["SpeechStarted", "UtteranceEnded"], events
    started, ended = events
    assert isinstance(started, SpeechStarted) and isinstance(ended, UtteranceEnded)
    assert ended.reason == "silence"
    assert abs(started.seconds - onset) <= 0.05, f"speech start {started.seconds} vs {onset}"
    silence = ended.end_seconds - last_sound
    trailing = settings.trailing_silence_ms / 1000
    assert trailing - 0.05 <= silence <= trailing + 0.15, f"ended {silence:.3f} s after speech"
    assert ended.speech_seconds - ended.start_seconds == pytest.approx(0.3)
    assert ended.start_seconds < onset, f"utterance starts {ended.start_seconds} > onset {onset}"
    first, last = round(ended.start_seconds * RATE), round(ended.end_seconds * RATE)
    assert ended.audio == pcm[2 * first : 2 * last], "utterance audio differs from the input"


def test_continuous_speech_is_cut_at_max_length() -> None:
    """A sentence longer than max_utterance_seconds (2 s) ends by max length, exactly 2 s after
    the first speech frame."""
    settings = VadSettings(max_utterance_seconds=2.0)
    speech = _speech("please turn on all of the lights in the kitchen and the living room")
    assert speech.size / RATE > 3.0
    pcm = float_to_pcm16(np.concatenate([_silence(0.5), speech, _silence(1.0)]))
    events = _run(Endpointer(settings), pcm, 20)
    ended = [event for event in events if isinstance(event, UtteranceEnded)]
    assert ended and ended[0].reason == "max_length", events
    assert ended[0].end_seconds - ended[0].speech_seconds == pytest.approx(2.0)
    preroll = settings.preroll_ms / 1000
    assert len(ended[0].audio) == 2 * round((2.0 + preroll) * RATE)


def test_short_burst_is_ignored() -> None:
    """0.5 s cut from a sentence is speech to the endpointer (it starts an utterance when
    min_speech_ms is 0) but gives less than 400 ms of speech frames, so with min_speech_ms =
    400 there is no speech start; a 5 ms full-scale click never starts one."""
    speech = _speech("turn on the kitchen lights")
    onset = round(_sound_bounds(speech)[0] * RATE)
    burst = speech[onset : onset + RATE // 2]
    pcm = float_to_pcm16(np.concatenate([_silence(0.9), burst, _silence(1.0)]))
    eager = _run(Endpointer(VadSettings(min_speech_ms=0)), pcm, 20)
    assert "SpeechStarted" in _kinds(eager), f"the burst was not heard: {eager}"
    assert _run(Endpointer(VadSettings(min_speech_ms=400)), pcm, 20) == []
    click = np.concatenate([_silence(0.9), np.ones(80, np.float32), _silence(1.0)])
    assert _run(Endpointer(VadSettings(min_speech_ms=0)), float_to_pcm16(click), 20) == []


def test_chunk_size_does_not_matter() -> None:
    """10, 20 and 37 ms chunks (37 ms splits the VAD's 10 ms frames) give identical events,
    audio included; so does feeding it again after reset."""
    audio = np.concatenate(
        [_silence(0.4), _speech("what time is it"), _silence(1.0), _speech("set a timer")]
    )
    pcm = float_to_pcm16(np.concatenate([audio, _silence(1.0)]))
    endpointer = Endpointer(VadSettings())
    results = [_run(endpointer, pcm, 10.0)]
    for ms in (20.0, 37.0):
        endpointer.reset()
        results.append(_run(endpointer, pcm, ms))
    assert _kinds(results[0]) == ["SpeechStarted", "UtteranceEnded"] * 2, results[0]
    assert results[0] == results[1] == results[2]


def test_pauses_are_reported_for_speculative_work() -> None:
    """Speech, a 0.2 s pause, speech, then silence: a pause that ends, then one that turns into
    the end of the utterance; each pause carries the utterance so far, a prefix of the final
    one."""
    first, second = _speech("turn on the lights"), _speech("in the kitchen")
    audio = np.concatenate([_silence(0.8), first, _silence(0.2), second, _silence(1.0)])
    events = _run(Endpointer(VadSettings()), float_to_pcm16(audio), 20, pauses=True)
    kinds = _kinds(events)
    assert kinds[0] == "SpeechStarted" and kinds[-1] == "UtteranceEnded", kinds
    middle = kinds[1:-1]
    assert middle[-1] == "PauseStarted" and middle.count("PauseEnded") >= 1, kinds
    assert all(a != b for a, b in itertools.pairwise(middle)), "pauses alternate"
    ended = events[-1]
    assert isinstance(ended, UtteranceEnded)
    for event in events:
        if isinstance(event, PauseStarted):
            assert ended.audio.startswith(event.audio) and len(event.audio) < len(ended.audio)
    last = events[-2]
    assert isinstance(last, PauseStarted)
    trailing = (len(ended.audio) - len(last.audio)) / 2 / RATE
    assert abs(trailing - (0.7 - 0.1)) < 0.015, f"{trailing:.3f} s between the pause and the end"
