"""The Home Assistant add-on's run script (`python -m satellite.addon`), standard library plus
this package only (nothing from Home Assistant):

1. read the add-on options (`/data/options.json`) and check each against `OPTION_SCHEMA`
   (the same schema as the add-on's `config.yaml`; a test keeps them equal),
2. take the MQTT broker from the Supervisor's services API (`GET /services/mqtt`) unless the
   options name one,
3. write the daemon's config (`/data/config.yaml`, models kept in `/data/models`) and check it
   with the config loader that `lfm-satellite check-config` uses,
4. fetch the model when it is not in `/data/models` yet, start `lfm-satellite run`,
5. once a Wyoming server answers `describe`, announce its URI through the Supervisor's
   discovery API (`POST /discovery`, service `wyoming`), so Home Assistant offers to add it.

An invalid option is one log line naming the option and what is wrong, then exit 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info

from satellite.config import ConfigError, load_config
from satellite.errors import UserError
from satellite.logs import setup_logging
from satellite.settings import VOICE_NAMES

_LOG = logging.getLogger("satellite.addon")

SATELLITE_PORT = 10700
SERVICES_PORT = 10701
DESCRIBE_TIMEOUT = 5.0
"""Seconds a server has to answer `describe` with `info` (Home Assistant waits as long)."""
ANNOUNCE_WITHIN = 1800.0
"""Seconds to wait for the servers to answer at all (a first model load can take minutes)."""

OPTION_SCHEMA: dict[str, str] = {
    "name": "str(1,64)",
    "area": "str?",
    "mode": "list(local|ha)",
    "wake_word": "list(okay_nabu|hey_jarvis|alexa|hey_mycroft)",
    "wake_sensitivity": "float(0,1)",
    "model": "str",
    "model_variant": "list(q4|fp16|fp32)",
    "voice": f"list({'|'.join(VOICE_NAMES)})",
    "threads": "int(0,64)",
    "input_device": "str?",
    "output_device": "str?",
    "volume": "float(0,1)",
    "barge_in": "bool",
    "barge_in_by_voice": "bool",
    "echo_cancellation": "bool",
    "noise_suppression": "int(0,4)",
    "auto_gain": "int(0,31)",
    "max_reply_seconds": "int(1,600)",
    "wyoming_services": "bool",
    "mqtt": "bool",
    "mqtt_host": "str?",
    "mqtt_port": "port?",
    "mqtt_username": "str?",
    "mqtt_password": "password?",
    "log_level": "list(debug|info|warning|error)",
}
"""Option -> Supervisor schema type (see the add-on's config.yaml)."""

DEFAULT_OPTIONS: dict[str, Any] = {
    "name": "LFM Satellite",
    "mode": "local",
    "wake_word": "okay_nabu",
    "wake_sensitivity": 0.5,
    "model": "LiquidAI/LFM2.5-Audio-1.5B-ONNX",
    "model_variant": "q4",
    "voice": "us_female",
    "threads": 0,
    "volume": 1.0,
    "barge_in": True,
    "barge_in_by_voice": False,
    "echo_cancellation": True,
    "noise_suppression": 2,
    "auto_gain": 0,
    "max_reply_seconds": 30,
    "wyoming_services": True,
    "mqtt": True,
    "log_level": "info",
}
"""The add-on's default options (config.yaml `options`); optional ones (`?`) are absent."""

_TYPE = re.compile(
    r"^(?P<kind>str|password|int|float|bool|port|list)"
    r"(?:\((?P<args>[^)]*)\))?(?P<optional>\?)?$"
)


class AddonError(UserError):
    """The add-on cannot start; the message names the option or the service and the fix."""

    exit_code = 1


@dataclass(frozen=True)
class MqttService:
    """The broker the Supervisor's services API names (the Mosquitto add-on)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    ssl: bool = False


def check_option(key: str, value: Any, typ: str) -> Any:
    """`value` checked against Supervisor schema type `typ`; AddonError names `key`."""
    match = _TYPE.match(typ)
    if match is None:
        raise AddonError(f"options: {key}: unknown schema type {typ!r}")
    kind, args = match.group("kind"), match.group("args")
    low, high = ([*args.split(","), ""])[:2] if args and kind != "list" else ("", "")
    if kind in ("str", "password"):
        if not isinstance(value, str):
            raise AddonError(f"options: {key}: expected text, got {value!r}")
        if low and len(value) < int(low):
            raise AddonError(f"options: {key}: must not be empty" if low == "1" else
                             f"options: {key}: at least {low} characters")  # fmt: skip
        if high and len(value) > int(high):
            raise AddonError(f"options: {key}: at most {high} characters, got {len(value)}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise AddonError(f"options: {key}: expected true or false, got {value!r}")
        return value
    if kind == "list":
        choices = (args or "").split("|")
        if value not in choices:
            raise AddonError(f"options: {key}: {value!r} is not one of {', '.join(choices)}")
        return value
    number_type = float if kind == "float" else int
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AddonError(f"options: {key}: expected a number, got {value!r}")
    if number_type is int and value != int(value):
        raise AddonError(f"options: {key}: expected a whole number, got {value!r}")
    if kind == "port":
        low, high = "1", "65535"
    if (low and value < float(low)) or (high and value > float(high)):
        raise AddonError(
            f"options: {key}: {value!r} is out of range; expected {low or '...'} to {high or '...'}"
        )
    return number_type(value)


def check_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Every option checked; unknown ones are logged and dropped (as the Supervisor does),
    missing required ones are an error; optional ones may be absent or empty."""
    options: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in OPTION_SCHEMA:
            _LOG.warning("options: %s: unknown option, ignored", key)
            continue
        typ = OPTION_SCHEMA[key]
        if value is None or (typ.endswith("?") and value == ""):
            continue
        options[key] = check_option(key, value, typ)
    for key, typ in OPTION_SCHEMA.items():
        if key not in options and not typ.endswith("?"):
            raise AddonError(
                f"options: {key}: missing (the add-on's default is {DEFAULT_OPTIONS[key]!r})"
            )
    if ("mqtt_password" in options or "mqtt_port" in options) and "mqtt_host" not in options:
        raise AddonError("options: mqtt_host: needed with mqtt_port/mqtt_password (or leave "
                         "all three empty to use the Mosquitto add-on)")  # fmt: skip
    if options["barge_in_by_voice"]:
        for needed in ("barge_in", "echo_cancellation"):
            if not options[needed]:
                raise AddonError(f"options: barge_in_by_voice: needs {needed}: true (the user "
                                 "is told from the satellite's own voice through the echo "
                                 "canceller)")  # fmt: skip
    return options


def translate(
    options: Mapping[str, Any], mqtt: MqttService | None, data_dir: Path
) -> dict[str, Any]:
    """The daemon's config (as a mapping for YAML) from checked options and the broker."""
    o = options
    config: dict[str, Any] = {
        "satellite": {"name": o["name"], "mode": o["mode"]},
        "audio": {
            "backend": "sounddevice",
            "volume": o["volume"],
            "barge_in": "voice" if o["barge_in_by_voice"] else o["barge_in"],
            "echo_cancellation": o["echo_cancellation"],
            "noise_suppression": o["noise_suppression"],
            "auto_gain": o["auto_gain"],
        },
        "wake": {"model": o["wake_word"], "sensitivity": o["wake_sensitivity"]},
        "model": {
            "name": o["model"],
            "variant": o["model_variant"],
            "models_dir": str(data_dir / "models"),
            "threads": o["threads"],
            "voice": o["voice"],
        },
        "wyoming": {
            "satellite_host": "0.0.0.0",
            "satellite_port": SATELLITE_PORT,
            "services_enabled": o["wyoming_services"],
            "services_host": "0.0.0.0",
            "services_port": SERVICES_PORT,
            "zeroconf": False,  # the Supervisor's discovery announces the servers instead
        },
        "safety": {"max_reply_seconds": o["max_reply_seconds"]},
        "logging": {"level": o["log_level"]},
    }
    if "area" in o:
        config["satellite"]["area"] = o["area"]
    for option, key in (("input_device", "input_device"), ("output_device", "output_device")):
        if option in o:
            config["audio"][key] = int(o[option]) if o[option].isdigit() else o[option]
    config["mqtt"] = _mqtt_section(o, mqtt)
    return config


def _mqtt_section(o: Mapping[str, Any], mqtt: MqttService | None) -> dict[str, Any]:
    if not o["mqtt"]:
        return {"enabled": False}
    if "mqtt_host" in o:
        section: dict[str, Any] = {"enabled": True, "host": o["mqtt_host"]}
        section["port"] = o.get("mqtt_port", 1883)
        if "mqtt_username" in o:
            section["username"] = o["mqtt_username"]
        if "mqtt_password" in o:
            section["password"] = o["mqtt_password"]
        return section
    if mqtt is None:
        _LOG.warning("MQTT: no broker (install the Mosquitto add-on, or set mqtt_host); "
                     "the satellite runs without MQTT")  # fmt: skip
        return {"enabled": False}
    section = {"enabled": True, "host": mqtt.host, "port": mqtt.port, "tls": mqtt.ssl}
    if mqtt.username:
        section["username"] = mqtt.username
    if mqtt.password:
        section["password"] = mqtt.password
    return section


# -- the Supervisor ---------------------------------------------------------------------------


class Supervisor:
    """The Supervisor's REST API (base URL `$SUPERVISOR_URL`, default `http://supervisor`;
    bearer `$SUPERVISOR_TOKEN`)."""

    def __init__(self, base_url: str, token: str | None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Supervisor:
        env = os.environ if environ is None else environ
        return cls(env.get("SUPERVISOR_URL", "http://supervisor"), env.get("SUPERVISOR_TOKEN"))

    def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            try:
                return err.code, json.loads(err.read() or b"{}")
            except ValueError:
                return err.code, {}
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise AddonError(f"Supervisor API {method} {path}: {reason}") from None

    def mqtt_service(self) -> MqttService | None:
        """The MQTT broker the Supervisor provides, or None (no Mosquitto add-on)."""
        if not self.token:
            _LOG.info("MQTT: no SUPERVISOR_TOKEN; not asking the Supervisor for a broker")
            return None
        status, reply = self._call("GET", "/services/mqtt")
        data = reply.get("data") if isinstance(reply, dict) else None
        if status != 200 or reply.get("result") != "ok" or not isinstance(data, dict):
            message = reply.get("message") if isinstance(reply, dict) else None
            _LOG.info("MQTT: the Supervisor has no broker to offer (%s)", message or status)
            return None
        try:
            service = MqttService(
                host=str(data["host"]),
                port=int(data["port"]),
                username=data.get("username") or None,
                password=data.get("password") or None,
                ssl=bool(data.get("ssl", False)),
            )
        except (KeyError, TypeError, ValueError):
            raise AddonError(f"Supervisor API /services/mqtt: unexpected answer {data!r}") from None
        _LOG.info("MQTT: broker %s:%d from the Supervisor", service.host, service.port)
        return service

    def discover(self, uri: str) -> str:
        """Announce a Wyoming server; returns the discovery's uuid."""
        status, reply = self._call("POST", "/discovery", {"service": "wyoming",
                                                          "config": {"uri": uri}})  # fmt: skip
        if status != 200 or not isinstance(reply, dict) or reply.get("result") != "ok":
            message = reply.get("message") if isinstance(reply, dict) else None
            raise AddonError(f"Supervisor API /discovery refused {uri}: {message or status}")
        return str((reply.get("data") or {}).get("uuid", ""))


async def answers_describe(host: str, port: int, timeout: float = DESCRIBE_TIMEOUT) -> bool:
    """Whether a Wyoming server at host:port answers `describe` with `info`."""

    try:
        async with asyncio.timeout(timeout), AsyncTcpClient(host, port) as client:
            await client.write_event(Describe().event())
            for _ in range(100):
                event = await client.read_event()
                if event is None:
                    return False
                if Info.is_type(event.type):
                    return True
    except (OSError, TimeoutError, ConnectionError):
        return False
    return False


async def announce(
    supervisor: Supervisor,
    servers: Sequence[tuple[str, int]],
    advertised_host: str,
    within: float = ANNOUNCE_WITHIN,
    poll: float = 2.0,
) -> list[str]:
    """Announce each (name, port) once it answers `describe` on 127.0.0.1; gives up on those
    that do not answer `within` seconds (logged). Returns the URIs announced."""
    announced: list[str] = []
    waiting = list(servers)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for _ in range(max(1, int(within / poll) + 1)):
        for name, port in list(waiting):
            if await answers_describe("127.0.0.1", port):
                uri = f"tcp://{advertised_host}:{port}"
                supervisor.discover(uri)
                _LOG.info("announced the Wyoming %s to Home Assistant: %s", name, uri)
                announced.append(uri)
                waiting.remove((name, port))
        if not waiting or loop.time() >= deadline:
            break
        await asyncio.sleep(poll)
    for name, port in waiting:
        _LOG.warning("the Wyoming %s (port %d) did not answer describe; not announced", name, port)
    return announced


# -- the run script ---------------------------------------------------------------------------


def prepare(data_dir: Path, supervisor: Supervisor) -> tuple[Path, dict[str, Any]]:
    """Options -> checked config file in `data_dir`; returns its path and the options."""

    options_file = data_dir / "options.json"
    try:
        raw = json.loads(options_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AddonError(f"{options_file}: missing (is this running as an add-on?)") from None
    except ValueError as err:
        raise AddonError(f"{options_file}: not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise AddonError(f"{options_file}: expected an object of options")
    options = check_options(raw)
    wants_supervisor_mqtt = options["mqtt"] and "mqtt_host" not in options
    mqtt = supervisor.mqtt_service() if wants_supervisor_mqtt else None
    config = translate(options, mqtt, data_dir)
    path = data_dir / "config.yaml"
    text = "# Written by the add-on from its options at every start; edit the options instead.\n"
    text += yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    load_config(path)  # what `lfm-satellite check-config` runs; ConfigError lists the problems
    return path, options


async def run(data_dir: Path, supervisor: Supervisor, advertised_host: str) -> int:
    path, options = prepare(data_dir, supervisor)
    exe = [sys.executable, "-m", "satellite"]
    model_dir = data_dir / "models" / Path(*options["model"].split("/")) / options["model_variant"]
    if not (model_dir / "manifest.json").is_file():
        _LOG.info("fetching %s (%s) into %s", options["model"], options["model_variant"], model_dir)
        fetch = await asyncio.create_subprocess_exec(
            *exe, "model", "fetch", options["model"], "--variant", options["model_variant"],
            "--models-dir", str(data_dir / "models"),
        )  # fmt: skip
        if await fetch.wait() != 0:
            raise AddonError(f"could not fetch {options['model']}; see the lines above")
    else:  # fetched by an earlier version: correct and repack it (nothing to do if done)
        optimize = await asyncio.create_subprocess_exec(
            *exe, "model", "optimize", str(model_dir)
        )  # fmt: skip
        if await optimize.wait() != 0:
            raise AddonError(f"could not optimize {model_dir}; see the lines above")
    daemon = await asyncio.create_subprocess_exec(*exe, "--config", str(path), "run")
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.send_signal, signum)
    servers = [("satellite", SATELLITE_PORT)]
    if options["wyoming_services"]:
        servers.append(("services", SERVICES_PORT))
    announcing = asyncio.create_task(announce(supervisor, servers, advertised_host))
    code = await daemon.wait()
    announcing.cancel()
    await asyncio.gather(announcing, return_exceptions=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging("info", "text")
    args = list(sys.argv[1:] if argv is None else argv)
    data_dir = Path(args[0] if args else os.environ.get("ADDON_DATA", "/data"))
    try:
        return asyncio.run(run(data_dir, Supervisor.from_env(), socket.gethostname()))
    except ConfigError as err:
        for problem in err.problems:
            _LOG.error("%s", problem)
        return 1
    except UserError as err:
        _LOG.error("%s", err)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
