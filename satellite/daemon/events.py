"""What the daemon tells its observers (`Daemon.observe`): one frozen dataclass per kind of
news. Observers (the MQTT bridge, the health monitor, systemd's notifier, the demo) match on
the class; `kind` names it in logs and on MQTT, `fields()` gives its data as a dict."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from satellite.daemon.report import TurnReport


@dataclass(frozen=True)
class DaemonEvent:
    kind: ClassVar[str] = ""

    def fields(self) -> dict[str, Any]:
        """The event's data, by field name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


Observer = Callable[[DaemonEvent], None]


@dataclass(frozen=True)
class Ready(DaemonEvent):
    """Started: the model is loaded and the servers listen (systemd's READY=1)."""

    kind: ClassVar[str] = "ready"
    port: int
    """The Wyoming satellite port bound."""


@dataclass(frozen=True)
class WakeWordHeard(DaemonEvent):
    kind: ClassVar[str] = "wake"
    wake_word: str
    probability: float


@dataclass(frozen=True)
class SpeechStarted(DaemonEvent):
    kind: ClassVar[str] = "speech_started"


@dataclass(frozen=True)
class UtteranceHeard(DaemonEvent):
    """The endpointer closed the user's utterance."""

    kind: ClassVar[str] = "utterance"
    seconds: float
    reason: str
    """`silence` or `max_length`."""


@dataclass(frozen=True)
class ReplyText(DaemonEvent):
    """Text of the local reply as the model writes it."""

    kind: ClassVar[str] = "reply_text"
    text: str


@dataclass(frozen=True)
class TurnFinished(DaemonEvent):
    kind: ClassVar[str] = "turn_finished"
    report: TurnReport


@dataclass(frozen=True)
class TurnInterrupted(DaemonEvent):
    """A local turn was cut (barge-in, a change of course, shutdown)."""

    kind: ClassVar[str] = "turn_interrupted"


@dataclass(frozen=True)
class Said(DaemonEvent):
    """The satellite speaks `text` with the model's text to speech (device control)."""

    kind: ClassVar[str] = "said"
    text: str


@dataclass(frozen=True)
class ConfirmationHeard(DaemonEvent):
    """The answer to a confirmation question ("" when none came in time)."""

    kind: ClassVar[str] = "confirmation"
    transcript: str


@dataclass(frozen=True)
class ControlChanged(DaemonEvent):
    kind: ClassVar[str] = "control_changed"
    name: str
    value: Any


@dataclass(frozen=True)
class PipelineRestarted(DaemonEvent):
    kind: ClassVar[str] = "pipeline_restarted"


@dataclass(frozen=True)
class HomeAssistantConnected(DaemonEvent):
    kind: ClassVar[str] = "ha_connected"


@dataclass(frozen=True)
class HomeAssistantDisconnected(DaemonEvent):
    kind: ClassVar[str] = "ha_disconnected"
    reason: str


@dataclass(frozen=True)
class HomeAssistantTranscript(DaemonEvent):
    """What Home Assistant's pipeline heard."""

    kind: ClassVar[str] = "ha_transcript"
    text: str


@dataclass(frozen=True)
class HomeAssistantReply(DaemonEvent):
    """The text Home Assistant's pipeline answers with (its `synthesize`)."""

    kind: ClassVar[str] = "ha_reply"
    text: str


@dataclass(frozen=True)
class Played(DaemonEvent):
    """A stream from Home Assistant (`tts` in a turn, else `announcement`) has played."""

    kind: ClassVar[str] = "played"
    what: str
    seconds: float
    ending: str
    """How the stream ended (`complete`, `stalled`, `disconnected`, `replaced`, `stopped`)."""
    lost_seconds: float


@dataclass(frozen=True)
class TimerRinging(DaemonEvent):
    """A timer finished and rings."""

    kind: ClassVar[str] = "timer_finished"
    id: str
    name: str


@dataclass(frozen=True)
class TimerSilenced(DaemonEvent):
    kind: ClassVar[str] = "timer_silenced"


@dataclass(frozen=True)
class Failure(DaemonEvent):
    """Something failed: `where` is audio, engine, safety or home_assistant."""

    kind: ClassVar[str] = "error"
    where: str
    message: str
