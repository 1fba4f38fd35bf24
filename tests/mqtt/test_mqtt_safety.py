"""A reply stopped by a safety rule, as Home Assistant sees it on MQTT: a `reply_blocked`
event naming the rule, the turn's `blocked_rule` and excerpt in `turn_finished` and
`last_turn`, the health report's count per rule, and the refusal said after it. The rule is
an allow-only topic the tiny model's random words never name, from a policy file."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from satellite.daemon.core import Daemon
from satellite.events import DaemonEvent, Said
from satellite.settings import MqttSettings
from tests.broker import Broker, Watcher
from tests.satellite_support import daemon_settings, script_wav, wake_and_ask

pytestmark = pytest.mark.realtime

BASE = "lfm_satellite/test_satellite"


async def test_a_blocked_reply_is_reported(model: Path, broker: Broker, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - name: shared-space\n    allow_topics: {lights: [zzqqxx]}\n")
    source = tmp_path / "mic.wav"
    script_wav(source, wake_and_ask())
    settings = daemon_settings(model, input_file=source, mqtt=MqttSettings(
        enabled=True, host="127.0.0.1", port=broker.port))  # fmt: skip
    settings = dataclasses.replace(settings, safety=dataclasses.replace(
        settings.safety, policy_file=str(policy), refusal="Not here."))  # fmt: skip
    daemon = Daemon(settings)
    seen: list[DaemonEvent] = []
    daemon.observe(seen.append)
    ha = Watcher(broker.port, [f"{BASE}/event", f"{BASE}/last_turn"])
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.wait_stopped(), 60)
        await ha.wait(lambda: "turn_finished" in [e["event_type"] for e in events(ha)], 5,
                      "turn_finished")  # fmt: skip
        counters = daemon.counters()
    finally:
        await daemon.close()
        ha.close()
    kinds = [e["event_type"] for e in events(ha)]
    assert kinds == ["wake_detected", "turn_started", "reply_blocked", "turn_finished"], kinds
    blocked = events(ha)[2]
    assert blocked["rule"] == "shared-space" and blocked["what"] == "reply"
    assert "no allowed topic (lights)" in blocked["excerpt"]
    finished = events(ha)[3]
    assert finished["reason"] == "blocked" and finished["blocked_rule"] == "shared-space"
    assert finished["blocked_excerpt"] == blocked["excerpt"]
    assert json.loads(ha.on(f"{BASE}/last_turn")[-1])["blocked_rule"] == "shared-space"
    assert counters["replies_blocked"] == 1
    assert counters["replies_blocked_by_rule"] == {"shared-space": 1}
    assert Said(text="Not here.") in seen
    [turn] = daemon.turns
    assert turn.reply_audio_seconds > 0, "the model spoke; the gate held it all back"


def events(watcher: Watcher) -> list[dict[str, Any]]:
    return [json.loads(p) for p in watcher.on(f"{BASE}/event")]
