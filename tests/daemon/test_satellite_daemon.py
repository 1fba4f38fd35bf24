"""The daemon as a user runs it: barge-in and mic gating on real (espeak-ng) speech through the
file backend, `lfm-satellite run` until SIGTERM/SIGINT with zeroconf on loopback, and
`lfm-satellite demo`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncZeroconf

from satellite.audio.sounds import SoundError, listen_tone
from satellite.audio.wavfile import read_wav, write_wav
from satellite.daemon.core import Daemon
from satellite.settings import VadSettings
from satellite.wyoming.announce import SERVICE_TYPE, instance_name
from tests.satellite_support import (
    HomeAssistant,
    daemon_settings,
    run_to_end,
    script_wav,
    unshaped_model,
    wake_and_ask,
)

pytestmark = pytest.mark.realtime

REPLY_SECONDS = 5.0


@pytest.fixture(scope="module")
def long_model() -> Path:
    """Replies that run to `max_reply_seconds` (`unshaped_model`): these tests speak over a
    reply, or after one of a known length."""
    return unshaped_model()


@pytest.fixture(scope="module")
def two_questions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A question, then 1.5 s later (while the first reply plays) the wake word and another."""
    path = tmp_path_factory.mktemp("audio") / "two.wav"
    script_wav(path, [
        ("silence", 1.0), ("say", "okay nabu"), ("silence", 0.6), ("say", "turn on the lights"),
        ("silence", 1.5), ("say", "okay nabu"), ("silence", 0.6), ("say", "what time is it"),
        ("silence", 2.0),
    ])  # fmt: skip
    return path


async def _run(model: Path, source: Path, output: Path, barge_in: bool) -> tuple[Daemon, list[str]]:
    settings = daemon_settings(
        model, input_file=source, output_file=output, max_reply_seconds=REPLY_SECONDS,
        barge_in=barge_in,
    )  # fmt: skip
    return await run_to_end(settings, 40)


async def test_barge_in_stops_the_reply_and_starts_a_new_turn(
    long_model: Path, two_questions: Path, tmp_path: Path, greedy_replies: None
) -> None:
    output = tmp_path / "speaker.wav"
    daemon, seen = await _run(long_model, two_questions, output, barge_in=True)
    assert seen.count("wake") == 2, seen
    assert daemon.interrupted == 1 and len(daemon.turns) == 1, seen
    played = read_wav(output).samples.size / 24000
    # the first reply was cut after about 1.5 s; the second played whole
    assert REPLY_SECONDS + 0.5 < played < 2 * REPLY_SECONDS - 1.0, f"{played:.2f} s played"


async def test_mic_is_gated_while_speaking_without_barge_in(
    long_model: Path, two_questions: Path, tmp_path: Path, greedy_replies: None
) -> None:
    output = tmp_path / "speaker.wav"
    daemon, seen = await _run(long_model, two_questions, output, barge_in=False)
    assert seen.count("wake") == 1, seen
    assert daemon.interrupted == 0 and len(daemon.turns) == 1
    played = read_wav(output).samples.size / 24000
    # the whole reply played, uncut by the second wake word said over it
    generated = daemon.turns[0].reply_audio_seconds
    assert generated > 2.5, f"{generated:.2f} s generated: the second wake word came after it"
    assert abs(played - generated) < 0.2, f"{played:.2f} s played of {generated:.2f} s"


