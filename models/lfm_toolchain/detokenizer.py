"""The `audio_detokenizer` graph (LFM2.5-Audio): audio codes -> STFT frames, fp32, stateless.

Interface (the official export's): `audio_codes` int64 [batch_size, 8, frames] (codes 0..2047;
the caller drops end-of-audio frames) -> `stft_features` f32 [batch_size, 6*frames, 1282]:
641 log-magnitudes then 641 phases per 75 Hz frame. The ISTFT (n_fft 1280, hop 320, periodic
Hann, "same" padding) is done by the caller.

As liquid-audio's `LFM2AudioDetokenizer`: the mean of the 8 codebooks' embeddings (one table,
codebook c at rows 2048*c), nearest upsampling x6, an LFM2 trunk (short convs from a zero state,
and attention over a causal sliding window of 30 positions, rotate-half RoPE), its final
RMSNorm, and Linear(512 -> 1282).

`audio_detokenizer_cached` (project-own, `build_audio_detokenizer_cached`) is the same network
for streaming: it takes only the new code frames plus the state the previous call returned, and
gives the new frames' STFT features and the next state. The state is bounded: per conv layer
the last `conv_cache` inputs of its convolution, per attention layer the keys and values of the
last `sliding_window - 1` positions (all a new position can attend to besides itself). Keys are
cached *before* RoPE, and every call rotates the cached and the new ones with positions counted
from the oldest cached one: attention scores depend only on relative positions, so this equals
the one-shot graph, and the positions (and RoPE tables) stay bounded however long the stream.

  in   audio_codes int64 [batch_size, 8, frames] (the new frames only),
       past_conv f32 [conv_layers, batch_size, hidden, conv_cache] (zeros to start),
       past_keys|past_values f32 [attention_layers, batch_size, kv_heads, past_sequence_length,
       head_dim] (length 0 to start)
  out  stft_features f32 [batch_size, 6*frames, 1282], present_conv (-> past_conv),
       present_keys|present_values (-> past_keys|past_values; at most sliding_window - 1 long)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from lfm_toolchain.config import AudioModelConfig, DetokenizerConfig
from lfm_toolchain.decoder import Lfm2Layers
from lfm_toolchain.layers import PackedLinear
from lfm_toolchain.onnx_graph import FLOAT, INT32, INT64, GraphBuilder
from lfm_toolchain.weights import Array
from satellite.modeldir.rope import rope_tables

DEFAULT_MAX_FRAMES = 1024
"""Longest input (in 80 ms code frames) the RoPE tables cover: 82 s of audio per call."""
CACHED_MAX_FRAMES = 64
"""Most new frames per call of the cached graph (the runtime streams in smaller pieces; its
attention scores are a full [new, past + new] matrix, so calls are kept short anyway)."""


def context_frames(config: AudioModelConfig) -> int:
    """How many code frames before a new one its STFT frames depend on: the trunk's receptive
    field (each conv layer reaches `conv_cache - 1` positions back, each sliding-attention layer
    `sliding_window - 1`), in 6-position frames, rounded up. Running the stateless graph over
    that many past frames plus the new ones gives the new frames' features exactly.
    Full size: 5 convs x 2 + 3 attentions x 29 = 97 positions -> 17 frames; tiny: 33 -> 6."""
    det = config.detokenizer
    cfg = det.backbone
    reach = 0
    for kind in cfg.layer_types:
        if kind == "conv":
            reach += cfg.conv_cache - 1
        elif kind == "sliding_attention" and cfg.sliding_window is not None:
            reach += cfg.sliding_window - 1
        else:
            raise ValueError(f"a {kind} layer sees the whole past: no bounded context")
    return -(-reach // det.upsample)


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
    g.input("audio_codes", INT64, ["batch_size", det.codebooks, "frames"])
    g.output("stft_features", FLOAT, ["batch_size", "stft_frames", det.output_size])
    x = _embed_upsample(g, det, weights)

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

    def mixer(trunk: Lfm2Layers, i: int, h: str) -> str:
        if cfg.is_attention(i):
            window = cfg.sliding_window if cfg.layer_types[i] == "sliding_attention" else None
            return trunk.attention(i, h, None, None, lengths, rope, window=window)
        return trunk.conv(i, h, None, None)

    _trunk_and_head(g, det, weights, x, mixer)
    return g.model(doc="LFM2.5-Audio detokenizer (lfm-satellite lfm_toolchain.detokenizer)")


def _embed_upsample(g: GraphBuilder, det: DetokenizerConfig, weights: Mapping[str, Array]) -> str:
    """`audio_codes` [B, 8, T] -> the mean of the codebooks' embeddings, each frame repeated
    6 times (nearest upsampling): [B, 6T, d]."""
    d = det.backbone.hidden_size
    offsets = (np.arange(det.codebooks, dtype=np.int64) * det.codebook_size)[:, None]
    rows = g.op1("Add", ["audio_codes", g.const(offsets)], name="/emb/offsets")
    table = g.weight("emb.emb.weight", weights["emb.emb.weight"])
    x = g.op1("Gather", [table, rows], name="/emb/Gather", axis=0)  # [B, 8, T, d]
    x = g.op1("ReduceMean", [x, g.const([1])], name="/emb/ReduceMean", keepdims=0)
    x = g.op1("Unsqueeze", [x, g.const([2])], name="/upsample/Unsqueeze")  # [B, T, 1, d]
    x = g.op1("Expand", [x, g.const([1, 1, det.upsample, 1])], name="/upsample/Expand")
    return g.op1("Reshape", [x, g.const([0, -1, d])], name="/upsample/Reshape")  # [B, 6T, d]


Mixer = Callable[[Lfm2Layers, int, str], str]
"""The operator of layer i (conv or attention) applied to its normed input."""


def _trunk_and_head(
    g: GraphBuilder,
    det: DetokenizerConfig,
    weights: Mapping[str, Array],
    x: str,
    mixer: Mixer,
    packed: Mapping[str, PackedLinear] | None = None,
) -> None:
    """The LFM2 trunk (each layer's operator from `mixer`, then its SwiGLU), the final norm
    and the Linear head, written to the output `stft_features`."""
    cfg = det.backbone
    trunk = Lfm2Layers(g, cfg, weights, "lfm.", packed)
    h = trunk.stack(x, lambda i, normed: mixer(trunk, i, normed))

    head = Lfm2Layers(g, cfg, weights, "", packed)
    head.linear(h, "lin.weight", "/lin/MatMul", bias="lin.bias", out="stft_features")


def build_audio_detokenizer_cached(
    g: GraphBuilder,
    config: AudioModelConfig,
    weights: Mapping[str, Array],
    *,
    max_frames: int = CACHED_MAX_FRAMES,
) -> onnx.ModelProto:
    """The streaming detokenizer graph (see the module docstring) with the detokenizer
    checkpoint's `weights`; `max_frames` is the most code frames one call may take (the RoPE
    tables cover the cached window plus that many frames' positions)."""
    return build_cached_detokenizer(g, config.detokenizer, weights, max_frames=max_frames)


def build_cached_detokenizer(
    g: GraphBuilder,
    det: DetokenizerConfig,
    weights: Mapping[str, Array],
    *,
    max_frames: int = CACHED_MAX_FRAMES,
    packed: Mapping[str, PackedLinear] | None = None,
) -> onnx.ModelProto:
    """`build_audio_detokenizer_cached` for the detokenizer `det` alone; projections in
    `packed` (by checkpoint name) are written as the `MatMulNBits` they already are.

    Every attention layer must be a sliding-window one: a full-attention layer would need the
    whole history, which this graph does not keep."""
    cfg = det.backbone
    d, hd, kv_heads = cfg.hidden_size, cfg.head_dim, cfg.num_key_value_heads
    conv_layers, attention_layers = cfg.conv_layers, cfg.attention_layers
    window = cfg.sliding_window
    if not conv_layers or not attention_layers:
        raise ValueError("the cached detokenizer needs both conv and attention layers")
    if window is None or any(cfg.layer_types[i] != "sliding_attention" for i in attention_layers):
        raise ValueError("the cached detokenizer needs sliding-window attention in every layer")
    keep = window - 1

    g.input("audio_codes", INT64, ["batch_size", det.codebooks, "frames"])
    conv_shape: list[int | str] = [len(conv_layers), "batch_size", d, cfg.conv_cache]
    g.input("past_conv", FLOAT, conv_shape)
    past_kv: list[int | str] = [
        len(attention_layers), "batch_size", kv_heads, "past_sequence_length", hd,
    ]  # fmt: skip
    g.input("past_keys", FLOAT, past_kv)
    g.input("past_values", FLOAT, past_kv)
    g.output("stft_features", FLOAT, ["batch_size", "stft_frames", det.output_size])
    g.output("present_conv", FLOAT, conv_shape)
    present_kv: list[int | str] = [
        len(attention_layers), "batch_size", kv_heads, "present_sequence_length", hd,
    ]  # fmt: skip
    g.output("present_keys", FLOAT, present_kv)
    g.output("present_values", FLOAT, present_kv)

    x = _embed_upsample(g, det, weights)
    positions = keep + det.upsample * max_frames
    rope = _window_tables(g, hd, cfg.rope_theta, positions, window, x)
    conv_index = {layer: n for n, layer in enumerate(conv_layers)}
    attention_index = {layer: n for n, layer in enumerate(attention_layers)}
    presents: dict[str, list[str]] = {"present_conv": [], "present_keys": [], "present_values": []}

    def mixer(trunk: Lfm2Layers, i: int, h: str) -> str:
        n = f"/model/layers.{i}"
        if i in conv_index:
            past = g.op1(
                "Gather", ["past_conv", g.const(conv_index[i])], name=f"{n}/past_conv", axis=0
            )
            present = g.unique(f"{n}/present_conv")
            out = trunk.conv(i, h, past, present)
            presents["present_conv"].append(present)
            return out
        index = g.const(attention_index[i])
        past_k = g.op1("Gather", ["past_keys", index], name=f"{n}/past_keys", axis=0)
        past_v = g.op1("Gather", ["past_values", index], name=f"{n}/past_values", axis=0)
        out, k, v = _window_attention(g, trunk, i, h, past_k, past_v, rope, keep)
        presents["present_keys"].append(k)
        presents["present_values"].append(v)
        return out

    _trunk_and_head(g, det, weights, x, mixer, packed)
    for name, parts in presents.items():
        stacked = [
            g.op1("Unsqueeze", [part, g.const([0])], name=f"/{name}/Unsqueeze") for part in parts
        ]
        g.op("Concat", stacked, name=f"/{name}/Concat", outputs=[name], axis=0)
    return g.model(
        doc="LFM2.5-Audio streaming detokenizer (lfm-satellite lfm_toolchain.detokenizer)"
    )


@dataclass(frozen=True)
class _Window:
    """Per-call RoPE factors and the sliding-window mask, shared by every attention layer.

    Positions are counted from the oldest cached key (0) to the newest input position
    (past + new - 1). The factors span the whole head (`cos` twice; `-sin` then `sin`), so that
    `x * cos + swap_halves(x) * sin` is rotate-half RoPE."""

    cos_q: str
    sin_q: str
    """[new, head_dim]: the new positions'."""
    cos_k: str
    sin_k: str
    """[past + new, head_dim]: every key's."""
    bias: str
    """[new, past + new]: 0 where the query may see the key, else -inf."""


def _window_tables(
    g: GraphBuilder, head_dim: int, theta: float, positions: int, window: int, x: str
) -> _Window:
    n = "/window"
    cos, sin = rope_tables(head_dim, theta, positions)
    cos_full = g.weight("lfm.cos_full", np.concatenate([cos, cos], axis=1))
    sin_full = g.weight("lfm.sin_signed", np.concatenate([-sin, sin], axis=1))
    shape = g.op1("Shape", [x], name=f"{n}/Shape")
    new = g.op1("Gather", [shape, g.const(1)], name=f"{n}/new")
    past_shape = g.op1("Shape", ["past_keys"], name=f"{n}/past/Shape")
    past = g.op1("Gather", [past_shape, g.const(3)], name=f"{n}/past")
    total = g.op1("Add", [past, new], name=f"{n}/total")
    start = g.op1("Unsqueeze", [past, g.const([0])], name=f"{n}/start")
    stop = g.op1("Unsqueeze", [total, g.const([0])], name=f"{n}/stop")
    zero = g.const([0])
    # Query at position p (past <= p < total) sees the keys at p - window + 1 .. p.
    one = g.const(1)
    q_pos = g.op1("Range", [past, total, one], name=f"{n}/q_pos")
    k_pos = g.op1("Range", [g.const(0), total, one], name=f"{n}/k_pos")
    q_col = g.op1("Unsqueeze", [q_pos, g.const([1])], name=f"{n}/q_col")
    distance = g.op1("Sub", [q_col, k_pos], name=f"{n}/distance")  # [new, past+new]
    ahead = g.op1("Less", [distance, g.const(0)], name=f"{n}/ahead")
    behind = g.op1("GreaterOrEqual", [distance, g.const(window)], name=f"{n}/behind")
    hidden = g.op1("Or", [ahead, behind], name=f"{n}/hidden")
    inf, nil = g.const(-np.inf, np.float32), g.const(0.0, np.float32)
    return _Window(
        cos_q=g.op1("Slice", [cos_full, start, stop, zero], name=f"{n}/cos_q"),
        sin_q=g.op1("Slice", [sin_full, start, stop, zero], name=f"{n}/sin_q"),
        cos_k=g.op1("Slice", [cos_full, zero, stop, zero], name=f"{n}/cos_k"),
        sin_k=g.op1("Slice", [sin_full, zero, stop, zero], name=f"{n}/sin_k"),
        bias=g.op1("Where", [hidden, inf, nil], name=f"{n}/bias"),
    )


def _window_attention(
    g: GraphBuilder,
    trunk: Lfm2Layers,
    i: int,
    x: str,
    past_k: str,
    past_v: str,
    rope: _Window,
    keep: int,
) -> tuple[str, str, str]:
    """Attention of layer i over its cached window and the new positions; returns the output
    and the keys and values (before RoPE) of the last `keep` positions, the next call's cache."""
    cfg = trunk.cfg
    hd, heads, kv_heads = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    group = heads // kv_heads
    n = f"/model/layers.{i}/attn"
    a = f"layers.{i}.self_attn"
    q = trunk.linear(x, f"{a}.q_proj.weight", f"{n}/q_proj/MatMul")
    k = trunk.linear(x, f"{a}.k_proj.weight", f"{n}/k_proj/MatMul")
    v = trunk.linear(x, f"{a}.v_proj.weight", f"{n}/v_proj/MatMul")
    q = trunk.head_norm(q, heads, hd, f"{a}.q_layernorm.weight", f"{n}/q_norm")
    k = trunk.head_norm(k, kv_heads, hd, f"{a}.k_layernorm.weight", f"{n}/k_norm")

    def heads_first(t: str, count: int, what: str) -> str:  # [B, S, count*hd] -> [B, count, S, hd]
        split = g.op1("Reshape", [t, g.const([0, 0, count, hd])], name=f"{n}/{what}/Reshape")
        return g.op1("Transpose", [split], name=f"{n}/{what}/Transpose", perm=[0, 2, 1, 3])

    q = heads_first(q, heads, "q")
    k_all = g.op1("Concat", [past_k, heads_first(k, kv_heads, "k")], name=f"{n}/k/Concat", axis=2)
    v_all = g.op1("Concat", [past_v, heads_first(v, kv_heads, "v")], name=f"{n}/v/Concat", axis=2)
    tail = [g.const([-keep]), g.const([np.iinfo(np.int64).max]), g.const([2])]
    present_k = g.op1("Slice", [k_all, *tail], name=f"{n}/present_keys")
    present_v = g.op1("Slice", [v_all, *tail], name=f"{n}/present_values")

    def rotate(t: str, cos: str, sin: str, what: str) -> str:
        half = hd // 2
        low = g.op1(
            "Slice", [t, g.const([0]), g.const([half]), g.const([3])], name=f"{n}/{what}/low"
        )
        high = g.op1(
            "Slice", [t, g.const([half]), g.const([hd]), g.const([3])], name=f"{n}/{what}/high"
        )
        swapped = g.op1("Concat", [high, low], name=f"{n}/{what}/swap", axis=3)
        straight = g.op1("Mul", [t, cos], name=f"{n}/{what}/cos")
        turned = g.op1("Mul", [swapped, sin], name=f"{n}/{what}/sin")
        return g.op1("Add", [straight, turned], name=f"{n}/{what}/rope")

    q = rotate(q, rope.cos_q, rope.sin_q, "q_rope")
    k_rot = rotate(k_all, rope.cos_k, rope.sin_k, "k_rope")
    # Grouped-query attention: query head h uses key/value head h // group.
    q5 = g.op1("Reshape", [q, g.const([0, kv_heads, group, -1, hd])], name=f"{n}/q/group")
    k5 = g.op1("Unsqueeze", [k_rot, g.const([2])], name=f"{n}/k/group")
    v5 = g.op1("Unsqueeze", [v_all, g.const([2])], name=f"{n}/v/group")
    k_t = g.op1("Transpose", [k5], name=f"{n}/k/T", perm=[0, 1, 2, 4, 3])
    scores = g.op1("MatMul", [q5, k_t], name=f"{n}/scores")  # [B, kv, group, new, past+new]
    scaled = g.op1("Mul", [scores, g.const(hd**-0.5, np.float32)], name=f"{n}/scale")
    masked = g.op1("Add", [scaled, rope.bias], name=f"{n}/mask")
    probs = g.op1("Softmax", [masked], name=f"{n}/Softmax", axis=-1)
    context = g.op1("MatMul", [probs, v5], name=f"{n}/context")  # [B, kv, group, new, hd]
    context = g.op1("Reshape", [context, g.const([0, heads, -1, hd])], name=f"{n}/heads")
    context = g.op1("Transpose", [context], name=f"{n}/merge/Transpose", perm=[0, 2, 1, 3])
    context = g.op1("Reshape", [context, g.const([0, 0, heads * hd])], name=f"{n}/merge")
    out = trunk.linear(context, f"{a}.out_proj.weight", f"{n}/out_proj/MatMul")
    return out, present_k, present_v
