"""LFM2-Audio's chat template and special tokens, rendered to token ids the way the model saw them.

The template (DESIGN §3.1) is ChatML with a leading `<|startoftext|>`:

    <|startoftext|><|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n[audio]<|im_end|>\\n
    <|im_start|>assistant\\n

where `[audio]` stands for the audio encoder's embeddings (12.5 per second), which take token
positions but have no token ids. As liquid-audio's `ChatState` (and its training data mapper)
does, every piece is tokenized on its own: `<|startoftext|>`, then per turn
`<|im_start|>{role}\\n`, each text part, each audio part, `<|im_end|>\\n`. Tokenizing the joined
string instead could merge across those boundaries and give other ids.

A rendered prompt is what `ChatState` holds: the text ids in order (`text_ids`) and one modality
flag per position (`modality`: 1 text, 2 audio in, 3 audio out), so the position of every audio
embedding is known.

The special ids are LFM2's (its tokenizer's added tokens): `SPECIAL_TOKENS` lists those the
runtime relies on; `Tokens` refuses a tokenizer whose ids for `RUNTIME_SPECIAL_TOKENS` differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

from tokenizers import Tokenizer

from satellite.errors import UserError

Role = Literal["system", "user", "assistant"]
Accent = Literal["US", "UK"]
Gender = Literal["male", "female"]

VOICES: dict[str, tuple[Accent, Gender]] = {
    "us_female": ("US", "female"),
    "us_male": ("US", "male"),
    "uk_female": ("UK", "female"),
    "uk_male": ("UK", "male"),
}
"""Voice names (`model.voice`, `settings.VOICE_NAMES`; `us-female` is accepted too) -> the TTS
prompt's accent and gender."""

SPECIAL_TOKENS: dict[str, int] = {
    "<|pad|>": 0,
    "<|startoftext|>": 1,
    "<|endoftext|>": 2,
    "<|fim_pre|>": 3,
    "<|fim_mid|>": 4,
    "<|fim_suf|>": 5,
    "<|im_start|>": 6,
    "<|im_end|>": 7,
    "<|tool_list_start|>": 8,
    "<|tool_list_end|>": 9,
    "<|tool_call_start|>": 10,
    "<|tool_call_end|>": 11,
    "<|tool_response_start|>": 12,
    "<|tool_response_end|>": 13,
    "<|audio_start|>": 128,
    "<|text_start|>": 129,
    "<|text_end|>": 130,
}
"""LFM2's named special tokens and their ids (the LFM2 tokenizer's added tokens; the audio ones
are LFM2-Audio's, DESIGN §3.1). The ids between them are reserved tokens of the real vocabulary."""


def control_token_in(text: str) -> str | None:
    """The first of the model's control tokens written out in `text` (None: none is). Text
    to be spoken or answered must not hold one: it would steer the model, not be read."""
    return next((token for token in SPECIAL_TOKENS if token in text), None)


RUNTIME_SPECIAL_TOKENS = (
    "<|startoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|tool_call_start|>",
    "<|tool_call_end|>",
    "<|audio_start|>",
    "<|text_start|>",
    "<|text_end|>",
)
"""The special tokens whose ids the runtime relies on (template, mode switches, tool calls):
a tokenizer must give each its id of `SPECIAL_TOKENS`."""

BOS = "<|startoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
AUDIO_START = "<|audio_start|>"
TEXT_END = "<|text_end|>"

ASR_PROMPT = "Perform ASR."
INTERLEAVED_PROMPT = "Respond with interleaved text and audio."
ACCENTS: tuple[Accent, ...] = ("US", "UK")
GENDERS: tuple[Gender, ...] = ("male", "female")


def tts_prompt(accent: Accent = "US", gender: Gender = "female") -> str:
    """The TTS system prompt for one of the four voices, e.g. `Perform TTS. Use the UK male
    voice.` (liquid-audio's README)."""
    if accent not in ACCENTS:
        raise ValueError(f"accent {accent!r}: not one of {', '.join(ACCENTS)}")
    if gender not in GENDERS:
        raise ValueError(f"gender {gender!r}: not one of {', '.join(GENDERS)}")
    return f"Perform TTS. Use the {accent} {gender} voice."


class Modality(IntEnum):
    """Per-position modality flags, numbered as liquid-audio's `LFMModality`."""

    TEXT = 1
    AUDIO_IN = 2
    AUDIO_OUT = 3


class TokenizerError(UserError):
    """The tokenizer file is missing, unreadable or has other special ids than LFM2's."""


