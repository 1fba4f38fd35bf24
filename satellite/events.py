"""What the daemon tells its observers (`Daemon.observe`): one frozen dataclass per kind of
news, and `TurnReport`, what one local turn took. Observers (the MQTT bridge, the health
monitor, systemd's notifier, the demo) match on the class; `kind` names it in logs and on
MQTT, `fields()` gives its data as a dict. Plain data: it imports nothing of the satellite."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class TurnReport:
    """What one local turn took (seconds; `time.monotonic()` clock)."""

    wake_word: str
    utterance_seconds: float
    """Audio handed to the model, preroll and trailing silence included."""
    end_reason: str
    """Why listening stopped: `silence` or `max_length`."""
    reply_text: str
    reply_reason: str
    """Why generation stopped: end_of_turn, max_new_tokens, context_full, cancelled, error."""
    reply_audio_seconds: float
    frames: int
    skipped_frames: int
    time_to_first_audio: float | None
    """From the end of the utterance (the endpointer's decision) to the first reply audio
    handed to the speaker."""
    engine_first_audio: float | None
    """The engine's part of that: from the worker taking the turn to its first samples."""
    overhead: float | None
    """`time_to_first_audio - engine_first_audio - start_delay`: the daemon's own share."""
    engine_seconds: float
    """The worker's whole time on the turn."""
    total_seconds: float
    """From the end of the utterance to the end of playback."""
    error: str | None = None
    audio_problems: tuple[str, ...] = ()
    """What the audio integrity check fixed in the reply (safety.audio_integrity)."""
    blocked_rule: str | None = None
    """The safety rule that stopped the reply (`blocked_terms` or a policy file rule), if one
    did."""
    blocked_excerpt: str | None = None
    """The reply's text around what the rule matched (at most 40 characters, personal data
    masked)."""
    safety_wait: float | None = None
    """Seconds the reply's first audio waited on its text's check (the rules' time included;
    0 when the text had passed before the audio came)."""
    start_delay: float | None = None
    """Seconds the first reply audio was held so the rest would keep up (the engine makes
    audio more slowly than real time; 0 when it keeps up)."""
    underruns: int = 0
    """Breaks in the reply's playback the speaker met (0: it played without a break)."""
    holds: int = 0
    """Deliberate gaps: the start held (after a chime), or the middle held once."""
    generation_rtf: float | None = None
    """Wall seconds the engine took per second of reply audio (above 1: slower than real
    time)."""
    voice_distance: float | None = None
    """dB between the reply's voice fingerprint and its voice's recent replies
    (`satellite.safety.voiceprint`; None: still learning the voice, or too little speech)."""

    @property
    def played_at_real_time(self) -> bool:
        """The reply played without a break (none met, none held mid-reply)."""
        return self.underruns == 0 and self.holds == 0


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
class StopWordHeard(DaemonEvent):
    """The stop word ended what the satellite was doing (no turn starts)."""

    kind: ClassVar[str] = "stop"
    stopped: str
    """What it ended: `reply`, `announcement`, `tts` (Home Assistant's reply), `timer`, ..."""
    probability: float


@dataclass(frozen=True)
class VoiceBargedIn(DaemonEvent):
    """The user spoke over what the satellite played (`audio.barge_in: voice`): it stopped
    and a turn opened."""

    kind: ClassVar[str] = "voice_barge_in"
    stopped: str
    """What it ended: `reply`, `announcement`, `tts` (Home Assistant's reply), ..."""


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
class ListeningAgain(DaemonEvent):
    """The satellite listens without the wake word (the listening tone plays)."""

    kind: ClassVar[str] = "listening"
    purpose: str
    """`follow_up` (the reply asked something) or `confirmation` (a device action waits for
    a spoken yes)."""
    seconds: float
    """How long it waits for speech to start."""


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
class ReplyBlocked(DaemonEvent):
    """A safety rule stopped a reply (`what`: reply) or a text to speak (`what`: speech)."""

    kind: ClassVar[str] = "reply_blocked"
    rule: str
    excerpt: str
    what: str


@dataclass(frozen=True)
class Failure(DaemonEvent):
    """Something failed: `where` is audio, engine, safety or home_assistant."""

    kind: ClassVar[str] = "error"
    where: str
    message: str
