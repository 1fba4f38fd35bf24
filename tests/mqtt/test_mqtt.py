"""MQTT against a real mosquitto on loopback: discovery (checked field by field against Home
Assistant's documented schema, tests/ha_mqtt_schema.py), controls round trip and persistence,
Home Assistant's birth message, broker restarts, wrong password, TLS mismatch, malformed
commands, the jitter alert, and `mqtt unregister`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from satellite.audio.backends import FileBackend
from satellite.audio.wake import WakeWordDetector
from satellite.bench.soak import flood_commands
from satellite.controls import Controls
from satellite.daemon.core import Daemon
from satellite.mqtt.bridge import COMMAND_INTERVAL
from satellite.mqtt.client import retry_delay
from satellite.mqtt.discovery import Topics, device_payload
from satellite.settings import HealthSettings, MqttSettings, Settings, WakeSettings
from tests.broker import Broker, Watcher
from tests.ha_mqtt_schema import validate_device_discovery
from tests.satellite_support import daemon_settings

pytestmark = pytest.mark.realtime

BASE = "lfm_satellite/test_satellite"
DISCOVERY = "homeassistant/device/lfm_satellite_test_satellite/config"


def _mqtt(port: int, **extra: Any) -> MqttSettings:
    return MqttSettings(**{"enabled": True, "host": "127.0.0.1", "port": port, **extra})


@pytest.fixture
async def running(model: Path, broker: Broker, tmp_path: Path) -> AsyncIterator[Daemon]:
    settings = daemon_settings(
        model, backend="null", mqtt=_mqtt(broker.port), state_file=str(tmp_path / "state.json")
    )
    daemon = Daemon(settings)
    await daemon.start()
    yield daemon
    await daemon.close()


def _events(watcher: Watcher) -> list[dict[str, Any]]:
    return [json.loads(p) for p in watcher.on(f"{BASE}/event")]


@pytest.mark.parametrize("area", [None, "Kitchen"])
def test_discovery_payload_matches_home_assistants_schema(model: Path, area: str | None) -> None:
    settings = daemon_settings(model)
    settings = dataclasses.replace(
        settings, satellite=dataclasses.replace(settings.satellite, area=area)
    )
    topics = Topics.from_settings(settings)
    payload = device_payload(settings, topics, "tiny (q4)")
    assert topics.discovery == DISCOVERY
    assert validate_device_discovery(topics.discovery, payload) == []
    ids = [c["unique_id"] for c in payload["cmps"].values()]
    assert len(ids) == len(set(ids)) == len(payload["cmps"])
    platforms = {c["platform"] for c in payload["cmps"].values()}
    assert {"switch", "number", "select", "button", "event", "sensor", "binary_sensor"} <= platforms
    # and the validator does catch what is wrong
    broken = json.loads(json.dumps(payload))
    broken["cmps"]["volume"]["mode"] = "dial"
    del broken["cmps"]["mute"]["unique_id"]
    assert len(validate_device_discovery(topics.discovery, broken)) >= 2


def test_retry_delays_grow_capped_with_jitter() -> None:
    delays = [retry_delay(n) for n in range(1, 12) for _ in range(20)]
    assert min(delays) >= 0.5 and max(delays) <= 60.0
    first = [retry_delay(1) for _ in range(50)]
    assert len({round(d, 6) for d in first}) > 40, "random jitter"
    assert all(30.0 <= retry_delay(10) <= 60.0 for _ in range(20))


async def test_discovery_states_and_commands_round_trip(running: Daemon, broker: Broker) -> None:
    ha = Watcher(broker.port, ["#"])
    try:
        await ha.wait(lambda: bool(ha.on(DISCOVERY)), 10, "discovery")
        assert ha.on(f"{BASE}/availability")[-1] == b"online"
        discovery = json.loads(ha.on(DISCOVERY)[-1])
        assert validate_device_discovery(DISCOVERY, discovery) == []
        assert discovery["dev"]["name"] == "Test Satellite" and discovery["dev"]["sa"] == "Kitchen"
        await ha.wait(lambda: bool(ha.on(f"{BASE}/volume/state")), 5, "volume state")
        assert ha.on(f"{BASE}/mute/state")[-1] == b"OFF"

        ha.publish(f"{BASE}/volume/set", "40")
        ha.publish(f"{BASE}/mute/set", "ON")
        ha.publish(f"{BASE}/wake_word/set", "alexa")
        ha.publish(f"{BASE}/mode/set", "ha")
        await ha.wait(lambda: ha.on(f"{BASE}/mode/state")[-1:] == [b"ha"], 5, "mode state")
        assert ha.on(f"{BASE}/volume/state")[-1] == b"40"
        assert ha.on(f"{BASE}/mute/state")[-1] == b"ON"
        c = running.controls
        assert (c.volume, c.muted, c.wake_word, c.mode) == (0.4, True, "alexa", "ha")
        assert running.backend.volume == 0.4 and running.wake.model_id == "alexa"
        assert running.mode == "ha"
        saved = json.loads(running.store.path.read_text())
        assert saved["volume"] == 0.4 and saved["wake_word"] == "alexa" and saved["muted"]

        # malformed commands: an error event each, the state that stands republished (after a
        # topic's interval: within it a command waits, and a later one would replace it)
        await asyncio.sleep(2 * COMMAND_INTERVAL)
        ha.clear()
        for topic, value in (("volume", "loud"), ("volume", "250"), ("mute", "maybe"),
                             ("wake_word", "siri"), ("sensitivity", "nan"), ("restart", "now")):  # fmt: skip
            ha.publish(f"{BASE}/{topic}/set", value)
        await ha.wait(lambda: len(_events(ha)) >= 6, 5, "six error events")
        errors = _events(ha)
        assert [e["event_type"] for e in errors] == ["error"] * 6
        by_value = {e["value"]: e["message"] for e in errors}  # a topic's second command waits
        assert "expected a number" in by_value["loud"] and "out of range" in by_value["250"]
        assert "siri" in by_value["siri"] and "PRESS" in by_value["now"]
        await ha.wait(lambda: ha.on(f"{BASE}/volume/state")[-1:] == [b"40"], 5, "volume kept")
        assert running.controls.volume == 0.4 and running.health() is None

        ha.publish(f"{BASE}/restart/set", "PRESS")
        await asyncio.sleep(0.3)
        assert running.health() is None
    finally:
        ha.close()


async def test_controls_persist_across_restarts(
    model: Path, broker: Broker, tmp_path: Path
) -> None:
    state = str(tmp_path / "state.json")
    settings = daemon_settings(model, backend="null", mqtt=_mqtt(broker.port), state_file=state)
    first = Daemon(settings)
    await first.start()
    first.set_control("voice", "uk_male")
    first.set_control("sensitivity", 0.7)
    await first.close()
    second = Daemon(settings)
    assert (second.controls.voice, second.controls.sensitivity) == ("uk_male", 0.7)
    default = WakeWordDetector(WakeSettings())
    assert second.wake.cutoff == first.wake.cutoff != default.cutoff, "sensitivity applied"
    default.close()
    second.wake.close()


async def test_home_assistant_birth_republishes(running: Daemon, broker: Broker) -> None:
    ha = Watcher(broker.port, [DISCOVERY, f"{BASE}/+/state"])
    try:
        await ha.wait(lambda: bool(ha.on(DISCOVERY)), 10, "discovery")
        ha.clear()
        ha.publish("homeassistant/status", "online")
        await ha.wait(lambda: bool(ha.on(DISCOVERY)) and bool(ha.on(f"{BASE}/mode/state")), 5,
                      "republished after Home Assistant's birth message")  # fmt: skip
        fresh = [r for t, _, r, _ in ha.messages if t == DISCOVERY]
        assert fresh and not fresh[-1], "republished live, not only the retained copy"
    finally:
        ha.close()


async def test_broker_restart_mid_run(running: Daemon, broker: Broker) -> None:
    """The broker dies and comes back (empty: persistence off): the satellite reconnects and
    republishes availability, discovery and states; what happened meanwhile is delivered; the
    audio loop never stalls."""
    ha = Watcher(broker.port, ["#"])
    try:
        await ha.wait(lambda: bool(ha.on(DISCOVERY)), 10, "discovery")
        chunks = running.chunks
        broker.stop()
        await asyncio.sleep(0.5)
        assert not running.mqtt.link.connected  # type: ignore[union-attr]
        running.set_control("volume", 0.25)  # published while the broker is away
        for _ in range(10):
            await asyncio.sleep(0.1)
            assert running.health() is None, "the audio loop stalled"
        assert running.chunks > chunks + 30
        ha.clear()
        broker.start()
        await ha.wait(lambda: bool(ha.on(DISCOVERY)), 20, "discovery after the restart")
        await ha.wait(lambda: ha.on(f"{BASE}/volume/state")[-1:] == [b"25"], 5, "new volume")
        assert ha.on(f"{BASE}/availability")[-1] == b"online"
        assert running.mqtt.link.connects == 2  # type: ignore[union-attr]
        assert running.health() is None
    finally:
        ha.close()


async def test_outbox_drops_are_counted_while_offline(model: Path, tmp_path: Path) -> None:
    port = Broker(tmp_path).port  # nothing listens there
    settings = daemon_settings(model, backend="null", mqtt=_mqtt(port, outbox_size=10))
    daemon = Daemon(settings)
    await daemon.start()
    try:
        link = daemon.mqtt.link  # type: ignore[union-attr]
        for i in range(25):
            link.publish(f"{BASE}/test", str(i))
        assert link.queued == 10 and link.dropped == 15
        assert daemon.health() is None
    finally:
        await daemon.close()


async def test_wrong_password_is_reported(
    model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker(tmp_path, users={"sat": "right"})
    broker.start()
    try:
        secret = tmp_path / "password"
        secret.write_text("wrong\n")
        mqtt = _mqtt(broker.port, username="sat", password_file=str(secret))
        daemon = Daemon(daemon_settings(model, backend="null", mqtt=mqtt))
        caplog.set_level(logging.ERROR, "satellite.mqtt")
        await daemon.start()
        try:
            deadline = time.monotonic() + 10
            while "refused the connection" not in caplog.text and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert "mqtt.username and mqtt.password" in caplog.text, caplog.text
            assert not daemon.mqtt.link.connected  # type: ignore[union-attr]
            assert daemon.health() is None
        finally:
            await daemon.close()
    finally:
        broker.stop()


async def test_tls_host_name_mismatch_and_match(
    model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker(tmp_path, tls=True)
    broker.start()
    try:
        ca = str(broker.certs["ca"])
        caplog.set_level(logging.INFO, "satellite.mqtt")
        mismatch = _mqtt(broker.port, tls=True, ca_file=ca)  # the certificate names localhost
        daemon = Daemon(daemon_settings(model, backend="null", mqtt=mismatch))
        await daemon.start()
        try:
            deadline = time.monotonic() + 10
            while "TLS handshake" not in caplog.text and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert "TLS handshake with 127.0.0.1" in caplog.text, caplog.text
            assert "mqtt.ca_file" in caplog.text and not daemon.mqtt.link.connected  # type: ignore[union-attr]
        finally:
            await daemon.close()
        good = dataclasses.replace(mismatch, host="localhost")
        daemon = Daemon(daemon_settings(model, backend="null", mqtt=good))
        await daemon.start()
        try:
            deadline = time.monotonic() + 10
            while not daemon.mqtt.link.connected and time.monotonic() < deadline:  # type: ignore[union-attr]
                await asyncio.sleep(0.05)
            assert daemon.mqtt.link.connected, caplog.text  # type: ignore[union-attr]
        finally:
            await daemon.close()
    finally:
        broker.stop()


class HiccupBackend(FileBackend):
    """The file backend with a USB-microphone hiccup: chunk `stall_at` arrives late."""

    def __init__(self, settings: Any, stall_at: int, stall: float) -> None:
        super().__init__(settings)
        self.stall_at, self.stall = stall_at, stall

    async def chunks(self):  # type: ignore[no-untyped-def, override]
        index = 0
        async for chunk in super().chunks():
            index += 1
            if index == self.stall_at:
                await asyncio.sleep(self.stall)
            yield chunk


async def test_jitter_spike_raises_and_clears_the_alert(
    model: Path, broker: Broker, tmp_path: Path
) -> None:
    from satellite.audio.wavfile import write_wav

    source = tmp_path / "quiet.wav"
    write_wav(source, np.zeros(16000 * 9, np.float32), 16000)
    settings = daemon_settings(model, input_file=source, mqtt=_mqtt(broker.port))
    settings = dataclasses.replace(
        settings, health=HealthSettings(interval_seconds=1.0, jitter_alert_ms=20.0)
    )
    backend = HiccupBackend(settings.audio, stall_at=100, stall=0.4)  # 2 s in, 400 ms late
    daemon = Daemon(settings, backend=backend)
    ha = Watcher(broker.port, [f"{BASE}/event", f"{BASE}/health"])
    await daemon.start()
    try:
        await ha.wait(lambda: "alert_raised" in [e["event_type"] for e in _events(ha)], 8,
                      "alert raised")  # fmt: skip
        raised = next(e for e in _events(ha) if e["event_type"] == "alert_raised")
        assert raised["alert"] == "jitter" and raised["value_ms"] > 20.0
        await ha.wait(lambda: "alert_cleared" in [e["event_type"] for e in _events(ha)], 8,
                      "alert cleared")  # fmt: skip
        cleared = next(e for e in _events(ha) if e["event_type"] == "alert_cleared")
        assert cleared["value_ms"] < 16.0  # below threshold x alert_clear_ratio (0.8)
        health = [json.loads(p) for p in ha.on(f"{BASE}/health")]
        assert any(h["alerts"]["jitter"] for h in health)
        assert all(k in health[-1] for k in ("ttfa_ms", "input_jitter_ms", "memory_mb", "uptime_s"))
        # every diagnostic sensor's value is in the report it reads (the file's silence: a
        # noise level of digital silence, no echo read, no speech heard)
        payload = device_payload(settings, Topics.from_settings(settings), "tiny (q4)")
        for key, sensor in payload["cmps"].items():
            template = sensor.get("value_template", "")
            if sensor.get("state_topic") == "~/health" and template.startswith("{{ value_json."):
                value: Any = health[-1]
                for part in template.removeprefix("{{ value_json.").removesuffix(" }}").split("."):
                    assert isinstance(value, dict) and part in value, (key, template)
                    value = value[part]
        assert health[-1]["noise_level_dbfs"] == -120.0 and health[-1]["speech_level_dbfs"] is None
        assert health[-1]["echo_return_loss_db"] is None
    finally:
        ha.close()
        await daemon.close()


def test_unregister_removes_the_device(broker: Broker, tmp_path: Path) -> None:
    config = tmp_path / "satellite.yaml"
    config.write_text(
        f"satellite:\n  name: Test Satellite\nmqtt:\n  host: 127.0.0.1\n  port: {broker.port}\n"
    )
    ha = Watcher(broker.port, [DISCOVERY])
    try:
        ha.publish(DISCOVERY, json.dumps({"dev": {"ids": ["x"]}}), retain=True)
        done = subprocess.run(
            [sys.executable, "-m", "satellite", "--config", str(config), "mqtt", "unregister"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert DISCOVERY in done.stdout
    finally:
        ha.close()
    late = Watcher(broker.port, [DISCOVERY])  # a new subscriber gets no retained discovery
    try:
        time.sleep(0.5)
        assert late.on(DISCOVERY) == []
    finally:
        late.close()


def test_settings_default_base_topic() -> None:
    topics = Topics.from_settings(Settings())
    assert topics.base == "lfm_satellite/lfm_satellite"
    assert topics.discovery == "homeassistant/device/lfm_satellite_lfm_satellite/config"


async def _run_watching(
    settings: Settings, broker: Broker, topics: list[str]
) -> tuple[Daemon, Watcher]:
    """Run a daemon on its input file to the end with Home Assistant watching `topics`,
    until three events have come (the watcher closed, what it got kept)."""
    daemon = Daemon(settings)
    ha = Watcher(broker.port, topics)
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.wait_stopped(), 30)
        await ha.wait(lambda: len(_events(ha)) >= 3, 5, "three events")
    finally:
        await daemon.close()
        ha.close()
    return daemon, ha


async def test_a_spoken_turn_is_reported_as_events(
    model: Path, broker: Broker, tmp_path: Path
) -> None:
    from tests.satellite_support import script_wav, wake_and_ask

    source = tmp_path / "mic.wav"
    script_wav(source, wake_and_ask())
    settings = daemon_settings(model, input_file=source, mqtt=_mqtt(broker.port))
    daemon, ha = await _run_watching(settings, broker, [f"{BASE}/event", f"{BASE}/last_turn"])
    events = _events(ha)
    assert [e["event_type"] for e in events] == ["wake_detected", "turn_started", "turn_finished"]
    assert events[0]["wake_word"] == "okay_nabu" and events[1]["mode"] == "local"
    [turn] = daemon.turns
    finished = events[2]
    assert finished["reply"] == turn.reply_text and finished["mode"] == "local"
    assert finished["time_to_first_audio_ms"] == round(turn.time_to_first_audio * 1000, 1)  # type: ignore[operator]
    last = {k: v for k, v in finished.items() if k != "event_type"}
    assert json.loads(ha.on(f"{BASE}/last_turn")[-1]) == last


async def test_the_stop_word_is_reported_as_an_event(
    model: Path, broker: Broker, tmp_path: Path, greedy_replies: None
) -> None:
    """ "stop" over the reply: `stop_detected` saying what it ended, and no turn_finished."""
    from tests.satellite_support import script_wav, wake_and_ask

    source = tmp_path / "mic.wav"
    script_wav(source, [*wake_and_ask(after=1.5), ("say", "stop"), ("silence", 2.5)])
    settings = daemon_settings(
        model, input_file=source, mqtt=_mqtt(broker.port), max_reply_seconds=5.0
    )
    daemon, ha = await _run_watching(settings, broker, [f"{BASE}/event"])
    events = _events(ha)
    assert [e["event_type"] for e in events] == ["wake_detected", "turn_started", "stop_detected"]
    assert events[2]["stopped"] == "reply" and 0.0 < events[2]["probability"] <= 1.0
    assert not daemon.turns and daemon.interrupted == 1


async def _connected(daemon: Daemon, timeout: float = 10.0) -> bool:
    link = daemon.mqtt.link  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    while not link.connected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return link.connected


async def test_mqtt_3_1_1(model: Path, broker: Broker) -> None:
    mqtt = _mqtt(broker.port, protocol="3.1.1")
    daemon = Daemon(daemon_settings(model, backend="null", mqtt=mqtt))
    ha = Watcher(broker.port, [DISCOVERY])
    await daemon.start()
    try:
        assert await _connected(daemon)
        await ha.wait(lambda: bool(ha.on(DISCOVERY)), 5, "discovery over MQTT 3.1.1")
    finally:
        ha.close()
        await daemon.close()


async def test_client_certificate(
    model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker(tmp_path, tls=True, client_certs=True)
    broker.start()
    try:
        certs = broker.certs
        plain = _mqtt(broker.port, host="localhost", tls=True, ca_file=str(certs["ca"]))
        caplog.set_level(logging.INFO, "satellite.mqtt")
        daemon = Daemon(daemon_settings(model, backend="null", mqtt=plain))
        await daemon.start()
        try:
            assert not await _connected(daemon, 2.0), "connected without a client certificate"
            assert "mqtt.cert_file" in caplog.text and "retrying" in caplog.text, caplog.text
        finally:
            await daemon.close()
        with_cert = dataclasses.replace(
            plain, cert_file=str(certs["client_cert"]), key_file=str(certs["client_key"])
        )
        daemon = Daemon(daemon_settings(model, backend="null", mqtt=with_cert))
        await daemon.start()
        try:
            assert await _connected(daemon), caplog.text
        finally:
            await daemon.close()
    finally:
        broker.stop()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
async def test_last_will_and_clean_offline(
    model: Path, broker: Broker, tmp_path: Path, how: str
) -> None:
    """Killed: the broker publishes the last will (`offline`, retained). Stopped: the satellite
    says `offline` itself."""
    import signal

    config = tmp_path / "satellite.yaml"
    config.write_text(
        f"satellite:\n  name: Test Satellite\n  state_file: {tmp_path / 'state.json'}\n"
        f"audio:\n  backend: null\nmodel:\n  directory: {model}\n  threads: 1\n"
        "wyoming:\n  satellite_host: 127.0.0.1\n  satellite_port: "
        f"{Broker(tmp_path).port}\n  zeroconf: false\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {broker.port}\n  keepalive: 5\n"
    )
    ha = Watcher(broker.port, [f"{BASE}/availability"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "satellite", "--config", str(config), "run"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        await ha.wait(lambda: ha.on(f"{BASE}/availability")[-1:] == [b"online"], 60, "online")
        proc.send_signal(getattr(signal, how))
        await ha.wait(lambda: ha.on(f"{BASE}/availability")[-1:] == [b"offline"], 15, "offline")
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        ha.close()
    late = Watcher(broker.port, [f"{BASE}/availability"])
    try:
        await late.wait(lambda: bool(late.on(f"{BASE}/availability")), 5, "retained")
        assert late.on(f"{BASE}/availability") == [b"offline"]
    finally:
        late.close()
    if how == "SIGTERM":
        assert proc.returncode == 0


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
        (b'{"volume": 0.3}' + b" " * (70 * 1024), "larger than 64 kB"),
        (b"\xff\xfe binary", "codec"),
        (b'{"volume": "loud", "muted": [1], "nope": 1, "voice": {"a": 1}}', "keeping"),
    ],
)
async def test_a_damaged_state_file_never_stops_the_start(
    model: Path, tmp_path: Path, content: bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16, point 9: the state file is meant to be never fatal (a nested JSON file raised
    RecursionError out of the loader and the daemon exited with a traceback)."""
    state = tmp_path / "state.json"
    state.write_bytes(content)
    settings = daemon_settings(model, backend="null", state_file=str(state))
    daemon = Daemon(settings)
    await daemon.start()
    try:
        assert daemon.controls == Controls.from_settings(settings), "the config's values stand"
        assert why in caplog.text and str(state) in caplog.text
        daemon.set_control("volume", 0.4)
        assert json.loads(state.read_text())["volume"] == 0.4, "replaced by a good file"
    finally:
        await daemon.close()


