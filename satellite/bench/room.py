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

Then the false triggers (`false_triggers`): the satellite talking on its own for minutes in
each room, nobody else speaking, through the same chain (the stop word too); every wake
word, "stop" or barge-in by voice it takes from that is one its user would have suffered.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from satellite.audio.bargein import VoiceBargeIn
from satellite.audio.convert import FloatArray, float_to_pcm16, pcm16_rms, resample, to_dbfs
from satellite.audio.echo import EchoCanceller
from satellite.audio.endpoint import Endpointer, EndpointEvent, SpeechStarted, UtteranceEnded
from satellite.audio.noise import NoiseGain
from satellite.audio.ownvoice import STOP_SETTLE_SECONDS, OwnWakeWord
from satellite.audio.wake import WakeWordDetector
from satellite.bench.echo import (
    CHUNK,
    OUTPUT_RATE,
    RATE,
    ROOMS,
    USER_AT,
    Room,
    convolve,
    db_ratio,
    room_response,
    scene,
)
from satellite.bench.noise import TV_DBFS, fan, talk
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


@dataclass
class Step:
    """What the chain made of one 20 ms capture chunk."""

    cleaned: bytes
    """AEC3's output after noise suppression and gain (the endpointer's, barge-in's)."""
    wake: bool
    """The wake word, not the satellite's own."""
    stop: bool
    """The stop word in either canceller's output, not the satellite's own."""
    voice_barge_in: bool
    endpoint: list[EndpointEvent]


class Chain:
    """The daemon's capture chain while something plays (`Daemon.on_chunk`): the echo
    cancellers, noise suppression and gain, the wake word on the linear output with the
    own-voice check, the stop word on both outputs with its own, barge-in by voice (when
    `audio.barge_in` is `voice`) and the endpointer on AEC3's."""

    def __init__(self, audio: AudioSettings) -> None:
        on = audio.noise_suppression or audio.auto_gain
        self.canceller = EchoCanceller(OUTPUT_RATE)
        self._noise = NoiseGain(audio.noise_suppression, audio.auto_gain) if on else None
        self._wake_noise = NoiseGain(audio.noise_suppression, audio.auto_gain) if on else None
        stop = WakeSettings(model="stop")
        self._wake = WakeWordDetector(WakeSettings())
        self._own = OwnWakeWord(WakeSettings())
        self._stops = (WakeWordDetector(stop), WakeWordDetector(stop))
        self._own_stop = OwnWakeWord(stop, STOP_SETTLE_SECONDS)
        self.endpointer = Endpointer(VadSettings())
        self._barge = VoiceBargeIn() if audio.barge_in == "voice" else None

    def step(self, played: FloatArray, mic: FloatArray, at: float, playing: bool) -> Step:
        """`played`: what the speaker plays from `at` on (24 kHz); `mic`: 20 ms the
        microphone heard, ending 20 ms after `at`; `playing`: the satellite is in a spell of
        playing (barge-in by voice is listened for)."""
        self.canceller.played(played, at)
        out = self.canceller.process(float_to_pcm16(mic), at + CHUNK / RATE)
        for own in (self._own, self._own_stop):
            own.hear(out.reference)
        pcm = out.cleaned if self._noise is None else self._noise.process(out.cleaned)
        linear = out.linear if self._wake_noise is None else self._wake_noise.process(out.linear)
        wake = bool(self._wake.process(linear)) and not self._own.covers()
        stop = False
        for detector, audio in zip(self._stops, (pcm, linear), strict=True):
            stop = stop or (bool(detector.process(audio)) and not self._own_stop.covers())
        barge = playing and self._barge is not None and self._barge.process(pcm, out.captured)
        return Step(pcm, wake, stop, barge, self.endpointer.process(pcm))

    def close(self) -> None:
        for detector in (self._wake, *self._stops):
            detector.close()
        self._own.close()
        self._own_stop.close()


