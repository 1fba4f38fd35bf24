"""The Home Assistant add-on: its config.yaml checked by the Supervisor's rules (re-written
here from the Supervisor's add-on validation), the options -> daemon config translation on
several option sets (invalid ones: one clear log line, exit 1), and the Supervisor calls
against a local HTTP server that answers like the Supervisor's `/services/mqtt` and
`/discovery`; the discovery waits until a real Wyoming server answers `describe`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info
from wyoming.server import AsyncEventHandler, AsyncTcpServer

from satellite import __version__
from satellite.addon import (
    DEFAULT_OPTIONS,
    OPTION_SCHEMA,
    AddonError,
    MqttService,
    Supervisor,
    announce,
    check_options,
    prepare,
    translate,
)
from satellite.config import load_config
from tests.paths import REPO
from tests.supervisor import TOKEN, FakeSupervisor, serve_supervisor

ADDON = REPO / "integration" / "lfm_satellite"

# -- the Supervisor's add-on config rules (supervisor/addons/validate.py, options.py) ----------

ARCH_ALL = {"armhf", "armv7", "aarch64", "amd64", "i386"}
RE_SLUG = re.compile(r"^[-_.A-Za-z0-9]+$")
RE_SERVICE = re.compile(r"^(?P<service>mqtt|mysql):(?P<rights>provide|want|need)$")
RE_SCHEMA_ELEMENT = re.compile(
    r"^(?:|bool|email|url|port|device(?:\((?P<filter>subsystem=[a-z]+)\))?"
    r"|str(?:\((?P<s_min>\d+)?,(?P<s_max>\d+)?\))?"
    r"|password(?:\((?P<p_min>\d+)?,(?P<p_max>\d+)?\))?"
    r"|int(?:\((?P<i_min>\d+)?,(?P<i_max>\d+)?\))?"
    r"|float(?:\((?P<f_min>[\d\.]+)?,(?P<f_max>[\d\.]+)?\))?"
    r"|match\((?P<match>.*)\)|list\((?P<list>.+)\))\??$"
)
RE_PORT_KEY = re.compile(r"^\d+(?:/(?:tcp|udp))?$")


def supervisor_value_ok(typ: str, value: Any) -> bool:
    """How the Supervisor checks one option value against its schema type."""
    m = RE_SCHEMA_ELEMENT.match(typ)
    assert m, typ
    ranges = {k[2:]: float(v) for k, v in m.groupdict().items() if v and k[1] == "_"}
    low, high = ranges.get("min", float("-inf")), ranges.get("max", float("inf"))
    if typ.startswith(("str", "password")):
        return isinstance(value, str)
    if typ.startswith("int"):
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    if typ.startswith("float"):
        return isinstance(value, int | float) and low <= float(value) <= high
    if typ.startswith("bool"):
        return isinstance(value, bool)
    if typ.startswith("port"):
        return isinstance(value, int) and 1 <= value <= 65535
    if typ.startswith("list"):
        return str(value) in m.group("list").split("|")
    if typ.startswith("match"):
        return re.match(m.group("match"), str(value)) is not None
    return True


def supervisor_problems(config: dict[str, Any]) -> list[str]:
    """What the Supervisor would refuse in an add-on's config.yaml."""
    problems = []
    for key in ("name", "version", "slug", "description", "arch"):
        if key not in config:
            problems.append(f"missing {key}")
    if not isinstance(config.get("version"), str):
        problems.append("version must be a string")
    if not RE_SLUG.match(str(config.get("slug", ""))):
        problems.append("slug")
    if not set(config.get("arch", [])) <= ARCH_ALL:
        problems.append(f"arch {config.get('arch')}")
    for service in config.get("services", []):
        if not RE_SERVICE.match(service):
            problems.append(f"service {service}")
    if not all(isinstance(d, str) for d in config.get("discovery", [])):
        problems.append("discovery")
    for flag in ("audio", "init", "host_network"):
        if flag in config and not isinstance(config[flag], bool):
            problems.append(flag)
    for port, host in (config.get("ports") or {}).items():
        if not RE_PORT_KEY.match(port) or not (host is None or 1 <= int(host) <= 65535):
            problems.append(f"port {port}")
    schema, options = config.get("schema", {}), config.get("options", {})
    for key, typ in schema.items():
        if not isinstance(typ, str) or not RE_SCHEMA_ELEMENT.match(typ):
            problems.append(f"schema {key}: {typ}")
            continue
        if key in options:
            if not supervisor_value_ok(typ, options[key]):
                problems.append(f"option {key}: {options[key]!r} is not {typ}")
        elif not typ.endswith("?"):
            problems.append(f"option {key} missing (schema {typ} is required)")
    problems += [f"option {key} not in the schema" for key in options if key not in schema]
    return problems


