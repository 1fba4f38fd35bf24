"""The satellite on MQTT: discovery, control state and commands, events, health.

`MqttBridge` joins a running satellite (`satellite.daemon.core.Daemon`, through the small
`Satellite` protocol of what the bridge reads and calls on it) to an `MqttLink`:

- on every (re)connect, and whenever Home Assistant announces itself (`online` on
  `<prefix>/status`), the discovery payload and every state are published (retained);
- commands on `<base>/<control>/set` change the daemon's live controls (`Daemon.set_control`);
  a malformed one is refused with an `error` event naming the topic and the value (its first
  40 characters; a payload over `COMMAND_BYTES` is refused unread), and the control's state is
  republished so Home Assistant shows the value that stands;
- each topic applies at most one command per `COMMAND_INTERVAL` (the restart button and Home
  Assistant's birth message one per `RARE_INTERVAL`): commands arriving meanwhile wait, and a
  later one replaces a waiting one (counted as superseded, in the health report). A person
  sends a command a second at most; a flood costs the satellite twenty a second per topic,
  its capture loop keeps its pace and its states and events keep flowing;
- the daemon's observer events become event-entity messages on `<base>/event` (JSON with
  `event_type`), and each finished turn is also kept (retained) on `<base>/last_turn`;
- every `health.interval_seconds` the health report goes to `<base>/health` (retained); an
  alert change publishes it at once and sends `alert_raised` / `alert_cleared`.

Nothing here waits on the network: publishing goes through the link's outbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from satellite import events
from satellite.controls import ControlError, Controls
from satellite.events import Observer, TurnReport
from satellite.mqtt.client import MqttLink, Payload
from satellite.mqtt.discovery import CONTROL_TOPICS, Topics, device_payload
from satellite.settings import Settings
from satellite.telemetry.health import AlertChange, HealthMonitor, Watched

_LOG = logging.getLogger("satellite.mqtt")

COMMAND_BYTES = 256
"""Longest command payload read; a longer one is refused without parsing it."""
ECHO_CHARACTERS = 40
"""How much of a refused payload the `error` event and the log repeat."""
COMMAND_INTERVAL = 0.05
"""Seconds between two commands applied on one control's topic."""
RARE_INTERVAL = 1.0
"""Seconds between two restarts, or two republishings for Home Assistant's birth message."""


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _db(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class Satellite(Watched, Protocol):
    """What the bridge reads and calls on the satellite."""

    settings: Settings
    controls: Controls
    mode: str

    @property
    def model_name(self) -> str:
        """`name (variant)` of the loaded model, or `not loaded`."""
        ...

    def set_control(self, name: str, value: Any, source: str = "mqtt") -> Controls: ...

    def restart_pipeline(self) -> None: ...

    def observe(self, observer: Observer) -> None: ...


class MqttBridge:
    def __init__(self, daemon: Satellite, link: MqttLink | None = None) -> None:
        self.daemon = daemon
        settings = daemon.settings
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.link = link or MqttLink(settings.mqtt, self.topics.base)
        self.health = HealthMonitor(settings.health, daemon)
        self.health.on_alert.append(self._on_alert)
        self._ha_turn: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._waiting: dict[str, tuple[Callable[[str, bytes], None], str, bytes]] = {}
        """Per topic: the command waiting for its topic's interval to pass."""
        self._cooling: dict[str, asyncio.TimerHandle] = {}
        self.superseded = 0
        """Commands replaced by a later one on the same topic before they were applied."""
        self._burst: dict[str, int] = {}

    async def start(self) -> None:
        daemon, topics, link = self.daemon, self.topics, self.link
        daemon.observe(self.health.observe)
        daemon.observe(self._on_daemon)
        link.on_connect.append(self.publish_all)
        link.subscribe(topics.ha_status, self._paced(self._on_ha_status, RARE_INTERVAL))
        for control in CONTROL_TOPICS:
            link.subscribe(topics.command(control), self._paced(self._on_command, COMMAND_INTERVAL))
        link.subscribe(topics.restart, self._paced(self._on_restart, RARE_INTERVAL))
        await link.start()
        self._task = asyncio.create_task(self._health_loop())

    async def stop(self) -> None:
        for handle in self._cooling.values():
            handle.cancel()
        self._cooling.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.link.stop()

    # -- publishing -------------------------------------------------------------------------

    def publish_all(self) -> None:
        """Discovery, every control's state, and the health report (all retained)."""
        payload = device_payload(self.settings, self.topics, self.daemon.model_name)
        self.link.publish(self.topics.discovery, payload, retain=True, qos=1)
        for control in CONTROL_TOPICS:
            self.publish_state(control)
        self.publish_health()

    def publish_state(self, control: str) -> None:
        controls = self.daemon.controls
        values: dict[str, Payload] = {
            "mute": "ON" if controls.muted else "OFF",
            "volume": round(controls.volume * 100),
            "wake_word": controls.wake_word,
            "sensitivity": round(controls.sensitivity, 3),
            "voice": controls.voice,
            "mode": controls.mode,
        }
        self.link.publish(self.topics.state(control), values[control], retain=True, qos=1)

    def publish_health(self, check: bool = True) -> None:
        report = self.health.report(check)
        report["model"] = self.daemon.model_name
        report["mqtt_dropped"] = self.link.dropped
        report["mqtt_commands_superseded"] = self.superseded
        report["queues"] = {
            "mqtt_outbox": self.link.queued,
            "playback_seconds": report.pop("playback_queued_s", 0.0),
        }
        self.link.publish(self.topics.health, report, retain=True)

    def event(self, event_type: str, **data: Any) -> None:
        self.link.publish(self.topics.event, {"event_type": event_type, **data}, qos=1)

    def publish_command(self, topic: str, payload: str) -> None:
        """A device command (`satellite.devices.control`), at least once."""
        self.link.publish(topic, payload, qos=1)

    async def _health_loop(self) -> None:
        interval = self.settings.health.interval_seconds
        while True:
            await asyncio.sleep(interval)
            self.publish_health()

    # -- from Home Assistant ----------------------------------------------------------------

    def _paced(
        self, handler: Callable[[str, bytes], None], interval: float
    ) -> Callable[[str, bytes], None]:
        """`handler`, applied at most once per `interval` on a topic, the latest waiting."""

        def receive(topic: str, payload: bytes) -> None:
            if topic in self._cooling:
                if topic in self._waiting:
                    self.superseded += 1
                    self._burst[topic] = self._burst.get(topic, 0) + 1
                self._waiting[topic] = (handler, topic, payload)
                return
            self._apply(handler, topic, payload, interval)

        return receive

    def _apply(
        self, handler: Callable[[str, bytes], None], topic: str, payload: bytes, interval: float
    ) -> None:
        loop = asyncio.get_running_loop()
        self._cooling[topic] = loop.call_later(interval, self._cooled, topic, interval)
        try:
            handler(topic, payload)
        except Exception:  # a fault of the satellite's: the next command still runs
            _LOG.exception("mqtt: %s: the command failed", topic)

    def _cooled(self, topic: str, interval: float) -> None:
        del self._cooling[topic]
        waiting = self._waiting.pop(topic, None)
        if waiting is not None:
            handler, _, payload = waiting
            self._apply(handler, topic, payload, interval)
            return
        burst = self._burst.pop(topic, 0)
        if burst:
            _LOG.warning("mqtt: %s: %d commands came faster than one per %g s and were "
                         "replaced by later ones", topic, burst, interval)  # fmt: skip

    def _on_ha_status(self, topic: str, payload: bytes) -> None:
        if payload.strip().lower() == b"online":
            _LOG.info("mqtt: Home Assistant is online; republishing discovery and states")
            self.publish_all()

    def _on_command(self, topic: str, payload: bytes) -> None:
        control = topic.removeprefix(self.topics.base + "/").removesuffix("/set")
        text = payload[:COMMAND_BYTES].decode("utf-8", errors="replace").strip()
        echo = text[:ECHO_CHARACTERS] + ("..." if len(text) > ECHO_CHARACTERS else "")
        try:
            if len(payload) > COMMAND_BYTES:
                raise ControlError(f"{control}: a payload of {len(payload)} bytes; commands are "
                                   f"at most {COMMAND_BYTES}")  # fmt: skip
            self.daemon.set_control(*_parse_command(control, text))
        except ControlError as err:
            message = str(err).replace(text, echo)[:200]
            _LOG.warning("mqtt: %s: refused %r: %s", topic, echo, message)
            self.event("error", where="mqtt", topic=topic, value=echo, message=message)
        self.publish_state(control)

    def _on_restart(self, topic: str, payload: bytes) -> None:
        text = payload[:COMMAND_BYTES].decode("utf-8", errors="replace").strip()
        if text != "PRESS":
            echo = text[:ECHO_CHARACTERS]
            message = f"restart: expected PRESS, got {echo!r}"
            self.event("error", where="mqtt", topic=topic, value=echo, message=message)
            return
        self.daemon.restart_pipeline()

    # -- from the daemon --------------------------------------------------------------------

    def _on_daemon(self, event: events.DaemonEvent) -> None:
        match event:
            case events.WakeWordHeard():
                self.event("wake_detected", wake_word=event.wake_word,
                           probability=round(event.probability, 3))  # fmt: skip
                self.event("turn_started", mode=self.daemon.mode)
                self._ha_turn = {}
            case events.StopWordHeard():
                self.event("stop_detected", stopped=event.stopped,
                           probability=round(event.probability, 3))  # fmt: skip
            case events.VoiceBargedIn():
                self.event("voice_barge_in", stopped=event.stopped)
                self.event("turn_started", mode=self.daemon.mode)
                self._ha_turn = {}
            case events.ListeningAgain():
                self.event("listening", purpose=event.purpose, seconds=event.seconds)
            case events.TurnFinished():
                self._turn_finished(event.report)
            case events.HomeAssistantTranscript():
                self._ha_turn["transcript"] = event.text
            case events.HomeAssistantReply():
                self._ha_turn["reply"] = event.text
            case events.Played(what="tts") if self._ha_turn:
                turn = {"mode": "ha", "transcript": None, "reply": "", **self._ha_turn}
                self._ha_turn = {}
                self.event("turn_finished", **turn)
                self.link.publish(self.topics.last_turn, turn, retain=True)
            case events.ReplyBlocked():
                self.event("reply_blocked", rule=event.rule, excerpt=event.excerpt,
                           what=event.what)  # fmt: skip
            case events.Failure():
                self.event("error", where=event.where, message=event.message)
            case events.ControlChanged():
                topic = "mute" if event.name == "muted" else event.name
                if topic in CONTROL_TOPICS:
                    self.publish_state(topic)

    def _turn_finished(self, report: TurnReport) -> None:
        turn = {
            "mode": "local",
            "transcript": None,
            "reply": report.reply_text,
            "reason": report.reply_reason,
            "reply_seconds": round(report.reply_audio_seconds, 2),
            "time_to_first_audio_ms": _ms(report.time_to_first_audio),
            "engine_ms": _ms(report.engine_first_audio),
            "overhead_ms": _ms(report.overhead),
            "turn_ms": _ms(report.total_seconds),
            "start_delay_ms": _ms(report.start_delay),
            "underruns": report.underruns,
            "safety_wait_ms": _ms(report.safety_wait),
            "voice_distance_db": _db(report.voice_distance),
        }
        if report.blocked_rule is not None:
            turn |= {"blocked_rule": report.blocked_rule, "blocked_excerpt": report.blocked_excerpt}
        self.event("turn_finished", **turn)
        self.link.publish(self.topics.last_turn, turn, retain=True)

    def _on_alert(self, change: AlertChange) -> None:
        self.event(
            "alert_raised" if change.raised else "alert_cleared",
            alert=change.name,
            value_ms=round(change.value, 1),
            threshold_ms=round(change.threshold, 1),
        )
        self.publish_health(check=False)  # called from a check: report what it decided


def _parse_command(control: str, text: str) -> tuple[str, Any]:
    """A command payload -> (control name, value) for `Daemon.set_control`."""
    if control == "mute":
        if text.upper() not in ("ON", "OFF"):
            raise ControlError(f"mute: expected ON or OFF, got {text[:100]!r}")
        return "muted", text.upper() == "ON"
    if control in ("volume", "sensitivity"):
        try:
            number = float(text)
        except ValueError:
            raise ControlError(f"{control}: expected a number, got {text[:100]!r}") from None
        if number != number:  # NaN
            raise ControlError(f"{control}: expected a number, got {text[:100]!r}")
        if control == "volume":
            if not 0 <= number <= 100:
                raise ControlError(f"volume: {text} is out of range; expected 0 to 100")
            return "volume", number / 100
        return "sensitivity", number
    return control, text
