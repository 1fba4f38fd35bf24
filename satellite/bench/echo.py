"""`bench echo`: the echo canceller in a scripted room.

The satellite's reply (espeak-ng speech standing in for the model's, at the speaker's 24 kHz)
is played into a simulated room: the microphone hears it after a delay, through a room
impulse response (exponentially decaying noise, T60 0.3 s) at a level below the reply, and,
from 3 s in, the user saying the wake word and a question over it. The capture runs through
`EchoCanceller` in 20 ms chunks, the played audio handed to it as the speaker plays it,
exactly as the daemon does. Figures per room: echo return loss enhancement (ERLE, dB, over
the echo-only audio after the first second), how much of the user's speech is kept (dB), the
wake word heard over the reply with and without the canceller, speech the end-of-speech
model finds in the echo alone with and without it, barge-in by voice (how soon after the
user starts it fires, and whether it fires on the echo alone, through the canceller), and the
canceller's cost per 10 ms.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from satellite.audio.bargein import VoiceBargeIn
from satellite.audio.convert import FloatArray, float_to_pcm16, resample
from satellite.audio.echo import EchoCanceller
from satellite.audio.endpoint import Endpointer, SpeechStarted
from satellite.audio.wake import WakeWordDetector
from satellite.bench.query import espeak_speech
from satellite.settings import VadSettings, WakeSettings

RATE = 16_000
OUTPUT_RATE = 24_000
CHUNK = 320
"""20 ms capture chunks, as the daemon gets them."""
REPLY_TEXT = (
    "Tomorrow will be mostly sunny, with a high of twenty two degrees and a light breeze "
    "from the west. In the evening clouds come in from the coast, and there is a small "
    "chance of rain after midnight. Enjoy your day."
)
USER_TEXT = ("okay nabu", "what time is it")
USER_AT = 3.0
"""Seconds into the reply the user starts speaking."""
ROOMS: tuple[tuple[int, float], ...] = (
    (20, -6.0),
    (60, -12.0),
    (120, -20.0),
    (120, -6.0),
    (40, -10.0),
    (80, -16.0),
    (30, -3.0),
    (100, -9.0),
    (60, -120.0),
)
"""(delay ms, echo level dB below the reply) of each scripted room; the last has no echo to
speak of (a speaker the microphone cannot hear): what the canceller does to the user alone
while the reply plays."""
CONVERGE_SECONDS = 1.0


@dataclass(frozen=True)
class Room:
    delay_ms: int
    level_db: float
    seed: int = 0


def room_response(room: Room, t60: float = 0.3) -> FloatArray:
    """The room's impulse response at 16 kHz: the delay, then a direct path and a decaying
    tail, scaled so that the echo's energy is `level_db` below the played sound's."""
    rng = np.random.default_rng(room.seed)
    n = int(0.4 * RATE)
    t = np.arange(n) / RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / t60) * 0.3
    tail[0] += 1.0
    tail *= 10 ** (room.level_db / 20) / np.sqrt(np.sum(tail**2))
    return np.concatenate([np.zeros(round(room.delay_ms * RATE / 1000)), tail]).astype(np.float32)


@dataclass(frozen=True)
class Scene:
    reply: FloatArray
    """What the speaker plays, at 24 kHz."""
    mic: FloatArray
    """What the microphone hears, at 16 kHz: the echo, and the user from USER_AT on."""
    echo: FloatArray
    """The echo alone, at 16 kHz."""
    user: FloatArray
    """The user alone where they speak (zeros elsewhere), at 16 kHz."""


def scene(room: Room) -> Scene:
    reply16 = espeak_speech(REPLY_TEXT, "en-gb", 165)
    reply = resample(reply16, RATE, OUTPUT_RATE)
    echo = _convolve(reply16, room_response(room))[: reply16.shape[0]]
    gap = np.zeros(RATE // 2, np.float32)
    said = np.concatenate(
        [espeak_speech(USER_TEXT[0], "en-us", 150), gap, espeak_speech(USER_TEXT[1], "en-us", 150)]
    )
    user = np.zeros_like(echo)
    start = round(USER_AT * RATE)
    user[start : start + said.shape[0]] = 0.5 * said[: user.shape[0] - start]
    return Scene(reply, np.clip(echo + user, -1.0, 1.0), echo, user)


def cancel(scene: Scene, delay_ms: int = 0) -> tuple[FloatArray, float]:
    """The microphone through the canceller, the reply handed to it as it plays (20 ms at a
    time, in step with the capture); the output and ms of CPU per 10 ms."""
    canceller = EchoCanceller(OUTPUT_RATE, delay_ms)
    out: list[bytes] = []
    block = OUTPUT_RATE * CHUNK // RATE
    spent = 0.0
    for index, start in enumerate(range(0, scene.mic.shape[0] - CHUNK + 1, CHUNK)):
        at = index * CHUNK / RATE  # the scene's own clock: the speaker and the mic in step
        canceller.played(scene.reply[index * block : (index + 1) * block], at)
        pcm = float_to_pcm16(scene.mic[start : start + CHUNK])
        began = time.perf_counter()
        out.append(canceller.process(pcm, at + CHUNK / RATE))
        spent += time.perf_counter() - began
    samples = np.frombuffer(b"".join(out), "<i2").astype(np.float32) / np.float32(32768)
    return samples, 1000 * spent / max(1, canceller.frames)


def _convolve(a: FloatArray, b: FloatArray) -> FloatArray:
    n = a.shape[0] + b.shape[0] - 1
    size = 1 << (n - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(b, size), size)[:n]
    return out.astype(np.float32)


def db_ratio(a: FloatArray, b: FloatArray) -> float:
    """The mean power of `a` over that of `b`, in dB."""
    return float(10 * np.log10(max(1e-12, float(np.mean(a**2))) / max(1e-12, float(np.mean(b**2)))))


def _wake_heard(audio: FloatArray) -> bool:
    detector = WakeWordDetector(WakeSettings())
    try:
        pcm = float_to_pcm16(audio)
        return any(detector.process(pcm[i : i + 2 * CHUNK]) for i in range(0, len(pcm), 2 * CHUNK))
    finally:
        detector.close()


def _speech_found(audio: FloatArray) -> int:
    """Times the end-of-speech model starts an utterance in `audio` (fed 20 ms at a time)."""
    endpointer = Endpointer(VadSettings())
    endpointer.restart()
    pcm = float_to_pcm16(audio)
    found = 0
    for i in range(0, len(pcm), 2 * CHUNK):
        found += sum(
            isinstance(e, SpeechStarted) for e in endpointer.process(pcm[i : i + 2 * CHUNK])
        )
    return found


def voice_heard(audio: FloatArray, mic: FloatArray) -> float | None:
    """Seconds into `audio` (the canceller's output of the microphone's `mic`, fed 20 ms at a
    time from the start of the reply) at which barge-in by voice fires; None: never."""
    detector = VoiceBargeIn()
    pcm, raw = float_to_pcm16(audio), float_to_pcm16(mic[: audio.shape[0]])
    for i in range(0, len(pcm), 2 * CHUNK):
        if detector.process(pcm[i : i + 2 * CHUNK], raw[i : i + 2 * CHUNK]):
            return (i // 2 + CHUNK) / RATE
    return None


def measure(room: Room) -> dict[str, Any]:
    made = scene(room)
    out, cost = cancel(made)
    n = out.shape[0]
    mic, echo, user = made.mic[:n], made.echo[:n], made.user[:n]
    quiet = np.abs(user) == 0
    quiet[: round(CONVERGE_SECONDS * RATE)] = False
    talking = ~(np.abs(user) == 0)
    # the user's speech kept: the output against the user alone, where they speak
    kept = db_ratio(out[talking], user[talking]) if talking.any() else None
    echo_only = made.echo[: round(USER_AT * RATE)]
    cancelled_echo, _ = cancel(Scene(made.reply, echo_only, echo_only, np.zeros_like(echo_only)))
    whole_echo, _ = cancel(Scene(made.reply, made.echo, made.echo, np.zeros_like(made.echo)))
    barged = voice_heard(out, made.mic)
    return {
        "delay_ms": room.delay_ms,
        "level_db": room.level_db,
        "erle_db": round(db_ratio(mic[quiet], out[quiet]), 1),
        "user_kept_db": None if kept is None else round(kept, 1),
        "wake_heard": {"without": _wake_heard(mic), "with": _wake_heard(out)},
        "speech_in_echo": {
            "without": _speech_found(echo_only),
            "with": _speech_found(cancelled_echo),
        },
        "voice_barge_in": {
            "after_user_s": None if barged is None else round(barged - USER_AT, 2),
            "false_in_echo_alone": voice_heard(whole_echo, made.echo) is not None,
            "without_canceller": voice_heard(mic, mic) is not None,
        },
        "ms_per_10ms": round(cost, 3),
        "echo_seconds": round(float(np.sum(np.abs(echo) > 0)) / RATE, 1),
    }


def bench_echo(rooms: tuple[tuple[int, float], ...] = ROOMS) -> dict[str, Any]:
    return {
        "rooms": [measure(Room(delay, level, seed)) for seed, (delay, level) in enumerate(rooms)]
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [
        "echo canceller (WebRTC AEC3 through livekit) in scripted rooms: a 9 s reply, the user "
        f"saying {' / '.join(USER_TEXT)!r} over it from {USER_AT:g} s",
        "  delay ms  level dB   ERLE dB  user kept dB  wake word (without/with)  speech in echo "
        "(without/with)  voice barge-in (after the user starts / in the echo alone)  "
        "ms per 10 ms",
    ]
    for r in report["rooms"]:
        wake = "/".join("yes" if r["wake_heard"][k] else "no" for k in ("without", "with"))
        speech = f"{r['speech_in_echo']['without']}/{r['speech_in_echo']['with']}"
        voice = r["voice_barge_in"]
        after = "never" if voice["after_user_s"] is None else f"{voice['after_user_s']:.2f} s"
        barge = f"{after} / {'FALSE' if voice['false_in_echo_alone'] else 'none'}"
        lines.append(
            f"  {r['delay_ms']:8d}  {r['level_db']:8.0f}  {r['erle_db']:8.1f}  "
            f"{r['user_kept_db']:12.1f}  {wake:>24}  {speech:>27}  {barge:>56}  "
            f"{r['ms_per_10ms']:12.3f}"
        )
    return "\n".join(lines)
