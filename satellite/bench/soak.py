"""`lfm-satellite bench soak`: a running daemon in a hostile home, for as long as asked.

In rounds, on loopback, against a daemon in this process (the null speaker, its Wyoming
satellite and services ports, MQTT to a mosquitto of its own):

- malformed Wyoming frames on both ports (`satellite.bench.fuzz`);
- an MQTT flood over every command topic (valid, refused and oversized payloads), then one
  good command per topic, whose states must arrive;
- the broker killed (SIGKILL) and started again on its port: recovery is the time from its
  start to a command's state coming back;
- clients dropping mid-request (a TTS request, a transcription, an announcement from "Home
  Assistant", each cut by a reset connection): recovery is the time to the next request
  answered (and the satellite's playback ended, for the announcement).

Each step ends with a well-formed request that must succeed. The report counts crashes (the
daemon's health naming a problem that does not clear, its capture loop ending), wedges (a
step that does not recover within `RECOVERY_LIMIT`), recovery times and the process's RSS
growth. The suite runs it small (tests/bench/test_soak.py); the command runs it at any length.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Describe
from wyoming.satellite import RunSatellite
from wyoming.tts import Synthesize

from satellite.bench.fuzz import FuzzReport, fuzz_port, malformed_frames
from satellite.bench.system import current_rss_mb, peak_rss_mb
from satellite.daemon.core import Daemon
from satellite.errors import UserError
from satellite.mqtt.localbroker import LocalBroker, mosquitto_program
from satellite.settings import Settings, loopback_wyoming

RECOVERY_LIMIT = 30.0
"""A step that has not recovered after this many seconds is a wedge."""
HEALTH_LIMIT = 10.0
"""A health problem that lasts longer than this after a step is a crash."""
FLOOD_PAYLOADS: dict[str, list[bytes]] = {
    "mute": [b"ON", b"OFF", b"maybe"],
    "volume": [b"10", b"55", b"abc", b"1" * 5000],
    "sensitivity": [b"0.2", b"0.8", b"2"],
    "wake_word": [b"okay_nabu", b"hey_jarvis", b"nope"],
    "voice": [b"uk_male", b"us_female", b"robot"],
    "mode": [b"local", b"ha", b"both"],
    "restart": [b"PRESS", b"press"],
}


def flood_commands(
    count: int, payloads: dict[str, list[bytes]] = FLOOD_PAYLOADS
) -> Iterator[tuple[str, bytes]]:
    """`count` (control, payload) pairs: every control in turn, each cycling through its
    payloads."""
    controls = list(payloads)
    for number in range(count):
        options = payloads[controls[number % len(controls)]]
        yield controls[number % len(controls)], options[(number // len(controls)) % len(options)]


@dataclass
class SoakReport:
    rounds: int = 0
    seconds: float = 0.0
    fuzz: list[dict[str, Any]] = field(default_factory=list)
    flood_payloads: int = 0
    flood_settle_seconds: list[float] = field(default_factory=list)
    kill_recovery_seconds: list[float] = field(default_factory=list)
    drop_recovery_seconds: list[float] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    wedges: list[str] = field(default_factory=list)
    mqtt_dropped: int = 0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_peak_mb: float = 0.0

    @property
    def ok(self) -> bool:
        fuzz_ok = all(f["ok"] for f in self.fuzz)
        return fuzz_ok and not self.crashes and not self.wedges

    def summary(self) -> str:
        def times(values: list[float]) -> str:
            if not values:
                return "none"
            return (f"{len(values)} (median {statistics.median(values):.2f} s, at most "
                    f"{max(values):.2f} s)")  # fmt: skip

        lines = [
            f"soak: {self.rounds} rounds in {self.seconds:.0f} s",
            *(f"  fuzz {f['summary']}" for f in self.fuzz),
            f"  MQTT flood: {self.flood_payloads} payloads, then a command's state back: "
            f"{times(self.flood_settle_seconds)}; {self.mqtt_dropped} outgoing dropped",
            f"  broker kills, recovered: {times(self.kill_recovery_seconds)}",
            f"  client drops mid-request, recovered: {times(self.drop_recovery_seconds)}",
            f"  crashes: {len(self.crashes)}" + "".join(f"\n    {c}" for c in self.crashes),
            f"  wedges: {len(self.wedges)}" + "".join(f"\n    {w}" for w in self.wedges),
            f"  RSS {self.rss_start_mb:.0f} MB at the start, {self.rss_end_mb:.0f} MB at the end "
            f"({self.rss_end_mb - self.rss_start_mb:+.0f} MB), peak {self.rss_peak_mb:.0f} MB",
        ]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


class _Watcher:
    """Home Assistant's MQTT side: a paho client that reconnects by itself and records the
    last payload of each topic."""

    def __init__(self, port: int, base: str) -> None:
        self.last: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{base}/+/state", qos=1)
        self.client.on_message = self._record
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _record(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self.lock:
            self.last[message.topic] = bytes(message.payload)

    def state(self, topic: str) -> bytes | None:
        with self.lock:
            return self.last.get(topic)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def _until(check: Any, limit: float) -> float | None:
    """Seconds until `check()` holds, or None after `limit`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > limit:
            return None
        await asyncio.sleep(0.05)
    return time.monotonic() - start


