"""`lfm-satellite mqtt unregister`: remove the satellite from Home Assistant's MQTT discovery."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from satellite.errors import UserError

WAIT_SECONDS = 15.0


def add_mqtt_commands(commands: Any) -> None:
    mqtt = commands.add_parser(
        "mqtt",
        help="MQTT maintenance (unregister from Home Assistant)",
        description="MQTT maintenance commands; they use the config's `mqtt` section.",
    )
    sub = mqtt.add_subparsers(dest="mqtt_command", metavar="MQTT_COMMAND")
    sub.required = True
    unregister = sub.add_parser(
        "unregister",
        help="remove the device and its retained states from Home Assistant",
        description="Publish an empty retained discovery payload (Home Assistant then removes "
        "the device and its entities) and clear the satellite's retained topics.",
    )
    unregister.set_defaults(handler=cmd_unregister)


def cmd_unregister(args: argparse.Namespace) -> int:
    from satellite.cli.loading import load_for_command

    loaded = load_for_command(args)
    return asyncio.run(_unregister(loaded.settings))


async def _unregister(settings: Any) -> int:
    from satellite.mqtt.client import MqttLink
    from satellite.mqtt.discovery import CONTROL_TOPICS, Topics

    topics = Topics.from_settings(settings)
    link = MqttLink(settings.mqtt, topics.base)
    cleared = [
        topics.discovery,
        *(topics.state(c) for c in CONTROL_TOPICS),
        topics.health,
        topics.last_turn,
    ]
    for topic in cleared:
        link.publish(topic, b"", retain=True, qos=1)
    await link.start()
    try:
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while (link.queued or not link.connected) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if link.queued:
            why = f": {link.last_error}" if link.last_error else ""
            raise UserError(
                f"mqtt: could not reach {settings.mqtt.host}:{settings.mqtt.port} in "
                f"{WAIT_SECONDS:g} s{why}"
            )
    finally:
        await link.stop()
    for topic in cleared:
        print(f"cleared {topic}")
    print(f"{settings.satellite.name!r} removed from Home Assistant's MQTT discovery")
    return 0
