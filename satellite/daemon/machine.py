"""The daemon's turn state machine: states, the events that move it, and one transition
function. Pure: no audio, sockets, tasks or clock, so tests drive it in microseconds.

States:

- **idle**: waiting for the wake word (something may still be playing: an announcement, a
  chime, the tail of a reply);
- **listening** (`local` mode): the endpointer looks for the end of the user's question;
- **streaming** (`ha` mode): the microphone's audio goes to Home Assistant's pipeline;
- **responding**: the local model's reply (or something the satellite says) is generated and
  played;
- **confirming**: a device action waits for a spoken yes; the satellite listens without a
  wake word.

`transition(state, event)` gives the `Step` to take (None: the event means nothing in that
state): the state after it and the `Action`s the daemon performs, in order: the old state's
exit actions and the event's own (done in the old state), then the new state's entry actions
(done in the new one). A step to the same state
leaves and enters it again (a barge-in while streaming stops that stream and starts a new
one). Entry and exit actions are written once, in `ENTRY` and `EXIT`: leaving streaming
always tells Home Assistant the audio stopped; entering a listening state always opens a turn
(its counters reset, the endpointer restarted).

`routing` says where a capture chunk goes, from the controls and what plays.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

State = Literal["idle", "listening", "streaming", "responding", "confirming"]

LISTENING_STATES: tuple[State, ...] = ("listening", "streaming", "confirming")
"""States in which capture audio belongs to a turn (the endpointer's events count)."""


class Action(enum.Enum):
    """What the daemon does on a step (`Daemon._perform` is the one place each is done)."""

    INTERRUPT = "interrupt"
    """Stop the reply being generated, the turn's task and whatever plays; drop speculation."""
    BARGE_IN = "barge_in"
    """The wake word came while busy: say what it stops, then as INTERRUPT."""
    SILENCE_TIMER = "silence_timer"
    """Stop the ringing timer (its chime with it); other sound plays on."""
    IGNORE_WAKE = "ignore_wake"
    """Log that the wake word was heard with nowhere to stream to."""
    GREET = "greet"
    """Tell observers and Home Assistant the wake word was heard; play the awake sound."""
    OPEN_TURN = "open_turn"
    """Count the turn's audio from zero, no speech yet, the endpointer restarted."""
    RUN_PIPELINE = "run_pipeline"
    """Stream timestamps from zero; ask Home Assistant to run its pipeline (asr -> tts)."""
    STOP_STREAM = "stop_stream"
    """Tell Home Assistant the streamed audio has stopped (`audio-stop`)."""
    VOICE_STOPPED = "voice_stopped"
    """Tell Home Assistant the user stopped speaking (`voice-stopped`, local mode)."""
    RESPOND = "respond"
    """Start the local model's reply to the utterance."""
    HEAR_ANSWER = "hear_answer"
    """Transcribe the answer to a confirmation question and act on it (no utterance: none
    came in time)."""


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WakeWord:
    """The wake-word model fired."""

    mode: str
    """`local` or `ha` (`satellite.mode`)."""
    ha_connected: bool
    """Home Assistant holds a live satellite connection."""
    ringing: bool
    """A finished timer is ringing (the wake word silences it, nothing else)."""
    playing: bool
    """Something plays (a barge-in stops it)."""


@dataclass(frozen=True)
class UtteranceEnd:
    """The endpointer decided the user has finished (silence or the length limit)."""


@dataclass(frozen=True)
class NoSpeech:
    """No speech came within the wait after the wake word (or the confirmation question)."""


@dataclass(frozen=True)
class PipelineEnd:
    """Home Assistant has heard enough (`voice-stopped`, `transcript` or `error`), or went
    away, while audio streamed to it."""


@dataclass(frozen=True)
class Speak:
    """The satellite starts speaking: a local reply, or what a device action says."""


@dataclass(frozen=True)
class Spoken:
    """What was being said has been generated and played."""

    confirm: bool = False
    """A device action waits for a spoken yes: listen for it without a wake word."""


@dataclass(frozen=True)
class ChangeCourse:
    """The course changed under the turn (mode changed, muted, pipeline restarted)."""

    playing: bool
    force: bool = False
    """Interrupt even when idle with nothing playing (a pipeline restart)."""


Event = WakeWord | UtteranceEnd | NoSpeech | PipelineEnd | Speak | Spoken | ChangeCourse


@dataclass(frozen=True)
class Step:
    state: State
    """The state after the step."""
    leaving: tuple[Action, ...]
    """Done in the old state: its exit actions, then the event's own."""
    entering: tuple[Action, ...]
    """Done in the new state: its entry actions."""

    @property
    def actions(self) -> tuple[Action, ...]:
        return self.leaving + self.entering


ENTRY: dict[State, tuple[Action, ...]] = {
    "idle": (),
    "listening": (Action.OPEN_TURN,),
    "streaming": (Action.OPEN_TURN, Action.RUN_PIPELINE),
    "responding": (),
    "confirming": (Action.OPEN_TURN,),
}
EXIT: dict[State, tuple[Action, ...]] = {
    "idle": (),
    "listening": (),
    "streaming": (Action.STOP_STREAM,),
    "responding": (),
    "confirming": (),
}


def transition(state: State, event: Event) -> Step | None:
    """The step `event` causes in `state`; None when it causes none (see the module
    docstring)."""
    match event:
        case WakeWord(ringing=True):
            return Step(state, (Action.SILENCE_TIMER,), ())
        case WakeWord(mode="ha", ha_connected=False):
            return Step(state, (Action.IGNORE_WAKE,), ())
        case WakeWord(mode=mode, playing=playing):
            target: State = "streaming" if mode == "ha" else "listening"
            if state != "idle" or playing:
                return _move(state, target, (Action.BARGE_IN, Action.GREET))
            return _move(state, target, (Action.GREET,))
        case UtteranceEnd() if state == "streaming":
            return _move(state, "idle")
        case UtteranceEnd() if state == "listening":
            return _move(state, "responding", (Action.VOICE_STOPPED, Action.RESPOND))
        case UtteranceEnd() if state == "confirming":
            return _move(state, "responding", (Action.VOICE_STOPPED, Action.HEAR_ANSWER))
        case NoSpeech() if state == "confirming":
            return _move(state, "idle", (Action.HEAR_ANSWER,))
        case NoSpeech() if state in LISTENING_STATES:
            return _move(state, "idle")
        case PipelineEnd() if state == "streaming":
            return _move(state, "idle")
        case Speak():
            return _move(state, "responding")
        case Spoken(confirm=confirm) if state == "responding":
            return _move(state, "confirming" if confirm else "idle")
        case ChangeCourse(playing=playing, force=force) if force or playing or state != "idle":
            return _move(state, "idle", (Action.INTERRUPT,))
    return None


def _move(state: State, target: State, actions: tuple[Action, ...] = ()) -> Step:
    return Step(target, EXIT[state] + actions, ENTRY[target])


@dataclass(frozen=True)
class Routing:
    """Where one capture chunk goes."""

    wake_word: bool
    """To the wake-word model."""
    endpointer: bool
    """To the endpointer (which keeps its history of speech between turns); its events count
    for the turn in the states of `LISTENING_STATES`, and in `streaming` the chunk goes to
    Home Assistant too."""


def routing(*, muted: bool, playing: bool, barge_in: bool) -> Routing:
    """Muted: nowhere. While something plays with barge-in off, the wake-word model hears
    nothing (the mic is gated: the satellite's own voice must not wake it)."""
    if muted:
        return Routing(wake_word=False, endpointer=False)
    return Routing(wake_word=not (playing and not barge_in), endpointer=True)
