"""`bench noise`: the wake word and the end of speech with a TV on, with and without noise
suppression and automatic gain (`satellite.audio.noise`) and the endpointer's voice gate
(`vad.voice_gate_db`).

The TV is made here, seeded: a presenter talking (espeak-ng prose from the standard library's
docstrings, voices taking turns, pauses between sentences) over music (a chord progression of
plucked harmonic notes, a bass line and drums, 110 beats a minute, 6 dB under the talk), at
a fixed level. The user says the wake word, then a command, in six voices at two speeds: at
10, 5 and 0 dB SNR over the TV (speech power over the TV's, each over its louder half), at
5 dB over a fan (steady low-passed noise and hum), clean, and clean but far away (-60 dBFS).
Each clip is streamed 20 ms at a time through the processor (when one is on), then the wake
word detector and the endpointer, as the daemon does; the endpointer restarts where the wake
word ends, as the daemon restarts it after a detection. Also: the TV alone through the same
chain (false wake words, speech the endpointer starts), and long sentences said clean (how
many the endpointer cuts in two).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from satellite.audio.convert import FloatArray, float_to_pcm16
from satellite.audio.endpoint import Endpointer, SpeechStarted, UtteranceEnded
from satellite.audio.noise import NoiseGain
from satellite.audio.wake import WakeWordDetector
from satellite.bench.query import espeak_speech
from satellite.bench.stopword import corpus_sentences
from satellite.settings import VadSettings, WakeSettings

RATE = 16_000
CHUNK = 320
"""20 ms capture chunks, as the daemon gets them."""
TV_DBFS = -35.0
"""The TV's level at the microphone (RMS)."""
CLEAN_DBFS = -30.0
FAR_DBFS = -60.0
"""A user far away, or a quiet microphone."""
MUSIC_UNDER_TALK_DB = 6.0
TV_VOICES = ("en-gb-x-rp", "en-us+m3", "en-us+f2", "en-029")
USER_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbcwmd")
USER_SPEEDS = (130, 175)
WAKE_TEXT = "okay nabu"
COMMAND_TEXT = "turn on the kitchen lights"
CONDITIONS: tuple[tuple[str, str | None, float], ...] = (
    ("clean", None, CLEAN_DBFS),
    ("far", None, FAR_DBFS),
    ("fan 5 dB", "fan", 5.0),
    ("TV 10 dB", "tv", 10.0),
    ("TV 5 dB", "tv", 5.0),
    ("TV 0 dB", "tv", 0.0),
)
"""(name, the noise: a TV, a fan or none, then the SNR over it in dB, or with no noise the
user's level in dBFS)."""
SETTINGS: tuple[tuple[int, int, float], ...] = (
    (0, 0, 0.0),
    (2, 0, 0.0),
    (4, 0, 0.0),
    (0, 5, 0.0),
    (2, 5, 0.0),
    (0, 0, 6.0),
    (2, 0, 6.0),
    (2, 5, 6.0),
)
"""(noise suppression, auto gain, the endpointer's voice gate) measured; (0, 0, 0) is
without any, (2, 0, 6) the defaults."""
SENTENCES = 36
"""Long sentences said clean, to count utterances the endpointer cuts in two."""
LEAD_SECONDS = 5.0
"""The room before the user speaks: the daemon's suppressor and endpointer hear the room
all the time, so each clip's fresh chain gets this much of it first."""
GAP_SECONDS = 0.4
TAIL_SECONDS = 3.0
END_WITHIN_SECONDS = 1.5
"""An end of speech counts as found when it comes within this long after the command ends
(the trailing silence is 0.7 s of it) and not before the command's end."""


