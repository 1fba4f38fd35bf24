"""The stand-in tokenizer (`lfm_toolchain.tokenizer`) and the chat template (`satellite.engine.template`).

- LFM2's special tokens sit at their real ids, every other id is an ordinary token, and any UTF-8
  text (special-token strings included) decodes back exactly;
- the tokenizer files load in transformers' `AutoTokenizer`, and its chat template gives the
  same ids as `render`;
- `render`/`ChatBuilder` give exactly the text ids and modality flags of liquid-audio's
  `ChatState` (the reference, with its processor built around this tokenizer) for ASR, TTS and a
  two-turn interleaved conversation with audio;
- the system prompts are the ones liquid-audio's README gives.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lfm_toolchain.config import tiny
from lfm_toolchain.tokenizer import build_tokenizer, min_vocab_size, write_tokenizer
from reference import liquid_audio

from satellite.engine.mel import LogMel
from satellite.engine.template import (
    ASR_PROMPT,
    INTERLEAVED_PROMPT,
    SPECIAL_TOKENS,
    AudioIn,
    ChatBuilder,
    Modality,
    TokenizerError,
    Tokens,
    Turn,
    audio_embeddings,
    render,
    tts_prompt,
)

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return Tokens(build_tokenizer(512))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    assert write_tokenizer(out, 512) == "generated"
    return out


def random_text(rng: np.random.Generator, length: int) -> str:
    """Code points from every plane (no surrogates), control characters, runs of whitespace,
    combining marks and special-token strings."""
    pieces: list[str] = []
    specials = list(SPECIAL_TOKENS)
    for _ in range(length):
        kind = rng.integers(0, 6)
        if kind == 0:
            pieces.append(chr(int(rng.integers(0, 0x80))))
        elif kind == 1:
            pieces.append(chr(int(rng.integers(0x80, 0xD800))))
        elif kind == 2:
            pieces.append(chr(int(rng.integers(0xE000, 0x110000))))
        elif kind == 3:
            pieces.append(" " * int(rng.integers(1, 4)) + "\n" * int(rng.integers(0, 3)))
        elif kind == 4:
            pieces.append("e\u0301\u200d🚀")
        else:
            pieces.append(specials[int(rng.integers(0, len(specials)))])
    return "".join(pieces)


@pytest.mark.parametrize("vocab_size", [512, 65536])
def test_special_ids_and_vocabulary(vocab_size: int) -> None:
    tokenizer = build_tokenizer(vocab_size)
    assert tokenizer.get_vocab_size() == vocab_size
    for content, want in SPECIAL_TOKENS.items():
        assert tokenizer.token_to_id(content) == want, content
        assert tokenizer.id_to_token(want) == content
    named = ("<|startoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|text_start|>")
    assert [SPECIAL_TOKENS[t] for t in (*named, "<|text_end|>")] == [1, 6, 7, 128, 129, 130]
    vocab = tokenizer.get_vocab()
    assert sorted(vocab.values()) == list(range(vocab_size)), "every id holds one token"
    ordinary = [t for t in vocab if t not in SPECIAL_TOKENS]
    assert len(ordinary) == vocab_size - len(SPECIAL_TOKENS)
    assert all(not t.startswith("<|") for t in ordinary)
    text = random_text(np.random.default_rng(vocab_size), 400)
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_round_trip_of_arbitrary_utf8(tokens: Tokens) -> None:
    rng = np.random.default_rng(5)
    for length in [0, 1, 2, 7, 50, 300]:
        for _ in range(20):
            text = random_text(rng, length)
            ids = tokens.encode(text)
            assert all(0 <= i < 512 for i in ids)
            assert tokens.decode(ids) == text, repr(text)
    # every single byte value, as a one-character string where it is one
    for code in range(0x80):
        assert tokens.decode(tokens.encode(chr(code))) == chr(code)


def test_special_strings_are_single_ids(tokens: Tokens) -> None:
    text = "<|startoftext|><|im_start|>user\nhi<|im_end|>\n<|audio_start|><|text_end|>"
    ids = tokens.encode(text)
    assert ids[:2] == [1, 6] and 7 in ids and ids[-2:] == [128, 130]
    assert tokens.decode(ids, skip_special=True) == "user\nhi\n"


def test_deterministic() -> None:
    assert build_tokenizer(512).to_str() == build_tokenizer(512).to_str()
    assert build_tokenizer(600).to_str() != build_tokenizer(512).to_str()


def test_too_small_vocabulary_is_refused() -> None:
    assert min_vocab_size() == 256 + len(SPECIAL_TOKENS)
    with pytest.raises(ValueError, match="at least 273 ids"):
        build_tokenizer(272)


def test_tokens_refuse_other_special_ids(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {chr(c): i for i, c in enumerate(range(ord("a"), ord("z") + 1))}
    other = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    other.pre_tokenizer = pre_tokenizers.ByteLevel()
    other.add_special_tokens(list(SPECIAL_TOKENS))  # appended after the vocabulary: ids 26...
    other.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(
        TokenizerError, match=r"tokenizer\.json: special token <\|startoftext\|> has id 27"
    ):
        Tokens.load(tmp_path / "tokenizer.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(TokenizerError, match=r"broken\.json: not a tokenizer file"):
        Tokens.load(tmp_path / "broken.json")


def test_auto_tokenizer_and_chat_template(tokenizer_dir: Path, tokens: Tokens) -> None:
    """transformers loads the files as a fast tokenizer with the same ids, and the Jinja chat
    template renders text turns to the same ids as `render`."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert type(hf).__name__ == "PreTrainedTokenizerFast"
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (1, 7, 0)
    text = "Perform TTS. Use the UK male voice. Ça va? 日本語 🚀"
    assert hf.encode(text, add_special_tokens=False) == tokens.encode(text)
    messages = [
        {"role": "system", "content": tts_prompt("UK", "male")},
        {"role": "user", "content": "What is this obsession people have with books?"},
    ]
    hf_ids = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    prompt = render(tokens, [Turn(m["role"], (m["content"],)) for m in messages])  # type: ignore[arg-type]
    assert list(hf_ids) == list(prompt.text_ids)
    saved = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    assert saved["chat_template"].startswith("{{- bos_token -}}")


