"""The voice fingerprint's measurements (`python -m satellite.bench.voiceprint`): the cost of
`VoicePrint.update` per 80 ms frame, and the distances of espeak-ng replies from their own
voice's history and from the other voices' (how `THRESHOLD_DB` was chosen)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from satellite.bench.query import espeak_speech
from satellite.safety.voiceprint import Fingerprint, VoicePrint, average, distance

RATE = 24_000
FRAME = 1920
VOICES = ("en-us", "en-gb", "en+f3", "en+m3")
REPLIES = (
    "The kitchen lights are now on.",
    "It is twenty one degrees in the living room.",
    "Your timer for ten minutes has started.",
    "Tomorrow will be cloudy with a chance of rain in the afternoon.",
    "I have added milk and eggs to the shopping list.",
    "The front door is locked.",
    "Playing some quiet music in the bedroom.",
    "It is a quarter past seven in the morning.",
    "The garage door has been closed for an hour.",
    "Sure, I will remind you to call your mother at six.",
)
HISTORY_REPLIES = 5
"""Each voice's first replies make its history; the rest are judged against it."""


def fingerprint(audio: np.ndarray) -> Fingerprint:
    made = VoicePrint(RATE)
    for start in range(0, audio.size, FRAME):
        made.update(audio[start : start + FRAME])
    found = made.fingerprint()
    assert found is not None
    return found


def bench_voiceprint(repeats: int = 3) -> dict[str, Any]:
    speech = {v: [espeak_speech(t, v, rate=RATE) for t in REPLIES] for v in VOICES}
    prints = {v: [fingerprint(a) for a in said] for v, said in speech.items()}
    distances: dict[str, dict[str, list[float]]] = {}
    for voice in VOICES:
        history = average(prints[voice][:HISTORY_REPLIES])
        distances[voice] = {
            other: [round(distance(p, history), 2) for p in prints[other][HISTORY_REPLIES:]]
            for other in VOICES
        }
    audio = np.concatenate([a for said in speech.values() for a in said])
    frames = [audio[i : i + FRAME] for i in range(0, audio.size - FRAME + 1, FRAME)]
    made = VoicePrint(RATE)
    start = time.perf_counter()
    for _ in range(repeats):
        for frame in frames:
            made.update(frame)
    per_frame = (time.perf_counter() - start) / (repeats * len(frames))
    return {"frames": len(frames), "us_per_frame": round(per_frame * 1e6, 1),
            "distances_db": distances}  # fmt: skip


def format_report(report: dict[str, Any]) -> str:
    lines = [f"update: {report['us_per_frame']} us per 80 ms frame ({report['frames']} frames)"]
    for voice, by_other in report["distances_db"].items():
        same = by_other[voice]
        others = {o: min(d) for o, d in by_other.items() if o != voice}
        lines.append(f"{voice} history: same voice {min(same)}-{max(same)} dB; "
                     + ", ".join(f"{o} from {d}" for o, d in others.items()) + " dB")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_report(bench_voiceprint()))
