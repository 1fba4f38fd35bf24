"""The daemon's turn state machine: states, the events that move it, and one transition
function. Pure: no audio, sockets, tasks or clock, so tests drive it in microseconds.

States:

- **idle**: waiting for the wake word (something may still be playing: an announcement, a
  chime, the tail of a reply);
- **listening** (`local` mode): the endpointer looks for the end of the user's question (after
  the wake word, or without one to follow up a reply);
- **streaming** (`ha` mode): the microphone's audio goes to Home Assistant's pipeline;
- **responding**: the local model's reply (or something the satellite says) is generated and
  played;
- **confirming**: a device action waits for a spoken yes; the satellite listens without a
  wake word.

Listening again without the wake word is one mechanism (`ListenAgain`, from idle once what was
said has played): to a confirmation's answer (confirming) or to a follow-up (listening); both
play the listening tone and tell observers (`INVITE_ANSWER`, `INVITE_FOLLOW_UP`).

`transition(state, event)` gives the `Step` to take (None: the event means nothing in that
state): the state after it and the `Action`s the daemon performs, in order: the old state's
exit actions and the event's own (done in the old state), then the new state's entry actions
(done in the new one). A step to the same state
leaves and enters it again (a barge-in while streaming stops that stream and starts a new
one). Entry and exit actions are written once, in `ENTRY` and `EXIT`: leaving streaming
always tells Home Assistant the audio stopped; entering a listening state always opens a turn
(its counters reset, the endpointer restarted).

The user's voice over what plays (`VoiceOver`, `audio.barge_in: voice`) is a barge-in
without the wake word: what plays stops and a turn opens that keeps what they have said.

The stop word (`StopWord`) ends what the satellite says, plays or rings without starting a
turn; it counts only when nothing is being listened to (idle or responding), so "stop the
music" said as a question is a question.

`routing` says where a capture chunk goes, from the controls, the state and what plays.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

State = Literal["idle", "listening", "streaming", "responding", "confirming"]

LISTENING_STATES: tuple[State, ...] = ("listening", "streaming", "confirming")
"""States in which capture audio belongs to a turn (the endpointer's events count)."""
STOPPABLE_STATES: tuple[State, ...] = ("idle", "responding")
"""States in which the stop word counts (in the others the user is being listened to)."""


class Action(enum.Enum):
    """What the daemon does on a step (`Daemon._perform` is the one place each is done)."""

    INTERRUPT = "interrupt"
    """Stop the reply being generated, the turn's task and whatever plays; drop speculation."""
    BARGE_IN = "barge_in"
    """The wake word came while busy: say what it stops, then as INTERRUPT."""
    BARGE_IN_BY_VOICE = "barge_in_by_voice"
    """The user spoke over what plays (`audio.barge_in: voice`): say what it stops, tell
    observers, then as INTERRUPT; the turn that opens keeps what they have said so far."""
    SILENCE_TIMER = "silence_timer"
    """Stop the ringing timer (its chime with it); other sound plays on."""
    STOP = "stop"
    """The stop word came while busy: say what it stops, then as INTERRUPT."""
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
    INVITE_ANSWER = "invite_answer"
    """Listen again without the wake word for a confirmation's answer: the listening tone,
    observers told, `device_control.confirm_seconds` to start speaking."""
    INVITE_FOLLOW_UP = "invite_follow_up"
    """As INVITE_ANSWER, for a follow-up: `satellite.follow_up_seconds` to start speaking."""
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
class StopWord:
    """The stop-word model fired."""

    ringing: bool
    """A finished timer is ringing (the stop word silences it)."""
    playing: bool
    """Something plays (the stop word stops it)."""


@dataclass(frozen=True)
class VoiceOver:
    """The user's voice over what the satellite plays (`audio.barge_in: voice`)."""

    mode: str
    """`local` or `ha` (`satellite.mode`)."""
    ha_connected: bool
    """Home Assistant holds a live satellite connection."""


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


@dataclass(frozen=True)
class ListenAgain:
    """Listen without the wake word, once what was said has played."""

    purpose: Literal["confirmation", "follow_up"]
    """`confirmation`: a device action waits for a spoken yes; `follow_up`: the reply asked
    something (or `satellite.continue_conversation: always`)."""


@dataclass(frozen=True)
class ChangeCourse:
    """The course changed under the turn (mode changed, muted, pipeline restarted)."""

    playing: bool
    force: bool = False
    """Interrupt even when idle with nothing playing (a pipeline restart)."""


Event = (
    WakeWord
    | StopWord
    | VoiceOver
    | UtteranceEnd
    | NoSpeech
    | PipelineEnd
    | Speak
    | Spoken
    | ListenAgain
    | ChangeCourse
)


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
        case VoiceOver(mode="ha", ha_connected=False):
            return None
        case VoiceOver(mode=mode) if state in STOPPABLE_STATES:
            target = "streaming" if mode == "ha" else "listening"
            return _move(state, target, (Action.BARGE_IN_BY_VOICE,))
        case StopWord(ringing=ringing, playing=playing) if state in STOPPABLE_STATES:
            stops = playing or state == "responding"
            silence = (Action.SILENCE_TIMER,) if ringing else ()
            if stops:
                return _move(state, "idle", (*silence, Action.STOP))
            return Step(state, silence, ()) if silence else None
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
        case Spoken() if state == "responding":
            return _move(state, "idle")
        case ListenAgain(purpose="confirmation") if state == "idle":
            return _move(state, "confirming", (Action.INVITE_ANSWER,))
        case ListenAgain() if state == "idle":
            return _move(state, "listening", (Action.INVITE_FOLLOW_UP,))
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
    stop_word: bool
    """To the stop-word model: something can be stopped (a reply on its way or playing,
    sound playing, a timer ringing) in a state where the stop word counts."""
    endpointer: bool
    """To the endpointer (which keeps its history of speech between turns); its events count
    for the turn in the states of `LISTENING_STATES`, and in `streaming` the chunk goes to
    Home Assistant too."""
    voice: bool = False
    """To the barge-in-by-voice detector: something plays (not a ringing timer), in a state
    where the user is not being listened to, with `audio.barge_in: voice`."""


def routing(
    *, muted: bool, playing: bool, barge_in: bool | str, state: State, ringing: bool
) -> Routing:
    """Muted: nowhere. While something plays with barge-in off, the wake-word model hears
    nothing (the mic is gated: the satellite's own voice must not wake it); the stop word
    still does, being the way to end what plays. With barge-in by voice, what plays is also
    listened to for the user's voice over it."""
    if muted:
        return Routing(wake_word=False, stop_word=False, endpointer=False)
    busy = playing or ringing or state == "responding"
    return Routing(
        wake_word=not (playing and not barge_in),
        stop_word=busy and state in STOPPABLE_STATES,
        endpointer=True,
        voice=barge_in == "voice" and playing and not ringing and state in STOPPABLE_STATES,
    )
