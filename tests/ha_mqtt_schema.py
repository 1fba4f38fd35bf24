"""Check an MQTT *device-based* discovery message against Home Assistant's schema.

Home Assistant is not installed here, so the parts of its schema that our payload
relies on are transcribed below as plain data and checked field by field.
``validate_device_discovery`` returns human-readable problems (empty list = valid).

Transcribed (in our own words, no code copied) as of Home Assistant 2025.10-2025.12:

* Docs https://www.home-assistant.io/integrations/mqtt/ ("Device discovery payload",
  "Discovery topic", "Using abbreviations and base topic", the abbreviation tables)
  and the platform pages sensor.mqtt, binary_sensor.mqtt, switch.mqtt, number.mqtt,
  select.mqtt, button.mqtt, event.mqtt, text.mqtt.
* HA core homeassistant/components/mqtt/:
  abbreviations.py (ABBREVIATIONS, DEVICE_ABBREVIATIONS, ORIGIN_ABBREVIATIONS: subset),
  discovery.py (topic regex, abbreviation expansion, shared-option merge, ``~``),
  schemas.py (SHARED_OPTIONS, DEVICE_DISCOVERY_SCHEMA, device/origin/availability
  schemas, unique_id required for entity platforms), config.py (MQTT_RO/RW_SCHEMA),
  sensor.py, binary_sensor.py, switch.py, number.py, select.py, button.py, event.py,
  text.py (_PLATFORM_SCHEMA_BASE of each), const.py (SUPPORTED_COMPONENTS).
* Device classes: homeassistant/components/{sensor,binary_sensor,button,switch,event,
  number}/const.py or __init__.py (SensorDeviceClass, BinarySensorDeviceClass, ...).

Deliberately stricter than HA: HA silently drops unknown options of a component
(``extra=REMOVE_EXTRA``); we report them, since they are usually typos.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

# abbreviations.py ABBREVIATIONS, the subset used by the platforms checked below.
ABBREVIATIONS: Final[dict[str, str]] = {
    "avty": "availability", "avty_mode": "availability_mode",
    "avty_t": "availability_topic", "avty_tpl": "availability_template",
    "cmd_t": "command_topic", "cmd_tpl": "command_template", "cmps": "components",
    "def_ent_id": "default_entity_id", "dev": "device", "dev_cla": "device_class",
    "e": "encoding", "en": "enabled_by_default", "ent_cat": "entity_category",
    "ent_pic": "entity_picture", "evt_typ": "event_types", "exp_aft": "expire_after",
    "frc_upd": "force_update", "ic": "icon", "json_attr_t": "json_attributes_topic",
    "json_attr_tpl": "json_attributes_template", "lrst_val_tpl": "last_reset_value_template",
    "max": "max", "min": "min", "mode": "mode", "name": "name", "o": "origin",
    "obj_id": "object_id", "off_dly": "off_delay", "ops": "options", "opt": "optimistic",
    "p": "platform", "pl_avail": "payload_available", "pl_not_avail": "payload_not_available",
    "pl_off": "payload_off", "pl_on": "payload_on", "pl_prs": "payload_press",
    "pl_rst": "payload_reset", "ptrn": "pattern", "ret": "retain", "stat_cla": "state_class",
    "stat_off": "state_off", "stat_on": "state_on", "stat_t": "state_topic", "step": "step",
    "sug_dsp_prc": "suggested_display_precision", "t": "topic", "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement", "val_tpl": "value_template",
    "migr_discvry": "migrate_discovery",
}  # fmt: skip
DEVICE_ABBREVIATIONS: Final[dict[str, str]] = {
    "cns": "connections", "cu": "configuration_url", "ids": "identifiers", "name": "name",
    "mf": "manufacturer", "mdl": "model", "mdl_id": "model_id", "hw": "hw_version",
    "sw": "sw_version", "sa": "suggested_area", "sn": "serial_number",
}  # fmt: skip
ORIGIN_ABBREVIATIONS: Final[dict[str, str]] = {
    "name": "name", "sw": "sw_version", "url": "support_url",
}  # fmt: skip

DEVICE_OPTIONS: Final = frozenset({*DEVICE_ABBREVIATIONS.values(), "via_device"})
ORIGIN_OPTIONS: Final = frozenset(ORIGIN_ABBREVIATIONS.values())
# schemas.py SHARED_OPTIONS: top-level options merged into every component lacking them.
SHARED_OPTIONS: Final = frozenset({
    "availability", "availability_mode", "availability_template", "availability_topic",
    "command_topic", "encoding", "payload_available", "payload_not_available",
    "state_topic", "qos",
})  # fmt: skip
TOP_LEVEL_OPTIONS: Final = SHARED_OPTIONS | {"device", "origin", "components", "migrate_discovery"}

# const.py SUPPORTED_COMPONENTS; all but device_automation and tag are entity platforms.
SUPPORTED_PLATFORMS: Final = frozenset({
    "alarm_control_panel", "binary_sensor", "button", "camera", "climate", "cover",
    "date", "datetime", "device_automation", "device_tracker", "event", "fan",
    "humidifier", "image", "lawn_mower", "light", "lock", "notify", "number", "scene",
    "select", "sensor", "siren", "switch", "tag", "text", "time", "update", "vacuum",
    "valve", "water_heater",
})  # fmt: skip
NON_ENTITY_PLATFORMS: Final = frozenset({"device_automation", "tag"})

# schemas.py MQTT_ENTITY_COMMON_SCHEMA + availability + config.py MQTT_BASE_SCHEMA.
COMMON_OPTIONS: Final = frozenset({
    "platform", "~", "name", "unique_id", "object_id", "default_entity_id", "icon",
    "entity_category", "entity_picture", "enabled_by_default", "availability",
    "availability_mode", "availability_template", "availability_topic",
    "payload_available", "payload_not_available", "json_attributes_topic",
    "json_attributes_template", "qos", "encoding",
})  # fmt: skip
_RO: Final = frozenset({"state_topic", "value_template"})  # config.py MQTT_RO_SCHEMA
_RW: Final = frozenset({"command_topic", "optimistic", "retain", "state_topic"})
PLATFORM_OPTIONS: Final[dict[str, frozenset[str]]] = {
    "sensor": _RO | {"device_class", "expire_after", "force_update", "options",
                     "last_reset_value_template", "suggested_display_precision",
                     "state_class", "unit_of_measurement"},
    "binary_sensor": _RO | {"device_class", "expire_after", "force_update", "off_delay",
                            "payload_off", "payload_on"},
    "switch": _RW | {"command_template", "payload_off", "payload_on", "state_off",
                     "state_on", "value_template", "device_class"},
    "number": _RW | {"command_template", "device_class", "max", "min", "mode",
                     "payload_reset", "step", "unit_of_measurement", "value_template"},
    "select": _RW | {"command_template", "options", "value_template"},
    "button": frozenset({"command_template", "command_topic", "device_class",
                         "payload_press", "retain"}),
    "event": _RO | {"device_class", "event_types"},
    "text": _RW | {"command_template", "max", "min", "mode", "pattern", "value_template"},
}  # fmt: skip
REQUIRED_OPTIONS: Final[dict[str, tuple[str, ...]]] = {
    "sensor": ("state_topic",), "binary_sensor": ("state_topic",),
    "event": ("state_topic", "event_types"), "switch": ("command_topic",),
    "number": ("command_topic",), "select": ("command_topic", "options"),
    "button": ("command_topic",), "text": ("command_topic",),
}  # fmt: skip

# sensor/const.py SensorDeviceClass (2025.x; pm4 / reactive_energy are the newest).
SENSOR_DEVICE_CLASSES: Final = frozenset({
    "absolute_humidity", "apparent_power", "aqi", "area", "atmospheric_pressure",
    "battery", "blood_glucose_concentration", "carbon_dioxide", "carbon_monoxide",
    "conductivity", "current", "data_rate", "data_size", "date", "distance", "duration",
    "energy", "energy_distance", "energy_storage", "enum", "frequency", "gas",
    "humidity", "illuminance", "irradiance", "moisture", "monetary", "nitrogen_dioxide",
    "nitrogen_monoxide", "nitrous_oxide", "ozone", "ph", "pm1", "pm10", "pm25", "pm4",
    "power", "power_factor", "precipitation", "precipitation_intensity", "pressure",
    "reactive_energy", "reactive_power", "signal_strength", "sound_pressure", "speed",
    "sulphur_dioxide", "temperature", "timestamp", "volatile_organic_compounds",
    "volatile_organic_compounds_parts", "voltage", "volume", "volume_flow_rate",
    "volume_storage", "water", "weight", "wind_direction", "wind_speed",
})  # fmt: skip
# number/const.py NumberDeviceClass: the numeric sensor classes (approximation).
NUMBER_DEVICE_CLASSES: Final = SENSOR_DEVICE_CLASSES - {"date", "enum", "timestamp"}
BINARY_SENSOR_DEVICE_CLASSES: Final = frozenset({
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving",
    "occupancy", "opening", "plug", "power", "presence", "problem", "running", "safety",
    "smoke", "sound", "tamper", "update", "vibration", "window",
})  # fmt: skip
DEVICE_CLASSES: Final[dict[str, frozenset[str]]] = {
    "sensor": SENSOR_DEVICE_CLASSES,
    "binary_sensor": BINARY_SENSOR_DEVICE_CLASSES,
    "number": NUMBER_DEVICE_CLASSES,
    "button": frozenset({"identify", "restart", "update"}),
    "switch": frozenset({"outlet", "switch"}),
    "event": frozenset({"button", "doorbell", "motion"}),
}
STATE_CLASSES: Final = frozenset({"measurement", "measurement_angle", "total", "total_increasing"})
# sensor DEVICE_CLASS_UNITS[duration] = UnitOfTime d/h/min/s/ms/µs; HA spells µs with
# Greek mu (U+03BC); the micro sign (U+00B5) is accepted too.
DURATION_UNITS: Final = frozenset({"d", "h", "min", "s", "ms", "\u03bcs", "\u00b5s"})
ENTITY_CATEGORIES: Final = frozenset({"config", "diagnostic"})
AVAILABILITY_MODES: Final = frozenset({"all", "any", "latest"})
_ID_RE: Final = re.compile(r"[a-zA-Z0-9_-]+")
_BOOL_OPTIONS: Final = ("enabled_by_default", "force_update", "optimistic", "retain")
_UINT_OPTIONS: Final = ("expire_after", "off_delay", "suggested_display_precision")


def _expand(
    where: str, raw: Mapping[str, Any], table: Mapping[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """Replace abbreviated keys by full names, reporting a key given twice."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        full = table.get(key, key)
        if full in out:
            problems.append(f"{where}: option {full!r} given twice (as {key!r} too)")
        out[full] = value
    return out, problems


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_topic(where: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, str) or not value:
        return [f"{where}: {key} must be a non-empty string, got {value!r}"]
    if "\0" in value:
        return [f"{where}: {key} contains a NUL character"]
    if "+" in value or "#" in value:
        return [f"{where}: {key} {value!r} contains an MQTT wildcard ('+' or '#')"]
    return []


