"""A real mosquitto broker on loopback for the MQTT tests: its own config (random port,
`persistence false`), optionally a password file and a TLS listener with certificates made by
openssl at test time; `stop` and `start` again on the same port (broker restarts)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_certificates(folder: Path, host: str = "localhost") -> dict[str, Path]:
    """A CA, a server certificate for `host` (DNS name only) and a client certificate
    (`client_cert`, `client_key`), both signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    key, csr, crt, ext = (folder / n for n in ("server.key", "server.csr", "server.crt", "ext"))

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
            str(ca_crt), "-days", "2", "-subj", "/CN=lfm-test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", f"/CN={host}")  # fmt: skip
    ext.write_text(f"subjectAltName=DNS:{host}\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext))  # fmt: skip
    client_key, client_csr, client_crt = (folder / n for n in ("c.key", "c.csr", "c.crt"))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(client_key), "-out",
            str(client_csr), "-subj", "/CN=satellite")  # fmt: skip
    openssl("x509", "-req", "-in", str(client_csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(client_crt), "-days", "2")  # fmt: skip
    return {"ca": ca_crt, "cert": crt, "key": key, "client_cert": client_crt,
            "client_key": client_key}  # fmt: skip


@dataclass
class Broker:
    folder: Path
    port: int = field(default_factory=free_port)
    users: dict[str, str] | None = None
    tls: bool = False
    client_certs: bool = False
    """With `tls`: clients must show a certificate signed by the test CA."""
    process: subprocess.Popen[bytes] | None = None
    certs: dict[str, Path] = field(default_factory=dict)

    def start(self) -> None:
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot read tmp_path
        if self.users:
            passwords = self.folder / "passwords"
            passwords.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True, timeout=30)
            lines += [f"password_file {passwords}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            if not self.certs:
                self.certs = make_certificates(self.folder / "certs")
            lines += [f"certfile {self.certs['cert']}", f"keyfile {self.certs['key']}"]
            if self.client_certs:
                lines += [f"cafile {self.certs['ca']}", "require_certificate true"]
        config = self.folder / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode()}")  # type: ignore[union-attr]
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


class Watcher:
    """A plain paho subscriber recording every message (Home Assistant's side of MQTT)."""

    def __init__(self, port: int, topics: list[str], auth: tuple[str, str] | None = None) -> None:
        self.messages: list[tuple[str, bytes, bool, float]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.subscribed = threading.Event()
        self.client.on_message = lambda c, u, m: self._add(m)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subscribed.set()
        self.client.reconnect_delay_set(0.2, 0.5)
        if auth is not None:
            self.client.username_pw_set(*auth)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.subscribed.wait(10):  # else a message published at once could be missed
            raise RuntimeError("the test subscriber was not subscribed within 10 s")

    def _add(self, message: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(
                (message.topic, bytes(message.payload), bool(message.retain), time.monotonic())
            )

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [payload for t, payload, _, _ in self.messages if t == topic]

    async def wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Until `check()` holds (polled; the event loop keeps running meanwhile)."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                with self.lock:
                    seen = sorted({t for t, *_ in self.messages})
                raise AssertionError(f"{what}: not within {timeout} s; topics seen: {seen}")
            await asyncio.sleep(0.02)

    def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
