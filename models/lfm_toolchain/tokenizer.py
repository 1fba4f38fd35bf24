"""A stand-in tokenizer for models built without a real checkpoint: byte-level BPE (the family of
LFM2's tokenizer) with LFM2's special tokens at their real ids.

`build_tokenizer(vocab_size)` returns a `tokenizers.Tokenizer` with exactly `vocab_size` ids:
the named special tokens of `satellite.engine.template.SPECIAL_TOKENS` at their ids
(`<|startoftext|>` 1, `<|im_start|>` 6, `<|im_end|>` 7, `<|audio_start|>` 128, ...), and
ordinary tokens on every other id: the 256 byte symbols first, then BPE merges. With every byte
in the vocabulary, any UTF-8 text encodes and decodes back unchanged.

The merges are learnt by the `tokenizers` BPE trainer from a synthetic corpus (seeded random
words with English letter frequencies, plus the chat template's own words), so the result is
the same on every run. It is not LFM2's vocabulary: text ids of a model built from a real
checkpoint come from the checkpoint's own `tokenizer.json`, which `lfm_toolchain.build` copies.

`tokenizer_config(...)` is the `tokenizer_config.json` that lets transformers' `AutoTokenizer`
load the pair (a `PreTrainedTokenizerFast` with the chat template of DESIGN §3.1).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from satellite.engine.template import (
    ASR_PROMPT,
    BOS,
    CHAT_TEMPLATE,
    IM_END,
    INTERLEAVED_PROMPT,
    SPECIAL_TOKENS,
    TokenizerError,
    Tokens,
    tts_prompt,
)

BYTE_SYMBOLS = 256
CORPUS_SEED = 20_251_124
_LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
_LETTER_FREQUENCIES = (
    12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8,
    2.4, 2.4, 2.2, 2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.15, 0.15, 0.1, 0.07,
)  # fmt: skip
_TEMPLATE_WORDS = " ".join(
    [
        "system user assistant",
        ASR_PROMPT,
        INTERLEAVED_PROMPT,
        *(tts_prompt(a, g) for a in ("US", "UK") for g in ("male", "female")),
    ]
)


def min_vocab_size() -> int:
    """The least vocabulary that holds every byte symbol and every named special token."""
    return max(max(SPECIAL_TOKENS.values()) + 1, BYTE_SYMBOLS + len(SPECIAL_TOKENS))


def _corpus(ordinary: int) -> list[str]:
    """Training text: Zipf-distributed pseudo-words, enough of them for `ordinary` tokens."""
    rng = np.random.default_rng(CORPUS_SEED)
    probabilities = np.array(_LETTER_FREQUENCIES) / sum(_LETTER_FREQUENCIES)
    lexicon_size = max(4 * ordinary, 2_000)
    lengths = rng.integers(1, 12, size=lexicon_size)
    letters = rng.choice(len(_LETTERS), size=int(lengths.sum()), p=probabilities)
    lexicon: list[str] = []
    start = 0
    for length in lengths:
        lexicon.append("".join(_LETTERS[i] for i in letters[start : start + length]))
        start += length
    words = rng.zipf(1.2, size=max(30 * ordinary, 20_000)) % lexicon_size
    lines = [
        " ".join(lexicon[w] for w in words[i : i + 1_000]) for i in range(0, len(words), 1_000)
    ]
    return lines + [_TEMPLATE_WORDS] * 200


def _train(ordinary: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Ordinary tokens in training order (byte symbols first) and the merges."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=ordinary,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_corpus(ordinary), trainer)
    vocab = tokenizer.get_vocab()
    if len(vocab) != ordinary:
        raise RuntimeError(f"BPE training gave {len(vocab)} tokens, {ordinary} wanted")
    raw = json.loads(tokenizer.to_str())["model"]["merges"]
    merges = [(m[0], m[1]) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in raw]
    return sorted(vocab, key=vocab.__getitem__), merges


def build_tokenizer(vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer of exactly `vocab_size` ids with LFM2's special ids.

    Deterministic: the same `vocab_size` gives the same tokenizer (and the same JSON).
    """
    if vocab_size < min_vocab_size():
        raise ValueError(
            f"vocab_size {vocab_size}: at least {min_vocab_size()} ids are needed "
            f"({BYTE_SYMBOLS} byte symbols and {len(SPECIAL_TOKENS)} special tokens)"
        )
    special_at = {i: content for content, i in SPECIAL_TOKENS.items()}
    ordinary, merges = _train(vocab_size - len(SPECIAL_TOKENS))
    pending = iter(ordinary)
    vocab = {special_at[i] if i in special_at else next(pending): i for i in range(vocab_size)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [AddedToken(content, special=True, normalized=False) for content in SPECIAL_TOKENS]
    )
    for content, want in SPECIAL_TOKENS.items():
        if tokenizer.token_to_id(content) != want:  # the added tokens reuse the vocab's ids
            raise RuntimeError(f"{content} got id {tokenizer.token_to_id(content)}, not {want}")
    if tokenizer.get_vocab_size() != vocab_size:
        raise RuntimeError(f"tokenizer has {tokenizer.get_vocab_size()} ids, not {vocab_size}")
    return tokenizer


def tokenizer_config() -> dict[str, Any]:
    """`tokenizer_config.json` for transformers' `AutoTokenizer` (a `PreTrainedTokenizerFast`
    reading `tokenizer.json`), with the chat template and LFM2's bos/eos/pad tokens."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": IM_END,
        "pad_token": "<|pad|>",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000,
        "chat_template": CHAT_TEMPLATE,
    }


TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


def write_tokenizer(
    out: Path,
    vocab_size: int,
    *,
    source: Path | None = None,
    source_config: Path | None = None,
) -> str:
    """Write `tokenizer.json` and `tokenizer_config.json` into `out`; returns where the
    tokenizer came from (`checkpoint` or `generated`).

    `source` is a checkpoint's `tokenizer.json`, copied after checking that its special ids are
    LFM2's and that its ids fit the model's `vocab_size` (TokenizerError naming the file
    otherwise); `source_config` its `tokenizer_config.json`, copied beside it. Without
    `source`, `build_tokenizer(vocab_size)` is written; without `source_config`,
    `tokenizer_config()`.
    """
    if source is not None:
        tokens = Tokens.load(source)
        size = tokens.tokenizer.get_vocab_size()
        if size > vocab_size:
            raise TokenizerError(
                f"{source}: {size} token ids, more than the model's vocab_size {vocab_size}"
            )
        shutil.copyfile(source, out / TOKENIZER_FILE)
    else:
        build_tokenizer(vocab_size).save(str(out / TOKENIZER_FILE))
    if source_config is not None:
        shutil.copyfile(source_config, out / TOKENIZER_CONFIG_FILE)
    else:
        (out / TOKENIZER_CONFIG_FILE).write_text(
            json.dumps(tokenizer_config(), indent=2) + "\n", encoding="utf-8"
        )
    return "checkpoint" if source is not None else "generated"
