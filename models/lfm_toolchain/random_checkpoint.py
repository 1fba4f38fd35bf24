"""A checkpoint directory in the hub's layout (`lfm_toolchain.checkpoint`) holding seeded random
weights: the stand-in for a downloaded LFM2.5-Audio-1.5B when measuring what `model build
--from` costs at full size, since no weights can be fetched here.

The safetensors files are written tensor by tensor (the header first: every offset follows from
the shapes), so a full-size checkpoint (3 GB in bfloat16) is written holding one tensor at a
time. `safetensors`' own writers take the whole state dict at once, which at full size is the
memory this is meant to measure without.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lfm_toolchain.checkpoint import CONFIG, DETOKENIZER_DIR, WEIGHTS
from lfm_toolchain.config import AudioModelConfig, config_for
from lfm_toolchain.tokenizer import write_tokenizer
from lfm_toolchain.weights import (
    Array,
    ParamSpec,
    RandomWeights,
    model_weights,
    random_detokenizer_weights,
)

FLOAT_DTYPES = {"BF16": 2, "F32": 4}
"""Float storage types offered, with their element sizes."""
ARCHITECTURE = "Lfm2AudioForConditionalGeneration"


def write_random_checkpoint(
    out: Path, size: str = "full", seed: int = 0, dtype: str = "BF16", shaped: bool | None = None
) -> Path:
    """Write the checkpoint of the `size` architecture (tiny|full) into `out`: the main and
    the detokenizer's `model.safetensors` with their `config.json`, and a tokenizer. The main
    weights are those a random build of the same size and seed makes (`model_weights`: the tiny
    one shaped unless `shaped` is False), so `build --from` it gives that build's graphs."""
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"--dtype {dtype}: not one of {', '.join(FLOAT_DTYPES)}")
    config = config_for(size)  # type: ignore[arg-type]
    detok = out / DETOKENIZER_DIR
    detok.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / WEIGHTS, model_weights(config, seed, shaped=shaped), dtype)
    write_safetensors(detok / WEIGHTS, random_detokenizer_weights(config, seed), dtype)
    main_config = {**config.reference_config_json(), "architectures": [ARCHITECTURE]}
    (out / CONFIG).write_text(json.dumps(main_config, indent=2) + "\n", encoding="utf-8")
    (detok / CONFIG).write_text(
        json.dumps(detokenizer_config(config), indent=2) + "\n", encoding="utf-8"
    )
    write_tokenizer(out, config.backbone.vocab_size)
    return out


def detokenizer_config(config: AudioModelConfig) -> dict[str, object]:
    """The detokenizer's `config.json` as the hub has it: an Lfm2Config with llama.cpp-style
    `sliding_attention` layers and the window."""
    det = config.detokenizer.backbone
    return {
        **det.reference_kwargs(),
        "model_type": "lfm2",
        "layer_types": list(det.layer_types),
        "sliding_window": det.sliding_window,
    }


def write_safetensors(path: Path, weights: RandomWeights, dtype: str) -> None:
    """Every tensor of `weights` into one safetensors file, floats stored as `dtype`."""
    specs = [weights.spec(name) for name in weights]
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for spec in specs:
        kind, size = _storage(spec, dtype)
        end = offset + math.prod(spec.shape) * size
        header[spec.name] = {
            "dtype": kind,
            "shape": list(spec.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes with spaces
    with path.open("wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for spec in specs:
            for piece in _stored(weights[spec.name], _storage(spec, dtype)[0]):
                f.write(piece)


def _storage(spec: ParamSpec, dtype: str) -> tuple[str, int]:
    if spec.init == "count":
        return "I64", 8
    return dtype, FLOAT_DTYPES[dtype]


def _stored(array: Array, kind: str, rows: int = 1 << 22) -> Iterable[bytes]:
    """The array's bytes as `kind`, a few million elements at a time."""
    flat = np.ascontiguousarray(array).reshape(-1)
    for start in range(0, flat.size, rows):
        part = flat[start : start + rows]
        if kind == "BF16":
            yield to_bfloat16(part.astype(np.float32, copy=False)).tobytes()
        elif kind == "F32":
            yield part.astype("<f4", copy=False).tobytes()
        else:
            yield part.astype("<i8", copy=False).tobytes()


def to_bfloat16(values: Array) -> Array:
    """float32 -> bfloat16 bits (uint16), rounded to nearest, ties to even."""
    bits = values.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype("<u2")
