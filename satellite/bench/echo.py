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
from satellite.audio.ownvoice import STOP_SETTLE_SECONDS, OwnWakeWord
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
OWN_WAKE_TEXT = "Here is your reminder. You asked me to say okay nabu at six. Okay nabu."
"""An announcement that says the wake word: the satellite must not wake on it."""
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
    echo = convolve(reply16, room_response(room))[: reply16.shape[0]]
    gap = np.zeros(RATE // 2, np.float32)
    said = np.concatenate(
        [espeak_speech(USER_TEXT[0], "en-us", 150), gap, espeak_speech(USER_TEXT[1], "en-us", 150)]
    )
    user = np.zeros_like(echo)
    start = round(USER_AT * RATE)
    user[start : start + said.shape[0]] = 0.5 * said[: user.shape[0] - start]
    return Scene(reply, np.clip(echo + user, -1.0, 1.0), echo, user)


@dataclass(frozen=True)
class Cancelled:
    """The microphone through the canceller (16 kHz float)."""

    cleaned: FloatArray
    """AEC3's output: the endpointer's, the stop word's and barge-in's."""
    linear: FloatArray
    """The linear canceller's: the wake word's."""
    reference: bytes
    """The reference as paired with the capture (16 kHz PCM16)."""
    ms_per_10ms: float
    """CPU for both cancellers."""


def cancel_both(scene: Scene, delay_ms: int = 0) -> Cancelled:
    """The microphone through the canceller, the reply handed to it as it plays (20 ms at a
    time, in step with the capture), as the daemon does."""
    canceller = EchoCanceller(OUTPUT_RATE, delay_ms)
    cleaned: list[bytes] = []
    linear: list[bytes] = []
    reference: list[bytes] = []
    block = OUTPUT_RATE * CHUNK // RATE
    spent = 0.0
    for index, start in enumerate(range(0, scene.mic.shape[0] - CHUNK + 1, CHUNK)):
        at = index * CHUNK / RATE  # the scene's own clock: the speaker and the mic in step
        canceller.played(scene.reply[index * block : (index + 1) * block], at)
        pcm = float_to_pcm16(scene.mic[start : start + CHUNK])
        began = time.perf_counter()
        out = canceller.process(pcm, at + CHUNK / RATE)
        spent += time.perf_counter() - began
        cleaned.append(out.cleaned)
        linear.append(out.linear)
        reference.append(out.reference)
    return Cancelled(
        _floats(b"".join(cleaned)),
        _floats(b"".join(linear)),
        b"".join(reference),
        1000 * spent / max(1, canceller.frames),
    )


def cancel(scene: Scene, delay_ms: int = 0) -> tuple[FloatArray, float]:
    """AEC3's output of `cancel_both`, and ms of CPU per 10 ms."""
    both = cancel_both(scene, delay_ms)
    return both.cleaned, both.ms_per_10ms


def _floats(pcm: bytes) -> FloatArray:
    return np.frombuffer(pcm, "<i2").astype(np.float32) / np.float32(32768)


def convolve(a: FloatArray, b: FloatArray) -> FloatArray:
    n = a.shape[0] + b.shape[0] - 1
    size = 1 << (n - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(b, size), size)[:n]
    return out.astype(np.float32)


def db_ratio(a: FloatArray, b: FloatArray) -> float:
    """The mean power of `a` over that of `b`, in dB."""
    return float(10 * np.log10(max(1e-12, float(np.mean(a**2))) / max(1e-12, float(np.mean(b**2)))))


def wake_heard(audio: FloatArray, reference: bytes | None = None) -> bool:
    """Whether the wake word is heard in `audio`; with the `reference` it was paired with,
    as the daemon hears it: a detection the reference covers is the satellite's own."""
    return wake_at(audio, reference) is not None


def wake_at(audio: FloatArray, reference: bytes | None = None) -> float | None:
    """Seconds into `audio` at which the wake word is first heard (see `wake_heard`)."""
    return first_heard(WakeSettings(), [audio], reference)


def first_heard(
    settings: WakeSettings,
    streams: list[FloatArray],
    reference: bytes | None = None,
    settle_seconds: float = 0.0,
) -> float | None:
    """Seconds into the audio at which `settings`' model is first heard in any of `streams`
    (one detector each, fed 20 ms at a time); with the `reference` they were paired with, as
    the daemon hears them: not what `OwnWakeWord` covers."""
    detectors = [WakeWordDetector(settings) for _ in streams]
    own = OwnWakeWord(settings, settle_seconds) if reference is not None else None
    pcms = [float_to_pcm16(audio) for audio in streams]
    try:
        for i in range(0, min(len(pcm) for pcm in pcms), 2 * CHUNK):
            if own is not None and reference is not None:
                own.hear(reference[i : i + 2 * CHUNK])
            for detector, pcm in zip(detectors, pcms, strict=True):
                if detector.process(pcm[i : i + 2 * CHUNK]) and (own is None or not own.covers()):
                    return (i // 2 + CHUNK) / RATE
        return None
    finally:
        for detector in detectors:
            detector.close()
        if own is not None:
            own.close()


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


def stop_at(streams: list[FloatArray], reference: bytes | None = None) -> float | None:
    """Seconds into the audio at which the stop word is first heard in any of `streams`;
    with the `reference`, as the daemon hears it (`STOP_SETTLE_SECONDS` included)."""
    return first_heard(WakeSettings(model="stop"), streams, reference, STOP_SETTLE_SECONDS)


def stop_scene(room: Room) -> Scene:
    """The reply's echo, and the user saying "stop" over it at `USER_AT`."""
    made = scene(room)
    said = 0.5 * espeak_speech("stop", "en-us", 150)
    user = np.zeros_like(made.echo)
    start = round(USER_AT * RATE)
    user[start : start + said.shape[0]] = said[: user.shape[0] - start]
    return Scene(made.reply, np.clip(made.echo + user, -1.0, 1.0), made.echo, user)


def own_wake_cost(reference: bytes) -> float:
    """ms of CPU per 10 ms for the own-voice check hearing `reference`."""
    own = OwnWakeWord(WakeSettings())
    began = time.perf_counter()
    for i in range(0, len(reference), 2 * CHUNK):
        own.hear(reference[i : i + 2 * CHUNK])
    spent = time.perf_counter() - began
    own.close()
    return 1000 * spent / max(1, len(reference) // (2 * RATE // 100))


def own_wake_scene(room: Room) -> Scene:
    """The satellite playing an announcement that says the wake word, nobody speaking."""
    said = espeak_speech(OWN_WAKE_TEXT, "en-gb", 165)
    echo = convolve(said, room_response(room))[: said.shape[0]]
    return Scene(resample(said, RATE, OUTPUT_RATE), echo, echo, np.zeros_like(echo))


def measure(room: Room) -> dict[str, Any]:
    made = scene(room)
    both = cancel_both(made)
    out, cost = both.cleaned, both.ms_per_10ms
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
    woke = wake_at(both.linear, both.reference)
    first = min((t for t in (barged, woke) if t is not None), default=None)
    own = cancel_both(own_wake_scene(room))
    stop = cancel_both(stop_scene(room))
    echo_alone = cancel_both(Scene(made.reply, made.echo, made.echo, np.zeros_like(made.echo)))
    stopped = {
        "without": stop_at([stop_scene(room).mic]),
        "aec3": stop_at([stop.cleaned]),
        "linear": stop_at([stop.linear]),
        "both_checked": stop_at([stop.cleaned, stop.linear], stop.reference),
    }
    return {
        "delay_ms": room.delay_ms,
        "level_db": room.level_db,
        "erle_db": round(db_ratio(mic[quiet], out[quiet]), 1),
        "erle_linear_db": round(db_ratio(mic[quiet], both.linear[:n][quiet]), 1),
        "user_kept_db": None if kept is None else round(kept, 1),
        "wake_heard": {
            "without": wake_heard(mic),
            "aec3": wake_heard(out),
            "linear": wake_heard(both.linear, both.reference),
        },
        "own_wake_word": {
            "without": wake_heard(own_wake_scene(room).mic),
            "aec3": wake_heard(own.cleaned),
            "linear": wake_heard(own.linear),
            "linear_guarded": wake_heard(own.linear, own.reference),
        },
        "stop_heard": {k: v is not None and v >= USER_AT for k, v in stopped.items()},
        "false_stop_in_echo_alone": {
            "aec3": stop_at([echo_alone.cleaned]) is not None,
            "linear": stop_at([echo_alone.linear]) is not None,
            "both_checked": stop_at([echo_alone.cleaned, echo_alone.linear], echo_alone.reference)
            is not None,
        },
        "speech_in_echo": {
            "without": _speech_found(echo_only),
            "with": _speech_found(cancelled_echo),
        },
        "voice_barge_in": {
            "after_user_s": None if barged is None else round(barged - USER_AT, 2),
            "or_wake_word_after_user_s": None if first is None else round(first - USER_AT, 2),
            "false_in_echo_alone": voice_heard(whole_echo, made.echo) is not None,
            "without_canceller": voice_heard(mic, mic) is not None,
        },
        "ms_per_10ms": round(cost, 3),
        "own_wake_ms_per_10ms": round(own_wake_cost(both.reference), 3),
        "echo_seconds": round(float(np.sum(np.abs(echo) > 0)) / RATE, 1),
    }


def bench_echo(rooms: tuple[tuple[int, float], ...] = ROOMS) -> dict[str, Any]:
    return {
        "rooms": [measure(Room(delay, level, seed)) for seed, (delay, level) in enumerate(rooms)]
    }


def format_report(report: dict[str, Any]) -> str:
    yes = {True: "yes", False: "no"}
    lines = [
        "echo cancellers (WebRTC AEC3 through livekit; SpeexDSP's linear filter) in scripted "
        f"rooms: a 9 s reply, the user saying {' / '.join(USER_TEXT)!r} over it from "
        f"{USER_AT:g} s; an announcement saying the wake word with nobody speaking",
        "  delay ms  level dB  ERLE dB (AEC3/linear)  user kept dB  wake word over the reply "
        "(none/AEC3/linear)  own wake word (none/AEC3/linear/guarded)  speech in echo "
        "(none/AEC3)  voice barge-in (after the user starts (or the wake word) / in the echo alone)  ms per 10 ms "
        "(cancellers + own-voice check)",
    ]
    for r in report["rooms"]:
        wake = "/".join(yes[r["wake_heard"][k]] for k in ("without", "aec3", "linear"))
        own = "/".join(
            yes[r["own_wake_word"][k]] for k in ("without", "aec3", "linear", "linear_guarded")
        )
        speech = f"{r['speech_in_echo']['without']}/{r['speech_in_echo']['with']}"
        voice = r["voice_barge_in"]
        after = "never" if voice["after_user_s"] is None else f"{voice['after_user_s']:.2f} s"
        either = voice["or_wake_word_after_user_s"]
        after += " (" + ("never" if either is None else f"{either:.2f} s") + ")"
        barge = f"{after} / {'FALSE' if voice['false_in_echo_alone'] else 'none'}"
        erle = f"{r['erle_db']:.1f}/{r['erle_linear_db']:.1f}"
        lines.append(
            f"  {r['delay_ms']:8d}  {r['level_db']:8.0f}  {erle:>21}  "
            f"{r['user_kept_db']:12.1f}  {wake:>41}  {own:>42}  {speech:>25}  {barge:>56}  "
            f"{r['ms_per_10ms']:7.3f} + {r['own_wake_ms_per_10ms']:.3f}"
        )
    rooms = report["rooms"]
    for key, label in (("wake_heard", "wake word over the reply heard"),
                       ("own_wake_word", "own wake word heard"),
                       ("stop_heard", "'stop' over the reply heard"),
                       ("false_stop_in_echo_alone", "'stop' heard in the echo alone")):  # fmt: skip
        counts = ", ".join(
            f"{name} {sum(r[key][name] for r in rooms)}/{len(rooms)}" for name in rooms[0][key]
        )
        lines.append(f"  {label}: {counts}")
    return "\n".join(lines)
