"""The model's LFM2 backbone as a llama.cpp GGUF file (architecture "lfm2"), for the peer benchmark.

Only the backbone (`lfm.*`) has a llama.cpp counterpart; the audio encoder, depthformer and
detokenizer do not. The output head is tied to the token embedding (LFM2's
`tie_word_embeddings`), so no `output.weight` is written. The file has no tokenizer
(llama.cpp's vocabulary type "none": `vocab_size` placeholder tokens), which is all
`llama-bench` needs: it feeds token ids.

Tensors are written one at a time from any mapping of the project's parameter names (seeded
`RandomWeights` never hold more than one), 1-D tensors, norms and the short-convolution kernel
in float32 (as llama.cpp's own converter keeps them), the matrices in float16; `llama-quantize`
makes the 4-bit file from it. Needs the `gguf` package (the `peers` extra).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

from lfm_toolchain.config import BackboneConfig
from lfm_toolchain.weights import ParamSpec

ARCH = "lfm2"
PREFIX = "lfm."

LAYER_TENSORS = {
    "operator_norm.weight": "attn_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "feed_forward.w1.weight": "ffn_gate.weight",
    "feed_forward.w3.weight": "ffn_up.weight",
    "feed_forward.w2.weight": "ffn_down.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.out_proj.weight": "attn_output.weight",
    "self_attn.q_layernorm.weight": "attn_q_norm.weight",
    "self_attn.k_layernorm.weight": "attn_k_norm.weight",
    "conv.conv.weight": "shortconv.conv.weight",
    "conv.in_proj.weight": "shortconv.in_proj.weight",
    "conv.out_proj.weight": "shortconv.out_proj.weight",
}
"""A layer's parameter (transformers `Lfm2DecoderLayer`) -> its GGUF tensor in `blk.N.`."""


def tensor_name(name: str) -> str:
    """The GGUF name of the project's backbone parameter `name` (`lfm.layers.3.ffn_norm.weight`
    -> `blk.3.ffn_norm.weight`)."""
    rest = name.removeprefix(PREFIX)
    if rest == "embed_tokens.weight":
        return "token_embd.weight"
    if rest == "embedding_norm.weight":  # LFM2's final norm, despite the name
        return "token_embd_norm.weight"
    layers, index, tail = rest.split(".", 2)
    if layers != "layers" or tail not in LAYER_TENSORS:
        raise ValueError(f"{name}: not a parameter of the LFM2 backbone")
    return f"blk.{int(index)}.{LAYER_TENSORS[tail]}"


def tensor_shape(spec: ParamSpec) -> tuple[int, ...]:
    """The shape written: the depthwise convolution's [d, 1, L] kernel as [d, L]."""
    if spec.name.endswith("conv.conv.weight"):
        channels, _, width = spec.shape
        return (channels, width)
    return spec.shape


def keeps_float32(name: str, shape: tuple[int, ...]) -> bool:
    return len(shape) <= 1 or name.endswith("_norm.weight") or name.endswith("conv.conv.weight")


def write_backbone_gguf(
    config: BackboneConfig,
    weights: Mapping[str, npt.NDArray[np.floating]],
    specs: list[ParamSpec],
    out: Path,
    name: str = "lfm2-audio-backbone",
    float32: bool = False,
) -> int:
    """Write the backbone (`specs`, values from `weights`) to `out`; returns its size in bytes.
    `float32` keeps the matrices in float32 too (a file for exact comparisons)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), ARCH)
    writer.add_name(name)
    file_type = gguf.LlamaFileType.ALL_F32 if float32 else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(file_type)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    # one entry per layer; 0 marks a short-convolution layer (no attention, no KV cache)
    kv_heads = [
        config.num_key_value_heads if config.is_attention(i) else 0
        for i in range(config.num_hidden_layers)
    ]
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_shortconv_l_cache(config.conv_cache)
    writer.add_vocab_size(config.vocab_size)
    if config.sliding_window:
        writer.add_sliding_window(config.sliding_window)
    writer.add_tokenizer_model("none")

    plan: list[tuple[ParamSpec, tuple[int, ...], type[np.floating]]] = []
    for spec in specs:
        gguf_name, shape = tensor_name(spec.name), tensor_shape(spec)
        wide = float32 or keeps_float32(gguf_name, shape)
        dtype: type[np.floating] = np.float32 if wide else np.float16
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        writer.add_tensor_info(gguf_name, shape, np.dtype(dtype), nbytes)
        plan.append((spec, shape, dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for spec, shape, dtype in plan:
        writer.write_tensor_data(np.ascontiguousarray(weights[spec.name].reshape(shape), dtype))
    writer.close()
    return out.stat().st_size
