"""`bench stopword`: how often the stop word fires on speech that does not say it, and how
often it hears it when it is said.

False triggers: an hour (by default) of espeak-ng speech in eight voices at three speeds,
read from the docstrings of the Python standard library's own sources (parsed, never
imported; English prose found on every machine that runs the satellite), every sentence with
"stop" in it left out, streamed through the detector as one microphone stream. Detections:
"stop" and three short phrases with it, in the same voices and speeds, clean and in white
noise at 20 and 10 dB SNR, each clip padded with silence and fed to a fresh detector.
"""

from __future__ import annotations

import ast
import re
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from satellite.audio.convert import FloatArray, float_to_pcm16
from satellite.audio.wake import WakeWordDetector
from satellite.bench.harness import BenchError
from satellite.bench.query import espeak_speech
from satellite.settings import WakeSettings

RATE = 16_000
CHUNK = 320
"""Samples fed at a time: 20 ms, as the daemon's capture chunks."""
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us+f3", "en+m3", "en+f2")
SPEEDS = (130, 160, 190)
STOP_PHRASES = ("stop", "stop it", "okay stop", "stop please")
SNRS_DB: tuple[float | None, ...] = (None, 20.0, 10.0)
"""None: clean."""
SEGMENT_CHARACTERS = 1500
"""Text per espeak-ng call (about a minute and a half of speech)."""
GAP_SECONDS = 0.5
"""Silence between two segments of the long stream."""
WORD = re.compile(r"[A-Za-z][a-z]+")
SKIPPED = ("test", "idlelib", "lib2to3", "turtledemo", "site-packages")
"""Folders of the standard library left out (tests, tools: little prose)."""


