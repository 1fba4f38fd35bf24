"""The `depthformer` graph: one codebook step of the audio frame generator, fp32.

Called 8 times per audio frame; the caller samples each step's code and feeds it back, and
resets the KV cache every frame. The interface is the official export's `vocoder_depthformer`
(so the runtime has one code path for both; manifest option `granularity: codebook_step`):

- inputs: `hidden_states` f32 [batch_size, hidden] (the decoder's last final-normed hidden
  state; read at step 0 only); `depth_slices_in` f32 [batch_size, 8, dim] (zeros at step 0,
  then the previous step's `depth_slices`); `step_idx` int64 scalar (0..7); `prev_token` int64
  [batch_size] (the code sampled at the previous step; ignored at step 0); `past_keys`,
  `past_values` f32 [layers, batch_size, kv_heads, past_len, head_dim] (past_len 0 at step 0);
  `seqlens_k` int32 [batch_size] (= step) and `total_seq_len` int32 scalar (= step + 1);
- outputs: `logits` f32 [batch_size, 2049] (2048 = end-of-audio), `depth_slices` f32
  [batch_size, 8, dim] (`depth_linear(hidden_states)` at step 0, passed through after),
  `new_keys`, `new_values` f32 [layers, batch_size, kv_heads, past_len + 1, head_dim].

As in liquid-audio (`LFM2AudioModel._sample_audio_frame`): step i's input is slice i of
`depth_linear(hidden)` plus, from step 1 on, `depth_embeddings[i-1](prev_token)`; 6 pre-norm
blocks of grouped-query attention with per-head q/k RMSNorm and **interleaved-pair** RoPE
(theta 1e6; position = step) and a SwiGLU MLP; then `depth_embeddings[i]`'s RMSNorm and its
head, tied to its embedding table.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper

from lfm_toolchain.config import AudioModelConfig
from lfm_toolchain.layers import Layers
from lfm_toolchain.onnx_graph import FLOAT, INT32, INT64, MS_DOMAIN, GraphBuilder
from lfm_toolchain.weights import Array
from satellite.modeldir.rope import rope_tables

INPUTS = (
    "hidden_states",
    "depth_slices_in",
    "step_idx",
    "prev_token",
    "past_keys",
    "past_values",
    "seqlens_k",
    "total_seq_len",
)
OUTPUTS = ("logits", "depth_slices", "new_keys", "new_values")


PUBLISHED_THETA = 10_000.0
"""The theta the published export's depthformer tables were computed for (its defect)."""
PUBLISHED_TABLE_POSITIONS = 16
"""Rows of the published export's per-layer rotary tables."""