@pytest.fixture(scope="module")
def stop_over_the_reply(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A question, then 1.5 s later (while its reply plays) "stop"."""
    path = tmp_path_factory.mktemp("audio") / "stop.wav"
    script_wav(path, [
        ("silence", 1.0), ("say", "okay nabu"), ("silence", 0.6), ("say", "turn on the lights"),
        ("silence", 1.5), ("say", "stop"), ("silence", 3.0),
    ])  # fmt: skip
    return path


@pytest.mark.parametrize("barge_in", [True, False])
async def test_the_stop_word_ends_the_reply_and_starts_nothing(
    long_model: Path,
    stop_over_the_reply: Path,
    tmp_path: Path,
    greedy_replies: None,
    barge_in: bool,
) -> None:
    """Gated mic or not (the stop word is how to end what plays either way)."""
    output = tmp_path / "speaker.wav"
    daemon, seen = await _run(long_model, stop_over_the_reply, output, barge_in=barge_in)
    assert seen.count("wake") == 1 and seen.count("stop") == 1, seen
    assert seen.index("stop") < seen.index("turn_interrupted"), seen
    assert "turn_finished" not in seen and daemon.interrupted == 1 and not daemon.turns
    assert daemon.state == "idle"
    played = read_wav(output).samples.size / 24000
    # the reply was cut about 1.5 s in (plus "stop" itself and the detector's decision)
    assert 0.5 < played < REPLY_SECONDS - 2.0, f"{played:.2f} s played"


@pytest.fixture(scope="module")
def follow_up(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A question; 4 s later, once its 2 s reply has played, another without the wake word."""
    path = tmp_path_factory.mktemp("audio") / "follow_up.wav"
    script_wav(path, [
        ("silence", 1.0), ("say", "okay nabu"), ("silence", 0.6), ("say", "turn on the lights"),
        ("silence", 4.0), ("say", "and the kitchen too"), ("silence", 9.0),
    ])  # fmt: skip
    return path


@pytest.mark.parametrize("continue_conversation", ["always", "never"])
async def test_a_follow_up_without_the_wake_word(
    long_model: Path,
    follow_up: Path,
    tmp_path: Path,
    greedy_replies: None,
    continue_conversation: str,
) -> None:
    """`always`: the listening tone, then the second question answered in the same
    conversation, then (no third) back to the wake word; `never`: the second question is
    not heard."""
    output = tmp_path / "speaker.wav"
    settings = daemon_settings(long_model, input_file=follow_up, output_file=output)
    settings = dataclasses.replace(
        settings,
        satellite=dataclasses.replace(
            settings.satellite,
            continue_conversation=continue_conversation,  # type: ignore[arg-type]
            follow_up_seconds=3.0,
        ),
    )
    daemon, seen = await run_to_end(settings, 40)
    assert seen.count("wake") == 1, seen
    assert daemon.state == "idle"
    assert daemon.responder is not None
    if continue_conversation == "never":
        assert "listening" not in seen and len(daemon.turns) == 1, seen
        return
    # the second reply was followed up too, and that window closed without speech
    assert seen.count("listening") == 2 and len(daemon.turns) == 2, seen
    first, second = (i for i, kind in enumerate(seen) if kind == "listening")
    assert seen.index("turn_finished") < first < seen.index("utterance", first) < second
    assert daemon.responder.conversation_turns == 2, "the follow-up began a new conversation"
    tone = listen_tone()
    heard = read_wav(output).samples
    replies = sum(turn.reply_audio_seconds for turn in daemon.turns)
    assert heard.size / 24000 >= replies + 2 * tone.seconds - 0.1


async def test_no_speech_after_the_wake_word_gives_up(model: Path, tmp_path: Path) -> None:
    source = tmp_path / "mic.wav"
    script_wav(source, [("silence", 1.0), ("say", "okay nabu"), ("silence", 2.5)])
    settings = daemon_settings(model, input_file=source)
    settings = dataclasses.replace(settings, vad=VadSettings(no_speech_seconds=1.5))
    daemon, seen = await run_to_end(settings, 20)
    assert "wake" in seen and "utterance" not in seen and not daemon.turns
    assert daemon.state == "idle"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _browse(name: str, timeout_ms: int = 3000) -> bool:
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        info = await zc.async_get_service_info(SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", timeout_ms)
        return info is not None and info.port is not None
    finally:
        await zc.async_close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_run_until_signal_then_clean_shutdown(
    model: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    port, services_port = _free_port(), _free_port()
    name = f"Run Test {signum.name}"
    config = tmp_path / "satellite.yaml"
    config.write_text(
        f"satellite:\n  name: {name}\n  state_file: {tmp_path / 'state.json'}\n"
        "audio:\n  backend: null\n"
        f"model:\n  directory: {model}\n  threads: 1\n"
        f"wyoming:\n  satellite_host: 127.0.0.1\n  satellite_port: {port}\n  zeroconf: true\n"
        f"  services_host: 127.0.0.1\n  services_port: {services_port}\n"
        "mqtt:\n  enabled: false\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "satellite", "-v", "--config", str(config), "run"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        ha = HomeAssistant(port)
        while True:
            try:
                await ha.connect()
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "the daemon did not listen within 60 s"
                await asyncio.sleep(0.2)
        info = await ha.wait_for("info", 10)
        assert info[0].event.data["satellite"]["name"] == name
        assert await _browse(instance_name(name)), "not announced over zeroconf"
        assert await _browse(instance_name(f"{name} Services")), "services not announced"
        await ha.close()
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert f"{signum.name}: shutting down" in stderr and "satellite stopped" in stderr
    assert "zeroconf: withdrew" in stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the port is still open"
    assert not await _browse(instance_name(name), 1500), "still announced after shutdown"
    assert not await _browse(instance_name(f"{name} Services"), 1500)


def test_run_refuses_a_busy_port(model: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "satellite.yaml"
        config.write_text(
            "audio:\n  backend: null\n"
            f"model:\n  directory: {model}\n"
            f"wyoming:\n  satellite_host: 127.0.0.1\n  satellite_port: {port}\n  zeroconf: false\n"
        )
        done = subprocess.run(
            [sys.executable, "-m", "satellite", "--config", str(config), "run"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"wyoming.satellite_port: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_runs_a_full_turn(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "satellite", "demo", "--output", str(tmp_path / "reply.wav")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for line in ("satellite: wake word 'okay_nabu'", "home assistant: got detection",
                 "home assistant: got voice-stopped", "time to first audio", "daemon overhead",
                 "its reply is noise", "lfm-satellite model fetch",
                 "model: lfm2.5-audio-tiny-random has random weights: its words and audio are "
                 "noise; the path and the timings are real",
                 "mqtt: a local mosquitto", "mqtt: event turn_finished"):  # fmt: skip
        assert line in out, out
    assert read_wav(tmp_path / "reply.wav").samples.size > 0


async def test_awake_and_done_sounds_frame_the_reply(model: Path, tmp_path: Path) -> None:
    source, output = tmp_path / "mic.wav", tmp_path / "speaker.wav"
    script_wav(source, wake_and_ask())
    awake, done = tmp_path / "awake.wav", tmp_path / "done.wav"
    write_wav(awake, np.full(4800, 0.25, np.float32), 16000)  # 0.3 s
    write_wav(done, np.full(8000, -0.25, np.float32), 16000)  # 0.5 s
    settings = daemon_settings(
        model, input_file=source, output_file=output, awake_sound=str(awake), done_sound=str(done)
    )
    daemon, _ = await run_to_end(settings, 30)
    [turn] = daemon.turns
    heard = read_wav(output).samples
    assert abs(heard.size / 24000 - (0.3 + 0.5 + turn.reply_audio_seconds)) < 0.05
    assert np.allclose(heard[100:7000], 0.25, atol=0.01), "the awake sound comes first"
    start = 7200  # 0.3 s at 24 kHz
    assert np.allclose(heard[start + 100 : start + 11900], -0.25, atol=0.01), "then the done sound"


def test_missing_sound_is_named(model: Path, tmp_path: Path) -> None:
    settings = daemon_settings(model, backend="null", done_sound=str(tmp_path / "nope.wav"))
    with pytest.raises(SoundError, match=r"^audio\.done_sound: .*nope\.wav"):
        Daemon(settings)


def test_bench_turns_reports_the_overhead(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "turns.json"
    done = subprocess.run(
        [sys.executable, "-m", "satellite", "bench", "turns", "--model", str(model),
         "--turns", "3", "--threads", "1", "--pause", "0.3", "--query", "turn on the lights",
         "--query-seconds", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "daemon overhead ms" in done.stdout
    report = json.loads(out.read_text())
    assert report["turns"] == 3 and report["turns_with_audio"] == 3
    assert report["speculative_pause_seconds"] == 0.3 and "speculative work" in done.stdout
    assert "'turn on the lights'" in report["query"] and 0.5 < report["speech_seconds"] < 2
    assert 30 < report["peak_rss_mb"] < 2000 and "peak RSS of this process" in done.stdout
    ttfa, engine, delay, overhead = (
        report[k] for k in ("time_to_first_audio_ms", "engine_ms", "start_delay_ms", "overhead_ms")
    )
    assert overhead["count"] == 3 and 0 <= overhead["p50"] <= ttfa["p50"]
    assert abs(ttfa["mean"] - engine["mean"] - delay["mean"] - overhead["mean"]) < 0.05
    assert report["underruns"] == [0, 0, 0] and "0 underrun(s)" in done.stdout
    assert report["generation_rtf"]["count"] == 3 and report["generation_rtf"]["p50"] < 1.0


@pytest.mark.parametrize("speculative", [True, False])
async def test_speculative_prefill_during_the_trailing_silence(
    model: Path, tmp_path: Path, speculative: bool
) -> None:
    """A question with a short pause inside: the pause's speculative work is thrown away when
    the user goes on, the final pause's work becomes the turn (`vad.speculative`)."""
    source = tmp_path / "mic.wav"
    script_wav(source, [
        ("silence", 1.0), ("say", "okay nabu"), ("silence", 0.6), ("say", "turn on the lights"),
        ("silence", 0.2), ("say", "in the kitchen"), ("silence", 2.0),
    ])  # fmt: skip
    settings = daemon_settings(model, input_file=source)
    settings = dataclasses.replace(settings, vad=VadSettings(speculative=speculative))
    daemon, _ = await run_to_end(settings, 30)
    [turn] = daemon.turns
    responder = daemon.responder
    assert responder is not None and turn.time_to_first_audio is not None
    if speculative:
        assert responder.speculations >= 2 and responder.speculated_turns == 1
    else:
        assert responder.speculations == 0 and responder.speculated_turns == 0
    assert turn.reply_audio_seconds > 0


async def test_the_model_given_to_the_daemon_is_the_one_it_loads(
    model: Path, tmp_path: Path
) -> None:
    """`lfm-satellite run --model DIR` (Daemon's `model`) wins over the config's model."""
    settings = daemon_settings(tmp_path / "no-model-here", backend="null")
    daemon = Daemon(settings, model=str(model))
    await daemon.start()
    try:
        assert daemon.responder is not None
        assert daemon.responder.model.directory.resolve() == model.resolve()
    finally:
        await daemon.close()
