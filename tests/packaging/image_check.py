"""The add-on's and the container image's Dockerfiles, built and started without a container
engine (`script/check-addon`; tests/chroot_image.py says what differs from Docker): each
Dockerfile's own steps run in a Debian bookworm root made by debootstrap, installing the
satellite from an archive of this checkout laid out like GitHub's archive of a tag (what the
add-on's Dockerfile fetches), every dependency from PyPI's wheels; then the image's entry
point runs in that root the way the image starts:

- the add-on with a sample `/data/options.json` against the fake Supervisor
  (tests/supervisor.py), which names a real mosquitto with a password as the Mosquitto
  add-on's broker; the model is fetched through huggingface_hub from a local hub
  (tests/hubserver.py) serving the tiny model in the published layout with its defects, at
  the catalog's pinned revision; audio goes through a real PulseAudio server's socket, mapped
  in where the Supervisor maps its audio server;
- the container with the compose file's environment and volumes.

Each must answer `describe` on both Wyoming ports with the real `wyoming` client, announce
both through the Supervisor (add-on), publish Home Assistant MQTT discovery, and stop cleanly
on SIGTERM. Not collected by the suite (the name does not start with `test_`): it needs root,
debootstrap and a few minutes, and runs as `script/check-addon`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hubserver import serve_hub, write_test_catalog
from lfm_toolchain.build import build_model
from lfm_toolchain.config import tiny
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info

from satellite import __version__
from satellite.addon import DEFAULT_OPTIONS, SATELLITE_PORT, SERVICES_PORT
from satellite.modeldir.catalog import catalog_path, find_entry, load_catalog
from tests.broker import Broker, Watcher
from tests.chroot_image import (
    Image,
    base_flavour,
    chroot_argv,
    fresh_root,
    mounted,
    parse_dockerfile,
    run_steps,
    substitute,
)
from tests.conftest import PulseServer
from tests.paths import REPO
from tests.supervisor import TOKEN, serve_supervisor

ADDON = REPO / "integration" / "lfm_satellite"
CONTAINER = REPO / "integration" / "docker"
MODEL = "LiquidAI/LFM2.5-Audio-1.5B-ONNX"
START_WITHIN = 300.0
"""Seconds from the entry point's start to both servers answering (model fetch included)."""
USERS = {"addons": "Eic2Ohngoh"}
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def source_archive(folder: Path) -> Path:
    """The checkout's files (tracked and new, as git sees them; ignored ones left out) as
    `lfm-satellite-VERSION.tar.gz` with one top folder, the way GitHub archives a tag."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    prefix = f"lfm-satellite-{__version__}"
    archive = folder / f"{prefix}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in sorted(n for n in names if n and (REPO / n).is_file()):
            tar.add(REPO / name, arcname=f"{prefix}/{name}", recursive=False)
    return archive


def build(dockerfile: Path, context: Path, root: Path, build_args: dict[str, str]) -> Image:
    """A fresh base root for the Dockerfile's FROM, and its steps run in it."""
    base = base_of(dockerfile, build_args)
    fresh_root(base_flavour(base), root, log)
    # The host reaches PyPI through this machine's CA bundle; pip in the root is given it for
    # the build only (the image keeps its own).
    (root / "tmp").mkdir(exist_ok=True)
    (root / "tmp" / "host-ca.crt").write_bytes(Path(HOST_CA).read_bytes())
    log(f"building {dockerfile.relative_to(REPO)} (FROM {base}) in {root}")
    with mounted(root):
        image = run_steps(dockerfile, context, root, build_args,
                          extra_env={"PIP_CERT": "/tmp/host-ca.crt"}, log=log)  # fmt: skip
    for line, seconds in image.seconds.items():
        log(f"  RUN at line {line}: {seconds:.0f} s")
    return image


