"""Shared pieces of the engine tests: the parity tests' tiny model, built both as a model
directory (`lfm_toolchain.build.build_model`) and as the reference (liquid-audio's
`LFM2AudioModel`), and a way to run the reference's `generate_sequential` /
`generate_interleaved` on the same inputs.

Both hold the weights of a tiny build with seed `TINY_SEED`: seeded random, with the special
rows scaled (`lfm_toolchain.weights.shaped_model_weights`, DESIGN §3.3.1: rows 7 `<|im_end|>`,
128 `<|audio_start|>` and 130 `<|text_end|>` of the tied text embedding and row 2048
(end-of-audio) of codebook 0's tied depthformer embedding) so that a random model reaches every
branch of the generation state machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lfm_toolchain.build import build_model
from lfm_toolchain.config import AudioModelConfig
from reference import TINY_SEED, liquid_audio, tiny_reference

from satellite.engine.events import AudioFrame, TextToken, TurnEnd
from satellite.engine.sampling import Sampling

TURN_END = (7, 10)
"""`<|im_end|>\\n` in the tests' stand-in ids (10 plays the newline)."""


def build_shaped(out: Path) -> Path:
    """The parity tests' tiny model directory (`TINY_SEED`, shaped, fp32), written at `out`
    (a directory of its own: the llama.cpp parity tests add a GGUF file to it)."""
    build_model(out, size="tiny", seed=TINY_SEED, overwrite=True)
    return out


def shaped_reference() -> tuple[AudioModelConfig, dict[str, np.ndarray], Any]:
    """Config, weights and the reference model holding them (`tiny_reference`: built once)."""
    return tiny_reference(TINY_SEED)


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