def addon_config() -> dict[str, Any]:
    data = yaml.safe_load((ADDON / "config.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_addon_config_passes_the_supervisor_rules() -> None:
    config = addon_config()
    assert supervisor_problems(config) == []
    assert config["slug"] == "lfm_satellite" and config["audio"] is True
    assert set(config["arch"]) == {"aarch64", "amd64"}
    assert config["discovery"] == ["wyoming"] and config["services"] == ["mqtt:want"]
    assert config["ports"] == {"10700/tcp": 10700, "10701/tcp": 10701}
    # the run script checks options with the same schema and defaults
    assert config["schema"] == OPTION_SCHEMA
    assert config["options"] == DEFAULT_OPTIONS
    assert set((ADDON / "build.yaml").read_text().split()) >= {"aarch64:", "amd64:"}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"slug": "lfm satellite"}, "slug"),
        ({"arch": ["aarch64", "riscv"]}, "arch"),
        ({"services": ["mqtt:maybe"]}, "service mqtt:maybe"),
        ({"version": 1}, "version must be a string"),
    ],
)
def test_the_rules_catch_broken_configs(change: dict[str, Any], problem: str) -> None:
    assert problem in " ".join(supervisor_problems({**addon_config(), **change}))


def test_the_rules_catch_broken_options() -> None:
    config = addon_config()
    config["options"] = {**config["options"], "wake_sensitivity": 1.5, "extra": 1}
    config["schema"] = {**config["schema"], "volume": "number"}
    problems = supervisor_problems(config)
    assert "option wake_sensitivity: 1.5 is not float(0,1)" in problems
    assert "schema volume: number" in problems and "option extra not in the schema" in problems
    del config["options"]["model"]
    assert "option model missing (schema str is required)" in supervisor_problems(config)


def test_translations_cover_every_option_and_port() -> None:
    translations = yaml.safe_load((ADDON / "translations/en.yaml").read_text())
    assert set(translations["configuration"]) == set(OPTION_SCHEMA)
    for key, text in translations["configuration"].items():
        assert text["name"] and text["description"], key
    assert set(translations["network"]) == set(addon_config()["ports"])
    docs = (ADDON / "DOCS.md").read_text()
    for key in OPTION_SCHEMA:
        assert f"`{key}`" in docs, f"DOCS.md does not explain {key}"


# -- options -> config --------------------------------------------------------------------------


def load_translated(tmp_path: Path, options: dict[str, Any], mqtt: MqttService | None = None):  # type: ignore[no-untyped-def]
    config = translate(check_options(options), mqtt, tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path).settings


def test_defaults_make_a_valid_config(tmp_path: Path) -> None:
    s = load_translated(tmp_path, dict(DEFAULT_OPTIONS))
    assert s.satellite.name == "LFM Satellite" and s.satellite.mode == "local"
    assert s.model.name == "LiquidAI/LFM2.5-Audio-1.5B-ONNX" and s.model.variant == "q4"
    assert s.model.models_dir == str(tmp_path / "models")
    assert (s.wyoming.satellite_port, s.wyoming.services_port) == (10700, 10701)
    assert s.wyoming.satellite_host == "0.0.0.0" and not s.wyoming.zeroconf
    assert not s.mqtt.enabled  # no broker from the Supervisor, none named