def _str_list(where: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        return [f"{where}: {key} must be a non-empty list of non-empty strings, got {value!r}"]
    if len(set(value)) != len(value):
        return [f"{where}: {key} has duplicate entries"]
    return []


def _check_availability(where: str, cfg: Mapping[str, Any]) -> list[str]:
    """schemas.py availability: a single topic or a list, not both."""
    problems: list[str] = []
    if "availability" in cfg and "availability_topic" in cfg:
        problems.append(f"{where}: availability and availability_topic are mutually exclusive")
    if "availability_topic" in cfg:
        problems += _check_topic(where, "availability_topic", cfg["availability_topic"])
    mode = cfg.get("availability_mode", "latest")
    if mode not in AVAILABILITY_MODES:
        problems.append(f"{where}: availability_mode {mode!r} not in {sorted(AVAILABILITY_MODES)}")
    for key in ("payload_available", "payload_not_available"):
        if key in cfg and not isinstance(cfg[key], str):
            problems.append(f"{where}: {key} must be a string, got {cfg[key]!r}")
    if "availability" not in cfg:
        return problems
    entries = cfg["availability"]
    if not isinstance(entries, list) or not entries:
        return [*problems, f"{where}: availability must be a non-empty list"]
    allowed = {"topic", "payload_available", "payload_not_available", "value_template"}
    for i, raw in enumerate(entries):
        here = f"{where}.availability[{i}]"
        if not isinstance(raw, dict):
            problems.append(f"{here}: must be a mapping")
            continue
        entry, dup = _expand(here, raw, ABBREVIATIONS)
        problems += dup + [f"{here}: unknown option {k!r}" for k in entry if k not in allowed]
        problems += _check_topic(here, "topic", entry.get("topic"))
    return problems


def _check_device(raw: Any) -> list[str]:
    """schemas.py MQTT_ENTITY_DEVICE_INFO_SCHEMA (extra keys rejected)."""
    if not isinstance(raw, dict):
        return ["device: required mapping ('device'/'dev') missing or not a mapping"]
    dev, problems = _expand("device", raw, DEVICE_ABBREVIATIONS)
    problems += [f"device: unknown option {k!r}" for k in dev if k not in DEVICE_OPTIONS]
    ids = dev.get("identifiers", [])
    ids = [ids] if isinstance(ids, str) else ids
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        problems.append("device: identifiers must be a string or a list of strings")
    conns = dev.get("connections", [])
    if not isinstance(conns, list) or not all(
        isinstance(c, list) and len(c) == 2 and all(isinstance(x, str) for x in c) for c in conns
    ):
        problems.append("device: connections must be a list of [type, value] string pairs")
    if not ids and not conns:
        problems.append("device: needs at least one of identifiers / connections")
    for key in DEVICE_OPTIONS - {"identifiers", "connections"}:
        if key in dev and not isinstance(dev[key], str):
            problems.append(f"device: {key} must be a string, got {dev[key]!r}")
    return problems


def _check_origin(raw: Any) -> list[str]:
    """schemas.py MQTT_ORIGIN_INFO_SCHEMA: name required (extra keys rejected)."""
    if not isinstance(raw, dict):
        return ["origin: required mapping ('origin'/'o') missing or not a mapping"]
    origin, problems = _expand("origin", raw, ORIGIN_ABBREVIATIONS)
    problems += [f"origin: unknown option {k!r}" for k in origin if k not in ORIGIN_OPTIONS]
    if not isinstance(origin.get("name"), str) or not origin["name"]:
        problems.append("origin: name is required and must be a non-empty string")
    for key in ("sw_version", "support_url"):
        if key in origin and not isinstance(origin[key], str):
            problems.append(f"origin: {key} must be a string")
    return problems


def _splice(base: str, topic: Any) -> Any:
    """discovery.py: a topic starting or ending with '~' gets the '~' value spliced in."""
    if isinstance(topic, str) and topic.startswith("~"):
        topic = base + topic[1:]
    if isinstance(topic, str) and topic.endswith("~"):
        topic = topic[:-1] + base
    return topic


def _expand_base(cfg: dict[str, Any]) -> None:
    """Apply a component's '~' to its *_topic options and availability topics."""
    base = cfg.pop("~", None)
    if not isinstance(base, str):
        return
    for key in [k for k in cfg if k.endswith("topic")]:
        cfg[key] = _splice(base, cfg[key])
    for entry in cfg.get("availability") or []:
        if isinstance(entry, dict) and "topic" in entry:
            entry["topic"] = _splice(base, entry["topic"])


def _check_values(where: str, platform: str, cfg: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    if "entity_category" in cfg and cfg["entity_category"] not in ENTITY_CATEGORIES:
        problems.append(
            f"{where}: entity_category {cfg['entity_category']!r} not in {sorted(ENTITY_CATEGORIES)}"
        )
    qos = cfg.get("qos", 0)
    if isinstance(qos, bool) or qos not in (0, 1, 2):
        problems.append(f"{where}: qos must be 0, 1 or 2, got {qos!r}")
    problems += [
        f"{where}: {k} must be a boolean"
        for k in _BOOL_OPTIONS
        if k in cfg and not isinstance(cfg[k], bool)
    ]
    problems += [
        f"{where}: {k} must be a non-negative integer"
        for k in _UINT_OPTIONS
        if k in cfg and (isinstance(cfg[k], bool) or not isinstance(cfg[k], int) or cfg[k] < 0)
    ]
    if "name" in cfg and cfg["name"] is not None and not isinstance(cfg["name"], str):
        problems.append(f"{where}: name must be a string or null")
    for key in [k for k in cfg if k.endswith("topic")]:
        problems += _check_topic(where, key, cfg[key])
    dev_class = cfg.get("device_class")
    if (
        dev_class is not None
        and platform in DEVICE_CLASSES
        and dev_class not in DEVICE_CLASSES[platform]
    ):
        problems.append(
            f"{where}: {platform} device_class {dev_class!r} is not one Home Assistant knows"
        )
    if platform == "sensor":
        problems += _check_sensor(where, cfg)
    elif platform == "number":
        lo, hi, step = cfg.get("min", 1.0), cfg.get("max", 100.0), cfg.get("step", 1.0)
        if not (_is_num(lo) and _is_num(hi) and lo < hi):
            problems.append(f"{where}: number needs numeric min < max, got min={lo!r} max={hi!r}")
        if not _is_num(step) or step < 0.001:
            problems.append(f"{where}: number step must be a number >= 0.001, got {step!r}")
        if cfg.get("mode", "auto") not in ("auto", "box", "slider"):
            problems.append(f"{where}: number mode {cfg['mode']!r} not in auto/box/slider")
    elif platform == "select" and "options" in cfg:
        problems += _str_list(where, "options", cfg["options"])
    elif platform == "event" and "event_types" in cfg:
        problems += _str_list(where, "event_types", cfg["event_types"])
    elif platform == "text":
        lo, hi = cfg.get("min", 0), cfg.get("max", 255)
        if (
            not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (lo, hi))
            or not lo < hi <= 255
        ):
            problems.append(
                f"{where}: text needs integers 0 <= min < max <= 255, got min={lo!r} max={hi!r}"
            )
        if cfg.get("mode", "text") not in ("text", "password"):
            problems.append(f"{where}: text mode {cfg['mode']!r} not in text/password")
    return problems


def _check_sensor(where: str, cfg: Mapping[str, Any]) -> list[str]:
    """sensor.py validate_sensor_state_and_device_class_config, plus duration units."""
    problems: list[str] = []
    state_class, unit = cfg.get("state_class"), cfg.get("unit_of_measurement")
    if state_class is not None and state_class not in STATE_CLASSES:
        problems.append(f"{where}: state_class {state_class!r} not in {sorted(STATE_CLASSES)}")
    if cfg.get("device_class") == "duration" and unit not in DURATION_UNITS:
        problems.append(
            f"{where}: a duration sensor needs unit_of_measurement in d/h/min/s/ms/µs, got {unit!r}"
        )
    if "last_reset_value_template" in cfg and state_class != "total":
        problems.append(f"{where}: last_reset_value_template needs state_class 'total'")
    if "options" in cfg:
        problems += _str_list(where, "options", cfg["options"])
        if cfg.get("device_class") != "enum" or state_class or unit:
            problems.append(f"{where}: options needs device_class 'enum' and no state_class/unit")
    return problems


def _check_component(cid: str, raw: Any, shared: Mapping[str, Any]) -> tuple[list[str], Any]:
    """Check one entry of 'components'; returns (problems, its unique_id)."""
    where = f"components[{cid!r}]"
    if not isinstance(raw, dict):
        return [f"{where}: must be a mapping"], None
    cfg, problems = _expand(where, raw, ABBREVIATIONS)
    platform = cfg.get("platform")
    if not isinstance(platform, str) or platform not in SUPPORTED_PLATFORMS:
        return [*problems, f"{where}: platform ('p') {platform!r} is not an MQTT platform"], None
    if len(cfg) == 1:  # only 'platform': HA treats this as removal of the component.
        return problems, None
    for key in ("device", "origin"):
        if key in cfg:
            problems.append(f"{where}: {key} can only be given once, at the top level")
    for key in SHARED_OPTIONS & shared.keys() - cfg.keys():
        cfg[key] = shared[key]
    _expand_base(cfg)
    if platform not in NON_ENTITY_PLATFORMS and not (
        isinstance(cfg.get("unique_id"), str) and cfg["unique_id"]
    ):
        problems.append(f"{where}: unique_id ('uniq_id') is required for entity platforms")
    if platform not in PLATFORM_OPTIONS:
        return [*problems, f"{where}: platform {platform!r} is not covered by this validator"], None
    known = COMMON_OPTIONS | PLATFORM_OPTIONS[platform]
    problems += [
        f"{where}: {k!r} is not a known {platform} option"
        for k in raw
        if ABBREVIATIONS.get(k, k) not in known
    ]
    problems += [
        f"{where}: {platform} requires {k!r}" for k in REQUIRED_OPTIONS[platform] if k not in cfg
    ]
    problems += _check_availability(where, cfg) + _check_values(where, platform, cfg)
    return problems, cfg.get("unique_id")


def validate_device_discovery(
    topic: str, payload: dict[str, Any], discovery_prefix: str = "homeassistant"
) -> list[str]:
    """Return the problems Home Assistant (2024.11+) would have with this device discovery message."""
    problems: list[str] = []
    parts = topic.split("/")
    pre = discovery_prefix.split("/")
    ids = parts[len(pre) + 1 : -1]
    if (
        parts[: len(pre)] != pre
        or parts[len(pre) : len(pre) + 1] != ["device"]
        or parts[-1] != "config"
    ):
        problems.append(
            f"topic {topic!r} is not '{discovery_prefix}/device/[<node_id>/]<object_id>/config'"
        )
    elif len(ids) not in (1, 2) or not all(_ID_RE.fullmatch(i) for i in ids):
        problems.append(f"topic {topic!r}: node_id/object_id must match [a-zA-Z0-9_-]+")
    if not isinstance(payload, dict):
        return [*problems, "payload must be a JSON object"]
    top, problems_dup = _expand("payload", payload, ABBREVIATIONS)
    problems += problems_dup
    for key in top.keys() - TOP_LEVEL_OPTIONS:
        why = " (HA's device schema rejects it; put '~' in each component)" if key == "~" else ""
        problems.append(f"payload: unknown top-level option {key!r}{why}")
    problems += _check_device(top.get("device")) + _check_origin(top.get("origin"))
    problems += _check_availability("payload", top)
    if "qos" in top and (isinstance(top["qos"], bool) or top["qos"] not in (0, 1, 2)):
        problems.append(f"payload: qos must be 0, 1 or 2, got {top['qos']!r}")
    components = top.get("components")
    if not isinstance(components, dict) or not components:
        return [*problems, "payload: 'components' ('cmps') must be a non-empty mapping"]
    seen: dict[Any, str] = {}
    for cid, comp in components.items():
        comp_problems, uid = _check_component(cid, comp, top)
        problems += comp_problems
        if uid is not None and uid in seen:
            problems.append(f"components[{cid!r}]: unique_id {uid!r} already used by {seen[uid]!r}")
        elif uid is not None:
            seen[uid] = cid
    return problems


if __name__ == "__main__":
    import copy

    good: dict[str, Any] = {
        "dev": {"ids": ["sat-1"], "name": "Satellite", "mf": "LFM", "mdl": "sat", "sw": "0.1"},
        "o": {"name": "lfm-satellite", "sw": "0.1", "url": "https://example.org"},
        "avty_t": "lfm/sat-1/availability",
        "cmps": {
            "uptime": {"p": "sensor", "uniq_id": "sat-1-uptime", "~": "lfm/sat-1", "stat_t": "~/uptime",
                       "dev_cla": "duration", "unit_of_meas": "s", "stat_cla": "total_increasing",
                       "ent_cat": "diagnostic"},
            "busy": {"p": "binary_sensor", "uniq_id": "sat-1-busy", "stat_t": "lfm/sat-1/busy",
                     "dev_cla": "running"},
            "mute": {"p": "switch", "uniq_id": "sat-1-mute", "cmd_t": "lfm/sat-1/mute/set",
                     "stat_t": "lfm/sat-1/mute", "dev_cla": "switch"},
            "volume": {"p": "number", "uniq_id": "sat-1-vol", "cmd_t": "lfm/sat-1/vol/set",
                       "min": 0, "max": 100, "step": 5, "mode": "slider"},
            "voice": {"p": "select", "uniq_id": "sat-1-voice", "cmd_t": "lfm/sat-1/voice/set",
                      "ops": ["a", "b"]},
            "restart": {"p": "button", "uniq_id": "sat-1-restart", "cmd_t": "lfm/sat-1/restart",
                        "dev_cla": "restart"},
            "wake": {"p": "event", "uniq_id": "sat-1-wake", "stat_t": "lfm/sat-1/wake",
                     "evt_typ": ["detected"], "dev_cla": "button"},
            "say": {"p": "text", "uniq_id": "sat-1-say", "cmd_t": "lfm/sat-1/say"},
        },
    }  # fmt: skip
    topic_ok = "homeassistant/device/sat-1/config"
    found = validate_device_discovery(topic_ok, good)
    assert found == [], found

    def broken(path: tuple[str, ...], value: Any) -> dict[str, Any]:
        bad = copy.deepcopy(good)
        node = bad
        for key in path[:-1]:
            node = node[key]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return bad

    cases: list[tuple[str, dict[str, Any], str]] = [
        ("no ids", broken(("dev", "ids"), KeyError), "identifiers / connections"),
        ("no origin name", broken(("o", "name"), KeyError), "origin: name"),
        ("bad platform", broken(("cmps", "busy", "p"), "bogus"), "not an MQTT platform"),
        ("no uniq_id", broken(("cmps", "busy", "uniq_id"), KeyError), "unique_id"),
        ("unknown key", broken(("cmps", "busy", "colour"), 1), "'colour' is not a known"),
        ("duration unit", broken(("cmps", "uptime", "unit_of_meas"), "sec"), "duration sensor"),
        ("sensor class", broken(("cmps", "uptime", "dev_cla"), "uptime"), "device_class"),
        ("state class", broken(("cmps", "uptime", "stat_cla"), "sum"), "state_class"),
        ("bs class", broken(("cmps", "busy", "dev_cla"), "busy"), "device_class"),
        ("entity cat", broken(("cmps", "busy", "ent_cat"), "system"), "entity_category"),
        ("min >= max", broken(("cmps", "volume", "min"), 100), "min < max"),
        ("step 0", broken(("cmps", "volume", "step"), 0), "step"),
        ("mode", broken(("cmps", "volume", "mode"), "dial"), "mode"),
        ("empty options", broken(("cmps", "voice", "ops"), []), "options"),
        ("no options", broken(("cmps", "voice", "ops"), KeyError), "requires 'options'"),
        ("event types", broken(("cmps", "wake", "evt_typ"), "x"), "event_types"),
        ("event class", broken(("cmps", "wake", "dev_cla"), "press"), "device_class"),
        ("button class", broken(("cmps", "restart", "dev_cla"), "reboot"), "device_class"),
        ("switch class", broken(("cmps", "mute", "dev_cla"), "light"), "device_class"),
        ("no cmd_t", broken(("cmps", "say", "cmd_t"), KeyError), "requires 'command_topic'"),
        ("wildcard", broken(("cmps", "mute", "cmd_t"), "lfm/+/set"), "wildcard"),
        ("qos", broken(("qos",), 3), "qos"),
        ("dup uniq_id", broken(("cmps", "mute", "uniq_id"), "sat-1-busy"), "already used"),
        ("no state topic", broken(("cmps", "busy", "stat_t"), KeyError), "requires 'state_topic'"),
        ("'~' expanded", broken(("cmps", "uptime", "~"), "lfm/#"), "'lfm/#/uptime' contains"),
        ("'~' top level", broken(("~",), "lfm/sat-1"), "put '~' in each component"),
        ("device override", broken(("cmps", "busy", "dev"), {"ids": "x"}), "only be given once"),
    ]
    for label, payload, expected in cases:
        found = validate_device_discovery(topic_ok, payload)
        assert any(expected in p for p in found), (label, found)
        print(f"ok  {label:16} -> {found[0]}")
    shared_state = broken(("stat_t",), "~/busy")
    del shared_state["cmps"]["busy"]["stat_t"]
    shared_state["cmps"]["busy"]["~"] = "lfm/sat-1"
    assert validate_device_discovery(topic_ok, shared_state) == [], "shared state_topic + '~'"
    assert validate_device_discovery("homeassistant/sensor/sat-1/config", good), "component topic"
    assert validate_device_discovery("homeassistant/device/sat 1/config", good), "bad object_id"
    print("self-check passed")
