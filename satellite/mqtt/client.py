"""The MQTT connection: paho-mqtt 2.x (callback API 2), MQTT v5 or v3.1.1, TLS, user and
password (or a password file), a last will, reconnects, and an outbox that never blocks.

- Last will `<base>/availability` = `offline` (retained); `online` (retained) right after
  each connect, then the `on_connect` hooks run (discovery and states are republished there).
- Connecting and the network loop run in one worker thread (paho's loop blocks in `select`;
  nothing spins). paho's own reconnect is off: after a lost or failed connection the next
  attempt waits `min(RETRY_CAP, RETRY_BASE * 2**n)` seconds times a random factor in
  [0.5, 1] (so many satellites do not reconnect in lockstep), n counting failures since the
  last good connection.
- `publish` only appends to a bounded outbox (a deque) and wakes the sender; it never waits
  for the network. While the broker is away messages wait there. A retained message replaces
  one for the same topic still waiting (only the last state matters), so a burst of state
  changes costs one message a topic. When the outbox is full the oldest is dropped and
  counted (`dropped`), and the log says whether the broker was away or taking messages slower
  than they came.
- A refused connection (bad credentials, TLS problems, no broker) is logged once per distinct
  reason as a line naming the setting to check, and retried.
- Messages on subscribed topics are handed to their handler on the asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from satellite.errors import UserError
from satellite.settings import MqttSettings

_LOG = logging.getLogger("satellite.mqtt")

RETRY_BASE = 1.0
RETRY_CAP = 60.0
ONLINE, OFFLINE = "online", "offline"
Handler = Callable[[str, bytes], None]
Payload = str | bytes | dict[str, Any] | list[Any] | int | float | None


class MqttConfigError(UserError):
    """An MQTT setting that cannot be used (e.g. an unreadable password file)."""


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int


def retry_delay(failures: int, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt after `failures` failures in a row (>= 1)."""
    ceiling = min(RETRY_CAP, RETRY_BASE * 2 ** max(0, failures - 1))
    return float(ceiling * (rng or random).uniform(0.5, 1.0))


def encode(payload: Payload) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def read_password(settings: MqttSettings) -> str | None:
    if settings.password_file is None:
        return settings.password
    path = Path(settings.password_file).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise MqttConfigError(f"mqtt.password_file: {path}: {err.strerror or err}") from None
    if not lines or not lines[0]:
        raise MqttConfigError(f"mqtt.password_file: {path}: the first line is empty")
    return lines[0]