def music(seconds: float, seed: int = 0) -> FloatArray:
    """Seeded synthetic music at 16 kHz: four chords a bar (I-V-vi-IV in a key chosen by the
    seed), each beat a plucked chord of harmonic tones, a bass note, a kick on the beat and a
    hi-hat off it."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    out = np.zeros(n + RATE, np.float64)
    beat = 60.0 / 110
    root = 220.0 * 2 ** (int(rng.integers(0, 12)) / 12)
    progression = ((0, 4, 7), (7, 11, 14), (9, 12, 16), (5, 9, 12))
    t = np.arange(round(beat * RATE)) / RATE
    pluck = np.exp(-t / 0.35)
    kick = np.sin(2 * np.pi * 55 * t) * np.exp(-t / 0.08)
    hat_t = t[: len(t) // 2]
    for index in range(int(seconds / beat) + 1):
        start = round(index * beat * RATE)
        chord = progression[(index // 4) % 4]
        wave = np.zeros_like(t)
        for step in chord:
            f = root * 2 ** (step / 12)
            wave += sum(np.sin(2 * np.pi * k * f * t) / k**1.5 for k in range(1, 7))
        bass = root / 2 * 2 ** (chord[0] / 12)
        wave += 1.5 * np.sin(2 * np.pi * bass * t)
        wave = wave * pluck * rng.uniform(0.7, 1.0) + 2.0 * kick
        out[start : start + t.size] += wave
        hat = np.diff(rng.standard_normal(hat_t.size + 1)) * np.exp(-hat_t / 0.03) * 0.4
        half = start + t.size // 2
        out[half : half + hat.size] += hat
    return _at_level(out[:n].astype(np.float32), 0.0)


def talk(seconds: float, seed: int = 0) -> FloatArray:
    """A presenter: sentences of prose in the TV's voices, with seeded pauses between."""
    rng = np.random.default_rng(seed)
    sentences = corpus_sentences()
    for _ in range(seed * 40):  # each seed starts further into the corpus
        next(sentences, None)
    parts: list[FloatArray] = []
    made = 0
    index = 0
    while made < seconds * RATE:
        text = " ".join(next(sentences, "the end") for _ in range(3))
        voice = TV_VOICES[(seed + index) % len(TV_VOICES)]
        said = espeak_speech(text, voice, int(rng.integers(150, 185)))
        pause = np.zeros(round(rng.uniform(0.2, 1.2) * RATE), np.float32)
        parts += [said, pause]
        made += said.size + pause.size
        index += 1
    return np.concatenate(parts)[: round(seconds * RATE)]


def tv(seconds: float, seed: int = 0) -> FloatArray:
    """The TV at the microphone: talk over music, at `TV_DBFS`."""
    spoken = _at_level(talk(seconds, seed), 0.0)
    played = music(seconds, seed)
    return _at_level(spoken + played * 10 ** (-MUSIC_UNDER_TALK_DB / 20), TV_DBFS)