def test_every_option_lands_in_its_key(tmp_path: Path) -> None:
    options = {
        **DEFAULT_OPTIONS, "name": "Kitchen Satellite", "area": "Kitchen", "mode": "ha",
        "wake_word": "hey_jarvis", "wake_sensitivity": 0.7, "model_variant": "fp16",
        "voice": "uk_male", "threads": 2, "input_device": "2", "output_device": "USB Audio",
        "volume": 0.4, "barge_in": False, "max_reply_seconds": 12, "wyoming_services": False,
        "mqtt_host": "broker.lan", "mqtt_port": 8883, "mqtt_username": "sat",
        "mqtt_password": "s3cret", "log_level": "debug", "echo_cancellation": False,
        "noise_suppression": 4, "auto_gain": 9,
    }  # fmt: skip
    s = load_translated(tmp_path, options)
    assert (s.satellite.name, s.satellite.area, s.satellite.mode) == (
        "Kitchen Satellite",
        "Kitchen",
        "ha",
    )
    assert (s.wake.model, s.wake.sensitivity) == ("hey_jarvis", 0.7)
    assert (s.model.variant, s.model.voice, s.model.threads) == ("fp16", "uk_male", 2)
    assert (s.audio.input_device, s.audio.output_device) == (2, "USB Audio")
    assert (s.audio.volume, s.audio.barge_in) == (0.4, False)
    assert (s.audio.echo_cancellation, s.audio.noise_suppression, s.audio.auto_gain) == (
        False, 4, 9,
    )  # fmt: skip
    by_voice = load_translated(tmp_path, {**DEFAULT_OPTIONS, "barge_in_by_voice": True})
    assert by_voice.audio.barge_in == "voice" and by_voice.audio.echo_cancellation
    defaults = load_translated(tmp_path, dict(DEFAULT_OPTIONS))
    assert defaults.audio.barge_in is True and defaults.audio.noise_suppression == 2
    assert s.safety.max_reply_seconds == 12 and not s.wyoming.services_enabled
    assert (s.mqtt.enabled, s.mqtt.host, s.mqtt.port) == (True, "broker.lan", 8883)
    assert (s.mqtt.username, s.mqtt.password) == ("sat", "s3cret")
    assert s.logging.level == "debug"


def test_broker_from_the_supervisor_unless_one_is_named(tmp_path: Path) -> None:
    service = MqttService("core-mosquitto", 1884, "addons", "pw", ssl=True)
    s = load_translated(tmp_path, dict(DEFAULT_OPTIONS), service)
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.username, s.mqtt.password, s.mqtt.tls) == (
        "core-mosquitto", 1884, "addons", "pw", True,
    )  # fmt: skip
    assert not load_translated(tmp_path, {**DEFAULT_OPTIONS, "mqtt": False}, service).mqtt.enabled
    named = load_translated(tmp_path, {**DEFAULT_OPTIONS, "mqtt_host": "b"}, service)
    assert (named.mqtt.host, named.mqtt.port, named.mqtt.username) == ("b", 1883, None)


def test_empty_optional_options_count_as_absent(caplog: pytest.LogCaptureFixture) -> None:
    checked = check_options({**DEFAULT_OPTIONS, "area": "", "mqtt_host": "", "old_option": 1})
    assert "area" not in checked and "mqtt_host" not in checked
    assert "options: old_option: unknown option, ignored" in caplog.text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"wake_sensitivity": 2}, "options: wake_sensitivity: 2 is out of range; expected 0 to 1"),
        ({"mode": "cloud"}, "options: mode: 'cloud' is not one of local, ha"),
        ({"name": ""}, "options: name: must not be empty"),
        ({"threads": 1.5}, "options: threads: expected a whole number, got 1.5"),
        ({"barge_in": "yes"}, "options: barge_in: expected true or false, got 'yes'"),
        ({"mqtt_host": "b", "mqtt_port": 70000}, "options: mqtt_port: 70000 is out of range"),
        ({"mqtt_password": "x"}, "options: mqtt_host: needed with mqtt_port/mqtt_password"),
        ({"model": None}, "options: model: missing (the add-on's default is"),
        ({"noise_suppression": 5}, "options: noise_suppression: 5 is out of range; expected 0"),
        (
            {"barge_in_by_voice": True, "echo_cancellation": False},
            "options: barge_in_by_voice: needs echo_cancellation: true",
        ),
        (
            {"barge_in_by_voice": True, "barge_in": False},
            "options: barge_in_by_voice: needs barge_in: true",
        ),
    ],
)
def test_invalid_options_are_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(AddonError) as caught:
        check_options({**DEFAULT_OPTIONS, **change})
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(
    ("options_json", "line"),
    [
        (json.dumps({**DEFAULT_OPTIONS, "volume": 3}), "options: volume: 3 is out of range"),
        (
            json.dumps({**DEFAULT_OPTIONS, "wake_word": "computer"}),
            "options: wake_word: 'computer' is not one of",
        ),
        ("{not json", "options.json: not valid JSON"),
        (None, "options.json: missing"),
    ],
)
def test_run_script_logs_one_line_and_exits(
    tmp_path: Path, options_json: str | None, line: str
) -> None:
    if options_json is not None:
        (tmp_path / "options.json").write_text(options_json)
    env = {**os.environ, "SUPERVISOR_URL": "http://127.0.0.1:9", "SUPERVISOR_TOKEN": TOKEN}
    done = subprocess.run(
        [sys.executable, "-m", "satellite.addon", str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 1
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and line in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "config.yaml").exists()


# -- the Supervisor ----------------------------------------------------------------------------


@pytest.fixture
def supervisor(request: pytest.FixtureRequest) -> Iterator[FakeSupervisor]:
    with serve_supervisor(getattr(request, "param", None)) as fake:
        yield fake


MOSQUITTO = {"host": "core-mosquitto", "port": 1883, "ssl": False, "protocol": "3.1.1",
             "username": "addons", "password": "Eic2Ohngoh"}  # fmt: skip


@pytest.mark.parametrize("supervisor", [MOSQUITTO], indirect=True)
def test_prepare_takes_the_broker_from_the_services_api(
    tmp_path: Path, supervisor: FakeSupervisor
) -> None:
    (tmp_path / "options.json").write_text(json.dumps(DEFAULT_OPTIONS))
    path, _ = prepare(tmp_path, Supervisor(supervisor.url, TOKEN))
    assert supervisor.calls == [("GET", "/services/mqtt", f"Bearer {TOKEN}", None)]
    s = load_config(path).settings
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.username, s.mqtt.password) == (
        "core-mosquitto", 1883, "addons", "Eic2Ohngoh",
    )  # fmt: skip
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # it holds the broker password


