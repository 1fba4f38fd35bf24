"""Shared pieces of the engine tests: the tiny model with weights shaped so that a random model
reaches every branch of the generation state machine, built both as a model directory
(`lfm_toolchain.build.build_model`) and as the reference (liquid-audio's `LFM2AudioModel`), and a way to
run the reference's `generate_sequential` / `generate_interleaved` on the same inputs.

A random model rarely samples special tokens, so the same rows are scaled in both (DESIGN
§3.3.1): rows 7 (`<|im_end|>`), 128 (`<|audio_start|>`) and 130 (`<|text_end|>`) of the tied text
embedding, and row 2048 (end-of-audio) of codebook 0's tied depthformer embedding. A scaled row
has a large logit whenever the hidden state points its way, so the token turns up after some
steps rather than at once or never.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import lfm_toolchain.build
import numpy as np
from lfm_toolchain.build import build_model
from lfm_toolchain.config import AudioModelConfig, tiny
from lfm_toolchain.weights import random_model_weights
from reference import TINY_SEED, build_reference_model, liquid_audio

from satellite.engine.events import AudioFrame, TextToken, TurnEnd
from satellite.engine.sampling import Sampling

TEXT_SCALES = {7: 1.8, 128: 2.8, 130: 2.5}
"""Text embedding rows scaled, and by how much."""
END_OF_AUDIO_SCALE = 2.0
"""Scale of codebook 0's end-of-audio row."""

TURN_END = (7, 10)
"""`<|im_end|>\\n` in the tests' stand-in ids (10 plays the newline)."""


def shaped_weights(config: AudioModelConfig, seed: int = TINY_SEED) -> dict[str, np.ndarray]:
    """The tiny model's seeded random weights with the special rows scaled."""
    weights = dict(random_model_weights(config, seed))
    text = weights["lfm.embed_tokens.weight"].copy()
    for row, scale in TEXT_SCALES.items():
        text[row] *= scale
    weights["lfm.embed_tokens.weight"] = text
    name = "depth_embeddings.0.embedding.weight"
    codes = weights[name].copy()
    codes[config.codebook_size - 1] *= END_OF_AUDIO_SCALE
    weights[name] = codes
    return weights


def build_shaped(out: Path, weights: dict[str, np.ndarray]) -> Path:
    """`build_model(out, size="tiny")` with `weights` in place of its random ones."""
    with mock.patch.object(lfm_toolchain.build, "random_model_weights", lambda *_: weights):
        build_model(out, size="tiny", seed=TINY_SEED, overwrite=True)
    return out


@functools.cache
def shaped_reference() -> tuple[AudioModelConfig, dict[str, np.ndarray], Any]:
    """Config, shaped weights and the reference model holding them (built once)."""
    config = tiny()
    weights = shaped_weights(config)
    return config, weights, build_reference_model(config, weights)


def waveform(seconds: float, seed: int) -> np.ndarray:
    """Seeded noise with a tone, 16 kHz, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(16000 * seconds)
    t = np.arange(n) / 16000
    tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t)
    return (tone + 0.05 * rng.standard_normal(n)).astype(np.float32)


class ReferenceChat:
    """The reference's view of a conversation (what liquid-audio's `ChatState` holds): text ids,
    input mel features, output frames and one modality flag per position."""

    def __init__(self) -> None:
        la = liquid_audio()
        self.modality = la.utils.LFMModality
        self.text: list[int] = []
        self.mels: list[np.ndarray] = []
        self.audio_out: list[list[int]] = []
        self.flags: list[int] = []

    def add_ids(self, ids: Sequence[int]) -> None:
        self.text.extend(ids)
        self.flags.extend([int(self.modality.TEXT)] * len(ids))

    def add_mel(self, mel: np.ndarray) -> None:
        """`mel` [frames, n_mels] as `satellite.engine.mel.LogMel` gives it."""
        self.mels.append(mel)
        self.flags.extend([int(self.modality.AUDIO_IN)] * (-(mel.shape[0] // -8)))

    def add_reply(self, reply: Sequence[int | tuple[int, ...]]) -> None:
        """A generated reply: ints are text ids, tuples audio frames."""
        for item in reply:
            if isinstance(item, tuple):
                self.audio_out.append(list(item))
                self.flags.append(int(self.modality.AUDIO_OUT))
            else:
                self.add_ids([item])

    def generate(self, model: Any, mode: str, max_new_tokens: int) -> list[int | tuple[int, ...]]:
        """The reference's reply: greedy text, audio with temperature 1 and top-k 1."""
        import torch

        mel = (
            np.concatenate(self.mels, axis=0).T
            if self.mels
            else np.zeros((128, 0), dtype=np.float32)
        )
        audio_out = (
            torch.tensor(self.audio_out, dtype=torch.long).T
            if self.audio_out
            else torch.zeros((8, 0), dtype=torch.long)
        )
        inputs = {
            "text": torch.tensor([self.text], dtype=torch.long),
            "audio_in": torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)),
            "audio_in_lens": torch.tensor([m.shape[0] for m in self.mels], dtype=torch.long),
            "audio_out": audio_out,
            "modality_flag": torch.tensor([self.flags], dtype=torch.long),
        }
        run = model.generate_interleaved if mode == "interleaved" else model.generate_sequential
        out: list[int | tuple[int, ...]] = []
        with torch.no_grad():
            for token in run(
                **inputs,
                max_new_tokens=max_new_tokens,
                text_temperature=None,
                text_top_k=None,
                audio_temperature=1.0,
                audio_top_k=1,
            ):
                values = token.tolist()
                out.append(tuple(values) if len(values) > 1 else values[0])
        return out