def base_of(dockerfile: Path, build_args: dict[str, str]) -> str:
    """The image its FROM names, build arguments applied."""
    scope: dict[str, str] = {}
    for ins in parse_dockerfile(dockerfile.read_text()):
        if ins.keyword == "ARG":
            name, _, default = ins.argument.partition("=")
            scope[name] = build_args.get(name, default)
        elif ins.keyword == "FROM":
            return substitute(ins.argument, scope)
    raise AssertionError(f"{dockerfile}: no FROM")


def ports_free(*ports: int) -> None:
    for port in ports:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise AssertionError(f"port {port} is taken on this machine; the image needs it")


async def describe(port: int) -> Info:
    """`describe` as Home Assistant sends it (a new connection, 5 s timeout)."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        while True:
            event = await asyncio.wait_for(client.read_event(), 5.0)
            assert event is not None, f"port {port}: connection closed before info"
            if Info.is_type(event.type):
                return Info.from_event(event)


def wait_for(
    check: Callable[[], bool],
    what: str,
    process: subprocess.Popen[bytes],
    within: float = START_WITHIN,
) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert process.poll() is None, (
            f"the entry point exited ({process.returncode}) before {what}"
        )
        assert time.monotonic() < deadline, f"{what}: not within {within:.0f} s"
        time.sleep(0.5)


@dataclass
class Started:
    """The image's entry point running in the root; `code` and `log` once it has stopped."""

    process: subprocess.Popen[bytes]
    started: float
    code: int | None = None
    log: str = ""

    def answers(self, pulse: PulseServer) -> tuple[Info, Info, list[str]]:
        """`describe` on both Wyoming ports, and the audio server's record streams."""
        satellite = asyncio.run(describe(SATELLITE_PORT))
        services = asyncio.run(describe(SERVICES_PORT))
        return satellite, services, recording_streams(pulse)


@contextlib.contextmanager
def entry_point(image: Image, env: dict[str, str], log_file: Path) -> Iterator[Started]:
    """Start what the image starts (ENTRYPOINT + CMD) in its root; SIGTERM it at the end."""
    log(f"starting the entry point {image.argv()} in the root")
    with log_file.open("wb") as output:
        run = Started(subprocess.Popen(chroot_argv(image.root, image.argv(), env, image.workdir),
                                       stdout=output, stderr=subprocess.STDOUT),
                      time.monotonic())  # fmt: skip
        try:
            yield run
        finally:
            process = run.process
            run.code = stop(process) if process.poll() is None else process.returncode
            run.log = log_file.read_text(errors="replace")
            print(run.log[-4000:])


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, as `docker stop` sends; the exit status (killed after 20 s: a failure)."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise AssertionError("the entry point did not stop within 20 s of SIGTERM") from None


@pytest.fixture(scope="module")
def hub_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny q4 model in the published layout, defects included, as the hub holds it."""
    repo = tmp_path_factory.mktemp("hub") / "repo"
    build_model(repo, size="tiny", variant="q4", layout="published")
    return repo


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    broker = Broker(folder, users=USERS)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def recording_streams(server: PulseServer) -> list[str]:
    """The audio server's record streams (`pactl list short source-outputs`)."""
    done = subprocess.run(["pactl", "-s", server.address, "list", "short", "source-outputs"],
                          capture_output=True, text=True, timeout=10, check=True)  # fmt: skip
    return done.stdout.splitlines()