def test_prepare_without_a_broker_and_with_a_named_one(
    tmp_path: Path, supervisor: FakeSupervisor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "satellite.addon")
    (tmp_path / "options.json").write_text(json.dumps(DEFAULT_OPTIONS))
    path, _ = prepare(tmp_path, Supervisor(supervisor.url, TOKEN))
    assert not load_config(path).settings.mqtt.enabled
    assert "Service not enabled" in caplog.text and "no broker" in caplog.text
    supervisor.calls.clear()
    (tmp_path / "options.json").write_text(json.dumps({**DEFAULT_OPTIONS, "mqtt_host": "b"}))
    path, _ = prepare(tmp_path, Supervisor(supervisor.url, TOKEN))
    assert supervisor.calls == []  # a named broker: the Supervisor is not asked
    assert load_config(path).settings.mqtt.host == "b"


def test_wrong_token_and_unreachable_supervisor(supervisor: FakeSupervisor) -> None:
    assert Supervisor(supervisor.url, "wrong").mqtt_service() is None
    with pytest.raises(AddonError, match="refused tcp://h:1: Unauthorized"):
        Supervisor(supervisor.url, "wrong").discover("tcp://h:1")
    with pytest.raises(AddonError, match="Supervisor API GET /services/mqtt"):
        Supervisor("http://127.0.0.1:9", TOKEN, timeout=2).mqtt_service()


class DescribeHandler(AsyncEventHandler):
    """A Wyoming service answering `describe` like any Home Assistant peer expects."""

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            attribution = Attribution(name="test", url="http://127.0.0.1")
            model = AsrModel(name="m", attribution=attribution, installed=True,
                             description=None, version=None, languages=["en"])  # fmt: skip
            program = AsrProgram(name="p", attribution=attribution, installed=True,
                                 description=None, version=None, models=[model])  # fmt: skip
            await self.write_event(Info(asr=[program]).event())
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_announces_each_server_once_it_answers_describe(
    supervisor: FakeSupervisor, caplog: pytest.LogCaptureFixture
) -> None:
    port, silent = free_port(), free_port()
    server = AsyncTcpServer("127.0.0.1", port)
    api = Supervisor(supervisor.url, TOKEN)

    async def start_later() -> None:
        await asyncio.sleep(0.5)  # the daemon is still loading its model
        await server.start(DescribeHandler)

    starting = asyncio.create_task(start_later())
    try:
        announced = await announce(
            api, [("satellite", port), ("services", silent)], "a0d7b954-lfm-satellite",
            within=2.0, poll=0.2,
        )  # fmt: skip
    finally:
        await starting
        await server.stop()
    assert announced == [f"tcp://a0d7b954-lfm-satellite:{port}"]
    posts = [c for c in supervisor.calls if c[0] == "POST"]
    assert posts == [("POST", "/discovery", f"Bearer {TOKEN}",
                      {"service": "wyoming", "config": {"uri": announced[0]}})]  # fmt: skip
    assert f"the Wyoming services (port {silent}) did not answer describe" in caplog.text


# -- example automations ------------------------------------------------------------------------


