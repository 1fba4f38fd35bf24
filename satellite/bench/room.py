"""`bench room`: the scripted rooms replayed through the daemon's capture chain, with the
health report's own meters, as figures and as a picture.

Each room is `bench echo`'s (the reply played through a delay and a room impulse response,
the user saying the wake word and a question over it from `USER_AT` s into the reply) with a
steady noise bed under it (a fan, `bench noise`'s) and `LEAD_SECONDS` of the bed alone before
the reply starts. The microphone runs 20 ms at a time through what the daemon runs: the echo
canceller (AEC3 and the linear filter, the reference handed over as the speaker plays it),
noise suppression and gain when on, the wake word on the linear output with the own-voice
check, barge-in by voice and the endpointer on AEC3's (restarted at the wake word, as the
daemon does). The reply plays to its end; the marks say where the daemon would have acted.

Per room: the echo return loss and its enhancement as `EchoMeter` reads them, the noise and
speech levels as the endpointer reads them (what the health report shows), each beside what
the scene was made with (the echo path's level, the bed's level, the user's speech level),
and the times of the wake word, the barge-in, the start and end of the question. `--png`
draws a row per room: the microphone, AEC3's output, the user's words shaded, the marks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from satellite.audio.bargein import VoiceBargeIn
from satellite.audio.convert import FloatArray, float_to_pcm16, pcm16_rms, resample, to_dbfs
from satellite.audio.echo import EchoCanceller
from satellite.audio.endpoint import Endpointer, SpeechStarted, UtteranceEnded
from satellite.audio.noise import NoiseGain
from satellite.audio.ownvoice import OwnWakeWord
from satellite.audio.wake import WakeWordDetector
from satellite.bench.echo import CHUNK, OUTPUT_RATE, RATE, ROOMS, USER_AT, Room, db_ratio, scene
from satellite.bench.noise import TV_DBFS, fan
from satellite.errors import UserError
from satellite.settings import AudioSettings, VadSettings, WakeSettings

LEAD_SECONDS = 2.0
"""The bed alone before the reply starts."""
BEDS_DBFS = (-65.0, -55.0, -45.0)
"""The noise beds' levels, one per room in turn."""
FRAME = RATE // 100


@dataclass(frozen=True)
class RoomScene:
    """A scripted room, from the start of the bed (16 kHz unless said)."""

    room: Room
    bed_dbfs: float
    reply: FloatArray
    """What the speaker plays, at 24 kHz (silence for `LEAD_SECONDS`)."""
    reply16: FloatArray
    """The same at 16 kHz."""
    mic: FloatArray
    """What the microphone hears: the bed, the echo, the user."""
    bed: FloatArray
    echo: FloatArray
    user: FloatArray
    """The user alone (zeros where they are quiet)."""


def room_scene(room: Room, bed_dbfs: float) -> RoomScene:
    made = scene(room)
    lead = round(LEAD_SECONDS * RATE)
    n = lead + made.mic.shape[0]
    bed = fan(n / RATE, room.seed)[:n] * np.float32(10 ** ((bed_dbfs - TV_DBFS) / 20))

    def later(audio: FloatArray, rate: int = RATE) -> FloatArray:
        return np.concatenate([np.zeros(round(LEAD_SECONDS * rate), np.float32), audio])

    reply16 = later(resample(made.reply, OUTPUT_RATE, RATE))[:n]
    reply16 = np.pad(reply16, (0, n - reply16.shape[0]))
    mic = np.clip(later(made.mic) + bed, -1.0, 1.0).astype(np.float32)
    return RoomScene(
        room, bed_dbfs, later(made.reply, OUTPUT_RATE), reply16, mic, bed,
        later(made.echo), later(made.user),
    )  # fmt: skip


@dataclass
class Heard:
    """What the chain made of a room."""

    cleaned: FloatArray
    """AEC3's output after noise suppression and gain (what the endpointer hears)."""
    marks: dict[str, float | None]
    """Seconds from the start of the bed: `wake`, `voice_barge_in`, `speech_started`,
    `utterance_ended` (the first of each after the user starts; None: not heard)."""
    false_marks: list[tuple[str, float]]
    """Marks before the user started speaking (none should be)."""
    erl_db: float | None
    erle_db: float | None
    noise_dbfs: float | None
    speech_dbfs: float | None


