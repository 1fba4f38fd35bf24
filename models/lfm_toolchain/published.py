"""`lfm-satellite model build --layout published`: a model directory laid out like
`LiquidAI/LFM2.5-Audio-1.5B-ONNX` at the pinned commit, with that export's known defects, so
that what users fetch can be tested without the hub (FINDINGS §1):

- file names: `onnx/{decoder,audio_encoder,audio_embedding,vocoder_depthformer,
  audio_detokenizer}{,_q4}.onnx` with `.onnx_data` beside each; `config.json` (the checkpoint's,
  decoder numbers nested under `lfm`), `tokenizer.json`, `tokenizer_config.json`, and under
  `onnx/` the float32 tables `embed_tokens.bin` / `audio_embedding.bin` with their JSON
  descriptors and `mel_config.json`; no text-embedding graph and no streaming detokenizer;
- the decoder's tied lm-head in float32 (a Transpose of `model.embed_tokens.weight` into a
  MatMul, `lfm_toolchain.decoder`), with no `num_logits_to_keep` input: every step pays for it;
- the depthformer without rotary embeddings, with theta-10,000 tables (`lfm_toolchain.depthformer`);
- q4: MatMulNBits in blocks of 32 (the export's), the embedding tables left in float32.

The manifest is what `model fetch` writes for such files before any repair, so the engine
runs the directory as a user's unrepaired fetch would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lfm_toolchain import decoder, depthformer, detokenizer, embeddings, encoder
from lfm_toolchain.config import AudioModelConfig
from lfm_toolchain.onnx_graph import write_graph
from lfm_toolchain.quantize import Progress, build_quantized
from lfm_toolchain.weights import Array
from satellite.modeldir.make import make_manifest
from satellite.modeldir.manifest import Manifest

PUBLISHED_VARIANTS = ("fp32", "q4")
"""The published variants this builder reproduces (the export's fp16 is not built here)."""
PUBLISHED_BLOCK_SIZE = 32
"""The export's q4 block."""
STEMS = {
    "decoder": "decoder",
    "audio_encoder": "audio_encoder",
    "audio_embedding": "audio_embedding",
    "depthformer": "vocoder_depthformer",
    "audio_detokenizer": "audio_detokenizer",
}
"""Role -> the export's file stem under `onnx/`."""
SIDE_FILES = {
    "config": "config.json",
    "tokenizer_config": "tokenizer_config.json",
    "mel_config": "onnx/mel_config.json",
    "embed_tokens": "onnx/embed_tokens.json",
    "audio_embedding": "onnx/audio_embedding.json",
}
NAME = "LiquidAI/LFM2.5-Audio-1.5B-ONNX"


def published_graphs(
    out: Path,
    config: AudioModelConfig,
    weights: Mapping[str, Array],
    detokenizer_weights: Mapping[str, Array],
    max_positions: int,
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """The five fp32 graphs, as the export writes them, into `out` under its file stems."""
    builders = {
        "decoder": lambda g: decoder.build_decoder(
            g, config.backbone, weights, max_positions=max_positions, published=True
        ),
        "audio_encoder": lambda g: encoder.build_audio_encoder(g, config, weights),
        "audio_embedding": lambda g: embeddings.build_audio_embedding(g, config, weights),
        "depthformer": lambda g: depthformer.build_depthformer(g, config, weights, published=True),
        "audio_detokenizer": lambda g: detokenizer.build_audio_detokenizer(
            g, config, detokenizer_weights
        ),
    }
    graphs = {role: write_graph(out, STEMS[role], build) for role, build in builders.items()}
    options: dict[str, dict[str, Any]] = {"depthformer": {"granularity": "codebook_step"}}
    return graphs, options


def build_published(
    out: Path,
    config: AudioModelConfig,
    weights: Mapping[str, Array],
    detokenizer_weights: Mapping[str, Array],
    *,
    variant: str,
    max_positions: int,
    block_size: int | None,
    tokenizer: str,
    source: dict[str, Any],
    progress: Progress | None = None,
) -> Manifest:
    """Write the published layout of `variant` into `out` (the tokenizer files are already
    there, `tokenizer` names the main one) and its manifest; returns the manifest.
    `progress` is called with a line per step."""
    folder = out / "onnx"
    folder.mkdir(parents=True, exist_ok=True)

    say = progress or (lambda _: None)

    def fp32(target: Path) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
        say("the published graphs (fp32)")
        return published_graphs(target, config, weights, detokenizer_weights, max_positions)

    if variant == "fp32":
        graphs, options = fp32(folder)
    else:
        graphs, options = build_quantized(
            folder,
            variant,
            fp32,
            block_size=block_size or PUBLISHED_BLOCK_SIZE,
            gathers=False,
            progress=say,
        )
    (out / "config.json").write_text(
        json.dumps(config.reference_config_json(), indent=2) + "\n", encoding="utf-8"
    )
    say("embed_tokens.bin and audio_embedding.bin")
    write_tables(folder, config, weights)
    (folder / "mel_config.json").write_text(json.dumps(mel_config(config), indent=2) + "\n")
    return_manifest = make_manifest(
        out,
        name=f"{NAME} (published layout, {source.get('weights', 'random')} weights)",
        family="lfm2.5-audio",
        variant=variant,
        config={**config.manifest_config(), "max_sequence_length": max_positions},
        graphs={role: f"onnx/{file}" for role, file in graphs.items()},
        options=options,
        tokenizer=tokenizer,
        side_files=dict(SIDE_FILES),
        source={
            "builder": "lfm-satellite lfm_toolchain.published",
            "layout": "published",
            **source,
        },
    )
    return_manifest.write(out)
    return return_manifest


def write_tables(folder: Path, config: AudioModelConfig, weights: Mapping[str, Array]) -> None:
    """`embed_tokens.bin` and `audio_embedding.bin` (float32, little-endian, row-major) with
    their JSON descriptors, as the export writes them."""
    tables = {
        "embed_tokens": (weights["lfm.embed_tokens.weight"], {}),
        "audio_embedding": (
            weights["audio_embedding.embedding.weight"],
            {"num_codebooks": config.codebooks, "codebook_vocab": config.codebook_size},
        ),
    }
    for name, (table, extra) in tables.items():
        rows = np.ascontiguousarray(table, dtype="<f4")
        with (folder / f"{name}.bin").open("wb") as f:
            f.write(rows.data.cast("B"))  # no second copy of a 512 MB table
        described = {
            "vocab_size": int(rows.shape[0]),
            "hidden_size": int(rows.shape[1]),
            **extra,
            "dtype": "float32",
            "byte_order": "little",
        }
        (folder / f"{name}.json").write_text(json.dumps(described, indent=2) + "\n")


def mel_config(config: AudioModelConfig) -> dict[str, Any]:
    """The export's `mel_config.json`."""
    return {
        "sample_rate": config.preprocessor.sample_rate,
        "n_fft": 512,
        "win_length": 400,
        "hop_length": 160,
        "n_mels": config.preprocessor.features,
        "fmin": 0,
        "fmax": config.preprocessor.sample_rate // 2,
        "preemph": 0.97,
        "log_zero_guard": 2**-24,
        "normalize": "per_feature",
        "mel_norm": "slaney",
    }
