"""`lfm-satellite model build`: write a model directory of the LFM2.5-Audio architecture.

`build_model` writes ONNX graphs by role, `config.json` (the checkpoint's config, liquid-audio
layout) and `manifest.json` (`satellite.modeldir.manifest`). The weights are seeded random ones
(`lfm_toolchain.weights`) at tiny or full size; the tiny model's have their special rows scaled
(`shaped_model_weights`) so that its replies reach audio.

Built: every role of LFM2.5-Audio (`decoder`, `audio_encoder`, `audio_embedding`, `depthformer`,
`audio_detokenizer`) plus `embed_tokens` and `audio_detokenizer_cached` (the streaming
detokenizer), fp32, or q8/q4 (`lfm_toolchain.quantize`), with `tokenizer.json` and
`tokenizer_config.json`; from seeded random weights or from a checkpoint directory (`--from`,
`lfm_toolchain.checkpoint`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import onnx

from lfm_toolchain import decoder, depthformer, detokenizer, embeddings, encoder, mimi
from lfm_toolchain.checkpoint import Checkpoint, CheckpointError, read_checkpoint
from lfm_toolchain.config import SIZES, AudioModelConfig, config_for
from lfm_toolchain.onnx_graph import GraphBuilder, write_graph
from lfm_toolchain.published import PUBLISHED_VARIANTS, build_published
from lfm_toolchain.quantize import Progress, build_quantized, spec_for
from lfm_toolchain.tokenizer import TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, write_tokenizer
from lfm_toolchain.weights import (
    Array,
    default_seed,
    model_weights,
    random_detokenizer_weights,
    shaped_by_default,
)
from satellite.engine.template import TokenizerError
from satellite.errors import UserError
from satellite.modeldir.make import make_manifest
from satellite.modeldir.manifest import FAMILIES, MANIFEST_NAME, VARIANTS, Manifest, Variant

BUILT_VARIANTS: tuple[Variant, ...] = ("fp32", "q8", "q4")
LAYOUTS = ("project", "published")
"""`project`: the project's own graphs and names; `published`: the published export's
(`lfm_toolchain.published`)."""
DEFAULT_MAX_POSITIONS = {"tiny": 4096, "full": 32768}
"""RoPE table length (longest context) per size, unless given."""
STAGING_PREFIX = ".building-"
"""The folder inside `--out` a build writes into before it moves the files in."""


class BuildError(UserError):
    """The build cannot run as asked; the message says why."""


def build_graphs(
    out: Path,
    config: AudioModelConfig,
    weights: Mapping[str, Array],
    detokenizer_weights: Mapping[str, Array],
    *,
    max_positions: int,
    logits_to_keep: bool = False,
    mimi_model: tuple[mimi.MimiConfig, Mapping[str, Array]] | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Write every graph into `out`; returns role -> file and role -> options.

    `weights` are the main checkpoint's tensors, `detokenizer_weights` the detokenizer's;
    `logits_to_keep` gives the decoder its `num_logits_to_keep` input (`lfm_toolchain.decoder`).
    `mimi_model` (LFM2-Audio v1: Mimi's config and weights, `lfm_toolchain.mimi`) writes
    `mimi_decoder` and `mimi_decoder_cached` instead of the detokenizer graphs.
    """
    builders: dict[str, Callable[[GraphBuilder], onnx.ModelProto]] = {
        "decoder": lambda g: decoder.build_decoder(
            g, config.backbone, weights, max_positions=max_positions,
            logits_to_keep=logits_to_keep,
        ),
        "audio_encoder": lambda g: encoder.build_audio_encoder(g, config, weights),
        "embed_tokens": lambda g: embeddings.build_embed_tokens(g, config, weights),
        "audio_embedding": lambda g: embeddings.build_audio_embedding(g, config, weights),
        "depthformer": lambda g: depthformer.build_depthformer(g, config, weights),
    }  # fmt: skip
    if mimi_model is not None:
        builders.update(mimi.graph_builders(*mimi_model))
    else:
        builders["audio_detokenizer"] = lambda g: detokenizer.build_audio_detokenizer(
            g, config, detokenizer_weights
        )
        builders["audio_detokenizer_cached"] = lambda g: detokenizer.build_audio_detokenizer_cached(
            g, config, detokenizer_weights
        )
    graphs: dict[str, str] = {}
    for n, (role, build) in enumerate(builders.items(), 1):
        if progress is not None:
            progress(f"graph {n}/{len(builders)}: {role} (fp32)")
        graphs[role] = write_graph(out, role, build)
    options: dict[str, dict[str, Any]] = {
        "decoder": {"max_sequence_length": max_positions, "rope": "rotate_half"},
        "depthformer": {"granularity": "codebook_step", "rope": "interleaved"},
        "audio_detokenizer": {
            "max_frames": detokenizer.DEFAULT_MAX_FRAMES,
            "context_frames": detokenizer.context_frames(config),
        },
        "audio_detokenizer_cached": {"max_frames": detokenizer.CACHED_MAX_FRAMES},
    }
    if mimi_model is not None:
        options = {k: v for k, v in options.items() if not k.startswith("audio_detokenizer")}
        options["mimi_decoder"] = options["mimi_decoder_cached"] = mimi_model[0].manifest_options()
    return graphs, options


