"""systemd's notify protocol against test sockets on this machine (a path and an abstract
name): READY only once the model is loaded and the server listens, STATUS lines a person can
read, WATCHDOG pings at half of $WATCHDOG_USEC while healthy and none while a loop is stalled,
STOPPING on shutdown; the real daemon as `lfm-satellite run` and in-process."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from satellite.daemon.core import Daemon
from satellite.events import HomeAssistantConnected, Ready, TurnFinished
from satellite.sdnotify import Notifier, ServiceNotifier, attach, notify_address, watchdog_interval
from tests.satellite_support import daemon_settings

pytestmark = pytest.mark.realtime


@dataclass
class Message:
    fields: dict[str, str]
    time: float


class SystemdSocket:
    """The manager's end: a datagram socket whose messages a reader thread records with their
    arrival time (the tests' event loop may be busy sleeping meanwhile)."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value
        self.messages: list[Message] = []
        self._seen = 0
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._reader, daemon=True)
        self.sock.settimeout(0.05)
        self._thread.start()

    def _reader(self) -> None:
        for _ in range(1_000_000):
            if self._closed.is_set():
                return
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            lines = data.decode().split("\n")
            with self._lock:
                self.messages.append(
                    Message(dict(x.split("=", 1) for x in lines), time.monotonic())
                )

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self.sock.close()

    def read(self, timeout: float) -> list[Message]:
        """Wait `timeout` seconds, then the messages that arrived since the last read."""
        time.sleep(timeout)
        with self._lock:
            got = self.messages[self._seen :]
            self._seen = len(self.messages)
        return got

    def wait_for(self, key: str, timeout: float, value: str | None = None) -> Message:
        deadline = time.monotonic() + timeout
        for _ in range(100_000):
            with self._lock:
                for message in self.messages:
                    if key in message.fields and value in (None, message.fields[key]):
                        return message
            left = deadline - time.monotonic()
            assert left > 0, f"no {key} within {timeout} s; got {[m.fields for m in self.messages]}"
            time.sleep(min(left, 0.05))
        raise AssertionError("unreachable")

    def having(self, key: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if key in m.fields]


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SystemdSocket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        where = str(tmp_path / "notify")
        sock.bind(where)
        value = where
    else:
        name = f"lfm-satellite-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        value = "@" + name
    manager = SystemdSocket(sock, value)
    try:
        yield manager
    finally:
        manager.close()


def test_addresses_and_watchdog_interval() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@abstract/name") == "\0abstract/name"
    assert notify_address("vsock:2:1234") is None
    assert notify_address("") is None and notify_address(None) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}) == 0.1
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({}) is None


def test_notifier_sends_one_datagram_per_message(systemd: SystemdSocket) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": systemd.env_value})
    assert notifier.enabled
    assert notifier.send("READY=1", "STATUS=two\nlines")
    got = systemd.read(1.0)
    assert [m.fields for m in got] == [{"READY": "1", "STATUS": "two lines"}]
    notifier.close()


def test_without_a_socket_nothing_is_sent(caplog: pytest.LogCaptureFixture) -> None:
    assert not Notifier.from_env({}).send("READY=1")
    assert not Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:9"}).enabled
    assert "unsupported address" in caplog.text
    gone = Notifier("/nonexistent/notify")
    assert not gone.send("READY=1") and not gone.send("READY=1")
    assert caplog.text.count("cannot notify systemd") == 1  # logged once, not per message


async def test_pings_follow_health(systemd: SystemdSocket) -> None:
    """Pings at half of WATCHDOG_USEC while healthy, none while unhealthy, again after."""
    state: dict[str, str | None] = {"health": None}
    stopped = asyncio.Event()
    env = {"NOTIFY_SOCKET": systemd.env_value, "WATCHDOG_USEC": "200000"}
    service = ServiceNotifier.from_env(lambda: state["health"], lambda: "tiny q4", env)
    assert service.interval == 0.1
    task = asyncio.create_task(service.run(stopped.wait))
    service.on_event(Ready(port=10700))
    await asyncio.sleep(1.0)
    healthy = systemd.read(0)
    assert healthy[0].fields["READY"] == "1"
    assert healthy[0].fields["STATUS"].startswith("model tiny q4; Home Assistant not connected")
    pings = [m.time for m in systemd.having("WATCHDOG")]
    assert len(pings) >= 3, pings
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert min(gaps) >= 0.09, gaps  # never more often than half of WATCHDOG_USEC

    state["health"] = "no audio from the microphone for 4 s"
    await asyncio.sleep(0.25)  # the ping in flight at the change may still arrive
    systemd.read(0)
    before = len(systemd.having("WATCHDOG"))
    await asyncio.sleep(0.6)
    systemd.read(0)
    assert len(systemd.having("WATCHDOG")) == before, "pinged while unhealthy"
    statuses = [m.fields["STATUS"] for m in systemd.having("STATUS")]
    assert any(s.startswith("UNHEALTHY: no audio from the microphone") for s in statuses)

    state["health"] = None
    await asyncio.sleep(0.5)
    systemd.read(0)
    assert len(systemd.having("WATCHDOG")) > before, "no pings after recovery"
    stopped.set()
    await asyncio.wait_for(task, 2)
    last = systemd.read(0.2)[-1].fields
    assert last == {"STOPPING": "1", "STATUS": "stopping"}


