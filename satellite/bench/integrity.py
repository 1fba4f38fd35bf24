"""`bench integrity`: the per-frame audio integrity check (`satellite.safety.integrity`) on
clean speech, for false alarms, and on copies of it with faults injected, for detection.

Clean speech: espeak-ng prose (the standard library's docstrings) in eight voices at three
rates, resampled to 24 kHz, a short pause after each two sentences, each 20 s reply at its own
seeded peak level between -12 and -3 dBFS, over a noise floor at -80 dBFS: the model's detokenizer never makes
digital silence, espeak-ng does (in pauses and stop consonants, cut in at full level), and
the dropout detector is about digital silence. It is handed to the check as the daemon hands
over the model's audio: 80 ms blocks (1,920 samples), in replies of 20 s.

Faults, each injected into its own copy of a 6 s excerpt of that speech at a seeded frame
inside speech, at least 2 s in (the check has heard some of the reply):

- `click`: an impulse of 0.1-0.3 (either sign) on the first sample of a block;
- `dc_offset`: an offset of 0.05-0.1 (either sign) from there on, faded in over 5 ms;
- `loudness_jump`: +20 dB for 0.5 s (beyond full scale where it gets there: the model's
  audio is not clipped before the check);
- `dropout`: 40 ms of digital silence, anywhere in a frame;
- `loop`: a frame repeated (four times in a row), or a pattern of two frames (three times),
  taking turns;
- `rate`: one block of 16 kHz audio declared as such, where the player plays 24 kHz (audio at
  the wrong rate that says it is at the right one cannot be told from its samples);
- `channels`: one stereo block.

A fault counts as detected when its detector fails a frame from the fault's first block to
0.5 s after its end. The detectors that also fail are counted beside.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from satellite.audio.convert import FloatArray, resample
from satellite.bench.query import espeak_speech
from satellite.bench.stopword import corpus_sentences
from satellite.bench.system import cpu_model
from satellite.safety.audio import AudioCheck
from satellite.safety.integrity import DETECTORS, Detector

RATE = 24_000
FRAME = 1920
"""The engine's frame: 80 ms at 24 kHz, one block as the daemon gets it."""
VOICES = ("en-us", "en-gb", "en-us+f3", "en-us+m3", "en-gb-x-rp", "en-029", "en-gb-scotland",
          "en-us+f2")  # fmt: skip
SPEEDS = (130, 175, 220)
"""Words a minute."""
PEAK_DBFS = (-12.0, -3.0)
NOISE_FLOOR_DBFS = -80.0
PAUSE_SECONDS = (0.3, 1.0)
REPLY_SECONDS = 20.0
EXCERPT_SECONDS = 6.0
FAULT_FROM_SECONDS = 2.0
SPEECH_DBFS = -35.0
"""A frame at least this loud is speech: faults go into such frames."""
WITHIN_SECONDS = 0.5
"""A detection counts from the fault's first block to this long after its end."""
FAULTS: dict[str, Detector] = {
    "click": "click",
    "dc_offset": "dc_offset",
    "loudness_jump": "loudness_jump",
    "dropout": "dropout",
    "loop": "loop",
    "rate": "format",
    "channels": "format",
}
"""Each fault and the detector meant to find it."""


@dataclass(frozen=True)
class Block:
    samples: FloatArray
    rate: int | None = None
    """Declared sample rate (None: the player's)."""