def fan(seconds: float, seed: int = 0) -> FloatArray:
    """Steady noise like a fan's or a fridge's: white noise through a one-pole low-pass
    (about 600 Hz), with a 100 Hz hum, at `TV_DBFS`."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    white = rng.standard_normal(n)
    pole = np.exp(-2 * np.pi * 600 / RATE)
    spectrum = np.fft.rfft(white) / (1 - pole * np.exp(-2j * np.pi * np.fft.rfftfreq(n)))
    rumble = np.fft.irfft(spectrum, n)
    hum = 0.3 * np.std(rumble) * np.sin(2 * np.pi * 100 * np.arange(n) / RATE)
    return _at_level((rumble + hum).astype(np.float32), TV_DBFS)


def _at_level(samples: FloatArray, dbfs: float) -> FloatArray:
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    if rms == 0.0:
        return samples
    return (samples * (10 ** (dbfs / 20) / rms)).astype(np.float32)


@dataclass(frozen=True)
class Clip:
    audio: FloatArray
    wake_end: float
    """Seconds: where the wake word ends (the endpointer restarts there)."""
    command_end: float
    """Seconds: where the command ends."""


def clip(voice: str, speed: int, bed: FloatArray | None, level: float) -> Clip:
    """The user saying the wake word and the command over `bed` (noise at least as long as
    the clip) at `level` dB SNR, or with no bed in silence at `level` dBFS."""
    wake = _trimmed(espeak_speech(WAKE_TEXT, voice, speed))
    command = _trimmed(espeak_speech(COMMAND_TEXT, voice, speed))
    lead = round(LEAD_SECONDS * RATE)
    gap = round(GAP_SECONDS * RATE)
    said = np.concatenate([wake, np.zeros(gap, np.float32), command])
    n = lead + said.size + round(TAIL_SECONDS * RATE)
    user = np.zeros(n, np.float32)
    user[lead : lead + said.size] = said
    if bed is None:
        audio = user * _gain_to(said, level)
    else:
        room = bed[:n]
        audio = room + user * (_rms(room) * 10 ** (level / 20) / _rms(said))
    return Clip(
        np.clip(audio, -1.0, 1.0).astype(np.float32),
        (lead + wake.size) / RATE,
        (lead + said.size) / RATE,
    )


def _trimmed(samples: FloatArray) -> FloatArray:
    """`samples` without the silence espeak-ng leaves before and after the words (10 ms
    frames under -60 dBFS), so that the clip's times mark the speech itself."""
    frames = samples[: samples.size // 160 * 160].reshape(-1, 160).astype(np.float64)
    heard = np.flatnonzero(np.mean(frames**2, axis=1) > 1e-6)
    if not heard.size:
        return samples
    return samples[heard[0] * 160 : (heard[-1] + 1) * 160]


def _rms(samples: FloatArray) -> float:
    """RMS over the samples' active part (the louder half of their 10 ms frames)."""
    frames = samples[: samples.size // 160 * 160].reshape(-1, 160).astype(np.float64)
    power = np.mean(frames**2, axis=1)
    loud = power[power >= np.median(power)]
    return float(np.sqrt(np.mean(loud))) if loud.size else 0.0


def _gain_to(samples: FloatArray, dbfs: float) -> float:
    return 10 ** (dbfs / 20) / max(_rms(samples), 1e-9)


class Chain:
    """The capture chain the daemon runs: the processor (when on), the wake word detector,
    the endpointer."""

    def __init__(self, noise_suppression: int, auto_gain: int, voice_gate_db: float) -> None:
        on = noise_suppression or auto_gain
        self.processor = NoiseGain(noise_suppression, auto_gain) if on else None
        self.wake = WakeWordDetector(WakeSettings())
        self.endpointer = Endpointer(VadSettings(voice_gate_db=voice_gate_db))
        self.spent = 0.0

    def clean(self, pcm: bytes) -> bytes:
        if self.processor is None:
            return pcm
        began = time.perf_counter()
        out = self.processor.process(pcm)
        self.spent += time.perf_counter() - began
        return out

    def close(self) -> None:
        self.wake.close()


def run_clip(chain: Chain, made: Clip) -> dict[str, Any]:
    """The clip through `chain`: was the wake word heard, and where did the endpointer put
    the end of the command (seconds after its true end; None: not found)."""
    pcm = float_to_pcm16(made.audio)
    heard = False
    restarted = False
    ended: UtteranceEnded | None = None
    for start in range(0, len(pcm), 2 * CHUNK):
        at = (start // 2 + CHUNK) / RATE
        cleaned = chain.clean(pcm[start : start + 2 * CHUNK])
        heard = heard or bool(chain.wake.process(cleaned))
        found = chain.endpointer.process(cleaned)
        if not restarted and at >= made.wake_end:
            chain.endpointer.restart()
            restarted = True
            continue
        if restarted and ended is None:
            ended = next((e for e in found if isinstance(e, UtteranceEnded)), None)
    lag = None
    if ended is not None and ended.reason == "silence":
        lag = ended.end_seconds - made.command_end
    found_end = lag is not None and 0.0 <= lag <= END_WITHIN_SECONDS
    return {"wake": heard, "end_found": found_end, "end_lag_s": lag}


def _user_clips(beds: dict[str, FloatArray], voices: int) -> Iterator[tuple[str, Clip]]:
    for condition, noise, level in CONDITIONS:
        for index, (voice, speed) in enumerate(
            (v, s) for v in USER_VOICES[:voices] for s in USER_SPEEDS
        ):
            bed = None
            if noise is not None:
                whole = beds[noise]
                offset = round(index * 7.3 * RATE) % max(1, whole.size - 12 * RATE)
                bed = whole[offset:]
            yield condition, clip(voice, speed, bed, level)


def detections(beds: dict[str, FloatArray], voices: int) -> dict[str, Any]:
    """Per setting and condition: wake words heard and ends of speech found, of two clips a
    voice."""
    clips = list(_user_clips(beds, voices))
    report: dict[str, Any] = {}
    for setting in SETTINGS:
        by_condition: dict[str, dict[str, Any]] = {}
        spent = 0.0
        frames = 0
        for condition, made in clips:
            chain = Chain(*setting)
            try:
                result = run_clip(chain, made)
            finally:
                chain.close()
            spent += chain.spent
            frames += made.audio.size // 160
            row = by_condition.setdefault(condition, {"clips": 0, "wake": 0, "end": 0, "lags": []})
            row["clips"] += 1
            row["wake"] += result["wake"]
            row["end"] += result["end_found"]
            if result["end_found"]:
                row["lags"].append(result["end_lag_s"])
        for row in by_condition.values():
            lags = row.pop("lags")
            row["end_lag_median_s"] = round(float(np.median(lags)), 2) if lags else None
        report[_name(*setting)] = {
            "conditions": by_condition,
            "ms_per_10ms": round(1000 * spent / max(1, frames), 4) if frames and spent else 0.0,
        }
    return report


def false_triggers(bed: FloatArray) -> dict[str, Any]:
    """The TV alone through each setting's chain: wake words fired, speech started."""
    pcm = float_to_pcm16(bed)
    report: dict[str, Any] = {}
    for setting in SETTINGS:
        chain = Chain(*setting)
        wakes = 0
        starts = 0
        try:
            for start in range(0, len(pcm), 2 * CHUNK):
                cleaned = chain.clean(pcm[start : start + 2 * CHUNK])
                wakes += len(chain.wake.process(cleaned))
                starts += sum(
                    isinstance(e, SpeechStarted) for e in chain.endpointer.process(cleaned)
                )
        finally:
            chain.close()
        hours = bed.size / RATE / 3600
        report[_name(*setting)] = {
            "wake_words": wakes,
            "wake_per_hour": round(wakes / hours, 2),
            "speech_starts_per_minute": round(starts / (hours * 60), 2),
        }
    return report


def _name(suppression: int, gain: int, gate: float) -> str:
    parts = (
        ([f"suppression {suppression}"] if suppression else [])
        + ([f"gain {gain} dBFS"] if gain else [])
        + ([f"voice gate {gate:g} dB"] if gate else [])
    )
    return " + ".join(parts) or "off"


def sentences_cut(count: int = SENTENCES) -> dict[str, Any]:
    """`count` long sentences of prose, each said clean with a second of silence before
    and 1.5 s after, through each setting's chain: how many the endpointer ends more than
    once (cut in two)."""
    texts = [s for _, s in zip(range(count), corpus_sentences(), strict=False)]
    said = []
    for index, text in enumerate(texts):
        voice = USER_VOICES[index % len(USER_VOICES)]
        speech = _trimmed(espeak_speech(text, voice, USER_SPEEDS[index % len(USER_SPEEDS)]))
        before, after = np.zeros(RATE, np.float32), np.zeros(round(1.5 * RATE), np.float32)
        said.append(np.concatenate([before, speech * _gain_to(speech, CLEAN_DBFS), after]))
    report: dict[str, Any] = {}
    for setting in SETTINGS:
        cut = 0
        for audio in said:
            chain = Chain(*setting)
            try:
                pcm = float_to_pcm16(audio)
                ends = 0
                for start in range(0, len(pcm), 2 * CHUNK):
                    cleaned = chain.clean(pcm[start : start + 2 * CHUNK])
                    found = chain.endpointer.process(cleaned)
                    ends += sum(isinstance(e, UtteranceEnded) for e in found)
            finally:
                chain.close()
            cut += ends > 1
        report[_name(*setting)] = {"sentences": len(said), "cut": cut}
    return report


def bench_noise(
    tv_seconds: float = 600.0, voices: int = len(USER_VOICES), seed: int = 0
) -> dict[str, Any]:
    """The whole measure: detections (`voices` of the user's voices, at two speeds) on a
    stretch of TV, false triggers on `tv_seconds` of it, long sentences (six a voice)."""
    began = time.monotonic()
    span = 15.0 * voices * len(USER_SPEEDS)  # each clip starts 7.3 s further in
    bed = tv(max(tv_seconds, span), seed)
    return {
        "tv_seconds": round(tv_seconds, 1),
        "voices": voices,
        "detections": detections({"tv": bed, "fan": fan(span, seed)}, voices),
        "false_triggers": false_triggers(bed[: round(tv_seconds * RATE)]),
        "sentences": sentences_cut(SENTENCES * voices // len(USER_VOICES)),
        "seconds": round(time.monotonic() - began, 1),
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"wake word and end of speech over a TV (talk over music at {TV_DBFS:g} dBFS) and a fan;"
        f" {report['voices'] * len(USER_SPEEDS)} clips a condition",
    ]
    width = max(len(name) for name in report["detections"])
    lines.append(f"  {'setting':{width}}  condition  wake heard  end found  end lag  ms per 10 ms")
    for name, result in report["detections"].items():
        for condition, row in result["conditions"].items():
            lag = row["end_lag_median_s"]
            lines.append(
                f"  {name:{width}}  {condition:>9}  {row['wake']:5d}/{row['clips']:<4d}"
                f"  {row['end']:5d}/{row['clips']:<3d}  "
                f"{'-' if lag is None else f'{lag:.2f} s':>7}  {result['ms_per_10ms']:12.4f}"
            )
    lines.append("  long sentences said clean, cut in two by the endpointer:")
    for name, row in report["sentences"].items():
        lines.append(f"  {name:{width}}  {row['cut']} of {row['sentences']}")
    lines.append(f"  the TV alone ({report['tv_seconds']:g} s):")
    for name, row in report["false_triggers"].items():
        lines.append(
            f"  {name:{width}}  wake words {row['wake_words']} ({row['wake_per_hour']:g} an hour), "
            f"speech starts {row['speech_starts_per_minute']:g} a minute"
        )
    return "\n".join(lines)
