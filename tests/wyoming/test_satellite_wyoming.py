"""The Wyoming satellite role, driven by the real `wyoming` client library playing Home
Assistant (DESIGN §4: run-satellite, describe, a ping 2 s after each pong, the 5 s rule,
reconnects), with the daemon on the tiny model and the null (silence) or file audio backend."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from wyoming.asr import Transcript
from wyoming.audio import AudioChunk
from wyoming.info import Describe, Info
from wyoming.ping import Ping
from wyoming.pipeline import RunPipeline
from wyoming.satellite import PauseSatellite
from wyoming.timer import TimerCancelled, TimerFinished, TimerStarted
from wyoming.tts import Synthesize

from satellite import __version__
from satellite.audio.wavfile import read_wav
from satellite.daemon.core import Daemon
from tests.satellite_support import (
    TTS_RATE,
    HomeAssistant,
    daemon_settings,
    script_wav,
    send_audio,
    tone,
    wake_and_ask,
)

pytestmark = pytest.mark.realtime


@pytest.fixture
async def idle_daemon(model: Path) -> AsyncIterator[Daemon]:
    """A local-mode daemon on endless silence (null backend, real time)."""
    daemon = Daemon(daemon_settings(model, backend="null"))
    await daemon.start()
    yield daemon
    await daemon.close()


async def test_describe_ping_and_a_second_connection(idle_daemon: Daemon) -> None:
    port = idle_daemon.server.bound_port
    ha = HomeAssistant(port)
    await ha.connect()
    try:
        info = Info.from_event((await ha.wait_for("info", 5))[0].event)
        sat = info.satellite
        assert sat is not None
        assert (sat.name, sat.area, sat.has_vad, sat.version) == (
            "Test Satellite", "Kitchen", True, __version__,
        )  # fmt: skip
        assert sat.active_wake_words == ["okay_nabu"] and sat.installed
        assert info.wake[0].models[0].name == "okay_nabu"
        assert info.wake[0].models[0].phrase == "Okay Nabu"
        mic, snd = info.mic[0].mic_format, info.snd[0].snd_format
        assert (mic.rate, mic.width, mic.channels) == (16000, 2, 1)
        assert (snd.rate, snd.width, snd.channels) == (TTS_RATE, 2, 1)
        assert not info.asr and not info.tts, "no STT/TTS on the satellite's endpoint"
        await ha.wait_for("pong", 5)
        assert idle_daemon.server.connected

        # Home Assistant's config flow probes with a second connection while the first runs
        probe = HomeAssistant(port, ping=False)
        await probe.connect(run=False)
        await probe.send(Describe().event())
        await probe.send(Ping(text="probe").event())
        assert (await probe.wait_for("info", 5))[0].event.data["satellite"][
            "name"
        ] == "Test Satellite"
        assert (await probe.wait_for("pong", 5))[0].event.data.get("text") == "probe"
        await probe.close(pause=False)
        await ha.wait_for("pong", 6, count=2)
        assert idle_daemon.server.connected and not ha.closed
    finally:
        await ha.close()


async def test_five_second_rule_and_reconnect(idle_daemon: Daemon) -> None:
    """Pinging every 2 s keeps the connection; 5 s of silence drops it; the next connection
    is taken and the satellite keeps working."""
    seen: list[str] = []
    idle_daemon.observe(lambda event: seen.append(event.kind))
    ha = HomeAssistant(idle_daemon.server.bound_port)
    await ha.connect()
    await ha.wait_for("pong", 8, count=3)  # > 5 s with pings at Home Assistant's cadence
    assert not ha.closed and idle_daemon.server.connected
    ha.ping = False
    last = time.monotonic()
    waited = await ha.wait_closed(timeout=9)
    silent = time.monotonic() - max(last, ha.received[-1].time)
    assert 4.0 <= silent <= 7.0, f"closed after {silent:.1f} s of silence ({waited:.1f} s waited)"
    assert not idle_daemon.server.connected
    await ha.close(pause=False)

    again = HomeAssistant(idle_daemon.server.bound_port)
    await again.connect()
    try:
        await again.wait_for("info", 5)
        assert idle_daemon.server.connected
        assert seen.count("ha_connected") == 2 and seen.count("ha_disconnected") == 1
        # an announcement still plays and is acknowledged on the new connection
        await send_audio(again, tone(0.3))
        await again.wait_for("played", 5)
    finally:
        await again.close()


async def test_announcement_is_played_then_acknowledged(idle_daemon: Daemon) -> None:
    ha = HomeAssistant(idle_daemon.server.bound_port)
    await ha.connect()
    try:
        await ha.wait_for("info", 5)
        before = idle_daemon.backend.stats().played
        sent = time.monotonic()
        await send_audio(ha, tone(1.0))
        played = (await ha.wait_for("played", 5))[0]
        took = played.time - sent
        samples = idle_daemon.backend.stats().played - before
        assert abs(samples - 24000) <= 240, samples  # 1 s at 22,050 Hz -> 24 kHz output
        assert 0.9 <= took <= 2.0, f"played after {took:.2f} s for 1 s of audio"
    finally:
        await ha.close()


async def test_timer_rings_until_cancelled(idle_daemon: Daemon) -> None:
    ha = HomeAssistant(idle_daemon.server.bound_port)
    seen: list[str] = []
    idle_daemon.observe(lambda event: seen.append(event.kind))
    await ha.connect()
    try:
        await ha.wait_for("info", 5)
        await ha.send(TimerStarted(id="t1", total_seconds=60, name="pasta").event())
        await ha.send(TimerFinished(id="t1").event())
        await asyncio.sleep(0.1)
        assert "t1" not in idle_daemon.timers and "timer_finished" in seen
        chime = idle_daemon.timer_sound.seconds
        start = idle_daemon.backend.stats().played
        await asyncio.sleep(3 * chime + 0.3)
        rung = (idle_daemon.backend.stats().played - start) / 24000
        assert rung >= 2.5 * chime, f"{rung:.2f} s of chime in {3 * chime + 0.3:.2f} s"
        await ha.send(TimerCancelled(id="t1").event())
        await asyncio.sleep(0.2)
        assert "timer_silenced" in seen
        quiet = idle_daemon.backend.stats().played
        await asyncio.sleep(2 * chime)
        assert idle_daemon.backend.stats().played == quiet, "still ringing after timer-cancelled"
    finally:
        await ha.close()


async def test_timer_ring_time_is_bounded(model: Path) -> None:
    settings = daemon_settings(model, backend="null", timer_ring_seconds=1.0)
    daemon = Daemon(settings)
    seen: list[str] = []
    daemon.observe(lambda event: seen.append(event.kind))
    await daemon.start()
    try:
        daemon.on_event(TimerFinished(id="x").event())
        await asyncio.sleep(1.0 + 2 * daemon.timer_sound.seconds)
        assert "timer_silenced" in seen
    finally:
        await daemon.close()


async def test_local_turn_with_home_assistant_watching(model: Path, tmp_path: Path) -> None:
    """Local mode: wake, the spoken question, the reply played as it is generated; Home
    Assistant stays connected and sees detection, voice-started, voice-stopped and played."""
    source, output = tmp_path / "mic.wav", tmp_path / "speaker.wav"
    script_wav(source, wake_and_ask())
    daemon = Daemon(daemon_settings(model, input_file=source, output_file=output))
    await daemon.start()
    ha = HomeAssistant(daemon.server.bound_port)
    await ha.connect()
    try:
        await ha.wait_for("played", 20)
        order = [
            t for t in ha.types() if t in ("detection", "voice-started", "voice-stopped", "played")
        ]
        assert order == ["detection", "voice-started", "voice-stopped", "played"], ha.types()
        assert ha.of("detection")[0].event.data["name"] == "okay_nabu"
        assert "audio-chunk" not in ha.types() and "run-pipeline" not in ha.types()
        await asyncio.wait_for(daemon.wait_stopped(), 15)  # the file ended: it stops by itself
    finally:
        await ha.close()
        await daemon.close()
    [turn] = daemon.turns
    assert turn.wake_word == "okay_nabu" and turn.end_reason == "silence"
    assert 1.0 < turn.utterance_seconds < 4.0
    assert turn.time_to_first_audio is not None and turn.engine_first_audio is not None
    assert 0 <= turn.overhead < 0.05 if turn.overhead is not None else False
    print(f"\nlocal turn, tiny model: time to first audio {turn.time_to_first_audio * 1000:.0f} ms "
          f"(engine {turn.engine_first_audio * 1000:.0f} ms, overhead {turn.overhead * 1000:.1f} ms)")  # fmt: skip
    reply = read_wav(output)
    assert reply.rate == 24000
    assert abs(reply.samples.size / 24000 - turn.reply_audio_seconds) < 0.05
    assert np.abs(reply.samples).max() > 0.0


async def test_ha_mode_streams_to_the_pipeline_and_plays_its_reply(
    model: Path, tmp_path: Path
) -> None:
    source, output = tmp_path / "mic.wav", tmp_path / "speaker.wav"
    script_wav(source, wake_and_ask(after=4.0))
    daemon = Daemon(daemon_settings(model, mode="ha", input_file=source, output_file=output))
    await daemon.start()
    ha = HomeAssistant(daemon.server.bound_port)
    await ha.connect()
    try:
        [_detection] = await ha.wait_for("detection", 10)
        [run] = await ha.wait_for("run-pipeline", 5)
        assert ha.types().index("detection") < ha.types().index("run-pipeline")
        pipeline = RunPipeline.from_event(run.event)
        assert (pipeline.start_stage.value, pipeline.end_stage.value) == ("asr", "tts")
        assert pipeline.wake_word_name == "okay_nabu" and not pipeline.restart_on_end
        [stop] = await ha.wait_for("audio-stop", 10)
        chunks = [AudioChunk.from_event(r.event) for r in ha.of("audio-chunk")]
        assert chunks and all((c.rate, c.width, c.channels) == (16000, 2, 1) for c in chunks)
        streamed = sum(len(c.audio) for c in chunks) / 32000
        assert 1.5 < streamed < 4.0, f"{streamed:.2f} s streamed"  # the question, not the wake word
        assert [c.timestamp for c in chunks] == sorted(c.timestamp for c in chunks)

        # Home Assistant's pipeline answers: transcript, TTS text, then the audio
        await ha.send(Transcript(text="turn on the kitchen lights").event())
        await ha.send(Synthesize(text="Turned on the kitchen lights.").event())
        await send_audio(ha, tone(1.5))
        await ha.wait_for("played", 10)
        assert stop.time <= ha.of("played")[0].time
        await asyncio.wait_for(daemon.wait_stopped(), 15)
    finally:
        await ha.close()
        await daemon.close()
    assert not daemon.turns, "ha mode never runs the local model"
    heard = read_wav(output)
    assert abs(heard.samples.size / 24000 - 1.5) < 0.05


async def test_ha_mode_paused_or_disconnected_starts_no_pipeline(
    model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="satellite")
    source = tmp_path / "mic.wav"
    script_wav(source, wake_and_ask(after=1.0))
    daemon = Daemon(daemon_settings(model, mode="ha", input_file=source))
    heard: list[Any] = []
    daemon.observe(lambda event: heard.append(event.kind))
    await daemon.start()
    ha = HomeAssistant(daemon.server.bound_port)
    await ha.connect()
    try:
        await ha.wait_for("info", 5)
        await ha.send(PauseSatellite().event())
        await asyncio.wait_for(daemon.wait_stopped(), 20)
    finally:
        await ha.close(pause=False)
        await daemon.close()
    assert "run-pipeline" not in ha.types() and "audio-chunk" not in ha.types()
    assert "wake" not in heard
    assert "Home Assistant paused the satellite" in caplog.text


@pytest.mark.parametrize(("phrase", "heard"), [("okay nabu", "timer_silenced"), ("stop", "stop")])
async def test_the_wake_word_or_stop_silences_a_ringing_timer(
    model: Path, tmp_path: Path, phrase: str, heard: str
) -> None:
    """A finished timer rings until the wake word or the stop word; neither starts a turn."""
    source, output = tmp_path / "mic.wav", tmp_path / "speaker.wav"
    script_wav(source, [("silence", 4.0), ("say", phrase), ("silence", 2.5)])
    daemon = Daemon(daemon_settings(model, input_file=source, output_file=output))
    seen: list[tuple[str, float]] = []
    daemon.observe(lambda event: seen.append((event.kind, time.monotonic())))
    await daemon.start()
    ha = HomeAssistant(daemon.server.bound_port)
    await ha.connect()
    try:
        await ha.wait_for("info", 5)
        await ha.send(TimerStarted(id="tea", total_seconds=180, name="tea").event())
        await ha.send(TimerFinished(id="tea").event())
        await asyncio.wait_for(daemon.wait_stopped(), 20)
    finally:
        await ha.close()
        await daemon.close()
    kinds = [kind for kind, _ in seen]
    assert "timer_finished" in kinds and "timer_silenced" in kinds and heard in kinds, kinds
    assert "wake" not in kinds and "utterance" not in kinds and not daemon.turns
    finished = dict(seen)["timer_finished"]
    silenced = dict(seen)["timer_silenced"]
    rang = silenced - finished
    assert 3.5 < rang < 6.5, f"rang for {rang:.1f} s; the wake word came about 4.8 s in"
    heard = read_wav(output).samples.size / 24000
    assert abs(heard - rang) < 1.3, f"{heard:.2f} s of chime for {rang:.2f} s of ringing"


async def test_zeroconf_off_announces_nothing(idle_daemon: Daemon) -> None:
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncZeroconf

    from satellite.wyoming.announce import SERVICE_TYPE, instance_name

    assert idle_daemon.announcer is None
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        name = f"{instance_name('Test Satellite')}.{SERVICE_TYPE}"
        assert await zc.async_get_service_info(SERVICE_TYPE, name, 1500) is None
    finally:
        await zc.async_close()


async def test_health_sees_a_stalled_audio_loop(idle_daemon: Daemon) -> None:
    await asyncio.sleep(0.2)
    assert idle_daemon.health() is None and idle_daemon.chunks > 0
    idle_daemon.last_chunk -= 10.0  # as if the microphone had delivered nothing for 10 s
    assert idle_daemon.health() == "no audio from the microphone for 10 s"
    await asyncio.sleep(0.1)
    assert idle_daemon.health() is None, "chunks flow again"
    assert idle_daemon._capture is not None
    idle_daemon._capture.cancel()
    await asyncio.sleep(0.05)
    assert idle_daemon.health() == "audio capture stopped"
