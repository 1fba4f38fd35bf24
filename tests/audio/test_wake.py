"""Wake-word detection on real (synthetic) speech: espeak-ng phrases through pymicro-wakeword's
shipped models, clean and in white noise, plus the detector's streaming, refractory and error
behaviour."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from satellite.audio.convert import FloatArray, float_to_pcm16, resample
from satellite.audio.wake import (
    BUILTIN_MODELS,
    SHIPPED_DIR,
    STRICTEST_CUTOFF,
    Detection,
    WakeModelError,
    WakeWordDetector,
    cutoff_for,
)
from satellite.audio.wavfile import read_wav
from satellite.errors import UserError
from satellite.settings import WakeSettings

VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbcwmd")
SPEEDS = (130, 175)
SNRS_DB: tuple[float | None, ...] = (None, 20.0, 10.0)
"""None: clean."""
PHRASES = {"okay_nabu": "okay nabu", "alexa": "alexa", "hey_mycroft": "hey mycroft"}
OTHER_SENTENCES = (
    "turn on the kitchen lights",
    "what is the weather like tomorrow",
    "set a timer for ten minutes",
    "play some music in the living room",
)
PAD_SECONDS = 0.5

MIN_DETECTIONS = {"okay_nabu": 26, "alexa": 30, "hey_mycroft": 24}
"""Minimum detections out of 36 clips (6 voices x 2 speeds x 3 noise levels) at the default
sensitivity; measured here: okay_nabu 32/36, alexa 35/36, hey_mycroft 30/36 (DESIGN §4, other
voices and speeds, clean only: 9/12, 12/12, 10/12). The floors sit about 6 below the measured
counts. hey_jarvis does not fire on espeak-ng (0/12),
so it is checked only for false triggers."""


@cache
def _speech(text: str, voice: str, speed: int) -> FloatArray:
    """`text` spoken by espeak-ng, at 16 kHz (cached per test run)."""
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "speech.wav"
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text]
        subprocess.run(cmd, check=True, timeout=60, capture_output=True)
        audio = read_wav(wav)
    return resample(audio.samples, audio.rate, 16000)


def _clip(text: str, voice: str, speed: int, snr_db: float | None, seed: int) -> bytes:
    """The phrase padded with 0.5 s of silence each side, white noise added at `snr_db` below
    the speech's RMS (over the whole clip, padding included)."""
    speech = _speech(text, voice, speed)
    pad = np.zeros(int(PAD_SECONDS * 16000), np.float32)
    audio = np.concatenate([pad, speech, pad])
    if snr_db is not None:
        rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2)))
        noise = np.random.default_rng(seed).standard_normal(audio.size)
        audio = audio + (rms / 10 ** (snr_db / 20) * noise).astype(np.float32)
    return float_to_pcm16(np.clip(audio, -1.0, 1.0))


def _clips(text: str) -> Iterator[tuple[str, bytes]]:
    for seed, (voice, speed, snr) in enumerate(
        (v, s, n) for v in VOICES for s in SPEEDS for n in SNRS_DB
    ):
        label = f"{voice}/{speed}/{'clean' if snr is None else f'{snr:g}dB'}"
        yield label, _clip(text, voice, speed, snr, seed)


def _detect(detector: WakeWordDetector, pcm: bytes, chunk: int = 640) -> list[Detection]:
    detector.reset()
    found: list[Detection] = []
    for start in range(0, len(pcm), chunk):
        found.extend(detector.process(pcm[start : start + chunk]))
    return found


@pytest.fixture(scope="module")
def detectors() -> Iterator[dict[str, WakeWordDetector]]:
    made = {name: WakeWordDetector(WakeSettings(model=name)) for name in BUILTIN_MODELS}
    yield made
    for detector in made.values():
        detector.close()