class MqttLink:
    """One broker connection (see the module docstring)."""

    def __init__(
        self,
        settings: MqttSettings,
        base_topic: str,
        *,
        client_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.base_topic = base_topic
        self.availability_topic = f"{base_topic}/availability"
        self.client_id = client_id or settings.client_id or f"lfm-satellite-{uuid.uuid4().hex[:8]}"
        self._password = read_password(settings)
        self._outbox: deque[Message] = deque()
        self._handlers: dict[str, Handler] = {}
        self.on_connect: list[Callable[[], None]] = []
        self.dropped = 0
        """Messages dropped because the outbox was full while the broker was away."""
        self.connects = 0
        self.failures = 0
        """Failed or lost connections since the last good one."""
        self.last_error: str | None = None
        self._reported: set[str] = set()
        self._answered = False
        """The broker answered the current connection attempt (CONNACK)."""
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sender: asyncio.Task[None] | None = None
        self._client = self._make_client()

    # -- public -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def queued(self) -> int:
        return len(self._outbox)

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Call `handler(topic, payload)` on the loop for each message on `topic` (exact)."""
        self._handlers[topic] = handler
        if self.connected:
            self._client.subscribe(topic, qos=1)

    def publish(self, topic: str, payload: Payload, *, retain: bool = False, qos: int = 0) -> None:
        """Queue a message; never blocks (see the module docstring)."""
        message = Message(topic, encode(payload), retain, qos)
        if retain:
            for index, waiting in enumerate(self._outbox):
                if waiting.retain and waiting.topic == topic:
                    self._outbox[index] = message  # only the last state matters
                    if self._wake is not None:
                        self._wake.set()
                    return
        if len(self._outbox) >= self.settings.outbox_size:
            self._outbox.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                why = ("the broker takes messages slower than they come" if self.connected
                       else "the broker is away")  # fmt: skip
                _LOG.warning("mqtt: outbox full (%d messages) because %s; %d dropped",
                             self.settings.outbox_size, why, self.dropped)  # fmt: skip
        self._outbox.append(message)
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._sender = asyncio.create_task(self._send_loop())
        self._thread = threading.Thread(target=self._network, name="mqtt", daemon=True)
        self._thread.start()

    async def stop(self, timeout: float = 3.0) -> None:
        """Flush what can be sent, say `offline`, disconnect, and stop the thread."""
        if self._sender is not None:
            deadline = time.monotonic() + timeout / 2
            while self._outbox and self.connected and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        self._stopping.set()
        if self.connected:
            info = self._client.publish(self.availability_topic, OFFLINE, qos=1, retain=True)
            await asyncio.to_thread(_wait_published, info, timeout / 2)
        self._client.disconnect()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout)

    # -- the client -------------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        s = self.settings
        v5 = s.protocol == "5"
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
        )
        client.will_set(self.availability_topic, OFFLINE, qos=1, retain=True)
        if s.username is not None:
            client.username_pw_set(s.username, self._password)
        if s.tls:
            try:
                client.tls_set(
                    ca_certs=self._path(s.ca_file),
                    certfile=self._path(s.cert_file),
                    keyfile=self._path(s.key_file),
                    cert_reqs=ssl.CERT_REQUIRED,
                )
            except (OSError, ssl.SSLError) as err:
                raise MqttConfigError(f"mqtt.tls: cannot set up TLS: {err}") from None
            client.tls_insecure_set(s.tls_insecure)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _path(self, name: str | None) -> str | None:
        return None if name is None else str(Path(name).expanduser())

    def _network(self) -> None:
        """The worker thread: connect, run paho's loop until the connection ends, wait, again."""
        s = self.settings
        for _ in range(10_000_000):  # bounded; at least 1 s apart: years
            if self._stopping.is_set():
                return
            try:
                self._client.connect(s.host, s.port, keepalive=s.keepalive)
            except ssl.SSLError as err:
                self._failed(f"TLS handshake with {s.host}:{s.port} failed ({err.reason or err}); "
                             "check mqtt.ca_file, mqtt.cert_file and the broker's host name")  # fmt: skip
            except OSError as err:
                self._failed(f"cannot connect to {s.host}:{s.port} ({err.strerror or err}); "
                             "check mqtt.host and mqtt.port, and that the broker runs")  # fmt: skip
            else:
                self._answered = False
                self._client.loop_forever()
                if self._stopping.is_set():
                    return
                if not self._answered:
                    hint = "mqtt.cert_file and mqtt.key_file, " if s.tls else ""
                    self._failed(f"{s.host}:{s.port} closed the connection before accepting it; "
                                 f"check {hint}mqtt.protocol and the broker's log")  # fmt: skip
            self._stopping.wait(retry_delay(max(1, self.failures)))

    def _failed(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        if reason not in self._reported:
            self._reported.add(reason)
            _LOG.error("mqtt: %s; retrying", reason)
        else:
            _LOG.debug("mqtt: %s (attempt %d)", reason, self.failures)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._answered = True
        if reason.is_failure:
            hint = ""
            if reason.value in (0x86, 0x87, 4, 5):
                hint = "; check mqtt.username and mqtt.password (or mqtt.password_file)"
            elif reason.value in (0x85, 2):
                hint = "; check mqtt.client_id"
            self._failed(f"the broker refused the connection: {reason}{hint}")
            return
        self.failures = 0
        self.connects += 1
        self._reported.clear()
        self.last_error = None
        client.publish(self.availability_topic, ONLINE, qos=1, retain=True)
        for topic in self._handlers:
            client.subscribe(topic, qos=1)
        self._connected.set()
        _LOG.info("mqtt: connected to %s:%d", self.settings.host, self.settings.port)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._connected_on_loop)

    def _connected_on_loop(self) -> None:
        for hook in self.on_connect:
            try:
                hook()
            except Exception:
                _LOG.exception("mqtt: on-connect hook failed")
        if self._wake is not None:
            self._wake.set()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stopping.is_set():
            self._failed(f"lost the connection to the broker ({reason})")

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        handler = self._handlers.get(message.topic)
        if handler is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(handler, message.topic, bytes(message.payload))

    async def _send_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox and self.connected:
                message = self._outbox[0]
                info = self._client.publish(
                    message.topic, message.payload, qos=message.qos, retain=message.retain
                )
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    break  # not connected after all: keep it for the next connection
                self._outbox.popleft()


def _wait_published(info: paho.MQTTMessageInfo, timeout: float) -> None:
    with contextlib.suppress(RuntimeError, ValueError):
        info.wait_for_publish(timeout)
