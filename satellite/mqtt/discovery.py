"""Home Assistant MQTT device discovery: one retained payload describing every entity.

Topics under the satellite's base topic `<base>` (`mqtt.base_topic`, default
`lfm_satellite/<slug of satellite.name>`):

| entity | platform | topics |
|---|---|---|
| Mute | switch | `<base>/mute/state`, `<base>/mute/set` (`ON`/`OFF`) |
| Volume | number 0-100 % | `<base>/volume/state`, `<base>/volume/set` |
| Wake word | select | `<base>/wake_word/state`, `<base>/wake_word/set` |
| Wake sensitivity | number 0-1 | `<base>/sensitivity/state`, `<base>/sensitivity/set` |
| Voice | select | `<base>/voice/state`, `<base>/voice/set` |
| Mode | select local/ha | `<base>/mode/state`, `<base>/mode/set` |
| Restart pipeline | button | `<base>/restart/set` (`PRESS`) |
| Events | event | `<base>/event` (JSON with `event_type`) |
| Last reply | sensor | `<base>/last_turn` (JSON) |
| diagnostics | sensors, binary sensors | `<base>/health` (retained JSON, `value_json` paths) |

Availability: `<base>/availability` (`online`/`offline`, the client's last will).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from satellite import __version__
from satellite.controls import MODES
from satellite.settings import VOICE_NAMES, WAKE_WORDS, Settings

ORIGIN_URL = "https://github.com/lfm-satellite/lfm-satellite"
EVENT_TYPES = (
    "wake_detected",
    "stop_detected",
    "voice_barge_in",
    "turn_started",
    "turn_finished",
    "error",
    "alert_raised",
    "alert_cleared",
    "command_sent",
    "command_refused",
    "confirmation_requested",
    "listening",
    "reply_blocked",
)
CONTROL_TOPICS = ("mute", "volume", "wake_word", "sensitivity", "voice", "mode")
"""Controls with a state and a command topic (`<base>/<name>/state`, `.../set`)."""


def slug(name: str) -> str:
    """`Kitchen Satellite` -> `kitchen_satellite` (topic and id safe)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "satellite"


@dataclass(frozen=True)
class Topics:
    base: str
    prefix: str
    device_id: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        name = slug(settings.satellite.name)
        base = (settings.mqtt.base_topic or f"lfm_satellite/{name}").rstrip("/")
        return cls(base, settings.mqtt.discovery_prefix.rstrip("/"), f"lfm_satellite_{name}")

    @property
    def discovery(self) -> str:
        return f"{self.prefix}/device/{self.device_id}/config"

    @property
    def ha_status(self) -> str:
        """Home Assistant's birth and last-will topic."""
        return f"{self.prefix}/status"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def health(self) -> str:
        return f"{self.base}/health"

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def last_turn(self) -> str:
        return f"{self.base}/last_turn"

    @property
    def restart(self) -> str:
        return f"{self.base}/restart/set"

    def state(self, control: str) -> str:
        return f"{self.base}/{control}/state"

    def command(self, control: str) -> str:
        return f"{self.base}/{control}/set"


def _health_sensor(
    name: str, path: str, unit: str | None, expire: int, **extra: Any
) -> dict[str, Any]:
    sensor: dict[str, Any] = {
        "platform": "sensor",
        "name": name,
        "state_topic": "~/health",
        "value_template": "{{ value_json." + path + " }}",
        "entity_category": "diagnostic",
        "expire_after": expire,
    }
    if unit is not None:
        sensor["unit_of_measurement"] = unit
        sensor["state_class"] = "measurement"
    sensor.update(extra)
    return sensor


