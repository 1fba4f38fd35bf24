"""Device control from the model's text: tool-call parsing (LFM2's format and JSON), the
allowlist, sensitive actions held for a spoken yes, refusals; published to a real mosquitto
through the daemon's own path (`Daemon.act_on`, which `_respond` calls with the reply text)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from satellite.config import ConfigError, load_config
from satellite.daemon.core import Daemon
from satellite.devices.control import AllowlistError, DeviceController, load_allowlist
from satellite.devices.toolcalls import parse_tool_calls
from satellite.events import Said
from satellite.settings import DeviceControlSettings, MqttSettings
from tests.broker import Broker, Watcher
from tests.paths import REPO
from tests.satellite_support import daemon_settings, tiny_model

pytestmark = pytest.mark.realtime

EXAMPLE = REPO / "devices.example.yaml"
BASE = "lfm_satellite/test_satellite"


def test_lfm2_and_json_tool_calls() -> None:
    text = ('Turning it on. <|tool_call_start|>[turn_on(entity="light.kitchen"), '
            'turn_off(entity_id="switch.coffee_machine")]<|tool_call_end|> Done.')  # fmt: skip
    parsed = parse_tool_calls(text)
    assert [(c.action, c.target) for c in parsed.calls] == [
        ("turn_on", "light.kitchen"), ("turn_off", "switch.coffee_machine"),
    ]  # fmt: skip
    assert parsed.spoken == "Turning it on. Done." and not parsed.problems

    generic = parse_tool_calls(
        '<|tool_call_start|>[control(action="light.turn_on", name="kitchen light")]<|tool_call_end|>'
    )
    assert [(c.action, c.target) for c in generic.calls] == [("turn_on", "kitchen light")]

    as_json = parse_tool_calls(
        'Sure. <tool_call>{"name": "turn_on", "arguments": {"entity": "light.kitchen"}}</tool_call>'
    )
    assert [(c.action, c.target) for c in as_json.calls] == [("turn_on", "light.kitchen")]
    assert as_json.spoken == "Sure."
    listed = parse_tool_calls(
        '[{"name": "lock", "parameters": "{\\"entity_id\\": \\"lock.front_door\\"}"}]'
    )
    assert [(c.action, c.target) for c in listed.calls] == [("lock", "lock.front_door")]
    assert parse_tool_calls("The kitchen light is on {really}.").calls == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('turn_on("light.kitchen")', "must be named"),
        ("turn_on(entity=__import__('os').system('true'))", "literals"),
        ("turn_on(entity=", "not readable"),
        ("light.kitchen", "not a function call"),
    ],
)
def test_malformed_tool_calls_are_problems_not_code(body: str, problem: str) -> None:
    parsed = parse_tool_calls(f"<|tool_call_start|>[{body}]<|tool_call_end|>")
    assert parsed.calls == [] and problem in parsed.problems[0]


def test_allowlist_and_sensitive_defaults(tmp_path: Path) -> None:
    entities = load_allowlist(EXAMPLE)
    sensitive = {e: entities[e].sensitive for e in entities}
    assert sensitive == {"light.kitchen": False, "switch.coffee_machine": False,
                         "lock.front_door": True, "cover.garage_door": True}  # fmt: skip
    bad = tmp_path / "devices.yaml"
    for text, words in (
        ("entities: {}\n", "entities: expected a mapping"),
        ("entities:\n  Kitchen: {}\n", "entities.Kitchen: not an entity id"),
        ("entities:\n  light.a: {command_topic: a/#, actions: {on: ON}}\n", "command_topic"),
        ("entities:\n  light.a: {command_topic: a/set, actions: []}\n", "light.a.actions"),
        (
            "entities:\n  light.a: {command_topic: a/set, actions: {on: ON}, colour: red}\n",
            "'colour'",
        ),
        ("entities: [\n", "not valid YAML"),
    ):
        bad.write_text(text)
        with pytest.raises(AllowlistError, match=words):
            load_allowlist(bad)
    with pytest.raises(AllowlistError, match=r"device_control\.allowlist_file"):
        load_allowlist(tmp_path / "missing.yaml")


def test_config_requires_mqtt_and_an_allowlist(tmp_path: Path) -> None:
    config = tmp_path / "satellite.yaml"
    config.write_text("mqtt:\n  enabled: false\ndevice_control:\n  enabled: true\n")
    with pytest.raises(ConfigError) as err:
        load_config(config)
    text = "\n".join(str(p) for p in err.value.problems)
    assert "device_control.enabled: device control publishes through MQTT" in text
    assert "device_control.allowlist_file: device control needs an allowlist" in text


def test_controller_yes_no_and_expiry() -> None:
    sent: list[tuple[str, str]] = []
    events: list[dict[str, Any]] = []
    controller = DeviceController(
        load_allowlist(EXAMPLE), publish=lambda t, p: sent.append((t, p)),
        event=lambda kind, **data: events.append({"event_type": kind, **data}),
        confirm_seconds=5.0,
    )  # fmt: skip
    [ask] = controller.handle(
        '<|tool_call_start|>[unlock(entity="lock.front_door")]<|tool_call_end|>'
    )
    assert ask.kind == "confirm" and "unlock the front door" in ask.say and sent == []
    [done] = controller.confirm("Yes, please.")
    assert done.kind == "confirmed" and sent == [("home/front_door/set", "UNLOCK")]
    controller.handle('<|tool_call_start|>[open_cover(name="garage door")]<|tool_call_end|>')
    [no] = controller.confirm("no way")
    assert no.kind == "cancelled" and len(sent) == 1
    controller.confirm_seconds = 0.0
    controller.handle('<|tool_call_start|>[lock(entity="lock.front_door")]<|tool_call_end|>')
    assert not controller.waiting and len(sent) == 1
    kinds = [e["event_type"] for e in events]
    assert kinds.count("confirmation_requested") == 3 and kinds.count("command_sent") == 1
    assert [e["reason"] for e in events if e["event_type"] == "command_refused"] == [
        "not confirmed", "no confirmation in time",
    ]  # fmt: skip


@pytest.fixture
async def daemon(broker: Broker, tmp_path: Path) -> AsyncIterator[Daemon]:
    settings = daemon_settings(
        tiny_model(), backend="null",
        mqtt=MqttSettings(enabled=True, host="127.0.0.1", port=broker.port),
    )  # fmt: skip
    import dataclasses

    settings = dataclasses.replace(
        settings,
        # longer than a spoken question (at most max_reply_seconds, 2 s): the controller's
        # deadline runs while the satellite asks
        device_control=DeviceControlSettings(
            enabled=True, allowlist_file=str(EXAMPLE), confirm_seconds=3.0
        ),
    )
    d = Daemon(settings)
    await d.start()
    yield d
    await d.close()


async def test_the_model_is_told_the_devices_it_may_control(daemon: Daemon) -> None:
    """The allowlist's tools are in the system prompt the local model answers under."""
    assert daemon.responder is not None
    prompt = daemon.responder.system_prompt or ""
    assert prompt == daemon.system_prompt and "<|tool_list_start|>" in prompt
    assert "light.kitchen" in prompt and "turn_on" in prompt


