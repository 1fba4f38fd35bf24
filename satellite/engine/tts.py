"""Text to speech as a stream of audio blocks.

`SpeechStream` runs one sequential turn for a text on a chat whose system prompt is a TTS
voice prompt (`template.tts_prompt`) and yields the float32 audio (24 kHz) of each generated
frame as the streaming detokenizer returns it, then the detokenizer's tail. It stops at the
end-of-audio frame, after `max_frames` frames, when no `<|audio_start|>` comes within the
first SPEAK_TEXT_ALLOWANCE text tokens, or when `cancelled()` says so; `reason` then tells
which (end_of_audio, max_seconds, no_audio_start, cancelled, or the turn's own end_of_turn,
max_new_tokens, context_full). Frames the detokenizer cannot decode are skipped and counted.
The chat is reset before and after: it keeps only its prompt's cache between texts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt

from satellite.engine.chat import Chat, user_turn
from satellite.engine.detokenize import StreamingDetokenizer
from satellite.engine.events import AudioFrame, TextToken, TurnEnd
from satellite.engine.generation import AUDIO_START
from satellite.engine.template import Tokens

FloatArray = npt.NDArray[np.float32]
SPEAK_TEXT_ALLOWANCE = 64
"""Text tokens the model may generate before `<|audio_start|>` before it is given up on."""


class SpeechStream:
    def __init__(
        self,
        chat: Chat,
        tokens: Tokens,
        detokenizer: StreamingDetokenizer,
        text: str,
        *,
        max_frames: int,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        self.chat, self.tokens, self.detokenizer = chat, tokens, detokenizer
        self.text = text
        self.max_frames = max(1, max_frames)
        self.cancelled = cancelled
        self.frames = 0
        """Frames decoded."""
        self.skipped = 0
        """Frames the detokenizer could not decode."""
        self.texts = 0
        """Text tokens before the audio."""
        self.reason = "max_new_tokens"

    def __iter__(self) -> Iterator[FloatArray]:
        chat, detokenizer = self.chat, self.detokenizer
        chat.reset()
        parts = user_turn(self.tokens, self.text)
        size = sum(len(p) for p in parts if isinstance(p, list))
        room = chat.context_length - chat.context_used - size
        steps = max(1, min(SPEAK_TEXT_ALLOWANCE + self.max_frames + 1, room))
        turn = chat.turn(parts, chat.generation_config("sequential", max_new_tokens=steps))
        try:
            for event in turn:
                if self.cancelled():
                    self.reason = "cancelled"
                    break
                if isinstance(event, TextToken):
                    self.texts += 1
                    if event.token != AUDIO_START and self.texts >= SPEAK_TEXT_ALLOWANCE:
                        self.reason = "no_audio_start"
                        break
                elif isinstance(event, AudioFrame):
                    if event.end_of_audio:
                        self.reason = "end_of_audio"
                        break
                    audio = detokenizer.push_generated(event.codes)
                    if audio is None:
                        self.skipped += 1
                    else:
                        self.frames += 1
                        if audio.size:
                            yield audio
                    if self.frames + self.skipped >= self.max_frames:
                        self.reason = "max_seconds"
                        break
                elif isinstance(event, TurnEnd):
                    self.reason = event.reason
        finally:
            turn.close()  # type: ignore[attr-defined]
            chat.reset()
        if self.reason == "cancelled":
            detokenizer.reset()
            return
        tail = detokenizer.finish()
        if tail.size:
            yield tail
