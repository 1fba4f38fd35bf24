"""The echo canceller (`satellite.audio.echo`): WebRTC's AEC3 through livekit on a scripted
room (the room is simulated: there is no loudspeaker and microphone here), fed as the daemon
feeds it; and the daemon with it in the capture path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from satellite.audio.echo import FRAME, EchoCanceller
from satellite.bench.echo import USER_AT, Room, Scene, cancel, db_ratio, scene, voice_heard
from satellite.settings import Settings
from tests.satellite_support import daemon_settings, run_to_end, script_wav, wake_and_ask


def test_the_echo_is_taken_out_and_the_user_kept() -> None:
    """Delay 60 ms, echo 12 dB below the reply: measured here 24.4 dB of echo return loss
    enhancement after the first second, the user's speech within 1.5 dB."""
    made = scene(Room(60, -12.0))
    out, cost = cancel(made)
    n = out.shape[0]
    quiet = made.user[:n] == 0
    quiet[:16000] = False
    erle = db_ratio(made.mic[:n][quiet], out[quiet])
    talking = made.user[:n] != 0
    kept = db_ratio(out[talking], made.user[:n][talking])
    assert erle >= 18.0, f"ERLE {erle:.1f} dB"
    assert -4.0 <= kept <= 3.0, f"the user's speech {kept:+.1f} dB"
    assert cost < 2.0, f"{cost:.2f} ms of CPU per 10 ms"


def test_nothing_playing_passes_the_capture_through() -> None:
    """No reference: the capture comes out as it went in, bar the high-pass filter."""
    canceller = EchoCanceller(24000)
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    out = np.frombuffer(canceller.process(tone.tobytes()), "<i2").astype(np.float64)
    assert out.shape[0] == 16000 and canceller.echo_frames == 0
    assert abs(db_ratio(out[4000:], tone[4000:].astype(np.float64))) < 1.0


def test_reference_left_waiting_by_a_capture_stall_is_dropped() -> None:
    """2 s played while the capture stalled: only what played in the last 50 ms before the
    capture came is still its reference (before, the whole 2 s waited in the queue and
    lagged its echo from then on; on PulseAudio the satellite then woke on its own voice)."""
    canceller = EchoCanceller(24000)
    t = np.arange(48000) / 24000
    canceller.played((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), at=0.0)
    canceller.process(b"\0\0" * 1920, now=2.0)  # 120 ms of capture, 12 frames
    assert canceller.frames == 12
    assert 4 <= canceller.echo_frames <= 6, canceller.echo_frames  # 50 ms: 5 frames


def test_odd_chunks_come_out_in_whole_frames() -> None:
    canceller = EchoCanceller(24000)
    sizes = [len(canceller.process(b"\0\0" * n)) // 2 for n in (100, 100, 100, 333)]
    assert sizes == [0, FRAME, 0, 2 * FRAME], sizes  # 633 samples in, 3 whole frames out


async def test_the_daemon_hears_through_the_canceller(model: Path, tmp_path: Path) -> None:
    """`audio.echo_cancellation: true`: the wake word and the question are heard through it,
    and what the speaker played reached it as the reference."""
    source = tmp_path / "mic.wav"
    script_wav(source, wake_and_ask(after=5.0))  # the capture goes on while the reply plays
    settings = daemon_settings(model, input_file=source, output_file=tmp_path / "out.wav")
    settings = dataclasses.replace(
        settings, audio=dataclasses.replace(settings.audio, echo_cancellation=True)
    )
    assert not Settings().audio.echo_cancellation
    daemon, seen = await run_to_end(settings, 30)
    assert "wake" in seen and len(daemon.turns) == 1, seen
    assert daemon.echo is not None and daemon.echo.frames > 0
    # no room here: the microphone (the file's silence) heard nothing while the reply played
    assert daemon.counters()["echo_reduction_db"] is None
    played = daemon.turns[0].reply_audio_seconds
    assert played > 0.5 and daemon.echo.echo_frames >= 80 * played, (
        f"{daemon.echo.echo_frames} frames of reference for {played:.2f} s played"
    )


def test_jittery_times_do_not_trim_the_reference() -> None:
    """The speaker's blocks (100 ms) and the capture's chunks (20 ms) come with times that
    jitter by up to 20 ms, as on PulseAudio: after the first reading the reference is never
    trimmed (each trim moves the echo under the canceller; trimming on every late reading
    dropped a few ms every few tenths of a second, and the echo leaked through). Then the
    capture misses 300 ms (under the 0.5 s that counts as a stall) and goes on: the 300 ms
    of reference that waited meanwhile is trimmed within a second or so, once, and no more."""
    rng = np.random.default_rng(0)
    canceller = EchoCanceller(24000)
    block = np.full(2400, 0.1, np.float32)
    first = 0
    for step in range(400):  # 8 s, 20 ms a step
        at = step * 0.02
        if step % 5 == 0:
            canceller.played(block, at + float(rng.uniform(-0.02, 0.02)))
        if 250 <= step < 265:
            continue  # the capture misses 300 ms
        canceller.process(b"\0\0" * 320, at + 0.02 + float(rng.uniform(0.0, 0.02)))
        if step == 5:
            first = canceller.trimmed
        if step == 249:
            assert canceller.trimmed == first, (first, canceller.trimmed)
    trimmed = canceller.trimmed - first
    assert 0.2 * 16000 <= trimmed <= 0.3 * 16000, trimmed


def test_barge_in_by_voice_hears_the_user_and_not_the_echo() -> None:
    """Through the canceller, in two scripted rooms: the user's voice over the reply fires
    barge-in by voice within 1 s of their first word (bench echo: 0.42-0.66 s in five rooms
    of nine, 2.42 s in three), and the echo alone, the whole reply, never does."""
    for room in (Room(60, -12.0, 1), Room(80, -16.0, 5)):
        made = scene(room)
        out, _ = cancel(made)
        echo = Scene(made.reply, made.echo, made.echo, np.zeros_like(made.echo))
        alone, _ = cancel(echo)
        heard = voice_heard(out, made.mic)
        assert heard is not None and 0.0 < heard - USER_AT <= 1.0, (room, heard)
        assert voice_heard(alone, made.echo) is None, room