OFFICIAL_NAMES = {
    "decoder": "decoder",
    "audio_encoder": "audio_encoder",
    "audio_embedding": "audio_embedding",
    "depthformer": "vocoder_depthformer",
    "audio_detokenizer": "audio_detokenizer",
}
"""Roles -> file stems of the official export (under `onnx/`)."""


def to_official_layout(source: Path, out: Path, weights: dict[str, np.ndarray]) -> Path:
    """The model directory `source` (built from `weights`) laid out as the official
    LiquidAI/LFM2.5-Audio-1.5B-ONNX repository: graphs under `onnx/` with the official names
    (their `.onnx_data` beside them), text and audio embeddings as raw `.bin` tables with JSON
    descriptors, no `embed_tokens` graph; then its manifest."""
    from satellite.modeldir.make import make_manifest
    from satellite.modeldir.manifest import read_manifest

    manifest = read_manifest(source)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    graphs: dict[str, str] = {}
    for role, stem in OFFICIAL_NAMES.items():
        entry = manifest.graphs[role]
        (out / "onnx" / f"{stem}.onnx").write_bytes((source / entry.file).read_bytes())
        for data in entry.data_files:  # the graph names its data file; keep that name
            (out / "onnx" / Path(data).name).write_bytes((source / data).read_bytes())
        graphs[role] = f"onnx/{stem}.onnx"
    config = manifest.config
    tables = {
        "embed_tokens": (weights["lfm.embed_tokens.weight"], {}),
        "audio_embedding": (
            weights["audio_embedding.embedding.weight"],
            {"num_codebooks": config["codebooks"], "codebook_vocab": config["codebook_size"]},
        ),
    }
    for name, (table, extra) in tables.items():
        (out / "onnx" / f"{name}.bin").write_bytes(np.asarray(table, dtype="<f4").tobytes())
        described = {
            "vocab_size": table.shape[0],
            "hidden_size": table.shape[1],
            **extra,
            "dtype": "float32",
            "byte_order": "little",
        }
        (out / "onnx" / f"{name}.json").write_text(json.dumps(described))
    (out / "config.json").write_bytes((source / "config.json").read_bytes())
    made = make_manifest(
        out,
        name="LiquidAI/LFM2.5-Audio-1.5B-ONNX (layout copy of the tiny model)",
        family=manifest.family,
        variant=manifest.variant,
        config=config,
        graphs=graphs,
        options={"depthformer": {"granularity": "codebook_step"}},
        tokenizer=None,
        side_files={
            "config": "config.json",
            "embed_tokens": "onnx/embed_tokens.json",
            "audio_embedding": "onnx/audio_embedding.json",
        },
    )
    made.write(out)
    return out


AUDIO = Sampling(temperature=1.0, top_k=1)
"""Audio sampling that is greedy by the top-k rule (the parity tests' audio)."""
Reply = list[int | tuple[int, ...]]
"""A reply as text ids and audio frames' codes, in order."""

ASR_SYSTEM = [1, 6, 20, 10, 198, 357, 316, 141, 7, 10]
TTS_SYSTEM = [1, 6, 20, 10, 279, 141, 132, 176, 7, 10]
CHAT_SYSTEM = [1, 6, 20, 10, 413, 400, 443, 195, 7, 10]
USER = [6, 21, 10]
CLOSE_AND_ASSISTANT = [7, 10, 6, 22, 10]


def reply_of(events: Iterable[object]) -> tuple[Reply, TurnEnd]:
    """The engine's events of one turn as a Reply, and its TurnEnd."""
    reply: Reply = []
    end = None
    for event in events:
        if isinstance(event, TextToken):
            reply.append(event.token)
        elif isinstance(event, AudioFrame):
            reply.append(event.codes)
        elif isinstance(event, TurnEnd):
            end = event
    assert end is not None, "the turn ended without a TurnEnd event"
    return reply, end