@dataclass(frozen=True)
class AudioIn:
    """An audio part of a turn: `embeddings` audio-encoder outputs (ceil(mel frames / 8))."""

    embeddings: int

    def __post_init__(self) -> None:
        if self.embeddings < 1:
            raise ValueError(f"an audio part needs at least one embedding, not {self.embeddings}")


def audio_embeddings(mel_frames: int) -> int:
    """Encoder outputs for `mel_frames` log-mel frames: ceil(frames / 8) (liquid-audio's
    `mel2emb_len`)."""
    return -(mel_frames // -8)


Part = str | AudioIn


@dataclass(frozen=True)
class Turn:
    """One chat turn: a role and its parts (text or audio), in order."""

    role: Role
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class Prompt:
    """A rendered conversation: the text ids and one modality flag per position."""

    text_ids: tuple[int, ...]
    modality: tuple[Modality, ...]

    @property
    def audio_in_positions(self) -> int:
        return sum(1 for m in self.modality if m == Modality.AUDIO_IN)

    def __len__(self) -> int:
        return len(self.modality)


class Tokens:
    """Text <-> ids with a `tokenizers` tokenizer whose special ids are LFM2's."""

    def __init__(self, tokenizer: Any, where: str = "tokenizer") -> None:
        for content in RUNTIME_SPECIAL_TOKENS:
            got, want = tokenizer.token_to_id(content), SPECIAL_TOKENS[content]
            if got != want:
                raise TokenizerError(
                    f"{where}: special token {content} has id {got}, LFM2's is {want}"
                )
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, path: Path) -> Tokens:
        """Read a `tokenizer.json` (the `tokenizers` library's format)."""

        try:
            tokenizer = Tokenizer.from_file(str(path))
        except FileNotFoundError:
            raise TokenizerError(f"{path}: file not found") from None
        except Exception as err:  # the library raises a bare Exception on a malformed file
            raise TokenizerError(f"{path}: not a tokenizer file: {err}") from None
        return cls(tokenizer, str(path))

    def encode(self, text: str) -> list[int]:
        """Ids of `text`; special tokens written in it become their ids, nothing is added."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=skip_special))


class ChatBuilder:
    """Builds a prompt piece by piece, as liquid-audio's `ChatState` does (same methods)."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self._ids: list[int] = []
        self._modality: list[Modality] = []
        self._add_ids(tokens.encode(BOS), Modality.TEXT)

    def _add_ids(self, ids: Sequence[int], modality: Modality) -> None:
        self._ids.extend(ids)
        self._modality.extend([modality] * len(ids))

    def new_turn(self, role: Role) -> None:
        self._add_ids(self.tokens.encode(f"{IM_START}{role}\n"), Modality.TEXT)

    def add_text(self, text: str) -> None:
        self._add_ids(self.tokens.encode(text), Modality.TEXT)

    def add_audio(self, audio: AudioIn) -> None:
        self._modality.extend([Modality.AUDIO_IN] * audio.embeddings)

    def add_generated(self, text_ids: Sequence[int], modality: Sequence[Modality]) -> None:
        """Append a generated reply: its text ids and one flag per generated position (text
        token or audio frame), in generation order."""
        texts = sum(1 for m in modality if m == Modality.TEXT)
        if texts != len(text_ids):
            raise ValueError(f"{len(text_ids)} text ids but {texts} text positions")
        if any(m == Modality.AUDIO_IN for m in modality):
            raise ValueError("a generated reply holds no input audio")
        self._ids.extend(text_ids)
        self._modality.extend(modality)

    def end_turn(self) -> None:
        self._add_ids(self.tokens.encode(f"{IM_END}\n"), Modality.TEXT)

    def add_turn(self, turn: Turn) -> None:
        self.new_turn(turn.role)
        for part in turn.parts:
            if isinstance(part, AudioIn):
                self.add_audio(part)
            else:
                self.add_text(part)
        self.end_turn()

    def prompt(self) -> Prompt:
        return Prompt(tuple(self._ids), tuple(self._modality))


def render(tokens: Tokens, turns: Sequence[Turn], *, add_generation_prompt: bool = True) -> Prompt:
    """The prompt for `turns`, ending with an open assistant turn when asked."""
    builder = ChatBuilder(tokens)
    for turn in turns:
        builder.add_turn(turn)
    if add_generation_prompt:
        builder.new_turn("assistant")
    return builder.prompt()


CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
"""The same template in Jinja for `tokenizer_config.json` (text turns only: audio parts have no
text form)."""