def corpus_sentences() -> Iterator[str]:
    """Sentences of prose from the docstrings of the standard library's .py files, in a fixed
    order, each at least six words and mostly words, none with "stop" in it."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in SKIPPED or path.name.startswith("test"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
                yield from _prose(ast.get_docstring(node) or "")


def _prose(doc: str) -> Iterator[str]:
    """The sentences of `doc` that are prose (at least six words, four in five of them
    words) and do not say "stop"."""
    for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
        words = sentence.split()
        if len(words) < 6 or "stop" in sentence.lower():
            continue
        wordlike = sum(bool(WORD.fullmatch(w.strip(".,;:!?()'\""))) for w in words)
        if wordlike >= 0.8 * len(words):
            yield sentence


def speech_without_the_word(seconds: float) -> Iterator[tuple[str, str, FloatArray]]:
    """(voice/speed, text, audio) segments until `seconds` of speech are made; voices and
    speeds take turns."""
    made = 0.0
    sentences = corpus_sentences()
    index = 0
    while round((seconds - made) * RATE) > 0:  # whole samples left (not a float's last bits)
        text: list[str] = []
        while sum(len(s) + 1 for s in text) < SEGMENT_CHARACTERS:
            sentence = next(sentences, None)
            if sentence is None:
                if not text:
                    raise BenchError(f"the corpus ran out after {made:.0f} s of speech")
                break
            text.append(sentence)
        voice = VOICES[index % len(VOICES)]
        speed = SPEEDS[(index // len(VOICES)) % len(SPEEDS)]
        index += 1
        audio = espeak_speech(" ".join(text), voice, speed)
        audio = audio[: max(0, round((seconds - made) * RATE))]
        made += audio.size / RATE
        yield f"{voice}/{speed}", " ".join(text), audio


def _feed(detector: WakeWordDetector, pcm: bytes) -> list[float]:
    """Stream `pcm` in 20 ms chunks; the detection times (detector audio clock)."""
    found: list[float] = []
    step = CHUNK * 2
    for start in range(0, len(pcm), step):
        found += [d.seconds for d in detector.process(pcm[start : start + step])]
    return found


def false_triggers(detector: WakeWordDetector, seconds: float) -> dict[str, Any]:
    """Stream `seconds` of speech without the word through `detector` as one stream."""
    gap = float_to_pcm16(np.zeros(round(GAP_SECONDS * RATE), np.float32))
    detector.reset()
    speech = 0.0
    spent = 0.0
    triggers: list[dict[str, Any]] = []
    for label, text, audio in speech_without_the_word(seconds):
        start = detector.seconds
        began = time.perf_counter()
        times = _feed(detector, float_to_pcm16(audio) + gap)
        spent += time.perf_counter() - began
        speech += audio.size / RATE
        for at in times:
            triggers.append({"voice": label, "at_s": round(at - start, 2), "text": text[:200]})
    return {
        "speech_seconds": round(speech, 1),
        "false_triggers": len(triggers),
        "per_hour": round(len(triggers) * 3600 / speech, 2) if speech else None,
        "triggers": triggers,
        "detector_ms_per_10ms": round(1000 * spent / (speech / 0.01), 4) if speech else None,
    }


def detections(detector: WakeWordDetector) -> dict[str, Any]:
    """Each stop phrase in every voice, speed and noise level, padded with 0.5 s of silence
    each side, through a fresh detector."""
    pad = np.zeros(RATE // 2, np.float32)
    hits: dict[str, list[int]] = {}
    by_phrase: dict[str, list[int]] = {}
    by_voice: dict[str, list[int]] = {}
    rng = np.random.default_rng(0)
    for phrase in STOP_PHRASES:
        for voice in VOICES:
            for speed in SPEEDS:
                speech = espeak_speech(phrase, voice, speed)
                rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2)))
                for snr in SNRS_DB:
                    audio = np.concatenate([pad, speech, pad])
                    if snr is not None:
                        noise = rng.standard_normal(audio.size) * rms / 10 ** (snr / 20)
                        audio = audio + noise.astype(np.float32)
                    detector.reset()
                    found = _feed(detector, float_to_pcm16(np.clip(audio, -1.0, 1.0)))
                    level = "clean" if snr is None else f"{snr:g} dB"
                    for table, key in ((hits, level), (by_phrase, phrase), (by_voice, voice)):
                        count = table.setdefault(key, [0, 0])
                        count[0] += bool(found)
                        count[1] += 1
    total = [sum(h[0] for h in hits.values()), sum(h[1] for h in hits.values())]
    return {
        "detected": total[0],
        "clips": total[1],
        "rate": round(total[0] / total[1], 3),
        "by_noise": {level: {"detected": h, "clips": n} for level, (h, n) in hits.items()},
        "by_phrase": {key: {"detected": h, "clips": n} for key, (h, n) in by_phrase.items()},
        "by_voice": {key: {"detected": h, "clips": n} for key, (h, n) in by_voice.items()},
    }


def bench_stopword(
    model: str = "stop", sensitivity: float = 0.5, seconds: float = 3600.0
) -> dict[str, Any]:
    """Both figures for the stop-word model `model` at `sensitivity`."""
    settings = replace(WakeSettings(), model=model, sensitivity=sensitivity)
    detector = WakeWordDetector(settings, key="--model")
    try:
        return {
            "model": detector.model_id,
            "phrase": detector.wake_word,
            "sensitivity": sensitivity,
            "cutoff": round(detector.cutoff, 3),
            "python": sys.version.split()[0],
            "without_the_word": false_triggers(detector, seconds),
            "with_the_word": detections(detector),
        }
    finally:
        detector.close()


def format_report(report: dict[str, Any]) -> str:
    without, found = report["without_the_word"], report["with_the_word"]
    lines = [
        f"stop word {report['phrase']!r} ({report['model']}), sensitivity "
        f"{report['sensitivity']} (cutoff {report['cutoff']})",
        f"  false triggers: {without['false_triggers']} in {without['speech_seconds'] / 60:.1f} "
        f"min of speech without the word ({without['per_hour']} an hour); detector "
        f"{without['detector_ms_per_10ms']} ms per 10 ms of audio",
    ]
    for trigger in without["triggers"][:10]:
        lines.append(f"    {trigger['voice']} at {trigger['at_s']} s: {trigger['text'][:80]!r}")
    lines.append(f"  detections: {found['detected']}/{found['clips']} ({found['rate']:.1%})")
    for name in ("by_noise", "by_phrase", "by_voice"):
        counts = ", ".join(f"{key} {h['detected']}/{h['clips']}" for key, h in found[name].items())
        lines.append(f"    {name.replace('_', ' ')}: {counts}")
    return "\n".join(lines)