def hear(made: RoomScene, audio: AudioSettings) -> Heard:
    """The room through the daemon's capture chain (see the module docstring)."""
    canceller = EchoCanceller(OUTPUT_RATE)
    on = audio.noise_suppression or audio.auto_gain
    noise = NoiseGain(audio.noise_suppression, audio.auto_gain) if on else None
    wake_noise = NoiseGain(audio.noise_suppression, audio.auto_gain) if on else None
    wake = WakeWordDetector(WakeSettings())
    own = OwnWakeWord(WakeSettings())
    endpointer = Endpointer(VadSettings())
    barge = VoiceBargeIn() if audio.barge_in == "voice" else None
    user_at = LEAD_SECONDS + USER_AT
    marks: dict[str, float | None] = dict.fromkeys(
        ("wake", "voice_barge_in", "speech_started", "utterance_ended")
    )
    false_marks: list[tuple[str, float]] = []
    listening = False
    """After the wake word or a barge-in, until the question ends: the daemon's listening
    state, in which the endpointer's events count."""
    voice: float | None = None
    cleaned: list[bytes] = []
    block = OUTPUT_RATE * CHUNK // RATE
    reply_starts = round(LEAD_SECONDS * RATE)
    try:
        for index, start in enumerate(range(0, made.mic.shape[0] - CHUNK + 1, CHUNK)):
            at = index * CHUNK / RATE
            now = at + CHUNK / RATE
            canceller.played(made.reply[index * block : (index + 1) * block], at)
            out = canceller.process(float_to_pcm16(made.mic[start : start + CHUNK]), now)
            raw = out.captured
            own.hear(out.reference)
            pcm = out.cleaned if noise is None else noise.process(out.cleaned)
            linear = out.linear if wake_noise is None else wake_noise.process(out.linear)
            cleaned.append(pcm)
            heard: list[str] = []
            if wake.process(linear) and not own.covers():
                heard.append("wake")
                endpointer.restart()  # as the daemon does at the wake word (a greeting)
                listening = True
            if barge is not None and start >= reply_starts and barge.process(pcm, raw):
                heard.append("voice_barge_in")
                if not listening:
                    endpointer.restart(keep_recent=True)
                    listening = True
            for event in endpointer.process(pcm):
                if not listening:
                    continue
                if isinstance(event, SpeechStarted):
                    heard.append("speech_started")
                elif isinstance(event, UtteranceEnded):
                    heard.append("utterance_ended")
                    voice = event.voice_dbfs
                    listening = False  # the turn: the satellite answers
            for name in heard:
                if now < user_at:
                    false_marks.append((name, round(now, 2)))
                elif marks[name] is None:
                    marks[name] = round(now, 2)
    finally:
        wake.close()
        own.close()
    meter = canceller.meter
    return Heard(
        cleaned=np.frombuffer(b"".join(cleaned), "<i2").astype(np.float32) / np.float32(32768),
        marks=marks,
        false_marks=false_marks,
        erl_db=meter.return_loss_db,
        erle_db=meter.enhancement_db,
        noise_dbfs=endpointer.noise_dbfs,
        speech_dbfs=voice,
    )


