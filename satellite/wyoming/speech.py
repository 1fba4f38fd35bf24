"""The model's work behind the Wyoming services, run in a worker thread of the services' pool.

`ServiceEngine` is one worker's state: a chat on the ASR prompt, a chat per TTS voice (made on
first use) and a streaming detokenizer; the loaded `Model` behind them is shared by every worker
(ONNX Runtime sessions hold no per-request state). Each method runs one request and hands what
it produces to the loop through the job (`satellite.wyoming.workers.Job`) as soon as it exists:

- `transcribe`: `TextPiece` per generated text token, then `Finished(text)`;
- `speak`: `AudioBlock` (float32 at 24 kHz) per generated audio frame through the streaming
  detokenizer, per piece of text, then `Finished`;
- `converse`: the reply's text (`TextPiece`s) from an interleaved turn of a `Conversation`'s
  chat, up to `<|text_end|>`; the audio the model interleaves is generated (the model needs
  it to go on) but not decoded.

Each looks at `job.cancelled` before every token and stops there. A frame holding code 2048
outside codebook 0 cannot be decoded (random models make them; trained ones do not): it is
skipped and counted, never clamped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from satellite.engine.asr import transcribe_one
from satellite.engine.chat import Chat, Embeds, system_prefix, user_turn
from satellite.engine.detokenizers import from_model
from satellite.engine.events import FRAMES_PER_SECOND, TextToken, TurnEnd
from satellite.engine.generation import TEXT_END
from satellite.engine.model import Model
from satellite.engine.template import ASR_PROMPT, INTERLEAVED_PROMPT, VOICES, Tokens, tts_prompt
from satellite.engine.textstream import printable
from satellite.engine.tts import SpeechStream
from satellite.wyoming.workers import Job

FloatArray = npt.NDArray[np.float32]
LANGUAGES = ("en",)
"""Languages of the model (LFM2-Audio is English)."""


@dataclass(frozen=True)
class Limits:
    asr_tokens: int = 256
    """Longest transcript in tokens."""
    speech_seconds: float = 30.0
    """Longest audio of one piece of text-to-speech."""
    reply_tokens: int = 512
    """Longest conversation reply in steps (text tokens and the audio frames between them)."""
    seed: int | None = None
    """Seed of sampled audio (tests); None: random."""


@dataclass(frozen=True)
class TextPiece:
    text: str


@dataclass(frozen=True)
class AudioBlock:
    samples: FloatArray
    """float32 mono at `ServiceEngine.sample_rate`."""


@dataclass(frozen=True)
class Finished:
    text: str = ""
    reason: str = "end_of_turn"
    frames: int = 0
    skipped: int = 0


class Conversation:
    """One conversation of the `handle` service (a Home Assistant `conversation_id`): a chat
    on the interleaved prompt that keeps its history. One request at a time uses it (the
    server holds `busy` around each)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.chat: Chat | None = None
        self.turns = 0
        self.last_used = time.monotonic()
        self.busy = False


def language_ok(language: str | None) -> bool:
    """None, or a tag whose primary language the model speaks (`en`, `en-US`, `en_GB`)."""
    if language is None or language == "":
        return True
    return language.replace("_", "-").split("-")[0].lower() in LANGUAGES


class ServiceEngine:
    """See the module docstring. Not thread-safe: one per worker thread."""

    def __init__(self, model: Model, tokens: Tokens, limits: Limits | None = None) -> None:
        self.model = model
        self.tokens = tokens
        self.limits = limits or Limits()
        self.asr = Chat(model, prefix=system_prefix(tokens, ASR_PROMPT), seed=self.limits.seed)
        self.asr.encoder  # noqa: B018 (opens the encoder's session now)
        self.detokenizer = from_model(model)
        self._voices: dict[str, Chat] = {}

    @property
    def sample_rate(self) -> int:
        return self.detokenizer.sample_rate

    def _voice(self, voice: str) -> Chat:
        chat = self._voices.get(voice)
        if chat is None:
            accent, gender = VOICES[voice]
            prefix = system_prefix(self.tokens, tts_prompt(accent, gender))
            chat = Chat(self.model, prefix=prefix, seed=self.limits.seed)
            self._voices[voice] = chat
        return chat

    def transcribe(self, features: FloatArray, job: Job) -> None:
        """`features`: the utterance's log-mel (`StreamingLogMel`, computed as it came in)."""

        embeds = Embeds(self.asr.encoder.encode_features(features))
        result = transcribe_one(
            self.asr,
            self.tokens,
            embeds,
            self.limits.asr_tokens,
            on_text=lambda text: job.post(TextPiece(text)),
            stop=lambda: job.cancelled,
        )
        self.asr.reset()  # keep only the prompt's cache between requests
        job.post(Finished(text=result.text, reason=result.reason))

    def speak(self, pieces: Sequence[str], voice: str, job: Job) -> None:
        """Each piece of text in its own TTS turn, the audio of all of them in order."""
        frames = skipped = 0
        reason = "end_of_turn"
        for piece in pieces:
            if job.cancelled:
                reason = "cancelled"
                break
            made, lost, reason = self._speak_one(piece, voice, job)
            frames += made
            skipped += lost
        job.post(Finished(reason=reason, frames=frames, skipped=skipped))

    def _speak_one(self, text: str, voice: str, job: Job) -> tuple[int, int, str]:
        max_frames = max(1, round(self.limits.speech_seconds * FRAMES_PER_SECOND))
        stream = SpeechStream(self._voice(voice), self.tokens, self.detokenizer, text,
                              max_frames=max_frames, cancelled=lambda: job.cancelled)  # fmt: skip
        for audio in stream:
            job.post(AudioBlock(audio))
        return stream.frames, stream.skipped, stream.reason

    def converse(self, conversation: Conversation, text: str, job: Job) -> None:
        if conversation.chat is None:
            prefix = system_prefix(self.tokens, INTERLEAVED_PROMPT)
            conversation.chat = Chat(self.model, prefix=prefix, seed=self.limits.seed)
        chat = conversation.chat
        config = chat.generation_config("interleaved", max_new_tokens=self.limits.reply_tokens)
        pieces: list[str] = []
        reason = "max_new_tokens"
        turn = chat.turn(user_turn(self.tokens, text), config)
        try:
            for event in turn:
                if job.cancelled:
                    reason = "cancelled"
                    break
                if isinstance(event, TextToken):
                    if event.token == TEXT_END:
                        reason = "text_end"
                        break
                    if event.text:
                        pieces.append(event.text)
                        job.post(TextPiece(event.text))
                elif isinstance(event, TurnEnd):
                    reason = event.reason
        finally:
            turn.close()  # type: ignore[attr-defined]
        conversation.turns += 1
        job.post(Finished(text=printable("".join(pieces), one_line=True).strip(), reason=reason))
