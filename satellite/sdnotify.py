"""systemd's service notification protocol (`sd_notify`) in pure Python, and the task that
keeps systemd informed while the daemon runs.

The protocol: each message is one datagram of `KEY=VALUE` lines sent to the AF_UNIX socket
named in `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`). Without
that variable (not started by systemd, or `Type=` is not `notify`) nothing is sent.

`ServiceNotifier` runs on the daemon's event loop:

- `READY=1` once the daemon is ready (the model is loaded, its servers listen),
- `STATUS=...` a line a person can read in `systemctl status`: the model, Home Assistant's
  connections and the last turn, or what is wrong,
- `WATCHDOG=1` every half of `$WATCHDOG_USEC`, but only while the health callable says the
  audio and engine loops are healthy (None); a stalled event loop sends nothing either, so in
  both cases systemd's watchdog restarts the service,
- `STOPPING=1` when the daemon begins to shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from satellite.events import (
    DaemonEvent,
    HomeAssistantConnected,
    HomeAssistantDisconnected,
    Ready,
    TurnFinished,
)

_LOG = logging.getLogger("satellite.sdnotify")

MIN_WATCHDOG_INTERVAL = 0.05
"""Seconds; pings are never sent more often than this, whatever $WATCHDOG_USEC says."""
MAX_STATUS_TEXT = 200
"""A STATUS line is cut to this many characters (reply text can be long)."""


def notify_address(value: str | None) -> str | None:
    """The socket address for `value` of $NOTIFY_SOCKET: a path as it is, `@name` as the
    abstract name `\\0name`; None when empty or of a kind this module does not speak (vsock)."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between watchdog pings: half of $WATCHDOG_USEC; None when systemd asked for
    no watchdog, or asked another process ($WATCHDOG_PID)."""
    usec = environ.get("WATCHDOG_USEC", "").strip()
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "").strip()
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return max(MIN_WATCHDOG_INTERVAL, int(usec) / 1e6 / 2)


class Notifier:
    """Sends notification messages to systemd; does nothing without a socket."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        raw = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
        address = notify_address(raw)
        if raw and address is None:
            _LOG.warning("NOTIFY_SOCKET=%s: unsupported address; not notifying systemd", raw)
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """One message of `KEY=VALUE` fields; False when disabled or the send failed (logged
        once: the daemon goes on without systemd's notifications)."""
        if self.address is None:
            return False
        message = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8")
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto(message, self.address)
        except OSError as err:
            if not self._warned:
                _LOG.warning("cannot notify systemd at %r: %s", self.address, err)
                self._warned = True
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class ServiceNotifier:
    """READY, STATUS, WATCHDOG and STOPPING for one daemon run (see the module docstring).

    `health()` returns None while healthy, else the reason; `describe_model()` names the
    loaded model for the STATUS line. Feed daemon events to `on_event`."""

    def __init__(
        self,
        notifier: Notifier,
        health: Callable[[], str | None],
        describe_model: Callable[[], str] = lambda: "",
        interval: float | None = None,
        connected: Callable[[], bool] | None = None,
    ) -> None:
        self.notifier = notifier
        self.health = health
        self.describe_model = describe_model
        self.connected = connected
        """Whether Home Assistant is connected now; None: follow the connect events."""
        self.interval = interval
        """Seconds between watchdog pings; None: no watchdog."""
        self.ready = False
        self.stopping = False
        self.ha_connected = False
        self.last_turn = ""
        self.pings = 0
        self._status = ""
        self._unhealthy: str | None = None
        self._last_ping: float | None = None
        self._wake = asyncio.Event()

    @classmethod
    def from_env(
        cls,
        health: Callable[[], str | None],
        describe_model: Callable[[], str] = lambda: "",
        environ: Mapping[str, str] | None = None,
        connected: Callable[[], bool] | None = None,
    ) -> ServiceNotifier:
        env = os.environ if environ is None else environ
        return cls(
            Notifier.from_env(env), health, describe_model, watchdog_interval(env), connected
        )

    # -- events -----------------------------------------------------------------------------

    def on_event(self, event: DaemonEvent) -> None:
        """A daemon observer: `Ready`, Home Assistant (dis)connected, `TurnFinished`."""
        if isinstance(event, Ready):
            self.ready = True
            self._status = ""
            self.notifier.send("READY=1", f"STATUS={self.status_line()}")
            self._status = self.status_line()
            return
        if isinstance(event, HomeAssistantConnected | HomeAssistantDisconnected):
            self.ha_connected = isinstance(event, HomeAssistantConnected)
        elif isinstance(event, TurnFinished):
            self.last_turn = _describe_turn(event.report)
        else:
            return
        self._wake.set()  # the status line changed; send it now

    def status_line(self) -> str:
        if self.stopping:
            return "stopping"
        if not self.ready:
            return "loading the model"
        parts = []
        model = self.describe_model()
        if model:
            parts.append(f"model {model}")
        connected = self.connected() if self.connected is not None else self.ha_connected
        if connected:
            parts.append("Home Assistant connected")
        else:
            parts.append("Home Assistant not connected")
        parts.append(f"last turn: {self.last_turn}" if self.last_turn else "no turn yet")
        if self._unhealthy:
            parts.insert(0, f"UNHEALTHY: {self._unhealthy}")
        return "; ".join(parts)[:MAX_STATUS_TEXT]

    # -- the task ---------------------------------------------------------------------------

    async def run(self, stopped: Callable[[], Awaitable[Any]], max_ticks: int = 10**9) -> None:
        """Ping and update the status until `stopped()` completes, then send STOPPING=1.
        Bounded by `max_ticks` loop turns (a week of pings at 1 per second is 6e5)."""
        if not self.notifier.enabled:
            await stopped()
            return
        stop = asyncio.ensure_future(stopped())
        try:
            for _ in range(max_ticks):
                self._tick()
                self._wake.clear()
                wake = asyncio.ensure_future(self._wake.wait())
                # unhealthy: look again after one interval (no pings meanwhile)
                timeout = self.interval if self._unhealthy else self._until_due()
                await asyncio.wait(
                    {stop, wake}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                wake.cancel()
                if stop.done():
                    break
        finally:
            stop.cancel()
            self.stopping = True
            self.notifier.send("STOPPING=1", "STATUS=stopping")
            self.notifier.close()

    def _tick(self) -> None:
        fields = []
        reason = self.health() if self.ready else None
        if reason != self._unhealthy:
            if reason is not None:
                _LOG.error("unhealthy: %s; no watchdog pings until it recovers", reason)
            elif self._unhealthy is not None:
                _LOG.warning("healthy again")
            self._unhealthy = reason
        if self.interval is not None and reason is None and self._until_due() == 0.0:
            fields.append("WATCHDOG=1")
            self.pings += 1
            self._last_ping = time.monotonic()
        status = self.status_line()
        if status != self._status:
            fields.append(f"STATUS={status}")
            self._status = status
        if fields:
            self.notifier.send(*fields)

    def _until_due(self) -> float | None:
        """Seconds until the next ping is due (0.0: now); None without a watchdog. A status
        change wakes the loop early; the ping cadence stays that of the interval."""
        if self.interval is None:
            return None
        if self._last_ping is None:
            return 0.0
        left = self._last_ping + self.interval - time.monotonic()
        return 0.0 if left <= 0.001 else left


def _describe_turn(report: Any) -> str:
    if report is None:
        return ""
    stamp = time.strftime("%H:%M:%S")
    text = str(getattr(report, "reply_text", "") or "").strip()
    quoted = f'"{text[:60]}..."' if len(text) > 60 else f'"{text}"'
    ttfa = getattr(report, "time_to_first_audio", None)
    first = "no audio" if ttfa is None else f"first audio after {ttfa * 1000:.0f} ms"
    error = getattr(report, "error", None)
    return f"{stamp} {quoted if text else 'no text'}, {first}" + (
        f", error: {error}" if error else ""
    )


def attach(daemon: Any, environ: Mapping[str, str] | None = None) -> asyncio.Task[None] | None:
    """Wire a `ServiceNotifier` to a `satellite.daemon.Daemon` when systemd asked for
    notifications; returns its task (None when not started by systemd)."""
    service = ServiceNotifier.from_env(
        daemon.health, lambda: _model_name(daemon), environ, lambda: bool(daemon.server.connected)
    )
    if not service.notifier.enabled:
        return None
    daemon.observe(service.on_event)
    _LOG.info(
        "notifying systemd%s",
        f"; watchdog ping every {service.interval:g} s" if service.interval else "",
    )
    return asyncio.create_task(service.run(daemon.wait_stopped))


def _model_name(daemon: Any) -> str:
    with contextlib.suppress(AttributeError):
        manifest = daemon.responder.model.manifest
        return f"{manifest.name} {manifest.variant}"
    return ""
