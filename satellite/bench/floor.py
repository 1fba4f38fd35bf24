"""How many bytes a decoder step reads, and the floor that memory bandwidth puts on its time.

A step (one new position) reads every MatMul weight whole (the lm-head on text steps; audio
steps skip it where the graph has `num_logits_to_keep`), the small constants whole, the KV cache
of every attention layer and the conv states; tables indexed by position or token (RoPE cos/sin,
embedding gathers) are read a row at a time and not counted. floor = bytes / bandwidth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx import numpy_helper

from satellite.modeldir.contract import config_dims, layer_indices
from satellite.modeldir.manifest import read_manifest

MATMUL_OPS = frozenset(
    {
        "MatMul",
        "MatMulNBits",
        "Gemm",
        "MatMulInteger",
        "FusedMatMul",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QLinearMatMul",
    }
)
"""Operators that read their whole weight for every token."""
ROW_OPS = frozenset({"Gather", "GatherBlockQuantized", "GroupQueryAttention", "RotaryEmbedding"})
"""Operators whose constant tables are read a row at a time (embeddings, RoPE cos/sin)."""


@dataclass(frozen=True)
class DecoderBytes:
    matmul: int
    """Weights of MatMul-like nodes (packed 4-bit weights with their scales included)."""
    lm_head: int
    """Of `matmul`, the lm-head's."""
    other: int
    """Other constants read whole (norm gains, conv taps, small shape constants)."""
    rows_only: int
    """Tables read a row at a time (RoPE cos/sin, gathers): not counted per step."""
    method: str


def _tensor_bytes(tensor: Any) -> int:
    if tensor.data_location == 1:  # EXTERNAL
        info = {e.key: e.value for e in tensor.external_data}
        return int(info.get("length", 0))
    if tensor.raw_data:
        return len(tensor.raw_data)

    return int(numpy_helper.to_array(tensor).nbytes)


def decoder_bytes(directory: Path) -> DecoderBytes:
    """Classify the decoder graph's constants by how a decoding step reads them (the graph
    only, external weights not loaded)."""
    manifest = read_manifest(directory)
    entry = manifest.graphs["decoder"]
    graph = onnx.load(str(directory / entry.file), load_external_data=False).graph
    sizes = {t.name: _tensor_bytes(t) for t in graph.initializer}
    consumers: dict[str, set[str]] = {name: set() for name in sizes}
    lm_head: set[str] = set()
    for node in graph.node:
        head = node.op_type in MATMUL_OPS and (
            "logits" in node.output or "lm_head" in node.name.lower()
        )
        for name in node.input:
            if name in consumers:
                consumers[name].add(node.op_type)
                if head:
                    lm_head.add(name)
    matmul = other = rows = 0
    for name, ops in consumers.items():
        if ops & MATMUL_OPS:
            matmul += sizes[name]
        elif ops and ops <= ROW_OPS:
            rows += sizes[name]
        else:
            other += sizes[name]
    head_bytes = sum(sizes[n] for n in lm_head)
    return DecoderBytes(matmul, head_bytes, other, rows, "graph constants by consuming operator")


def cache_bytes(config: Mapping[str, Any], positions: int) -> int:
    """Bytes of the decoder's caches read per step at `positions` (float32 keys and values of
    every attention layer, conv states of every conv layer)."""

    dims = config_dims(dict(config))
    kv = len(layer_indices(dict(config), "attention")) * 2
    kv *= dims["num_key_value_heads"] * dims["head_dim"] * positions * 4
    conv = len(layer_indices(dict(config), "conv")) * dims["hidden_size"] * dims["conv_cache"] * 4
    return kv + conv


def decoder_floor(
    directory: Path,
    config: Mapping[str, Any],
    positions: int,
    bandwidth_gb_s: float,
    step_ms: float,
    audio_step_ms: float,
    *,
    skips_head: bool,
) -> dict[str, Any]:
    """Bytes read per decoder step and the floor ms/step this bandwidth allows: for a text
    step (lm-head read) and an audio step (lm-head skipped when `skips_head`)."""
    counted = decoder_bytes(directory)
    cache = cache_bytes(config, positions)
    per_step = counted.matmul + counted.other + cache
    per_audio_step = per_step - (counted.lm_head if skips_head else 0)
    floor_ms = per_step / (bandwidth_gb_s * 1e9) * 1000.0
    audio_floor_ms = per_audio_step / (bandwidth_gb_s * 1e9) * 1000.0
    no_head = (per_step - counted.lm_head) / (bandwidth_gb_s * 1e9) * 1000.0
    return {
        "method": counted.method,
        "matmul_bytes": counted.matmul,
        "lm_head_bytes": counted.lm_head,
        "other_weight_bytes": counted.other,
        "rows_only_bytes": counted.rows_only,
        "cache_bytes": cache,
        "cache_positions": positions,
        "bytes_per_step": per_step,
        "bytes_per_audio_step": per_audio_step,
        "bandwidth_gb_s": round(bandwidth_gb_s, 2),
        "floor_ms_per_step": round(floor_ms, 3),
        "floor_ms_per_step_without_lm_head": round(no_head, 3),
        "floor_ms_per_audio_step": round(audio_floor_ms, 3),
        "measured_ms_per_step": step_ms,
        "measured_over_floor": round(step_ms / floor_ms, 2) if floor_ms > 0 else None,
        "measured_audio_ms_per_step": audio_step_ms,
        "audio_over_floor": round(audio_step_ms / audio_floor_ms, 2) if audio_floor_ms else None,
    }
