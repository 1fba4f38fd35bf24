"""The voice fingerprint (`satellite.safety.voiceprint`) on espeak-ng replies: a voice stays
under the threshold from its own history, another voice or a shifted one goes over, the first
replies only learn, and streaming equals the whole reply; `AudioCheck` reports a drift."""

from __future__ import annotations

import shutil
from functools import cache

import numpy as np
import pytest

from satellite.audio.convert import resample
from satellite.bench.query import espeak_speech
from satellite.safety.audio import AudioCheck
from satellite.safety.voiceprint import (
    LEARNING,
    THRESHOLD_DB,
    Fingerprint,
    VoiceHistory,
    VoicePrint,
    distance,
)

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
RATE = 24_000
REPLIES = (
    "The kitchen lights are now on.",
    "It is twenty one degrees in the living room.",
    "Your timer for ten minutes has started.",
    "I have added milk and eggs to the shopping list.",
    "Playing some quiet music in the bedroom.",
    "The garage door has been closed for an hour.",
)


@cache
def said(voice: str) -> tuple[np.ndarray, ...]:
    return tuple(espeak_speech(text, voice, rate=RATE) for text in REPLIES)


def fingerprint(audio: np.ndarray, block: int = 1920) -> Fingerprint:
    made = VoicePrint(RATE)
    for start in range(0, audio.size, block):
        made.update(audio[start : start + block])
    found = made.fingerprint()
    assert found is not None
    return found


def judged(voice: str, replies: list[np.ndarray]) -> list[float | None]:
    history = VoiceHistory()
    return [history.judge(voice, fingerprint(a)).distance for a in replies]


def test_the_same_voice_stays_under_the_threshold() -> None:
    for voice in ("en-us", "en+f3"):
        distances = judged(voice, list(said(voice)))
        assert distances[:LEARNING] == [None] * LEARNING  # the first replies only learn
        assert all(d is not None and d < THRESHOLD_DB for d in distances[LEARNING:]), distances


def test_another_voice_drifts_beyond_it() -> None:
    history = VoiceHistory()
    for audio in said("en-us")[:4]:
        assert not history.judge("us_male", fingerprint(audio)).drifted
    verdict = history.judge("us_male", fingerprint(said("en+f3")[4]))
    assert verdict.drifted and verdict.distance is not None and verdict.distance > THRESHOLD_DB
    assert history.drifts == 1 and history.last_distance == verdict.distance
    assert verdict.problem() == (
        f"voice drifted: {verdict.distance:.1f} dB from us_male's last 4 replies "
        f"(threshold {THRESHOLD_DB:g} dB)"
    )


def test_a_shifted_voice_drifts_beyond_it() -> None:
    """The same speech with its formants 20% higher (resampled, played at the old rate)."""
    history = VoiceHistory()
    for audio in said("en-us")[:4]:
        history.judge("us_male", fingerprint(audio))
    shifted = resample(said("en-us")[4], RATE, round(RATE / 1.2))
    assert history.judge("us_male", fingerprint(shifted)).drifted


def test_level_does_not_move_it() -> None:
    audio = said("en-us")[0]
    assert distance(fingerprint(audio), fingerprint(audio * np.float32(0.1))) < 0.1


def test_streaming_equals_the_whole_reply() -> None:
    audio = said("en-gb")[1]
    whole = fingerprint(audio, block=audio.size)
    for block in (1920, 777):
        streamed = fingerprint(audio, block)
        assert streamed.windows == whole.windows
        np.testing.assert_allclose(streamed.mean, whole.mean, atol=1e-3)
        np.testing.assert_allclose(streamed.std, whole.std, atol=1e-3)


def test_too_little_speech_has_no_fingerprint() -> None:
    made = VoicePrint(RATE)
    made.update(np.zeros(RATE, np.float32))
    made.update(said("en-us")[0][:2400])
    assert made.fingerprint() is None
    assert VoiceHistory().judge("us_male", None).distance is None


def test_audio_check_reports_a_drift() -> None:
    check = AudioCheck(RATE)
    for audio in [*said("en-us")[:4], said("en+f3")[4]]:
        check.start_reply("us_male")
        for start in range(0, audio.size, 1920):
            check.inspect(audio[start : start + 1920])
        verdict = check.finish_reply()
    assert verdict is not None and verdict.drifted
    assert any(p.startswith("voice drifted: ") for p in check.reply_problems())
    check.start_reply()  # speech of its own: not fingerprinted
    check.inspect(said("en+f3")[0])
    assert check.finish_reply() is None and check.voices.drifts == 1