def test_shipped_models_detect_their_phrase_and_only_theirs(
    detectors: dict[str, WakeWordDetector],
) -> None:
    """Each phrase (6 voices x 2 speeds x clean/20 dB/10 dB) through every model: the phrase's
    own model fires at least MIN_DETECTIONS times, no other model fires on it, and no model
    fires on other sentences."""
    hits = {name: 0 for name in PHRASES}
    by_level: dict[str, int] = {}
    false: list[str] = []
    clips = 0
    for phrase_model, text in PHRASES.items():
        for label, pcm in _clips(text):
            clips += 1
            for name, detector in detectors.items():
                found = _detect(detector, pcm)
                if name == phrase_model:
                    hits[name] += bool(found)
                    level = f"{name} {label.rsplit('/', 1)[1]}"
                    by_level[level] = by_level.get(level, 0) + bool(found)
                    assert len(found) <= 1, f"{name} fired {len(found)} times on {label}"
                elif found:
                    false.append(f"{name} on {text!r} {label}")
    for text in OTHER_SENTENCES:
        for label, pcm in _clips(text):
            for name, detector in detectors.items():
                if _detect(detector, pcm):
                    false.append(f"{name} on {text!r} {label}")
    per_model = clips // len(PHRASES)
    summary = ", ".join(f"{name} {hits[name]}/{per_model}" for name in PHRASES)
    levels = ", ".join(f"{key} {count}/12" for key, count in by_level.items())
    print(f"\nwake detections: {summary} ({levels}); false triggers: {len(false)}")
    assert not false, f"false triggers: {false}; detections: {summary}"
    for name, floor in MIN_DETECTIONS.items():
        assert hits[name] >= floor, f"{name}: {hits[name]}/{per_model} < {floor}; {summary}"


STOP_FLOOR = 30
"""Minimum detections of "stop" out of 36 clips by the satellite's shipped stop model at the
default sensitivity; measured here: 36/36."""
STOP_FALSE_MOST = 2
"""Most false triggers of the stop model on the 252 clips of the wake phrases and other
sentences; measured here: 1 ("alexa", en-gb, 130 words a minute, clean). It listens only while
something plays, where the wake word is a barge-in anyway."""


def test_the_shipped_stop_word_hears_stop_and_little_else(
    detectors: dict[str, WakeWordDetector],
) -> None:
    """The satellite's own `stop` model (pymicro-wakeword ships none): "stop" in 6 voices x 2
    speeds x clean/20 dB/10 dB fires it at least STOP_FLOOR times and no wake word; the wake
    phrases and other sentences fire it at most STOP_FALSE_MOST times. `bench stopword`
    measures its false triggers over an hour of speech."""
    stop = WakeWordDetector(WakeSettings(model="stop"), key="wake.stop_model")
    try:
        assert stop.wake_word == "Stop" and stop.model_id == "stop"
        hits, woken, false = 0, [], []
        for label, pcm in _clips("stop"):
            found = _detect(stop, pcm)
            assert len(found) <= 1, f"stop fired {len(found)} times on {label}"
            hits += bool(found)
            woken += [
                f"{name} on 'stop' {label}" for name, d in detectors.items() if _detect(d, pcm)
            ]
        for text in (*PHRASES.values(), *OTHER_SENTENCES):
            false += [
                f"stop on {text!r} {label}" for label, pcm in _clips(text) if _detect(stop, pcm)
            ]
    finally:
        stop.close()
    print(f"\nstop word: {hits}/36 detections; false triggers: {false}")
    assert not woken, f"'stop' woke: {woken}"
    assert len(false) <= STOP_FALSE_MOST, f"false triggers: {false}; stop detected {hits}/36"
    assert hits >= STOP_FLOOR, f"stop detected {hits}/36 < {STOP_FLOOR}"


def test_the_shipped_stop_word_carries_its_licence() -> None:
    """It is shipped, so its licence and source travel with it."""
    readme = (SHIPPED_DIR / "README.md").read_text()
    assert "Apache License 2.0" in readme and "linux-voice-assistant" in readme
    assert "Apache License" in (SHIPPED_DIR / "LICENSE").read_text()[:200]