class Soak:
    """One daemon, one broker, one report; `round` runs every step once."""

    def __init__(self, daemon: Daemon, broker: LocalBroker, seed: int = 0) -> None:
        assert daemon.mqtt is not None and daemon.services is not None
        self.daemon = daemon
        self.broker = broker
        self.base = daemon.mqtt.topics.base
        self.seed = seed
        self.report = SoakReport()
        self.watcher = _Watcher(broker.port, self.base)
        self._volume = 10
        self.report.rss_start_mb, self.report.rss_peak_mb = current_rss_mb(), peak_rss_mb()
        self._started = time.monotonic()

    def close(self) -> None:
        self.watcher.close()

    async def round(self, frames: int, flood: int, kills: int, drops: int) -> None:
        report = self.report
        report.rounds += 1
        seed = self.seed + report.rounds * 10
        host = "127.0.0.1"
        assert self.daemon.services is not None
        for port, satellite, offset in ((self.daemon.server.bound_port, True, 1),
                                        (self.daemon.services.bound_port, False, 2)):  # fmt: skip
            if frames:
                result: FuzzReport = await fuzz_port(
                    host, port, malformed_frames(frames, seed + offset), satellite=satellite,
                    allow_close=not satellite,
                )  # fmt: skip
                report.fuzz.append({"summary": result.summary(), "ok": result.ok})
                await self._healthy(f"after the fuzz on port {port}")
        if flood:
            await self._flood(flood)
        for number in range(kills):
            await self._kill(number)
        for number in range(drops):
            await self._drop(number)
        link = self.daemon.mqtt.link if self.daemon.mqtt is not None else None
        report.mqtt_dropped = link.dropped if link is not None else 0
        report.rss_end_mb, report.rss_peak_mb = current_rss_mb(), peak_rss_mb()
        report.seconds = time.monotonic() - self._started

    async def _healthy(self, when: str) -> None:
        daemon = self.daemon  # its health names a capture loop that ended, too
        waited = await _until(lambda: daemon.health() is None, HEALTH_LIMIT)
        if waited is None:
            self.report.crashes.append(f"{when}: {daemon.health()}")

    async def _command_comes_back(self, when: str) -> float | None:
        """Send a new volume and wait for its state: the MQTT path works end to end."""
        self._volume = 10 + (self._volume + 7) % 80
        value = str(self._volume).encode()
        topic = f"{self.base}/volume/state"
        start = time.monotonic()
        deadline = start + RECOVERY_LIMIT
        while time.monotonic() < deadline:
            if self.watcher.client.is_connected():
                self.watcher.client.publish(f"{self.base}/volume/set", value, qos=1)
                if await _until(lambda: self.watcher.state(topic) == value, 1.0) is not None:
                    return time.monotonic() - start
            else:
                await asyncio.sleep(0.1)
        self.report.wedges.append(f"{when}: the volume command's state did not come back")
        return None

    async def _flood(self, count: int) -> None:
        flood = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        flood.connect("127.0.0.1", self.broker.port)
        flood.loop_start()
        try:
            sent = [
                flood.publish(f"{self.base}/{control}/set", payload, qos=1)
                for control, payload in flood_commands(count)
            ]

            def wait_sent() -> None:
                for info in sent:
                    info.wait_for_publish(60)

            await asyncio.to_thread(wait_sent)
            self.report.flood_payloads += count
            settled = await self._command_comes_back("after the MQTT flood")
            if settled is not None:
                self.report.flood_settle_seconds.append(settled)
            self.daemon.set_control("muted", False)  # the flood may have left it muted
            self.daemon.set_control("mode", "local")
            await self._healthy("after the MQTT flood")
        finally:
            flood.loop_stop()
            flood.disconnect()

    async def _kill(self, number: int) -> None:
        self.broker.kill()
        await asyncio.sleep(1.0)
        if not await asyncio.to_thread(self.broker.start):
            self.report.crashes.append(f"broker kill {number}: mosquitto did not start again")
            return
        self.watcher.close()  # a fresh Home Assistant side: the time is the satellite's own
        self.watcher = _Watcher(self.broker.port, self.base)
        recovered = await self._command_comes_back(f"broker kill {number}")
        if recovered is not None:
            self.report.kill_recovery_seconds.append(recovered)
        await self._healthy(f"after broker kill {number}")

    async def _drop(self, number: int) -> None:
        daemon = self.daemon
        assert daemon.services is not None
        kind = ("tts", "asr", "announcement")[number % 3]
        port = daemon.server.bound_port if kind == "announcement" else daemon.services.bound_port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if kind == "tts":
            await async_write_event(Synthesize(text="Hello there, how are you?").event(), writer)
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(0.3):
                    await async_read_event(reader)
        else:
            rate = 16000 if kind == "asr" else 22050
            first = Transcribe(language="en").event() if kind == "asr" else RunSatellite().event()
            await async_write_event(first, writer)
            await async_write_event(AudioStart(rate=rate, width=2, channels=1).event(), writer)
            tone = (np.sin(np.arange(rate // 4) / 3.0) * 6000).astype("<i2").tobytes()
            await async_write_event(AudioChunk(rate, 2, 1, tone).event(), writer)
            await asyncio.sleep(0.05)
        writer.transport.abort()  # a reset: gone mid-request
        start = time.monotonic()
        answered = await self._describe(port)
        if kind == "announcement":
            answered = (
                answered and await _until(lambda: not daemon.playing, RECOVERY_LIMIT) is not None
            )
        if not answered:
            self.report.wedges.append(f"client drop {number} ({kind}): no recovery")
            return
        self.report.drop_recovery_seconds.append(time.monotonic() - start)
        await self._healthy(f"after client drop {number} ({kind})")

    async def _describe(self, port: int) -> bool:
        try:
            async with asyncio.timeout(RECOVERY_LIMIT):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    await async_write_event(Describe().event(), writer)
                    for _ in range(1000):
                        event: Event | None = await async_read_event(reader)
                        if event is None:
                            return False
                        if event.type == "info":
                            return True
                finally:
                    writer.close()
        except (TimeoutError, ConnectionError, OSError):
            return False
        return False


def soak_settings(model: Path, scratch: Path, mqtt_port: int) -> Settings:
    """The daemon of a soak: null audio at real time, loopback Wyoming (services on), MQTT to
    the soak's own broker, its state file in `scratch` (not the user's saved controls)."""
    base = Settings()
    replace = dataclasses.replace
    return replace(
        base,
        satellite=replace(base.satellite, state_file=str(scratch / "state.json")),
        audio=replace(base.audio, backend="null", realtime=True),
        model=replace(base.model, directory=str(model), threads=1),
        wyoming=replace(
            loopback_wyoming(base.wyoming),
            services_enabled=True,
            services_host="127.0.0.1",
            services_port=0,
        ),
        mqtt=replace(base.mqtt, enabled=True, host="127.0.0.1", port=mqtt_port),
    )


async def run_soak(
    model: Path, *, rounds: int | None = 1, minutes: float | None = None, frames: int = 1000,
    flood: int = 1000, kills: int = 2, drops: int = 12, seed: int = 0,
    progress: Callable[[SoakReport], None] | None = None,
) -> SoakReport:  # fmt: skip
    """Rounds of every step until `rounds` are done or `minutes` have passed (whichever
    comes first; at least one round). UserError when mosquitto is not installed."""

    program = mosquitto_program()
    if program is None:
        raise UserError("bench soak needs mosquitto (script/setup installs it: apt-get install "
                        "mosquitto)")  # fmt: skip
    deadline = None if minutes is None else time.monotonic() + minutes * 60
    with tempfile.TemporaryDirectory(prefix="lfm-soak-") as folder:
        scratch = Path(folder)
        broker = LocalBroker(program, scratch)
        if not broker.start():
            raise UserError("bench soak: mosquitto did not start")
        daemon = Daemon(soak_settings(model, scratch, broker.port))
        soak: Soak | None = None
        try:
            await daemon.start()
            soak = Soak(daemon, broker, seed)
            for number in itertools.count(1):
                await soak.round(frames, flood, kills, drops)
                if progress is not None:
                    progress(soak.report)
                if rounds is not None and number >= rounds:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
            return soak.report
        finally:
            if soak is not None:
                soak.close()
            await daemon.close()
            broker.stop()