def build_depthformer(
    g: GraphBuilder,
    config: AudioModelConfig,
    weights: Mapping[str, Array],
    *,
    published: bool = False,
) -> onnx.ModelProto:
    """The codebook-step graph of `config`'s depthformer with checkpoint `weights`.

    `published` writes the attention as the published export's `vocoder_depthformer` does,
    defects included: each head's q and k rearranged from interleaved pairs into two halves
    (so that rotate-half rotation would equal the model's interleaved one), GroupQueryAttention
    with `do_rotary` unset (no rotation at all), and per-layer tables `layer.{i}.gqa_cos` /
    `gqa_sin` of 16 positions for theta 10,000 instead of the model's 1,000,000.
    `satellite.modeldir.repair` corrects such a graph."""
    cfg = config.depthformer
    books, vocab, dim, hd, kv = (
        config.codebooks, config.codebook_size, cfg.dim, cfg.head_dim, cfg.num_kv_heads,
    )  # fmt: skip
    hidden = config.backbone.hidden_size
    cache_shape: list[int | str] = [cfg.layers, "batch_size", kv, "past_len", hd]
    g.input("hidden_states", FLOAT, ["batch_size", hidden])
    g.input("depth_slices_in", FLOAT, ["batch_size", books, dim])
    g.input("step_idx", INT64, [])
    g.input("prev_token", INT64, ["batch_size"])
    g.input("past_keys", FLOAT, cache_shape)
    g.input("past_values", FLOAT, cache_shape)
    g.input("seqlens_k", INT32, ["batch_size"])
    g.input("total_seq_len", INT32, [])
    new_shape: list[int | str] = [cfg.layers, "batch_size", kv, "new_len", hd]
    g.output("logits", FLOAT, ["batch_size", vocab])
    g.output("depth_slices", FLOAT, ["batch_size", books, dim])
    g.output("new_keys", FLOAT, new_shape)
    g.output("new_values", FLOAT, new_shape)

    ly = Layers(g, weights, "", cfg.norm_eps)

    # Step 0: depth_slices = depth_linear(hidden_states) as [B, 8, dim]; later: passed through.
    w_t = g.weight("depth_linear.weight.T", np.asarray(weights["depth_linear.weight"].T, order="C"))
    bias = g.weight("depth_linear.bias", weights["depth_linear.bias"])
    then_nodes = [
        helper.make_node("MatMul", ["hidden_states", w_t], ["/depth_linear/mm"], name="/depth_linear/MatMul"),
        helper.make_node("Add", ["/depth_linear/mm", bias], ["/depth_linear/out"], name="/depth_linear/Add"),
        helper.make_node(
            "Reshape", ["/depth_linear/out", g.const([0, books, dim])], ["/depth_linear/slices"],
            name="/depth_linear/Reshape",
        ),
    ]  # fmt: skip
    slices_info = helper.make_tensor_value_info("", FLOAT, ["batch_size", books, dim])
    then_graph = helper.make_graph(
        then_nodes, "step0", [], [_named(slices_info, "/depth_linear/slices")]
    )
    else_graph = helper.make_graph(
        [
            helper.make_node(
                "Identity", ["depth_slices_in"], ["/pass/slices"], name="/pass/Identity"
            )
        ],
        "later",
        [],
        [_named(slices_info, "/pass/slices")],
    )
    first = g.op1("Equal", ["step_idx", g.const(0)], name="/step/is_first")
    g.op(
        "If", [first], name="/depth_linear/If", outputs=["depth_slices"],
        then_branch=then_graph, else_branch=else_graph,
    )  # fmt: skip

    # Input of this step: slice[step] + embedding of the previous code (zero at step 0).
    x = g.op1("Gather", ["depth_slices", "step_idx"], name="/input/slice", axis=1)  # [B, dim]
    table = np.concatenate(
        [weights[f"depth_embeddings.{c}.embedding.weight"] for c in range(books)], axis=0
    )
    table_name = g.weight("depth_embeddings.embedding.weight", table)  # [8*2049, dim]
    prev_book = g.op1("Sub", ["step_idx", g.const(1)], name="/input/prev_book")
    row = g.op1(
        "Add",
        [g.op1("Mul", [prev_book, g.const(vocab)], name="/input/offset"), "prev_token"],
        name="/input/row",
    )
    later = g.op1(
        "Cast", [g.op1("Not", [first], name="/input/later")], name="/input/scale", to=FLOAT
    )
    emb = g.op1("Gather", [table_name, row], name="/input/embedding", axis=0)  # [B, dim]
    emb = g.op1("Mul", [emb, later], name="/input/masked")
    x = g.op1("Add", [x, emb], name="/input/Add")
    x = g.op1("Unsqueeze", [x, g.const([1])], name="/input/Unsqueeze")  # [B, 1, dim]

    rope = ("", "")
    if published:
        cos, sin = rope_tables(hd, PUBLISHED_THETA, PUBLISHED_TABLE_POSITIONS)
    else:
        cos, sin = rope_tables(hd, cfg.rope_theta, books)
        rope = (g.weight("depthformer.cos_cache", cos), g.weight("depthformer.sin_cache", sin))
    residual = x
    h = ly.norm(x, "depthformer.layers.0.operator_norm.weight", "/layers.0/operator_norm")
    keys, values = [], []
    for i in range(cfg.layers):
        p, n = f"depthformer.layers.{i}.", f"/layers.{i}"
        qkv = ly.linear(h, f"{p}operator.qkv_proj.weight", f"{n}/qkv_proj/MatMul")
        q, k, v = g.op(
            "Split", [qkv, g.const([dim, kv * hd, kv * hd])], name=f"{n}/Split", outputs=3, axis=-1
        )
        norms = f"{p}operator.bounded_attention"
        q = ly.head_norm(q, cfg.num_heads, hd, f"{norms}.q_layernorm.weight", f"{n}/q_norm")
        k = ly.head_norm(k, kv, hd, f"{norms}.k_layernorm.weight", f"{n}/k_norm")
        rotary: dict[str, int] = {"do_rotary": 1, "rotary_interleaved": 1}
        if published:
            q = _pairs_to_halves(g, q, cfg.num_heads, hd, f"{n}/q_halves")
            k = _pairs_to_halves(g, k, kv, hd, f"{n}/k_halves")
            rope = (g.weight(f"layer.{i}.gqa_cos", cos), g.weight(f"layer.{i}.gqa_sin", sin))
            rotary = {}
        layer = g.const(i)
        past_k = g.op1("Gather", ["past_keys", layer], name=f"{n}/past_key", axis=0)
        past_v = g.op1("Gather", ["past_values", layer], name=f"{n}/past_value", axis=0)
        att, new_k, new_v = g.op(
            "GroupQueryAttention",
            [q, k, v, past_k, past_v, "seqlens_k", "total_seq_len", rope[0], rope[1]],
            name=f"{n}/GroupQueryAttention",
            outputs=3,
            domain=MS_DOMAIN,
            num_heads=cfg.num_heads,
            kv_num_heads=kv,
            scale=float(hd**-0.5),
            **rotary,
        )
        keys.append(g.op1("Unsqueeze", [new_k, g.const([0])], name=f"{n}/new_key"))
        values.append(g.op1("Unsqueeze", [new_v, g.const([0])], name=f"{n}/new_value"))
        out = ly.linear(att, f"{p}operator.out_proj.weight", f"{n}/out_proj/MatMul")
        h, residual = ly.skip_norm(out, residual, f"{p}ffn_norm.weight", f"{n}/ffn_norm")
        out = ly.swiglu(h, f"{p}feed_forward", f"{n}/mlp")
        if i + 1 < cfg.layers:
            name = f"depthformer.layers.{i + 1}.operator_norm.weight"
            h, residual = ly.skip_norm(out, residual, name, f"/layers.{i + 1}/operator_norm")
    g.op("Concat", keys, name="/new_keys", outputs=["new_keys"], axis=0)
    g.op("Concat", values, name="/new_values", outputs=["new_values"], axis=0)

    # Head of codebook `step`: its RMSNorm (gain picked by step) and its tied table.
    gains = np.stack([weights[f"depth_embeddings.{c}.embedding_norm.weight"] for c in range(books)])
    gain = g.op1(
        "Gather", [g.weight("depth_embeddings.embedding_norm.weight", gains), "step_idx"],
        name="/head/gain", axis=0,
    )  # fmt: skip
    final, _ = ly.skip_norm_with(out, residual, gain, "/head/norm")
    final = g.op1("Squeeze", [final, g.const([1])], name="/head/Squeeze")  # [B, dim]
    heads = np.asarray(table.T, order="C")
    if not cfg.tie:
        heads = np.concatenate(
            [weights[f"depth_embeddings.{c}.to_logits.weight"] for c in range(books)], axis=0
        ).T.copy()
    # All 8 heads in one MatMul (constant weight: quantizable), then the step's 2049 logits.
    every = g.op1(
        "MatMul", [final, g.weight("depth_embeddings.to_logits.T", heads)], name="/head/MatMul"
    )
    every = g.op1("Reshape", [every, g.const([0, books, vocab])], name="/head/Reshape")
    g.op("Gather", [every, "step_idx"], name="/head/Gather", outputs=["logits"], axis=1)
    return g.model(
        doc="LFM2-Audio depthformer, one codebook step (lfm-satellite lfm_toolchain.depthformer)"
    )


def _pairs_to_halves(g: GraphBuilder, x: str, heads: int, hd: int, node: str) -> str:
    """[B, S, heads*hd] with each head's elements (x0, x1, x2, x3, ...) -> (x0, x2, ..., x1,
    x3, ...): the published export's rearrangement before attention."""
    pairs = g.op1("Reshape", [x, g.const([0, 0, heads, hd // 2, 2])], name=f"{node}/Reshape")
    swapped = g.op1("Transpose", [pairs], name=f"{node}/Transpose", perm=[0, 1, 2, 4, 3])
    return g.op1("Reshape", [swapped, g.const([0, 0, heads * hd])], name=f"{node}/Reshape_back")


def _named(info: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    info = onnx.ValueInfoProto.FromString(info.SerializeToString())
    info.name = name
    return info