def tiny_catalog(repo: Path, path: Path) -> Path:
    """The shipped catalog with the tiny repository's files and config numbers for MODEL."""
    write_test_catalog(MODEL, repo, path)
    raw = yaml.safe_load(path.read_text())
    entry = next(m for m in raw["models"] if m["name"] == MODEL)
    config = tiny()
    numbers = {**config.manifest_config(),
               "depthformer_head_dim": config.depthformer.dim // config.depthformer.num_heads}  # fmt: skip
    entry["config"] = {key: numbers[key] for key in entry["config"]}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def discovery_topics(watcher: Watcher) -> set[str]:
    with watcher.lock:
        return {t for t, payload, *_ in watcher.messages if t.endswith("/config") and payload}


def test_addon_builds_and_starts(
    tmp_path: Path, hub_repo: Path, pulseaudio: PulseServer, mqtt_broker: Broker
) -> None:
    ports_free(SATELLITE_PORT, SERVICES_PORT)
    root = tmp_path / "root"
    config = yaml.safe_load((ADDON / "config.yaml").read_text())
    build_args = {
        "BUILD_FROM": yaml.safe_load((ADDON / "build.yaml").read_text())["build_from"]["amd64"],
        "BUILD_VERSION": config["version"],
        "BUILD_ARCH": "amd64",
    }
    (root / "tmp").mkdir(parents=True)
    archive = source_archive(root / "tmp")
    build_args["SATELLITE_SOURCE"] = f"file:///tmp/{archive.name}"
    image = build(ADDON / "Dockerfile", ADDON, root, build_args)
    assert image.argv() == ["/run.sh"], image.argv()
    assert image.labels.get("io.hass.version") == config["version"]

    data = root / "data"
    data.mkdir()
    options = {**DEFAULT_OPTIONS, "name": "Chroot Satellite", "model": MODEL, "threads": 1}
    (data / "options.json").write_text(json.dumps(options))
    pin = find_entry(load_catalog(catalog_path()), MODEL).revision
    tiny_catalog(hub_repo, data / "test-catalog.yaml")
    mosquitto = {"host": "127.0.0.1", "port": mqtt_broker.port, "ssl": False,
                 "protocol": "3.1.1", "username": "addons", "password": USERS["addons"]}  # fmt: skip
    # The Supervisor's audio: its PulseAudio socket in /run/audio and an asound.conf that makes
    # ALSA's default device that server (what `audio: true` maps into the container).
    (root / "etc" / "asound.conf").write_text(
        "pcm.!default { type pulse }\nctl.!default { type pulse }\n"
    )
    watcher = Watcher(mqtt_broker.port, ["homeassistant/#"], ("addons", USERS["addons"]))
    with (
        serve_hub({MODEL: hub_repo}, commit=pin) as hub,
        serve_supervisor(mosquitto) as supervisor,
        mounted(root, {"/run/audio": pulseaudio.home}),
    ):
        env = {**image.env, "SUPERVISOR_URL": supervisor.url, "SUPERVISOR_TOKEN": TOKEN,
               "HF_ENDPOINT": hub.url, "LFM_SATELLITE_CATALOG": "/data/test-catalog.yaml",
               "PULSE_SERVER": "unix:/run/audio/native", "HOME": "/root"}  # fmt: skip
        with entry_point(image, env, tmp_path / "addon.log") as run:
            wait_for(lambda: len(set(supervisor.discovered())) >= 2,
                     "both Wyoming servers announced to the Supervisor", run.process)  # fmt: skip
            log(f"announced after {time.monotonic() - run.started:.0f} s: "
                f"{supervisor.discovered()}")  # fmt: skip
            satellite, services, recording = run.answers(pulseaudio)
            wait_for(lambda: bool(discovery_topics(watcher)), "MQTT discovery", run.process, 30)
        watcher.close()
    host = socket.gethostname()
    assert sorted(set(supervisor.discovered())) == sorted(
        [f"tcp://{host}:{SATELLITE_PORT}", f"tcp://{host}:{SERVICES_PORT}"]
    )
    assert satellite.satellite is not None and satellite.satellite.name == "Chroot Satellite"
    assert services.asr and services.tts, services
    assert any("/resolve/" in path for path, _ in hub.gets()), "the model was not downloaded"
    assert (data / "models" / MODEL / "q4" / "manifest.json").is_file()
    topics = discovery_topics(watcher)
    assert any(t.startswith("homeassistant/") for t in topics), topics
    assert recording, "the add-on's microphone is not a stream on the Supervisor's audio server"
    assert run.code == 0, f"the add-on exited {run.code} on SIGTERM"
    assert "Traceback" not in run.log
    assert os.stat(data / "config.yaml").st_mode & 0o077 == 0


def compose_service() -> dict[str, Any]:
    raw = yaml.safe_load((CONTAINER / "compose.yaml").read_text())
    (service,) = raw["services"].values()
    return dict(service)


def test_container_builds_and_starts(
    tmp_path: Path, hub_repo: Path, pulseaudio: PulseServer, mqtt_broker: Broker
) -> None:
    ports_free(SATELLITE_PORT, SERVICES_PORT)
    service = compose_service()
    assert service["build"]["dockerfile"] == "integration/docker/Dockerfile"
    context = (CONTAINER / service["build"]["context"]).resolve()
    assert context == REPO
    root = tmp_path / "root"
    image = build(CONTAINER / "Dockerfile", context, root, {})
    assert image.argv() == ["/usr/local/bin/lfm-satellite-entrypoint", "run", "--fetch"]
    assert not (root / "src").exists(), "the source copy was left in the image"

    # compose.yaml's volumes: ./config and the data volume, as empty folders on first start
    mounts = dict(v.split(":", 1) for v in service["volumes"])  # host -> container
    assert set(mounts.values()) == {"/config", "/data"}, mounts
    pin = find_entry(load_catalog(catalog_path()), MODEL).revision
    catalog = tiny_catalog(hub_repo, root / "tmp" / "test-catalog.yaml")
    with (
        serve_hub({MODEL: hub_repo}, commit=pin) as hub,
        mounted(root, {"/run/pulse": pulseaudio.home}),
    ):
        env = {**image.env, **{k: str(v) for k, v in (service.get("environment") or {}).items()},
               "HF_ENDPOINT": hub.url, "LFM_SATELLITE_CATALOG": "/tmp/test-catalog.yaml",
               "PULSE_SERVER": "unix:/run/pulse/native", "HOME": "/root"}  # fmt: skip
        # First start of a one-off command: the config is written from the example.
        first = subprocess.run(
            chroot_argv(root, [*image.entrypoint, "check-config"], env, image.workdir),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert first.returncode == 0, first.stdout + first.stderr
        assert "wrote /config/config.yaml from the example" in first.stdout
        config_file = root / "config" / "config.yaml"
        config = yaml.safe_load(config_file.read_text())
        assert config["model"]["models_dir"] == "/data/models"
        # What a user then edits: the name, the broker, the audio server's devices.
        config["satellite"]["name"] = "Container Satellite"
        config["mqtt"].update(host="127.0.0.1", port=mqtt_broker.port, username="addons",
                              password=USERS["addons"])  # fmt: skip
        config["audio"].update(input_device="pulse", output_device="pulse")
        config["model"]["threads"] = 1
        config["wyoming"]["zeroconf"] = False  # the check stays on loopback: no multicast
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))

        watcher = Watcher(mqtt_broker.port, ["homeassistant/#"], ("addons", USERS["addons"]))
        with entry_point(image, env, tmp_path / "container.log") as run:
            wait_for(lambda: bool(discovery_topics(watcher)), "MQTT discovery", run.process)
            log(f"MQTT discovery after {time.monotonic() - run.started:.0f} s")
            satellite, services, recording = run.answers(pulseaudio)
        watcher.close()
    assert catalog.is_file()
    assert satellite.satellite is not None and satellite.satellite.name == "Container Satellite"
    assert services.asr and services.tts, services
    assert any("/resolve/" in path for path, _ in hub.gets()), "the model was not downloaded"
    assert (root / "data" / "models" / MODEL / "q4" / "manifest.json").is_file()
    assert recording, "the container's microphone is not a stream on the host's audio server"
    assert run.code == 0, f"the container exited {run.code} on SIGTERM"
    assert "Traceback" not in run.log