def test_prompts_are_the_readmes() -> None:
    """The system prompts, checked against liquid-audio's README (its wheel's METADATA)."""
    root = Path(liquid_audio().utils.__file__).resolve().parent.parent  # the unpacked wheel
    (metadata,) = root.glob("liquid_audio-*.dist-info/METADATA")
    readme = metadata.read_text(encoding="utf-8")
    tts = set(re.findall(r"^Perform TTS\. Use the .*? voice\.$", readme, flags=re.M))
    assert tts == {tts_prompt(a, g) for a in ("US", "UK") for g in ("male", "female")}
    assert f"`{ASR_PROMPT}`" in readme
    assert f"`{INTERLEAVED_PROMPT}`" in readme
    with pytest.raises(ValueError, match="accent"):
        tts_prompt("AU", "male")  # type: ignore[arg-type]


# --- against the reference's ChatState -------------------------------------------------------


@pytest.fixture(scope="module")
def processor(tokenizer_dir: Path) -> Any:
    """liquid-audio's processor around this tokenizer (its constructor loads it with
    `AutoTokenizer`), with the tiny model's log-mel settings."""
    la = liquid_audio()
    settings = la.processor.PreprocessorConfig(**tiny().preprocessor.reference_kwargs())
    return la.processor.LFM2AudioProcessor(str(tokenizer_dir), settings).eval()


def reference_chat(processor: Any) -> Any:
    return liquid_audio().processor.ChatState(processor, dtype=torch.float32)


def wave(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(16_000 * seconds))).astype(np.float32)


def audio_part(samples: np.ndarray) -> AudioIn:
    """The audio's embedding count from this project's own front end."""
    return AudioIn(audio_embeddings(LogMel()(samples).shape[0]))


def assert_same(chat: Any, prompt: Any) -> None:
    want_ids = chat.text[0].tolist()
    want_modality = chat.modality_flag[0].tolist()
    assert list(prompt.text_ids) == want_ids
    assert [int(m) for m in prompt.modality] == want_modality