def clean_speech(seconds: float, seed: int = 0) -> tuple[FloatArray, list[str]]:
    """`seconds` of clean speech at 24 kHz (see the module docstring), and the voices and
    rates in it."""
    rng = np.random.default_rng(seed)
    sentences = corpus_sentences()
    parts: list[FloatArray] = []
    said_by: list[str] = []
    made = 0
    index = 0
    while made < seconds * RATE:
        text = " ".join(next(sentences, "the end") for _ in range(2))
        voice = VOICES[index % len(VOICES)]
        speed = SPEEDS[(index // len(VOICES)) % len(SPEEDS)]
        said = espeak_speech(text, voice, speed, rate=RATE)
        said_by.append(f"{voice} {speed} wpm")
        pause = np.zeros(round(rng.uniform(*PAUSE_SECONDS) * RATE), np.float32)
        parts += [said, pause]
        made += said.size + pause.size
        index += 1
    speech = np.concatenate(parts)[: round(seconds * RATE)]
    reply = round(REPLY_SECONDS * RATE)
    for start in range(0, speech.size, reply):  # each reply at its own level
        part = speech[start : start + reply]
        peak = float(np.abs(part).max()) or 1.0
        part *= np.float32(10 ** (rng.uniform(*PEAK_DBFS) / 20) / peak)
    floor = rng.standard_normal(speech.size) * 10 ** (NOISE_FLOOR_DBFS / 20)
    return (speech + floor).astype(np.float32), sorted(set(said_by))


def _blocks(audio: FloatArray) -> list[Block]:
    return [Block(audio[i : i + FRAME]) for i in range(0, audio.size, FRAME)]


def false_alarms(speech: FloatArray) -> dict[str, Any]:
    """The clean speech through the check, in replies of `REPLY_SECONDS`: failures per
    detector, and the check's cost per frame."""
    check = AudioCheck(RATE, action="report")
    reply = round(REPLY_SECONDS * RATE)
    spent = 0.0
    frames = 0
    for start in range(0, speech.size, reply):
        check.start_reply()
        for block in _blocks(speech[start : start + reply]):
            began = time.perf_counter()
            check.inspect(block.samples)
            spent += time.perf_counter() - began
            frames += 1
    minutes = speech.size / RATE / 60
    failures = check.counts()
    return {
        "minutes": round(minutes, 2),
        "frames": frames,
        "failures": failures,
        "per_minute": {d: round(n / minutes, 3) for d, n in failures.items()},
        "per_frame": round(sum(failures.values()) / max(1, frames), 6),
        "us_per_frame": round(1e6 * spent / max(1, frames), 1),
    }


def _speech_frame(excerpt: FloatArray, rng: np.random.Generator, frames: int = 1) -> int:
    """A seeded block index at least `FAULT_FROM_SECONDS` in, with `frames` blocks of speech
    from there on (and 1 s left after them)."""
    first = round(FAULT_FROM_SECONDS * RATE) // FRAME
    last = excerpt.size // FRAME - frames - round(RATE / FRAME)
    blocks = excerpt[: excerpt.size // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
    level = 10 * np.log10(np.mean(blocks**2, axis=1) + 1e-24)
    loud = [i for i in range(first, last) if all(level[i : i + frames] >= SPEECH_DBFS)]
    if not loud:
        return first
    return int(rng.choice(loud))


def inject(kind: str, excerpt: FloatArray, rng: np.random.Generator, turn: int = 0
           ) -> tuple[list[Block], int, int]:  # fmt: skip
    """`excerpt` as blocks with the fault `kind` in it; the fault's first and last block."""
    audio = excerpt.copy()
    sign = float(rng.choice([-1.0, 1.0]))
    if kind == "click":
        at = _speech_frame(audio, rng)
        audio[at * FRAME] += sign * rng.uniform(0.1, 0.3)
        return _blocks(audio), at, at
    if kind == "dc_offset":
        at = _speech_frame(audio, rng)
        offset = np.full(audio.size - at * FRAME, sign * rng.uniform(0.05, 0.1), np.float32)
        fade = round(0.005 * RATE)
        offset[:fade] *= np.linspace(0.0, 1.0, fade, dtype=np.float32)
        audio[at * FRAME :] += offset
        return _blocks(audio), at, audio.size // FRAME
    if kind == "loudness_jump":
        frames = round(0.5 * RATE / FRAME)
        at = _speech_frame(audio, rng)
        jumped = slice(at * FRAME, (at + frames) * FRAME)
        audio[jumped] *= 10.0
        return _blocks(audio), at, at + frames - 1
    if kind == "dropout":
        at = _speech_frame(audio, rng, 2)
        start = at * FRAME + int(rng.integers(0, FRAME))
        audio[start : start + round(0.04 * RATE)] = 0.0
        return _blocks(audio), at, at + 1
    if kind == "loop":
        at = _speech_frame(audio, rng, 2)
        pattern, repeats = (1, 4) if turn % 2 == 0 else (2, 3)
        piece = audio[at * FRAME : (at + pattern) * FRAME].copy()
        looped = np.tile(piece, repeats)
        audio[at * FRAME : at * FRAME + looped.size] = looped
        return _blocks(audio), at + pattern, at + pattern * repeats - 1
    blocks = _blocks(audio)
    at = _speech_frame(audio, rng)
    frame = blocks[at].samples
    if kind == "rate":
        blocks[at] = Block(resample(frame, RATE, 16_000), 16_000)
    elif kind == "channels":
        blocks[at] = Block(np.stack([frame, frame], axis=1))
    else:
        raise ValueError(f"no fault {kind!r}")
    return blocks, at, at


def _excerpts(speech: FloatArray, count: int, rng: np.random.Generator) -> Iterator[FloatArray]:
    length = round(EXCERPT_SECONDS * RATE)
    for _ in range(count):
        start = int(rng.integers(0, max(1, (speech.size - length) // FRAME))) * FRAME
        yield speech[start : start + length]


def detections(speech: FloatArray, trials: int, seed: int = 0) -> dict[str, Any]:
    """Per fault: `trials` excerpts with it injected; how often its detector found it, and
    which other detectors failed from the fault on."""
    rng = np.random.default_rng(seed + 1)
    within = round(WITHIN_SECONDS * RATE / FRAME)
    report: dict[str, Any] = {}
    for kind, detector in FAULTS.items():
        found = 0
        also = dict.fromkeys(DETECTORS, 0)
        for turn, excerpt in enumerate(_excerpts(speech, trials, rng)):
            blocks, first, last = inject(kind, excerpt, rng, turn)
            check = AudioCheck(RATE, action="report")
            failed: set[Detector] = set()
            for index, block in enumerate(blocks):
                before = check.counts()
                check.inspect(block.samples, block.rate)
                if first <= index <= last + within:
                    failed |= {d for d, n in check.counts().items() if n > before[d]}
            found += detector in failed
            for other in failed - {detector}:
                also[other] += 1
        report[kind] = {
            "detector": detector,
            "trials": trials,
            "detected": found,
            "rate": round(found / max(1, trials), 3),
            "also": {d: n for d, n in also.items() if n},
        }
    return report


def bench_integrity(minutes: float = 10.0, trials: int = 200, seed: int = 0) -> dict[str, Any]:
    """The whole measure: `minutes` of clean speech for false alarms, `trials` injections of
    each fault for detection."""
    began = time.monotonic()
    speech, said_by = clean_speech(max(minutes * 60, 2 * EXCERPT_SECONDS), seed)
    clean = speech[: round(minutes * 60 * RATE)]
    return {
        "cpu": cpu_model(),
        "speech": said_by,
        "clean": false_alarms(clean),
        "faults": detections(speech, trials, seed),
        "seconds": round(time.monotonic() - began, 1),
    }


def format_report(report: dict[str, Any]) -> str:
    clean = report["clean"]
    lines = [
        f"clean speech: {clean['minutes']:g} min ({clean['frames']} frames of 80 ms), espeak-ng "
        f"in {len(report['speech'])} voice and rate pairs",
        f"  {'detector':15} {'false alarms':>12} {'per minute':>10}",
    ]
    for detector, count in clean["failures"].items():
        lines.append(f"  {detector:15} {count:12d} {clean['per_minute'][detector]:10.3f}")
    lines.append(f"  false alarms per frame: {clean['per_frame']:.6f}; "
                 f"cost {clean['us_per_frame']:.0f} us per frame ({report['cpu']})")  # fmt: skip
    lines.append("injected faults:")
    lines.append(f"  {'fault':15} {'detector':14} {'detected':>10} {'rate':>6}  also failed")
    for kind, row in report["faults"].items():
        also = ", ".join(f"{d} {n}" for d, n in row["also"].items()) or "-"
        lines.append(f"  {kind:15} {row['detector']:14} {row['detected']:4d} / {row['trials']:<4d}"
                     f"{100 * row['rate']:5.0f}%  {also}")  # fmt: skip
    lines.append(f"took {report['seconds']:.0f} s")
    return "\n".join(lines)
