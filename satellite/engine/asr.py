"""Speech to text with the model: one utterance through an ASR turn (sequential mode, the ASR
system prompt, greedy), its text as it is generated. Used by `lfm-satellite transcribe`, the
satellite's spoken confirmations and the Wyoming speech-to-text service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from satellite.engine.chat import Chat, Embeds, Speech, user_turn
from satellite.engine.events import AudioFrame, TextToken, TurnEnd
from satellite.engine.generation import AUDIO_START
from satellite.engine.model import FloatArray
from satellite.engine.template import Tokens
from satellite.engine.textstream import printable


@dataclass(frozen=True)
class Transcript:
    text: str
    tokens: int
    reason: str
    """Why it ended: end_of_turn, max_new_tokens, context_full, audio (the model began to
    speak), cancelled."""


def transcribe_one(
    chat: Chat,
    tokens: Tokens,
    samples: FloatArray | Embeds,
    max_tokens: int,
    *,
    on_text: Callable[[str], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Transcript:
    """One utterance through a fresh ASR turn of `chat` (whose prefix is the ASR prompt).
    `on_text` gets each piece of text as it is generated (raw, as the model wrote it);
    `stop` is asked before each token and ends the turn early (reason `cancelled`).
    `samples` may also be the utterance already encoded (`Embeds`)."""

    chat.reset()
    config = chat.generation_config("sequential", max_new_tokens=max_tokens)
    pieces: list[str] = []
    count = 0
    reason = "max_new_tokens"
    speech = samples if isinstance(samples, Embeds) else Speech(samples)
    turn = chat.turn(user_turn(tokens, speech), config)
    try:
        for event in turn:
            if stop is not None and stop():
                reason = "cancelled"
                break
            if isinstance(event, TextToken):
                if event.token == AUDIO_START:
                    reason = "audio"
                    break
                count += 1
                pieces.append(event.text)
                if on_text is not None and event.text:
                    on_text(event.text)
            elif isinstance(event, AudioFrame):  # pragma: no cover - AUDIO_START comes first
                reason = "audio"
                break
            elif isinstance(event, TurnEnd):
                reason = event.reason
    finally:
        close = getattr(turn, "close", None)  # a generator: end the turn's work now
        if close is not None:
            close()
    return Transcript(printable("".join(pieces), one_line=True), count, reason)