async def test_status_names_connection_and_last_turn(systemd: SystemdSocket) -> None:
    from satellite.events import TurnReport

    stopped = asyncio.Event()
    service = ServiceNotifier.from_env(
        lambda: None, lambda: "m", {"NOTIFY_SOCKET": systemd.env_value}
    )
    assert service.interval is None
    task = asyncio.create_task(service.run(stopped.wait))
    service.on_event(Ready(port=10700))
    service.on_event(HomeAssistantConnected())
    await asyncio.sleep(0.1)
    report = TurnReport(
        wake_word="okay_nabu", utterance_seconds=2.0, end_reason="silence",
        reply_text="The lights are on.", reply_reason="end_of_turn", reply_audio_seconds=1.5,
        frames=19, skipped_frames=0, time_to_first_audio=0.234, engine_first_audio=0.2,
        overhead=0.034, engine_seconds=0.9, total_seconds=2.1,
    )  # fmt: skip
    service.on_event(TurnFinished(report))
    await asyncio.sleep(0.2)
    statuses = [m.fields["STATUS"] for m in systemd.read(0) if "STATUS" in m.fields]
    assert not systemd.having("WATCHDOG"), "pinged without WATCHDOG_USEC"
    assert "model m; Home Assistant connected; no turn yet" in statuses
    assert statuses[-1].startswith("model m; Home Assistant connected; last turn: ")
    assert statuses[-1].endswith('"The lights are on.", first audio after 234 ms')
    stopped.set()
    await asyncio.wait_for(task, 2)


async def test_daemon_stops_pinging_when_capture_stalls(
    model: Path, systemd: SystemdSocket
) -> None:
    """The real daemon in-process (null audio): pings while the capture loop runs; when it is
    stopped the watchdog gets nothing and the status says why."""
    settings = daemon_settings(model, backend="null")
    daemon = Daemon(settings)
    env = {"NOTIFY_SOCKET": systemd.env_value, "WATCHDOG_USEC": "200000"}
    task = attach(daemon, env)
    assert task is not None
    await daemon.start()
    try:
        ready = systemd.wait_for("READY", 10)
        assert "model " in ready.fields["STATUS"]
        await asyncio.sleep(0.6)
        systemd.read(0)
        assert len(systemd.having("WATCHDOG")) >= 2
        assert daemon._capture is not None
        daemon._capture.cancel()  # the audio loop is gone
        await asyncio.sleep(0.3)
        systemd.read(0)
        before = len(systemd.having("WATCHDOG"))
        await asyncio.sleep(0.6)
        systemd.read(0)
        assert len(systemd.having("WATCHDOG")) == before
        assert any("UNHEALTHY: audio capture stopped" in m.fields.get("STATUS", "")
                   for m in systemd.messages)  # fmt: skip
    finally:
        await daemon.close()
        await asyncio.wait_for(task, 5)
    assert systemd.read(0.2)[-1].fields["STOPPING"] == "1"


def test_run_under_a_notify_socket(model: Path, systemd: SystemdSocket, tmp_path: Path) -> None:
    """`lfm-satellite run` as systemd starts it: READY=1 only when the satellite port
    answers, pings, STOPPING=1 on SIGTERM, exit 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "config.yaml"
    config.write_text(
        "audio:\n  backend: null\n"
        f"model:\n  directory: {model}\n  threads: 1\n"
        f"wyoming:\n  satellite_host: 127.0.0.1\n  satellite_port: {port}\n  zeroconf: false\n"
        "  services_enabled: false\n"
        "mqtt:\n  enabled: false\n"
    )
    env = {**os.environ, "NOTIFY_SOCKET": systemd.env_value, "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "satellite", "-v", "--config", str(config), "run"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        ready = systemd.wait_for("READY", 90)
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the server listened before READY was sent
        assert ready.fields["STATUS"].startswith("model ")
        assert "Home Assistant not connected; no turn yet" in ready.fields["STATUS"]
        systemd.read(1.0)
        assert len([m for m in systemd.having("WATCHDOG") if m.time >= ready.time]) >= 2
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    systemd.wait_for("STOPPING", 2)
    assert "watchdog ping every 0.2 s" in stderr