def test_detection_time_and_chunking_do_not_matter(
    detectors: dict[str, WakeWordDetector],
) -> None:
    """The same clip in 10 ms, odd-sized (3 333 bytes, splitting samples) and one-piece chunks
    gives the same detection, timed inside the phrase."""
    pcm = _clip("alexa", "en-us", 130, None, 0)
    detector = detectors["alexa"]
    results = [_detect(detector, pcm, chunk) for chunk in (320, 3333, len(pcm))]
    assert results[0] == results[1] == results[2], results
    assert len(results[0]) == 1, results
    speech_end = len(pcm) / 32000 - PAD_SECONDS
    assert PAD_SECONDS < results[0][0].seconds <= speech_end + 0.5, results[0]
    assert results[0][0].wake_word == "Alexa" and results[0][0].model == "alexa"


def test_refractory_period() -> None:
    """Two phrases 1.5 s apart: two detections with no refractory period, one with 5 s."""
    pcm = _clip("alexa", "en-us", 130, None, 0)
    gap = float_to_pcm16(np.zeros(8000, np.float32))
    twice = pcm + gap + pcm
    counts = []
    for refractory in (0.0, 5.0):
        detector = WakeWordDetector(WakeSettings(model="alexa", refractory_seconds=refractory))
        counts.append(len(_detect(detector, twice)))
        detector.close()
    assert counts == [2, 1], f"detections with refractory 0 s and 5 s: {counts}"


def test_sensitivity_mapping() -> None:
    assert cutoff_for(0.5, 0.9) == pytest.approx(0.9)
    assert cutoff_for(0.0, 0.9) == pytest.approx(STRICTEST_CUTOFF)
    assert cutoff_for(1.0, 0.9) == pytest.approx(0.45)
    assert cutoff_for(0.25, 0.85) == pytest.approx((STRICTEST_CUTOFF + 0.85) / 2)
    values = [cutoff_for(s / 10, 0.97) for s in range(11)]
    assert values == sorted(values, reverse=True), values
    detector = WakeWordDetector(WakeSettings(model="okay_nabu", sensitivity=1.0))
    assert detector.cutoff == pytest.approx(0.425)
    detector.close()


def test_custom_model_json(tmp_path: Path) -> None:
    """A copy of a shipped model loaded by its .json path detects like the shipped one."""
    import pymicro_wakeword

    shipped = Path(pymicro_wakeword.__file__).parent / "models"
    for suffix in (".json", ".tflite"):
        (tmp_path / f"alexa{suffix}").write_bytes((shipped / f"alexa{suffix}").read_bytes())
    detector = WakeWordDetector(WakeSettings(model=str(tmp_path / "alexa.json")))
    found = _detect(detector, _clip("alexa", "en-gb", 130, None, 0))
    detector.close()
    assert len(found) == 1 and found[0].model == "alexa", found


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown", "not a shipped model"),
        ("missing", "no such file"),
        ("badjson", "not valid JSON"),
        ("nokey", "no 'micro' section"),
        ("notflite", "cannot read its TFLite file"),
        ("badtflite", "is not a TFLite model"),
    ],
)
def test_model_errors_name_the_model(tmp_path: Path, case: str, message: str) -> None:
    config = tmp_path / "mine.json"
    good = {"model": "mine.tflite", "wake_word": "Mine"}
    micro = '"micro": {"probability_cutoff": 0.9, "sliding_window_size": 5}'
    body = f'{{"model": "{good["model"]}", "wake_word": "{good["wake_word"]}", {micro}}}'
    model = str(config)
    if case == "unknown":
        model = "hey_computer"
    elif case == "badjson":
        config.write_text("{not json")
    elif case == "nokey":
        config.write_text('{"model": "mine.tflite", "wake_word": "Mine"}')
    elif case == "notflite":
        config.write_text(body)
    elif case == "badtflite":
        config.write_text(body)
        (tmp_path / "mine.tflite").write_bytes(b"\0" * 64)
    with pytest.raises(WakeModelError, match=message) as caught:
        WakeWordDetector(WakeSettings(model=model))
    assert isinstance(caught.value, UserError)
    assert str(caught.value).startswith(f"wake.model {model!r}")
    with pytest.raises(WakeModelError, match=message) as caught:
        WakeWordDetector(WakeSettings(model=model), key="wake.stop_model")
    assert str(caught.value).startswith(f"wake.stop_model {model!r}")
