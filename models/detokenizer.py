"""The `audio_detokenizer` graph (LFM2.5-Audio): audio codes -> STFT frames, fp32, stateless.

Interface (the official export's): `audio_codes` int64 [batch_size, 8, frames] (codes 0..2047;
the caller drops end-of-audio frames) -> `stft_features` f32 [batch_size, 6*frames, 1282]:
641 log-magnitudes then 641 phases per 75 Hz frame. The ISTFT (n_fft 1280, hop 320, periodic
Hann, "same" padding) is done by the caller.

As liquid-audio's `LFM2AudioDetokenizer`: the mean of the 8 codebooks' embeddings (one table,
codebook c at rows 2048*c), nearest upsampling x6, an LFM2 trunk (short convs from a zero state,
and attention over a causal sliding window of 30 positions, rotate-half RoPE), its final
RMSNorm, and Linear(512 -> 1282).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from models.config import AudioModelConfig
from models.decoder import Lfm2Layers
from models.layers import rope_tables
from models.onnx_graph import FLOAT, INT32, INT64, GraphBuilder
from models.weights import Array

DEFAULT_MAX_FRAMES = 1024
"""Longest input (in 80 ms code frames) the RoPE tables cover: 82 s of audio per call."""


def build_audio_detokenizer(
    g: GraphBuilder,
    config: AudioModelConfig,
    weights: Mapping[str, Array],
    *,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> onnx.ModelProto:
    """The detokenizer graph with the detokenizer checkpoint's `weights` (`emb.*`, `lfm.*`,
    `lin.*`)."""
    det = config.detokenizer
    cfg = det.backbone
    d = cfg.hidden_size
    g.input("audio_codes", INT64, ["batch_size", det.codebooks, "frames"])
    g.output("stft_features", FLOAT, ["batch_size", "stft_frames", det.output_size])

    # Mean of the codebooks' embeddings: [B, 8, T] -> [B, T, d].
    offsets = (np.arange(det.codebooks, dtype=np.int64) * det.codebook_size)[:, None]
    rows = g.op1("Add", ["audio_codes", g.const(offsets)], name="/emb/offsets")
    table = g.weight("emb.emb.weight", weights["emb.emb.weight"])
    x = g.op1("Gather", [table, rows], name="/emb/Gather", axis=0)  # [B, 8, T, d]
    x = g.op1("ReduceMean", [x, g.const([1])], name="/emb/ReduceMean", keepdims=0)
    # Nearest upsampling x6: every frame repeated 6 times.
    x = g.op1("Unsqueeze", [x, g.const([2])], name="/upsample/Unsqueeze")  # [B, T, 1, d]
    x = g.op1("Expand", [x, g.const([1, 1, det.upsample, 1])], name="/upsample/Expand")
    x = g.op1("Reshape", [x, g.const([0, -1, d])], name="/upsample/Reshape")  # [B, 6T, d]

    lengths = ("", "")
    rope = ("", "")
    if cfg.attention_layers:
        n = "/attn_lengths"
        shape = g.op1("Shape", [x], name=f"{n}/Shape")
        total = g.op1("Gather", [shape, g.const(1)], name=f"{n}/total")
        total32 = g.op1("Cast", [total], name=f"{n}/total_seq_len", to=INT32)
        batch = g.op1("Slice", [shape, g.const([0]), g.const([1])], name=f"{n}/batch")
        last = g.op1("Sub", [total32, g.const(1, np.int32)], name=f"{n}/Sub")
        seqlens = g.op1("Expand", [last, batch], name=f"{n}/seqlens_k")
        lengths = (seqlens, total32)
        cos, sin = rope_tables(cfg.head_dim, cfg.rope_theta, det.upsample * max_frames)
        rope = (g.weight("lfm.cos_cache", cos), g.weight("lfm.sin_cache", sin))

    trunk = Lfm2Layers(g, cfg, weights, "lfm.")
    residual = x
    h = trunk.norm(x, "layers.0.operator_norm.weight", "/model/layers.0/operator_norm")
    for i in range(cfg.num_hidden_layers):
        if cfg.is_attention(i):
            window = cfg.sliding_window if cfg.layer_types[i] == "sliding_attention" else None
            out = trunk.attention(i, h, None, None, lengths, rope, window=window)
        else:
            out = trunk.conv(i, h, None, None)
        h, residual = trunk.skip_norm(
            out, residual, f"layers.{i}.ffn_norm.weight", f"/model/layers.{i}/ffn_norm"
        )
        out = trunk.swiglu(h, f"layers.{i}.feed_forward", f"/model/layers.{i}/mlp")
        if i + 1 < cfg.num_hidden_layers:
            name, node = (
                f"layers.{i + 1}.operator_norm.weight",
                f"/model/layers.{i + 1}/operator_norm",
            )
        else:
            name, node = "embedding_norm.weight", "/model/embedding_norm"
        h, residual = trunk.skip_norm(out, residual, name, node)

    head = Lfm2Layers(g, cfg, weights, "")
    head.linear(h, "lin.weight", "/lin/MatMul", bias="lin.bias", out="stft_features")
    return g.model(doc="LFM2.5-Audio detokenizer (lfm-satellite models.detokenizer)")
