"""What one local turn took: `TurnReport`, built from the endpointer's utterance, the engine's
`ReplyDone` and the player's `PlaybackReport` by `turn_report`."""

from __future__ import annotations

from dataclasses import dataclass

from satellite.audio.endpoint import SAMPLE_RATE, UtteranceEnded
from satellite.audio.player import PlaybackReport
from satellite.reply import ReplyDone


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
    blocked_term: str | None = None
    """The blocked term that stopped the reply (safety.blocked_terms), if one did."""
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

    @property
    def played_at_real_time(self) -> bool:
        """The reply played without a break (none met, none held mid-reply)."""
        return self.underruns == 0 and self.holds == 0


def turn_report(
    wake_word: str,
    ended: UtteranceEnded,
    decided: float,
    now: float,
    played: PlaybackReport | None,
    done: ReplyDone,
    blocked: str | None = None,
    problems: tuple[str, ...] = (),
) -> TurnReport:
    """The report of a turn whose end of speech was decided at `decided` and which finished
    at `now` (`time.monotonic()`); `played` None: nothing reached the speaker."""
    played = played or PlaybackReport()
    first_audio = played.first_played
    ttfa = None if first_audio is None else first_audio - decided
    engine = done.engine_first_audio
    delay = played.start_delay
    return TurnReport(
        wake_word=wake_word,
        utterance_seconds=len(ended.audio) / 2 / SAMPLE_RATE,
        end_reason=ended.reason,
        reply_text=done.text,
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
        blocked_term=blocked,
        start_delay=delay,
        underruns=played.underruns,
        holds=played.holds,
        generation_rtf=played.rtf,
    )