def test_example_automations_trigger_on_the_event_topic() -> None:
    """One automation per MQTT event the issue names; each an MQTT trigger on the default
    satellite's event topic, matching on `event_type`, with at least one action."""
    found = {}
    for path in sorted((REPO / "integration" / "automations").glob("*.yaml")):
        automation = yaml.safe_load(path.read_text())
        assert automation["alias"] and automation["actions"], path.name
        (trigger,) = automation["triggers"]
        assert trigger["trigger"] == "mqtt", path.name
        assert trigger["topic"] == "lfm_satellite/lfm_satellite/event", path.name
        assert trigger["value_template"] == "{{ value_json.event_type }}", path.name
        found[trigger["payload"]] = path.name
    assert set(found) == {"wake_detected", "turn_finished", "alert_raised"}


# -- the add-on repository, as the Supervisor reads it (supervisor/store/data.py, validate.py) --

CONFIG_SUFFIXES = {".json", ".yaml", ".yml"}


def supervisor_finds_addons(files: list[str]) -> list[str]:
    """The Supervisor's scan of a cloned repository: every `**/config.*` with a configuration
    suffix, outside hidden folders and `rootfs`."""
    found = []
    for name in files:
        path = Path(name)
        if path.stem != "config" or path.suffix not in CONFIG_SUFFIXES:
            continue
        if any(part.startswith(".") or part == "rootfs" for part in path.parts):
            continue
        found.append(name)
    return found


def tracked_files() -> list[str]:
    """What a clone of the repository holds."""
    done = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                          cwd=REPO, capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.splitlines()


def test_the_repository_holds_one_addon_and_says_what_it_is() -> None:
    assert supervisor_finds_addons(tracked_files()) == ["integration/lfm_satellite/config.yaml"]
    assert supervisor_finds_addons(["a/config.json", ".github/config.yaml", "x/rootfs/config.yml",
                                    "b/configs.yaml"]) == ["a/config.json"]  # fmt: skip
    repository = yaml.safe_load((REPO / "repository.yaml").read_text())
    assert isinstance(repository["name"], str) and repository["name"]
    assert isinstance(repository.get("maintainer", ""), str)
    assert re.fullmatch(r"https://[\w.-]+(/[\w.-]+)+", repository["url"]), repository["url"]
    assert addon_config()["url"] == repository["url"]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path}: not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_the_store_entry_has_its_pictures_changelog_and_docs() -> None:
    assert png_size(ADDON / "icon.png") == (128, 128)  # the store's 1:1 icon
    assert png_size(ADDON / "logo.png") == (250, 100)  # and its 250 x 100 logo
    version = addon_config()["version"]
    assert re.search(rf"^## {re.escape(version)}$", (ADDON / "CHANGELOG.md").read_text(), re.M)
    assert (ADDON / "DOCS.md").read_text().startswith("# LFM Satellite add-on")


def test_the_addon_installs_its_own_versions_source() -> None:
    """The Dockerfile installs GitHub's archive of the tag v<version> of the repository the
    add-on names, and the version is the package's."""
    dockerfile = (ADDON / "Dockerfile").read_text()
    source = re.search(r"^ARG SATELLITE_SOURCE=(\S+)$", dockerfile, re.M)
    assert source, "the Dockerfile names no SATELLITE_SOURCE"
    assert source.group(1) == addon_config()["url"] + "/archive/refs/tags/v${BUILD_VERSION}.tar.gz"
    assert '"lfm-satellite @ ${SATELLITE_SOURCE}"' in dockerfile
    assert "lfm-satellite==" not in dockerfile  # no package index holds the project
    assert addon_config()["version"] == __version__


def test_the_readme_container_section_matches_the_files() -> None:
    """The README's container section names the files and the image the check builds and the
    release workflow pushes."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Container") : readme.index("## Releases")]
    compose = yaml.safe_load((REPO / "integration/docker/compose.yaml").read_text())
    (service,) = compose["services"].values()
    assert (
        "integration/docker/compose.yaml" in section and "integration/docker/Dockerfile" in section
    )
    image = service["image"].rsplit(":", 1)[0]
    assert f"`{image}`" in section
    workflow = (REPO / ".github/workflows/release.yml").read_text()
    assert "images: ghcr.io/${{ github.repository_owner }}/lfm-satellite" in workflow
    assert image == "ghcr.io/lfm-satellite/lfm-satellite"
    dockerfile = (REPO / "integration/docker/Dockerfile").read_text()
    assert 'CMD ["run", "--fetch"]' in dockerfile and "`run --fetch`" in section
    for port in ("10700", "10701"):
        assert port in section and "EXPOSE 10700 10701" in dockerfile
