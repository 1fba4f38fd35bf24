"""A local turn's `TurnReport`, built from the endpointer's utterance, the engine's
`ReplyDone` and the player's `PlaybackReport`."""

from __future__ import annotations

from satellite.audio.endpoint import SAMPLE_RATE, UtteranceEnded
from satellite.audio.player import PlaybackReport
from satellite.events import TurnReport
from satellite.reply import ReplyDone
from satellite.safety.rules import Finding


def turn_report(
    wake_word: str,
    ended: UtteranceEnded,
    decided: float,
    now: float,
    played: PlaybackReport | None,
    done: ReplyDone,
    blocked: Finding | None = None,
    problems: tuple[str, ...] = (),
    said: str | None = None,
    safety_wait: float | None = None,
    voice_distance: float | None = None,
) -> TurnReport:
    """The report of a turn whose end of speech was decided at `decided` and which finished
    at `now` (`time.monotonic()`); `played` None: nothing reached the speaker. `said`: the
    reply's text as far as the satellite took it (up to a block), when not all of `done`'s."""
    played = played or PlaybackReport()
    first_audio = played.first_played
    ttfa = None if first_audio is None else first_audio - decided
    engine = done.engine_first_audio
    delay = played.start_delay
    return TurnReport(
        wake_word=wake_word,
        utterance_seconds=len(ended.audio) / 2 / SAMPLE_RATE,
        end_reason=ended.reason,
        reply_text=done.text if said is None else said,
        reply_reason="blocked" if blocked else done.reason,
        reply_audio_seconds=done.audio_seconds,
        frames=done.frames,
        skipped_frames=done.skipped,
        time_to_first_audio=ttfa,
        engine_first_audio=engine,
        overhead=None if ttfa is None or engine is None else ttfa - engine - (delay or 0.0),
        engine_seconds=done.engine_seconds,
        total_seconds=now - decided,
        error=done.error,
        audio_problems=problems,
        blocked_rule=None if blocked is None else blocked.rule,
        blocked_excerpt=None if blocked is None else blocked.excerpt,
        safety_wait=safety_wait,
        start_delay=delay,
        underruns=played.underruns,
        holds=played.holds,
        generation_rtf=played.rtf,
        voice_distance=voice_distance,
    )
