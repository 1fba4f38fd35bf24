"""`lfm-satellite model build`: write a model directory of the LFM2.5-Audio architecture.

`build_model` writes ONNX graphs by role, `config.json` (the checkpoint's config, liquid-audio
layout) and `manifest.json` (`satellite.modeldir.manifest`). The weights are seeded random ones
(`models.weights`) at tiny or full size.

Built: every role of LFM2.5-Audio (`decoder`, `audio_encoder`, `audio_embedding`, `depthformer`,
`audio_detokenizer`) plus `embed_tokens`, fp32. Not yet: the tokenizer, the q8/q4 variants and
`--from CHECKPOINT`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import onnx

from models import decoder, depthformer, detokenizer, embeddings, encoder
from models.config import SIZES, AudioModelConfig, config_for
from models.onnx_graph import ExternalData, GraphBuilder, save
from models.weights import Array, random_detokenizer_weights, random_model_weights
from satellite.errors import UserError
from satellite.modeldir.make import make_manifest
from satellite.modeldir.manifest import MANIFEST_NAME, VARIANTS, Manifest, Variant

BUILT_VARIANTS: tuple[Variant, ...] = ("fp32",)
DEFAULT_MAX_POSITIONS = {"tiny": 4096, "full": 32768}
"""RoPE table length (longest context) per size, unless given."""


class BuildError(UserError):
    """The build cannot run as asked; the message says why."""


GraphFn = Callable[[GraphBuilder], onnx.ModelProto]


def _write_graph(out: Path, file_stem: str, build: GraphFn) -> str:
    """Build one graph into `out` (`<stem>.onnx` + `<stem>.onnx_data`); returns its file name."""
    data = ExternalData(out / f"{file_stem}.onnx_data")
    try:
        model = build(GraphBuilder(file_stem, data))
    finally:
        data.close()
    if data.path.stat().st_size == 0:
        data.path.unlink()
    save(model, out / f"{file_stem}.onnx")
    return f"{file_stem}.onnx"


def build_graphs(
    out: Path,
    config: AudioModelConfig,
    weights: Mapping[str, Array],
    detokenizer_weights: Mapping[str, Array],
    *,
    max_positions: int,
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Write every graph into `out`; returns role -> file and role -> options.

    `weights` are the main checkpoint's tensors, `detokenizer_weights` the detokenizer's.
    """
    graphs = {
        "decoder": _write_graph(
            out, "decoder",
            lambda g: decoder.build_decoder(g, config.backbone, weights, max_positions=max_positions),
        ),
        "audio_encoder": _write_graph(
            out, "audio_encoder", lambda g: encoder.build_audio_encoder(g, config, weights)
        ),
        "embed_tokens": _write_graph(
            out, "embed_tokens", lambda g: embeddings.build_embed_tokens(g, config, weights)
        ),
        "audio_embedding": _write_graph(
            out, "audio_embedding", lambda g: embeddings.build_audio_embedding(g, config, weights)
        ),
        "depthformer": _write_graph(
            out, "depthformer", lambda g: depthformer.build_depthformer(g, config, weights)
        ),
        "audio_detokenizer": _write_graph(
            out,
            "audio_detokenizer",
            lambda g: detokenizer.build_audio_detokenizer(g, config, detokenizer_weights),
        ),
    }  # fmt: skip
    options: dict[str, dict[str, Any]] = {
        "decoder": {"max_sequence_length": max_positions, "rope": "rotate_half"},
        "depthformer": {"granularity": "codebook_step", "rope": "interleaved"},
        "audio_detokenizer": {"max_frames": detokenizer.DEFAULT_MAX_FRAMES},
    }
    return graphs, options


def build_model(
    out: Path,
    *,
    size: str = "tiny",
    variant: str = "fp32",
    seed: int = 0,
    checkpoint: Path | None = None,
    max_positions: int | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Build a model directory at `out` and return its manifest.

    `size` (tiny|full) picks the architecture numbers (`models.config`), `seed` the random
    weights (the same seed gives byte-identical files), `max_positions` the longest decoder
    context (RoPE table length). `checkpoint` (a directory holding the real
    `model.safetensors`) is not supported yet.
    Refuses to write into a directory that already holds a manifest unless `overwrite`.
    """
    if variant not in VARIANTS:
        raise BuildError(f"--variant {variant}: not one of {', '.join(VARIANTS)}")
    if variant not in BUILT_VARIANTS:
        raise BuildError(
            f"--variant {variant}: not built yet (this version builds {', '.join(BUILT_VARIANTS)})"
        )
    if size not in SIZES:
        raise BuildError(f"--size {size}: not one of {', '.join(SIZES)}")
    if checkpoint is not None:
        raise BuildError(f"--from {checkpoint}: building from a checkpoint is not supported yet")
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out}: exists and is not a directory")
    if (out / MANIFEST_NAME).exists() and not overwrite:
        raise BuildError(f"--out {out}: already holds a model (manifest.json); pass --overwrite")
    config = config_for(size)
    positions = max_positions or DEFAULT_MAX_POSITIONS[size]
    # Random weights follow the specs by construction (no layout check: it would generate
    # every tensor once more); a checkpoint's will go through `check_layout`.
    weights = random_model_weights(config, seed)
    detok_weights = random_detokenizer_weights(config, seed)

    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    graphs, options = build_graphs(out, config, weights, detok_weights, max_positions=positions)
    (out / "config.json").write_text(
        json.dumps(config.reference_config_json(), indent=2) + "\n", encoding="utf-8"
    )
    manifest = make_manifest(
        out,
        name=f"lfm2.5-audio-{size}-random",
        family=config.family,
        variant=variant,
        config={**config.manifest_config(), "max_sequence_length": positions},
        graphs=graphs,
        options=options,
        tokenizer=None,
        side_files={"config": "config.json"},
        source={
            "builder": "lfm-satellite models.build",
            "size": size,
            "weights": "random",
            "seed": seed,
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    manifest.write(out)
    return manifest