async def test_reply_text_drives_devices_through_mqtt(daemon: Daemon, broker: Broker) -> None:
    said: list[str] = []
    daemon.observe(lambda event: said.append(event.text) if isinstance(event, Said) else None)
    assert daemon.responder is not None and "<|tool_list_start|>" in (daemon.system_prompt or "")
    ha = Watcher(broker.port, ["home/#", "zigbee2mqtt/#", f"{BASE}/event"])
    try:
        await ha.wait(
            lambda: daemon.mqtt is not None and daemon.mqtt.link.connected, 10, "connected"
        )
        await daemon.act_on(
            'Turning on the light. <|tool_call_start|>[turn_on(entity="light.kitchen")]'
            "<|tool_call_end|>"
        )
        await ha.wait(lambda: bool(ha.on("zigbee2mqtt/kitchen_light/set")), 5, "command")
        await daemon.act_on('<|tool_call_start|>[unlock(entity="lock.back_door")]<|tool_call_end|>')
        await daemon.act_on(
            '<|tool_call_start|>[unlock(entity="lock.front_door")]<|tool_call_end|>'
        )
        assert daemon.state == "confirming"
        await asyncio.sleep(3.2)  # no answer within confirm_seconds (silence)
        for _ in range(100):
            if daemon.state == "idle":
                break
            await asyncio.sleep(0.1)
        assert daemon.state == "idle"
        events = [json.loads(p) for p in ha.on(f"{BASE}/event")]
    finally:
        ha.close()
    assert ha.on("zigbee2mqtt/kitchen_light/set") == [b'{"state": "ON"}']
    assert ha.on("home/front_door/set") == [], "unlocked without a yes"
    kinds = [e["event_type"] for e in events]
    assert kinds == [
        "command_sent", "command_refused", "confirmation_requested", "listening", "command_refused"
    ]  # fmt: skip
    assert "lock.back_door is not allowed" in events[1]["reason"]
    assert events[3] == {"event_type": "listening", "purpose": "confirmation", "seconds": 3.0}
    assert events[4]["reason"] == "no confirmation in time"
    assert said == [
        "Done: turn on the kitchen light.",
        "Sorry, I am not allowed to unlock lock.back_door.",
        "Do you really want to unlock the front door? Say yes to confirm.",
        "I did not hear a yes, so I will not unlock the front door.",
    ]