def speech_level(user: FloatArray) -> float:
    """The user's speech level as the endpointer takes it: the median level of their 10 ms
    frames, those within 30 dB of the loudest (the words, not the gaps between them)."""
    frames = user[: user.shape[0] // FRAME * FRAME].reshape(-1, FRAME)
    levels = np.array([to_dbfs(pcm16_rms(float_to_pcm16(f))) for f in frames])
    return float(np.median(levels[levels > levels.max() - 30.0]))


def truth(made: RoomScene) -> dict[str, float]:
    """What the room was made with, in the meters' terms."""
    playing = made.reply16 != 0
    bed_rms = float(np.sqrt(np.mean(made.bed.astype(np.float64) ** 2)))
    return {
        "echo_return_loss_db": round(db_ratio(made.reply16[playing], made.echo[playing]), 1),
        "noise_dbfs": round(to_dbfs(bed_rms), 1),
        "speech_dbfs": round(speech_level(made.user), 1),
    }


def figures(made: RoomScene, heard: Heard) -> dict[str, Any]:
    return {
        "delay_ms": made.room.delay_ms,
        "level_db": made.room.level_db,
        "bed_dbfs": made.bed_dbfs,
        "truth": truth(made),
        "measured": {
            "echo_return_loss_db": _rounded(heard.erl_db),
            "echo_return_loss_enhancement_db": _rounded(heard.erle_db),
            "noise_dbfs": _rounded(heard.noise_dbfs),
            "speech_dbfs": _rounded(heard.speech_dbfs),
        },
        "user_from_s": LEAD_SECONDS + USER_AT,
        "marks_s": heard.marks,
        "false_marks_s": heard.false_marks,
    }


def bench_room(
    audio: AudioSettings,
    rooms: tuple[tuple[int, float], ...] = ROOMS,
    png: Path | None = None,
) -> dict[str, Any]:
    """Every room through the chain with `audio`'s noise suppression and gain; `png`: draw
    them there too."""
    if png is not None:
        _pyplot()  # before the work: say at once what is missing
    scenes = [
        room_scene(Room(delay, level, seed), BEDS_DBFS[seed % len(BEDS_DBFS)])
        for seed, (delay, level) in enumerate(rooms)
    ]
    heard = [hear(made, audio) for made in scenes]
    report = {
        "barge_in": audio.barge_in,
        "noise_suppression": audio.noise_suppression,
        "auto_gain": audio.auto_gain,
        "rooms": [figures(made, h) for made, h in zip(scenes, heard, strict=True)],
    }
    if png is not None:
        draw(scenes, heard, report, png)
    return report


MARK_STYLES = {
    "wake": ("tab:green", "-"),
    "voice_barge_in": ("tab:red", "-"),
    "speech_started": ("tab:orange", "--"),
    "utterance_ended": ("tab:orange", "-"),
}


def draw(scenes: list[RoomScene], heard: list[Heard], report: dict[str, Any], path: Path) -> None:
    """A row per room: the microphone (grey), AEC3's output (blue), the user's words
    (shaded), the marks (vertical lines), the meters in the title."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(len(scenes), 1, figsize=(14, 2.2 * len(scenes)), squeeze=False)
    for row, made, h, r in zip(axes[:, 0], scenes, heard, report["rooms"], strict=True):
        t = np.arange(made.mic.shape[0]) / RATE
        row.plot(t, made.mic, color="0.7", linewidth=0.4, label="microphone")
        row.plot(t[: h.cleaned.shape[0]], h.cleaned, color="tab:blue", linewidth=0.4,
                 label="to the models")  # fmt: skip
        spoken = np.flatnonzero(made.user)
        if spoken.size:
            row.axvspan(spoken[0] / RATE, spoken[-1] / RATE, color="tab:green", alpha=0.12,
                        label="the user speaks")  # fmt: skip
        for name, at in h.marks.items():
            if at is not None:
                color, style = MARK_STYLES[name]
                row.axvline(at, color=color, linestyle=style, linewidth=2.0,
                            label=name.replace("_", " "))  # fmt: skip
        for name, at in h.false_marks:
            row.axvline(at, color="black", linestyle=":", label=f"false {name}")
        m, truth_ = r["measured"], r["truth"]
        row.set_title(
            f"echo {made.room.delay_ms} ms, {made.room.level_db:g} dB; fan {made.bed_dbfs:g} dBFS"
            f" | ERL {_text(m['echo_return_loss_db'])} dB (made {truth_['echo_return_loss_db']:g})"
            f", ERLE {_text(m['echo_return_loss_enhancement_db'])} dB"
            f", noise {_text(m['noise_dbfs'])} dBFS (made {truth_['noise_dbfs']:g})"
            f", speech {_text(m['speech_dbfs'])} dBFS (made {truth_['speech_dbfs']:g})",
            fontsize=9,
        )
        row.set_ylim(-1.0, 1.0)
        row.set_xlim(0.0, t[-1])
        row.legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1, 0].set_xlabel("seconds")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display); a `UserError` naming the extra
    where matplotlib is not installed."""
    try:
        import matplotlib  # noqa: PLC0415 -- only `--png` needs it (the `plots` extra)

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError as error:
        raise UserError(
            "bench room --png needs matplotlib: pip install 'lfm-satellite[plots]'"
        ) from error
    return pyplot


def _text(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def format_report(report: dict[str, Any]) -> str:
    lines = [
        "scripted rooms through the capture chain (barge-in "
        f"{report['barge_in']}, noise suppression {report['noise_suppression']}, gain "
        f"{report['auto_gain']}): the meters the health "
        "report shows, beside what each room was made with; marks in seconds after the user "
        "starts",
        "  delay ms  level dB  fan dBFS  ERL dB (made)  ERLE dB  noise dBFS (made)  "
        "speech dBFS (made)  wake  barge-in  speech from  to  false marks",
    ]
    for r in report["rooms"]:
        m, made = r["measured"], r["truth"]
        marks = [
            "never" if r["marks_s"][k] is None else f"{r['marks_s'][k] - r['user_from_s']:.2f}"
            for k in ("wake", "voice_barge_in", "speech_started", "utterance_ended")
        ]
        lines.append(
            f"  {r['delay_ms']:8d}  {r['level_db']:8.0f}  {r['bed_dbfs']:8.0f}  "
            f"{_text(m['echo_return_loss_db']):>6} ({made['echo_return_loss_db']:g})  "
            f"{_text(m['echo_return_loss_enhancement_db']):>7}  "
            f"{_text(m['noise_dbfs']):>10} ({made['noise_dbfs']:g})  "
            f"{_text(m['speech_dbfs']):>11} ({made['speech_dbfs']:g})  "
            f"{marks[0]:>4}  {marks[1]:>8}  {marks[2]:>11}  {marks[3]:>5}  "
            f"{len(r['false_marks_s'])}"
        )
    return "\n".join(lines)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