def test_asr_prompt_matches_chat_state(processor: Any, tokens: Tokens) -> None:
    samples = wave(1.5, 1)
    chat = reference_chat(processor)
    chat.new_turn("system")
    chat.add_text(ASR_PROMPT)
    chat.end_turn()
    chat.new_turn("user")
    chat.add_audio(torch.from_numpy(samples)[None], 16_000)
    chat.end_turn()
    chat.new_turn("assistant")
    prompt = render(tokens, [Turn("system", (ASR_PROMPT,)), Turn("user", (audio_part(samples),))])
    assert_same(chat, prompt)
    assert prompt.audio_in_positions == 19  # 1.5 s -> 151 mel frames -> 19 embeddings


@pytest.mark.parametrize(("accent", "gender"), [("US", "female"), ("UK", "male")])
def test_tts_prompt_matches_chat_state(
    processor: Any, tokens: Tokens, accent: Any, gender: Any
) -> None:
    text = "What is this obsession people have with books? They put them in their houses—like they're trophies."
    chat = reference_chat(processor)
    for role, content in (("system", tts_prompt(accent, gender)), ("user", text)):
        chat.new_turn(role)
        chat.add_text(content)
        chat.end_turn()
    chat.new_turn("assistant")
    prompt = render(tokens, [Turn("system", (tts_prompt(accent, gender),)), Turn("user", (text,))])
    assert_same(chat, prompt)


def test_two_turn_interleaved_conversation_matches_chat_state(
    processor: Any, tokens: Tokens
) -> None:
    """System prompt, an audio question, a generated reply (text and audio frames, interleaved
    6 + 12, appended as `ChatState.append` does), a text follow-up with a second audio part."""
    first, second = wave(1.0, 2), wave(0.7, 3)
    reply_text = [*tokens.encode("Sure! How about this?"), 130]
    frames = 15
    flags = [Modality.TEXT] * 6 + [Modality.AUDIO_OUT] * 12
    flags += [Modality.TEXT] * (len(reply_text) - 6) + [Modality.AUDIO_OUT] * (frames - 12)

    chat = reference_chat(processor)
    chat.new_turn("system")
    chat.add_text(INTERLEAVED_PROMPT)
    chat.end_turn()
    chat.new_turn("user")
    chat.add_audio(torch.from_numpy(first)[None], 16_000)
    chat.end_turn()
    chat.new_turn("assistant")
    chat.append(
        text=torch.tensor([reply_text]),
        audio_out=torch.zeros((8, frames), dtype=torch.long),
        modality_flag=torch.tensor([int(f) for f in flags]),
    )
    chat.end_turn()
    chat.new_turn("user")
    chat.add_text("My business specialized in chairs, can you give me something related to that?")
    chat.add_audio(torch.from_numpy(second)[None], 16_000)
    chat.end_turn()
    chat.new_turn("assistant")

    builder = ChatBuilder(tokens)
    builder.add_turn(Turn("system", (INTERLEAVED_PROMPT,)))
    builder.add_turn(Turn("user", (audio_part(first),)))
    builder.new_turn("assistant")
    builder.add_generated(reply_text, flags)
    builder.end_turn()
    builder.add_turn(
        Turn(
            "user",
            (
                "My business specialized in chairs, can you give me something related to that?",
                audio_part(second),
            ),
        )
    )
    builder.new_turn("assistant")
    prompt = builder.prompt()
    assert_same(chat, prompt)
    assert prompt.audio_in_positions == 13 + 9  # 1 s -> 101 frames -> 13; 0.7 s -> 71 -> 9
    assert sum(1 for m in prompt.modality if m == Modality.AUDIO_OUT) == frames


def test_generated_reply_must_be_consistent(tokens: Tokens) -> None:
    builder = ChatBuilder(tokens)
    with pytest.raises(ValueError, match="2 text ids but 1 text positions"):
        builder.add_generated([5, 6], [Modality.TEXT, Modality.AUDIO_OUT])
    with pytest.raises(ValueError, match="no input audio"):
        builder.add_generated([], [Modality.AUDIO_IN])
    with pytest.raises(ValueError, match="at least one embedding"):
        AudioIn(0)