MimiModel = tuple[mimi.MimiConfig, Mapping[str, Array]]


def _read_checkpoint(path: Path) -> tuple[Checkpoint, Mapping[str, Array], MimiModel | None]:
    """`read_checkpoint`, its refusals as BuildErrors; with the detokenizer's weights
    (LFM2.5-Audio, none for v1) and Mimi (LFM2-Audio v1, None for LFM2.5-Audio)."""
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as err:
        raise BuildError(f"--from: {err}") from None
    return ckpt, ckpt.detokenizer_weights or {}, ckpt.mimi


def _write_tokenizer(out: Path, vocab_size: int, source: Path | None, config: Path | None) -> str:
    try:
        return write_tokenizer(out, vocab_size, source=source, source_config=config)
    except TokenizerError as err:
        raise BuildError(f"--from: {err}") from None


def build_model(
    out: Path,
    *,
    size: str = "tiny",
    variant: str = "fp32",
    seed: int | None = None,
    shaped: bool | None = None,
    checkpoint: Path | None = None,
    max_positions: int | None = None,
    overwrite: bool = False,
    family: str = "lfm2.5-audio",
    block_size: int | None = None,
    layout: str = "project",
    progress: Progress | None = None,
) -> Manifest:
    """Build a model directory at `out` and return its manifest.

    `size` (tiny|full) picks the architecture numbers (`lfm_toolchain.config`), `seed` the random
    weights (the same seed gives byte-identical files; default `weights.default_seed`: 216 for
    tiny, 0 for full), `shaped` whether their special rows are scaled so that generation reaches
    audio (`weights.shaped_model_weights`; default: at tiny size, so that the tiny model built
    with the defaults is the demo's, the commands' and the tests'), `max_positions` the longest
    decoder context (RoPE table length). `checkpoint` is a checkpoint directory in the hub's layout
    (`lfm_toolchain.checkpoint`): its config and weights replace `size` and `seed`, and its tokenizer
    is copied; otherwise a stand-in tokenizer is written (`lfm_toolchain.tokenizer`). `family`
    `lfm2-audio` builds LFM2-Audio v1 (random weights only): the same backbone, encoder and
    depthformer, with Mimi (`lfm_toolchain.mimi`) instead of the LFM2.5 detokenizer.
    `block_size` replaces the quantized variant's default block (`lfm_toolchain.quantize.spec_for`).
    `layout` `published` writes the files of the published ONNX export instead, its defects
    included (`lfm_toolchain.published`: fp32 or q4, LFM2.5-Audio only).
    Refuses to write into a directory that already holds a manifest unless `overwrite`.

    The files are written into a hidden staging folder inside `out` and moved in when all are
    done, the manifest last; an interrupted build (Ctrl-C, an error, a full disk) removes it,
    and the next build removes one left by a killed process, so `out` never holds a manifest
    for files that are not all there. `progress` is called with a line per step.
    """
    if variant not in VARIANTS:
        raise BuildError(f"--variant {variant}: not one of {', '.join(VARIANTS)}")
    if variant not in BUILT_VARIANTS:
        raise BuildError(
            f"--variant {variant}: not built yet (this version builds {', '.join(BUILT_VARIANTS)})"
        )
    if layout not in LAYOUTS:
        raise BuildError(f"--layout {layout}: not one of {', '.join(LAYOUTS)}")
    if layout == "published" and variant not in PUBLISHED_VARIANTS:
        raise BuildError(
            f"--layout published --variant {variant}: the published export is reproduced as "
            f"{' or '.join(PUBLISHED_VARIANTS)}"
        )
    if layout == "published" and family != "lfm2.5-audio":
        raise BuildError(
            f"--layout published: only LFM2.5-Audio is published as ONNX, not {family}"
        )
    if size not in SIZES:
        raise BuildError(f"--size {size}: not one of {', '.join(SIZES)}")
    if block_size is not None:
        if variant == "fp32":
            raise BuildError(f"--block-size {block_size}: only the q4 and q8 variants have blocks")
        try:
            spec_for(variant, block_size)
        except ValueError as err:
            raise BuildError(str(err)) from None
    if family not in FAMILIES:
        raise BuildError(f"--family {family}: not one of {', '.join(FAMILIES)}")
    if family == "lfm2-audio" and checkpoint is not None:
        raise BuildError(
            f"--from {checkpoint}: leave out --family (the checkpoint's files tell its family)"
        )
    if checkpoint is not None and shaped:
        raise BuildError(f"--from {checkpoint}: shaping scales random weights; leave out --shaped")
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out}: exists and is not a directory")
    if (out / MANIFEST_NAME).exists() and not overwrite:
        raise BuildError(f"--out {out}: already holds a model (manifest.json); pass --overwrite")
    tokenizer_files: tuple[Path | None, Path | None] = (None, None)
    weights: Mapping[str, Array]
    detok_weights: Mapping[str, Array]
    mimi_model: MimiModel | None = None
    if checkpoint is not None:  # names and shapes checked by `read_checkpoint`
        ckpt, detok_weights, mimi_model = _read_checkpoint(checkpoint)
        config, weights, family = ckpt.config, ckpt.weights, ckpt.family
        tokenizer_files = (ckpt.tokenizer, ckpt.tokenizer_config)
        name = checkpoint.resolve().name
        about: dict[str, Any] = {"weights": "checkpoint", "checkpoint": str(checkpoint)}
        if ckpt.ignored:
            about["ignored_tensors"] = list(ckpt.ignored)
    else:
        config = config_for(size)
        # Random weights follow the specs by construction (no layout check: it would generate
        # every tensor once more).
        if seed is None:
            seed = default_seed(size)
        if shaped is None:
            shaped = shaped_by_default(size)
        weights = model_weights(config, seed, shaped=shaped)
        detok_weights = random_detokenizer_weights(config, seed)
        name = f"{family}-{size}-random"
        about = {"size": size, "weights": "random", "seed": seed, "shaped": shaped}
        if family == "lfm2-audio":
            mimi_config = mimi.mimi_config_for(config.size)
            mimi_model = (mimi_config, mimi.random_mimi_weights(mimi_config, seed))
    positions = max_positions or DEFAULT_MAX_POSITIONS[config.size]
    if layout == "published" and mimi_model is not None:
        raise BuildError(
            f"--layout published: only LFM2.5-Audio is published as ONNX, not {family}"
        )
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{STAGING_PREFIX}*"):  # left by a build that was killed
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    say = progress or (lambda _: None)
    try:
        manifest = _write_model(
            staging,
            config=config,
            weights=weights,
            detok_weights=detok_weights,
            mimi_model=mimi_model,
            variant=variant,
            layout=layout,
            positions=positions,
            block_size=block_size,
            tokenizer_files=tokenizer_files,
            name=name,
            family=family,
            about=about,
            say=say,
        )
        say(f"moving the files into {out}")
        _publish(staging, out)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        free = shutil.disk_usage(out).free
        raise BuildError(
            f"--out {out}: the disk is full ({free / 1e6:,.0f} MB free); nothing was kept. "
            "A build needs room for its fp32 graphs and the result at once (docs/PERFORMANCE.md)"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _publish(staging: Path, out: Path) -> None:
    """Move the finished build from `staging` into `out`, its manifest last: a directory
    holds a manifest only once every file it lists is in place."""
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    for path in sorted(staging.rglob("*")):
        if path.is_dir() or path == staging / MANIFEST_NAME:
            continue
        target = out / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    os.replace(staging / MANIFEST_NAME, out / MANIFEST_NAME)


def _write_model(
    out: Path,
    *,
    config: AudioModelConfig,
    weights: Mapping[str, Array],
    detok_weights: Mapping[str, Array],
    mimi_model: MimiModel | None,
    variant: str,
    layout: str,
    positions: int,
    block_size: int | None,
    tokenizer_files: tuple[Path | None, Path | None],
    name: str,
    family: str,
    about: dict[str, Any],
    say: Progress,
) -> Manifest:
    """Write the model into `out` (the staging folder), manifest included."""
    started = time.monotonic()
    about["tokenizer"] = _write_tokenizer(out, config.backbone.vocab_size, *tokenizer_files)
    if layout == "published":
        return build_published(
            out,
            config,
            weights,
            detok_weights,
            variant=variant,
            max_positions=positions,
            block_size=block_size,
            tokenizer=TOKENIZER_FILE,
            source=about,
            progress=say,
        )
    if variant == "fp32":
        graphs, options = build_graphs(
            out,
            config,
            weights,
            detok_weights,
            max_positions=positions,
            mimi_model=mimi_model,
            progress=say,
        )
    else:  # fp32 graphs in a scratch folder, quantized into `out` (lfm_toolchain.quantize)
        graphs, options = build_quantized(
            out,
            variant,
            lambda tmp: build_graphs(
                tmp,
                config,
                weights,
                detok_weights,
                max_positions=positions,
                logits_to_keep=True,
                mimi_model=mimi_model,
                progress=say,
            ),
            block_size=block_size,
            progress=say,
        )
    (out / "config.json").write_text(
        json.dumps(config.reference_config_json(), indent=2) + "\n", encoding="utf-8"
    )
    say("checksums and manifest")
    manifest = make_manifest(
        out,
        name=name,
        family=family,
        variant=variant,
        config={**config.manifest_config(), "max_sequence_length": positions},
        graphs=graphs,
        options=options,
        tokenizer=TOKENIZER_FILE,
        side_files={"config": "config.json", "tokenizer_config": TOKENIZER_CONFIG_FILE},
        source={
            "builder": "lfm-satellite lfm_toolchain.build",
            **about,
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    manifest.write(out)
    return manifest
