"""The daemon's turn state machine on its own (`satellite.daemon.machine`): barge-in, mic
gating, pause, confirmation and Home Assistant streaming, driven event by event without
audio, sockets or a clock. The real-time tests beside it (test_satellite_daemon,
test_satellite_wyoming, test_device_control, test_satellite_faults) drive the same paths
through a running daemon."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest

from satellite.daemon.machine import (
    ENTRY,
    EXIT,
    LISTENING_STATES,
    Action,
    ChangeCourse,
    Event,
    ListenAgain,
    NoSpeech,
    PipelineEnd,
    Routing,
    Speak,
    Spoken,
    State,
    Step,
    StopWord,
    UtteranceEnd,
    VoiceOver,
    WakeWord,
    routing,
    transition,
)

A = Action
STATES: tuple[State, ...] = get_args(State)


def wake(mode: str = "local", *, connected: bool = True, ringing: bool = False,
         playing: bool = False) -> WakeWord:  # fmt: skip
    return WakeWord(mode=mode, ha_connected=connected, ringing=ringing, playing=playing)


EVENTS: list[Event] = [
    wake(),
    wake("ha"),
    wake("ha", connected=False),
    wake(ringing=True),
    wake(playing=True),
    StopWord(ringing=False, playing=False),
    StopWord(ringing=False, playing=True),
    StopWord(ringing=True, playing=False),
    StopWord(ringing=True, playing=True),
    VoiceOver("local", ha_connected=True),
    VoiceOver("ha", ha_connected=True),
    VoiceOver("ha", ha_connected=False),
    UtteranceEnd(),
    NoSpeech(),
    PipelineEnd(),
    Speak(),
    Spoken(),
    ListenAgain("confirmation"),
    ListenAgain("follow_up"),
    ChangeCourse(playing=False),
    ChangeCourse(playing=True),
    ChangeCourse(playing=False, force=True),
]


def run(state: State, *events: Event) -> tuple[State, list[Action]]:
    """Drive the machine; the state reached and every action, in order."""
    done: list[Action] = []
    for event in events:
        step = transition(state, event)
        if step is not None:
            state = step.state
            done += step.actions
    return state, done


def test_the_wake_word_opens_a_local_turn() -> None:
    assert transition("idle", wake()) == Step("listening", (A.GREET,), (A.OPEN_TURN,))


def test_the_wake_word_in_ha_mode_starts_the_pipeline() -> None:
    step = transition("idle", wake("ha"))
    assert step == Step("streaming", (A.GREET,), (A.OPEN_TURN, A.RUN_PIPELINE))


def test_without_home_assistant_the_wake_word_in_ha_mode_is_ignored() -> None:
    for state in STATES:
        assert transition(state, wake("ha", connected=False)) == Step(state, (A.IGNORE_WAKE,), ())


def test_a_ringing_timer_is_only_silenced() -> None:
    for state, mode in itertools.product(STATES, ("local", "ha")):
        event = wake(mode, ringing=True, playing=True)
        assert transition(state, event) == Step(state, (A.SILENCE_TIMER,), ())


@pytest.mark.parametrize("state", ["listening", "responding", "confirming"])
def test_barge_in_stops_what_is_going_on_then_opens_a_turn(state: State) -> None:
    step = transition(state, wake())
    assert step == Step("listening", (A.BARGE_IN, A.GREET), (A.OPEN_TURN,))


def test_barge_in_over_something_playing_while_idle() -> None:
    assert transition("idle", wake(playing=True)).actions == (A.BARGE_IN, A.GREET, A.OPEN_TURN)
    assert A.BARGE_IN not in transition("idle", wake(playing=False)).actions


def test_barge_in_while_streaming_stops_that_stream_and_starts_another() -> None:
    step = transition("streaming", wake("ha"))
    assert step == Step(
        "streaming",
        (A.STOP_STREAM, A.BARGE_IN, A.GREET),
        (A.OPEN_TURN, A.RUN_PIPELINE),
    )


def test_leaving_streaming_always_tells_home_assistant_the_audio_stopped() -> None:
    left = 0
    for event in EVENTS:
        step = transition("streaming", event)
        if step is None or step.actions in ((A.IGNORE_WAKE,), (A.SILENCE_TIMER,)):
            continue
        left += 1
        assert step.leaving[0] is A.STOP_STREAM, event
        assert step.actions.count(A.STOP_STREAM) == 1, event
    assert left >= 6


def test_audio_stop_is_sent_only_when_leaving_streaming() -> None:
    for state, event in itertools.product(STATES, EVENTS):
        step = transition(state, event)
        if step is not None and A.STOP_STREAM in step.actions:
            assert state == "streaming", (state, event)


def test_entering_a_listening_state_always_opens_the_turn() -> None:
    for state, event in itertools.product(STATES, EVENTS):
        step = transition(state, event)
        if step is None or step.leaving in ((A.IGNORE_WAKE,), (A.SILENCE_TIMER,)):
            continue
        assert step.entering == ENTRY[step.state], (state, event)
        assert (A.OPEN_TURN in step.entering) == (step.state in LISTENING_STATES)
        assert step.leaving[: len(EXIT[state])] == EXIT[state]


def test_the_end_of_speech() -> None:
    assert transition("listening", UtteranceEnd()) == Step(
        "responding", (A.VOICE_STOPPED, A.RESPOND), ()
    )
    assert transition("streaming", UtteranceEnd()) == Step("idle", (A.STOP_STREAM,), ())
    assert transition("confirming", UtteranceEnd()) == Step(
        "responding", (A.VOICE_STOPPED, A.HEAR_ANSWER), ()
    )
    for state in ("idle", "responding"):
        assert transition(state, UtteranceEnd()) is None


def test_no_speech_drops_the_turn() -> None:
    assert transition("listening", NoSpeech()) == Step("idle", (), ())
    assert transition("streaming", NoSpeech()) == Step("idle", (A.STOP_STREAM,), ())
    # a confirmation nobody answered is answered "no" (the held action is dropped)
    assert transition("confirming", NoSpeech()) == Step("idle", (A.HEAR_ANSWER,), ())
    assert transition("responding", NoSpeech()) is None


def test_home_assistant_ends_the_stream() -> None:
    assert transition("streaming", PipelineEnd()) == Step("idle", (A.STOP_STREAM,), ())
    for state in ("idle", "listening", "responding", "confirming"):
        assert transition(state, PipelineEnd()) is None


def test_a_reply_ends_in_idle_unless_a_barge_in_moved_on() -> None:
    assert run("listening", UtteranceEnd(), Spoken()) == ("idle", [A.VOICE_STOPPED, A.RESPOND])
    # the wake word during the reply: the end of the cut reply changes nothing
    state, actions = run("responding", wake(), Spoken())
    assert state == "listening" and actions[-1] is A.OPEN_TURN


def test_a_confirmation_round() -> None:
    state, actions = run(
        "idle",
        wake(),  # "turn on the kitchen light... and unlock the front door"
        UtteranceEnd(),
        Spoken(),  # the reply played; then the device actions are said
        Speak(),
        Spoken(),  # "do you really want to unlock the front door?"
        ListenAgain("confirmation"),
    )
    assert state == "confirming" and actions[-2:] == [A.INVITE_ANSWER, A.OPEN_TURN]
    state, actions = run(state, UtteranceEnd(), Speak(), Spoken())  # "yes"; "done"
    assert state == "idle" and actions == [A.VOICE_STOPPED, A.HEAR_ANSWER]


def test_a_follow_up_is_a_turn_without_the_wake_word() -> None:
    """One mechanism with the confirmation: from idle, the tone and the turn opened."""
    assert transition("idle", ListenAgain("follow_up")) == Step(
        "listening", (A.INVITE_FOLLOW_UP,), (A.OPEN_TURN,)
    )
    assert transition("idle", ListenAgain("confirmation")) == Step(
        "confirming", (A.INVITE_ANSWER,), (A.OPEN_TURN,)
    )
    # the follow-up is answered like a question after the wake word, or dropped
    state, actions = run("idle", ListenAgain("follow_up"), UtteranceEnd(), Spoken())
    assert state == "idle" and actions[-2:] == [A.VOICE_STOPPED, A.RESPOND]
    assert run("idle", ListenAgain("follow_up"), NoSpeech()) == (
        "idle",
        [A.INVITE_FOLLOW_UP, A.OPEN_TURN],
    )
    # only from idle: a barge-in or a stop word that moved on is not undone
    for state in ("listening", "streaming", "responding", "confirming"):
        for purpose in ("follow_up", "confirmation"):
            assert transition(state, ListenAgain(purpose)) is None  # type: ignore[arg-type]


def test_a_change_of_course_interrupts_only_a_busy_satellite() -> None:
    """Muting (Home Assistant's pause), a new mode: interrupt when something goes on."""
    assert transition("idle", ChangeCourse(playing=False)) is None
    assert transition("idle", ChangeCourse(playing=True)) == Step("idle", (A.INTERRUPT,), ())
    assert transition("responding", ChangeCourse(playing=False)) == Step("idle", (A.INTERRUPT,), ())
    assert transition("streaming", ChangeCourse(playing=False)) == Step(
        "idle", (A.STOP_STREAM, A.INTERRUPT), ()
    )
    # a pipeline restart always clears the decks
    assert transition("idle", ChangeCourse(playing=False, force=True)) == Step(
        "idle", (A.INTERRUPT,), ()
    )


def route(state: State = "idle", *, muted: bool = False, playing: bool = False,
          barge_in: bool = True, ringing: bool = False) -> Routing:  # fmt: skip
    return routing(muted=muted, playing=playing, barge_in=barge_in, state=state, ringing=ringing)


def test_mic_gating_and_mute() -> None:
    assert route(muted=True) == route(muted=True, playing=True, barge_in=False, ringing=True)
    muted = route("responding", muted=True, playing=True)
    assert not muted.wake_word and not muted.stop_word and not muted.endpointer
    gated = route(playing=True, barge_in=False)
    assert not gated.wake_word and gated.endpointer
    assert route(playing=True).wake_word
    assert route(barge_in=False).wake_word


def test_the_stop_word_listens_only_when_something_can_be_stopped() -> None:
    assert not route().stop_word  # idle, quiet: nothing to stop
    assert route(playing=True).stop_word  # an announcement, Home Assistant's reply
    assert route(ringing=True).stop_word
    assert route("responding").stop_word  # a reply on its way, not yet playing
    assert route("responding", playing=True, barge_in=False).stop_word  # gated or not
    for state in LISTENING_STATES:  # the user is being listened to: "stop the music" asks
        assert not route(state, playing=True, ringing=True).stop_word


def test_the_stop_word_ends_what_plays_and_starts_nothing() -> None:
    stop = StopWord(ringing=False, playing=True)
    assert transition("responding", stop) == Step("idle", (A.STOP,), ())
    assert transition("responding", StopWord(ringing=False, playing=False)) == Step(
        "idle", (A.STOP,), ()
    )  # the reply held before its first audio
    assert transition("idle", stop) == Step("idle", (A.STOP,), ())
    assert transition("idle", StopWord(ringing=True, playing=False)) == Step(
        "idle", (A.SILENCE_TIMER,), ()
    )
    assert transition("idle", StopWord(ringing=True, playing=True)) == Step(
        "idle", (A.SILENCE_TIMER, A.STOP), ()
    )
    assert transition("idle", StopWord(ringing=False, playing=False)) is None
    for state in LISTENING_STATES:
        for event in (stop, StopWord(ringing=True, playing=True)):
            assert transition(state, event) is None
    # the end of the stopped reply changes nothing
    assert run("responding", stop, Spoken()) == ("idle", [A.STOP])


def test_the_users_voice_over_a_reply_stops_it_and_opens_a_turn() -> None:
    """Barge-in by voice: from idle (something plays) or responding; the turn opens as after
    the wake word but without the greeting (no awake sound over the user, no detection)."""
    for state in ("idle", "responding"):
        step = transition(state, VoiceOver("local", ha_connected=True))
        assert step == Step("listening", (A.BARGE_IN_BY_VOICE,), (A.OPEN_TURN,)), state
        step = transition(state, VoiceOver("ha", ha_connected=True))
        assert step == Step("streaming", (A.BARGE_IN_BY_VOICE,), (A.OPEN_TURN, A.RUN_PIPELINE))
    for state in LISTENING_STATES:  # the user is being listened to already
        assert transition(state, VoiceOver("local", ha_connected=True)) is None
    assert transition("idle", VoiceOver("ha", ha_connected=False)) is None


def test_the_voice_is_listened_for_only_over_what_plays() -> None:
    assert route(playing=True, barge_in="voice").voice
    assert route("responding", playing=True, barge_in="voice").voice
    assert not route(playing=True).voice  # barge-in by the wake word alone
    assert not route("responding", barge_in="voice").voice  # nothing plays yet: no echo
    assert not route(playing=True, ringing=True, barge_in="voice").voice  # the stop word's
    assert not route(playing=True, barge_in="voice", muted=True).voice
    for state in LISTENING_STATES:
        assert not route(state, playing=True, barge_in="voice").voice