FLOOD = 5000
FLOOD_PAYLOADS: dict[str, list[bytes]] = {
    "mute": [b"ON", b"OFF", b"maybe", b""],
    "volume": [b"10", b"55", b"abc", b"-5", b"nan", b"1" * 600_000],
    "sensitivity": [b"0.2", b"0.8", b"2", b"x" * 600_000],
    "wake_word": [b"okay_nabu", b"hey_jarvis", b"nope", b"\xff\xfe"],
    "voice": [b"uk_male", b"us_female", b"robot"],
    "mode": [b"local", b"ha", b"both"],
    "restart": [b"PRESS", b"press", b"y" * 600_000],
}
FINAL: dict[str, tuple[bytes, bytes]] = {
    "mute": (b"OFF", b"OFF"),
    "volume": (b"37", b"37"),
    "sensitivity": (b"0.61", b"0.61"),
    "wake_word": (b"hey_jarvis", b"hey_jarvis"),
    "voice": (b"uk_male", b"uk_male"),
    "mode": (b"local", b"local"),
}
"""The command sent last on each topic, and the state it must leave."""


async def test_a_command_flood_keeps_states_and_events_flowing(
    running: Daemon, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16, point 11: 5,000 commands as fast as a client can send them over every
    command topic, valid, refused and 600 kB ones mixed, then one good command per topic. The
    capture loop keeps its pace, no outgoing message is dropped, what is echoed back is cut,
    and every state ends at the last command's value."""
    caplog.set_level(logging.INFO, logger="satellite")
    ha = Watcher(broker.port, [f"{BASE}/#"])
    flood = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    flood.connect("127.0.0.1", broker.port)
    flood.loop_start()
    try:
        await ha.wait(lambda: bool(ha.on(f"{BASE}/mode/state")), 10, "states")
        chunks, started = running.chunks, time.monotonic()
        sent = [
            flood.publish(f"{BASE}/{control}/set", payload, qos=1)
            for control, payload in flood_commands(FLOOD, FLOOD_PAYLOADS)
        ]
        for control, (command, _) in FINAL.items():
            sent.append(flood.publish(f"{BASE}/{control}/set", command, qos=1))
        await asyncio.to_thread(lambda: [info.wait_for_publish(60) for info in sent])

        def settled() -> bool:
            return all(ha.on(f"{BASE}/{c}/state")[-1:] == [state] for c, (_, state) in
                       FINAL.items())  # fmt: skip

        await ha.wait(settled, 30, "every state at the last command's value")
        elapsed = time.monotonic() - started
        captured = (running.chunks - chunks) * running.backend.chunk_seconds
        assert captured >= 0.8 * elapsed - 0.5, f"capture ran {captured:.1f} s in {elapsed:.1f} s"
        link = running.mqtt.link if running.mqtt is not None else None
        assert link is not None and link.dropped == 0, "no outgoing message dropped"
        biggest = max(len(p) for t, p, _, _ in ha.messages if t == f"{BASE}/event")
        assert biggest < 2048, f"an event of {biggest} bytes"
        assert len(caplog.text) < 2_000_000, f"{len(caplog.text)} characters of log"
        assert running.controls.volume == pytest.approx(0.37)
    finally:
        flood.loop_stop()
        flood.disconnect()
        ha.close()
