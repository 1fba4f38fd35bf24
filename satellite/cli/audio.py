"""`lfm-satellite devices`: the PortAudio capture and playback devices, with the index and
name that `audio.input_device` / `audio.output_device` accept, their channels and default
rate. No devices is said in words; a missing PortAudio library is an error (exit 2) naming
the package to install."""

from __future__ import annotations

import argparse
from typing import Any

from satellite.audio.backends import DeviceInfo, Kind, list_devices, load_sounddevice


def add_audio_commands(commands: Any) -> None:
    """Add `devices` to the CLI's subparsers."""
    devices = commands.add_parser(
        "devices",
        help="list audio input and output devices",
        description="List the audio capture and playback devices PortAudio sees: index, name, "
        "channels and default sample rate. Use the index or (part of) the name in "
        "audio.input_device / audio.output_device.",
    )
    devices.set_defaults(handler=cmd_devices)


def format_devices(devices: list[DeviceInfo], defaults: tuple[int, int]) -> str:
    """The listing `devices` prints; `defaults` are PortAudio's default input and output
    indices (-1: none)."""
    lines: list[str] = []
    sections: tuple[tuple[Kind, str, int], ...] = (
        ("input", "inputs", defaults[0]),
        ("output", "outputs", defaults[1]),
    )
    for kind, title, default in sections:
        usable = [d for d in devices if d.channels(kind)]
        if not usable:
            lines.append(f"no audio {kind} devices found")
            continue
        lines.append(f"{title}:")
        for dev in usable:
            mark = "  (default)" if dev.index == default else ""
            api = f"  [{dev.hostapi}]" if dev.hostapi else ""
            lines.append(
                f"  {dev.index:>3}  {dev.name}  {dev.channels(kind)} ch  "
                f"{dev.default_rate:g} Hz{api}{mark}"
            )
    return "\n".join(lines)


def _defaults(sd: Any) -> tuple[int, int]:
    try:
        pair = list(sd.default.device)
        return int(pair[0]), int(pair[1])
    except (TypeError, ValueError, IndexError):
        return -1, -1


def cmd_devices(args: argparse.Namespace) -> int:
    sd = load_sounddevice()
    print(format_devices(list_devices(sd), _defaults(sd)))
    return 0