def hear(made: RoomScene, audio: AudioSettings) -> Heard:
    """The room through the daemon's capture chain (see the module docstring)."""
    chain = Chain(audio)
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
            played = made.reply[index * block : (index + 1) * block]
            step = chain.step(played, made.mic[start : start + CHUNK], at, start >= reply_starts)
            cleaned.append(step.cleaned)
            heard: list[str] = []
            if step.wake:
                heard.append("wake")
                chain.endpointer.restart()  # as the daemon does at the wake word (a greeting)
                listening = True
            if step.voice_barge_in:
                heard.append("voice_barge_in")
                if not listening:
                    chain.endpointer.restart(keep_recent=True)
                    listening = True
            for event in step.endpoint:
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
        chain.close()
    meter = chain.canceller.meter
    return Heard(
        cleaned=np.frombuffer(b"".join(cleaned), "<i2").astype(np.float32) / np.float32(32768),
        marks=marks,
        false_marks=false_marks,
        erl_db=meter.return_loss_db,
        erle_db=meter.enhancement_db,
        noise_dbfs=chain.endpointer.noise_dbfs,
        speech_dbfs=voice,
    )


def false_triggers(
    audio: AudioSettings, seconds: float, rooms: tuple[tuple[int, float], ...]
) -> dict[str, Any]:
    """The satellite talking on its own (`bench noise`'s presenter: prose in four voices,
    with pauses) for `seconds` in each room, its fan under it, nobody else speaking: what the
    chain takes for the wake word, for "stop" and for the user barging in (barge-in by
    voice is listened for whatever `audio.barge_in` says: it is what is counted)."""
    audio = replace(audio, barge_in="voice")
    per_room = []
    block = OUTPUT_RATE * CHUNK // RATE
    for seed, (delay, level) in enumerate(rooms):
        room = Room(delay, level, seed)
        said = talk(seconds, seed)
        echo = convolve(said, room_response(room))[: said.shape[0]]
        bed_dbfs = BEDS_DBFS[seed % len(BEDS_DBFS)]
        mic = echo + fan(seconds, seed)[: said.shape[0]] * np.float32(
            10 ** ((bed_dbfs - TV_DBFS) / 20)
        )
        played = resample(said, RATE, OUTPUT_RATE)
        chain = Chain(audio)
        counts = dict.fromkeys(("wake", "stop", "voice_barge_in"), 0)
        try:
            for index, start in enumerate(range(0, mic.shape[0] - CHUNK + 1, CHUNK)):
                step = chain.step(played[index * block : (index + 1) * block],
                                  mic[start : start + CHUNK], index * CHUNK / RATE, True)  # fmt: skip
                counts["wake"] += step.wake
                counts["stop"] += step.stop
                counts["voice_barge_in"] += step.voice_barge_in
        finally:
            chain.close()
        per_room.append({"delay_ms": delay, "level_db": level, "bed_dbfs": bed_dbfs, **counts})
    total = {name: sum(r[name] for r in per_room) for name in ("wake", "stop", "voice_barge_in")}
    return {"seconds_per_room": seconds, "rooms": per_room, "total": total,
            "seconds": round(seconds * len(rooms), 1)}  # fmt: skip


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
    false_seconds: float = 0.0,
) -> dict[str, Any]:
    """Every room through the chain with `audio`'s noise suppression and gain; `png`: draw
    them there too; `false_seconds`: also the satellite talking alone this long in each room
    (`false_triggers`)."""
    if png is not None:
        _pyplot()  # before the work: say at once what is missing
    scenes = [
        room_scene(Room(delay, level, seed), BEDS_DBFS[seed % len(BEDS_DBFS)])
        for seed, (delay, level) in enumerate(rooms)
    ]
    heard = [hear(made, audio) for made in scenes]
    report: dict[str, Any] = {
        "barge_in": audio.barge_in,
        "noise_suppression": audio.noise_suppression,
        "auto_gain": audio.auto_gain,
        "rooms": [figures(made, h) for made, h in zip(scenes, heard, strict=True)],
    }
    if false_seconds > 0:
        report["false_triggers"] = false_triggers(audio, false_seconds, rooms)
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
    false = report.get("false_triggers")
    if false is not None:
        total = false["total"]
        lines.append(
            f"  the satellite talking alone, {false['seconds_per_room']:g} s in each room "
            f"({false['seconds']:g} s): wake words {total['wake']}, stop words {total['stop']}, "
            f"barge-ins by voice {total['voice_barge_in']}"
        )
    return "\n".join(lines)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