def device_payload(settings: Settings, topics: Topics, model: str) -> dict[str, Any]:
    """The retained discovery payload (`model`: the loaded model's name and variant)."""
    expire = int(3 * settings.health.interval_seconds) + 5
    ms = {"device_class": "duration"}
    components: dict[str, dict[str, Any]] = {
        "mute": {
            "platform": "switch", "name": "Mute", "icon": "mdi:microphone-off",
            "state_topic": "~/mute/state", "command_topic": "~/mute/set",
            "payload_on": "ON", "payload_off": "OFF",
        },
        "volume": {
            "platform": "number", "name": "Volume", "icon": "mdi:volume-high",
            "state_topic": "~/volume/state", "command_topic": "~/volume/set",
            "min": 0, "max": 100, "step": 1, "unit_of_measurement": "%", "mode": "slider",
        },
        "wake_word": {
            "platform": "select", "name": "Wake word", "icon": "mdi:account-voice",
            "state_topic": "~/wake_word/state", "command_topic": "~/wake_word/set",
            "options": list(WAKE_WORDS), "entity_category": "config",
        },
        "sensitivity": {
            "platform": "number", "name": "Wake sensitivity", "icon": "mdi:tune",
            "state_topic": "~/sensitivity/state", "command_topic": "~/sensitivity/set",
            "min": 0, "max": 1, "step": 0.05, "mode": "slider", "entity_category": "config",
        },
        "voice": {
            "platform": "select", "name": "Voice", "icon": "mdi:account-tie-voice",
            "state_topic": "~/voice/state", "command_topic": "~/voice/set",
            "options": list(VOICE_NAMES), "entity_category": "config",
        },
        "mode": {
            "platform": "select", "name": "Mode", "icon": "mdi:home-sound-in",
            "state_topic": "~/mode/state", "command_topic": "~/mode/set",
            "options": list(MODES),
        },
        "restart": {
            "platform": "button", "name": "Restart pipeline", "device_class": "restart",
            "command_topic": "~/restart/set", "payload_press": "PRESS",
            "entity_category": "config",
        },
        "events": {
            "platform": "event", "name": "Events", "state_topic": "~/event",
            "event_types": list(EVENT_TYPES),
        },
        "last_reply": {
            "platform": "sensor", "name": "Last reply", "icon": "mdi:message-reply-text",
            "state_topic": "~/last_turn", "value_template": "{{ value_json.reply[:255] }}",
            "json_attributes_topic": "~/last_turn",
        },
        "ttfa_p50": _health_sensor("Time to first audio p50", "ttfa_ms.p50", "ms", expire, **ms),
        "ttfa_p95": _health_sensor("Time to first audio p95", "ttfa_ms.p95", "ms", expire, **ms),
        "ttfa_p99": _health_sensor("Time to first audio p99", "ttfa_ms.p99", "ms", expire, **ms),
        "turn_p50": _health_sensor("Turn latency p50", "turn_latency_ms.p50", "ms", expire, **ms),
        "turn_p95": _health_sensor("Turn latency p95", "turn_latency_ms.p95", "ms", expire, **ms),
        "turn_p99": _health_sensor("Turn latency p99", "turn_latency_ms.p99", "ms", expire, **ms),
        "input_jitter": _health_sensor("Input jitter", "input_jitter_ms", "ms", expire, **ms),
        "playback_jitter": _health_sensor(
            "Playback jitter", "playback_jitter_ms", "ms", expire, **ms
        ),
        "engine_step": _health_sensor("Engine step", "engine_step_ms.p50", "ms", expire, **ms),
        "overflows": _health_sensor(
            "Capture overflows", "overflows", None, expire, state_class="total_increasing"
        ),
        "underruns": _health_sensor(
            "Playback underruns", "underruns", None, expire, state_class="total_increasing"
        ),
        "replies_broken": _health_sensor(
            "Replies that broke up", "replies_broken", None, expire,
            state_class="total_increasing",
        ),
        "audio_integrity_failures": _health_sensor(
            "Audio integrity failures", "audio_fixed.integrity_failures", None, expire,
            state_class="total_increasing", icon="mdi:waveform",
            json_attributes_topic="~/health",
            json_attributes_template="{{ value_json.audio_fixed.integrity_failures_by_detector | tojson }}",
        ),
        "voice_distance": _health_sensor(
            "Voice distance", "audio_fixed.voice_distance_db", "dB", expire,
            icon="mdi:account-voice", json_attributes_topic="~/health",
            json_attributes_template="{{ {'drifts': value_json.audio_fixed.voice_drifts} | tojson }}",
        ),
        "replies_blocked": _health_sensor(
            "Replies blocked", "replies_blocked", None, expire,
            state_class="total_increasing", icon="mdi:shield-alert",
            json_attributes_topic="~/health",
            json_attributes_template="{{ value_json.replies_blocked_by_rule | tojson }}",
        ),
        "start_delay": _health_sensor(
            "Reply start delay p50", "reply_start_delay_ms.p50", "ms", expire, **ms
        ),
        "generation_rtf": _health_sensor(
            "Engine real-time factor", "generation_rtf.p50", None, expire,
            state_class="measurement", icon="mdi:speedometer",
        ),
        "cpu": _health_sensor("CPU", "cpu_percent", "%", expire, icon="mdi:cpu-64-bit"),
        "memory": _health_sensor(
            "Memory", "memory_mb", "MB", expire, device_class="data_size", icon="mdi:memory"
        ),
        "echo_return_loss": _health_sensor(
            "Echo return loss", "echo_return_loss_db", "dB", expire, icon="mdi:speaker-wireless"
        ),
        "echo_return_loss_enhancement": _health_sensor(
            "Echo cancelled", "echo_return_loss_enhancement_db", "dB", expire,
            icon="mdi:speaker-off",
        ),
        "noise_level": _health_sensor(
            "Noise level", "noise_level_dbfs", "dBFS", expire, icon="mdi:waveform"
        ),
        "speech_level": _health_sensor(
            "Speech level", "speech_level_dbfs", "dBFS", expire, icon="mdi:account-voice"
        ),
        "uptime": _health_sensor("Uptime", "uptime_s", "s", expire, device_class="duration"),
        "mqtt_outbox": _health_sensor("MQTT outbox", "queues.mqtt_outbox", None, expire,
                                      state_class="measurement"),
        "playback_queue": _health_sensor("Playback queue", "queues.playback_seconds", "s",
                                         expire, device_class="duration"),
        "model": _health_sensor("Model", "model", None, expire, icon="mdi:brain"),
        "mqtt_dropped": _health_sensor(
            "MQTT messages dropped", "mqtt_dropped", None, expire, state_class="total_increasing"
        ),
        "latency_alert": {
            "platform": "binary_sensor", "name": "Latency alert", "device_class": "problem",
            "state_topic": "~/health", "entity_category": "diagnostic",
            "value_template": "{{ 'ON' if value_json.alerts.latency else 'OFF' }}",
            "expire_after": expire,
        },
        "audio_alert": {
            "platform": "binary_sensor", "name": "Audio integrity alert",
            "device_class": "problem", "state_topic": "~/health",
            "entity_category": "diagnostic",
            "value_template": "{{ 'ON' if value_json.alerts.audio else 'OFF' }}",
            "expire_after": expire,
        },
        "jitter_alert": {
            "platform": "binary_sensor", "name": "Jitter alert", "device_class": "problem",
            "state_topic": "~/health", "entity_category": "diagnostic",
            "value_template": "{{ 'ON' if value_json.alerts.jitter else 'OFF' }}",
            "expire_after": expire,
        },
    }  # fmt: skip
    for key, component in components.items():
        component["unique_id"] = f"{topics.device_id}_{key}"
        component["~"] = topics.base  # per component: the device schema has no shared `~`
    return {
        "dev": {
            "ids": [topics.device_id],
            "name": settings.satellite.name,
            "mf": "LFM Satellite",
            "mdl": model,
            "sw": __version__,
            **({"sa": settings.satellite.area} if settings.satellite.area else {}),
        },
        "o": {"name": "lfm-satellite", "sw": __version__, "url": ORIGIN_URL},
        "cmps": components,
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
    }
