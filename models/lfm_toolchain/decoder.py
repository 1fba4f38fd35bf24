"""The `decoder` graph: the LFM2 backbone with its conv and KV caches, fp32.

Interface (that of the official LiquidAI/LFM2.5-Audio-1.5B-ONNX export, DESIGN §3.2):

- inputs: `inputs_embeds` f32 [batch_size, sequence_length, hidden]; `attention_mask` int64
  [batch_size, total_sequence_length] (ones over past + current); per conv layer i
  `past_conv.{i}` f32 [batch_size, hidden, 3]; per attention layer i
  `past_key_values.{i}.key|value` f32 [batch_size, kv_heads, past_sequence_length, head_dim];
- outputs: `logits` f32 [batch_size, sequence_length, vocab]; `hidden_states` (final-normed, what
  the depthformer reads); `present_conv.{i}`; `present.{i}.key|value`.

Operators are chosen for onnxruntime's fused kernels: `SimplifiedLayerNormalization` for the
first norm and the per-head q/k norms, `SkipSimplifiedLayerNormalization` for every residual add
followed by a norm, `GroupQueryAttention` (rotate-half RoPE from cos/sin tables, causal, GQA,
cache concatenation in one kernel), and plain `MatMul` with constant weights so that
onnxruntime's `MatMulNBitsQuantizer` can turn every projection, the lm-head included, into
`MatMulNBits`.

The short conv runs in [B, S, D] layout: the state's last two columns are prepended to `B*x`, the
kernel is applied as three shifted multiply-adds, and the last three columns become the new
state. This is the same computation for one token, a prompt, or a chunk on a filled cache, so
the graph has none of the special cases of transformers' conv cache.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx

from lfm_toolchain.config import BackboneConfig
from lfm_toolchain.layers import Layers, PackedLinear
from lfm_toolchain.onnx_graph import FLOAT, INT32, INT64, MS_DOMAIN, GraphBuilder
from lfm_toolchain.weights import Array
from satellite.modeldir.rope import rope_tables

INT64_MAX = np.iinfo(np.int64).max


def cache_names(cfg: BackboneConfig) -> tuple[list[str], list[str]]:
    """Past (input) and present (output) cache names in graph order."""
    past: list[str] = []
    present: list[str] = []
    for i in range(cfg.num_hidden_layers):
        if cfg.is_attention(i):
            past += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
            present += [f"present.{i}.key", f"present.{i}.value"]
        else:
            past.append(f"past_conv.{i}")
            present.append(f"present_conv.{i}")
    return past, present


class Lfm2Layers(Layers):
    """LFM2 operators (short conv, attention) of the backbone `cfg`, weights under `prefix`."""

    def __init__(
        self,
        g: GraphBuilder,
        cfg: BackboneConfig,
        weights: Mapping[str, Array],
        prefix: str,
        packed: Mapping[str, PackedLinear] | None = None,
    ) -> None:
        super().__init__(g, weights, prefix, cfg.norm_eps, packed)
        self.cfg = cfg

    def stack(self, x: str, mixer: Callable[[int, str], str]) -> str:
        """Every layer (its operator from `mixer(i, normed input)`, then the SwiGLU, each with
        its residual) and the final norm; returns the final-normed hidden state. Each norm
        after the first is fused with the residual add that precedes it."""
        n = self.cfg.num_hidden_layers
        residual = x
        h = self.norm(x, "layers.0.operator_norm.weight", "/model/layers.0/operator_norm")
        for i in range(n):
            out = mixer(i, h)
            h, residual = self.skip_norm(
                out, residual, f"layers.{i}.ffn_norm.weight", f"/model/layers.{i}/ffn_norm"
            )
            out = self.swiglu(h, f"layers.{i}.feed_forward", f"/model/layers.{i}/mlp")
            if i + 1 < n:
                name = f"layers.{i + 1}.operator_norm.weight"
                node = f"/model/layers.{i + 1}/operator_norm"
            else:
                name, node = "embedding_norm.weight", "/model/embedding_norm"
            h, residual = self.skip_norm(out, residual, name, node)
        return h

    def conv(self, i: int, x: str, past: str | None, present: str | None) -> str:
        """The short conv of layer i; `past` None starts from a zero state, `present` None
        drops the new state (a stateless graph)."""
        g, d, k = self.g, self.cfg.hidden_size, self.cfg.conv_cache
        n = f"/model/layers.{i}/conv"
        bcx = self.linear(x, f"layers.{i}.conv.in_proj.weight", f"{n}/in_proj/MatMul")
        b, c, xx = g.op("Split", [bcx], name=f"{n}/Split", outputs=3, axis=-1, num_outputs=3)
        bx = g.op1("Mul", [b, xx], name=f"{n}/Bx")
        if past is None:  # [B, k+S, D] with k zero columns in front
            pads = g.const([0, k, 0, 0, 0, 0])
            window = g.op1("Pad", [bx, pads], name=f"{n}/Pad")
        else:
            state = g.op1("Transpose", [past], name=f"{n}/past/Transpose", perm=[0, 2, 1])
            window = g.op1("Concat", [state, bx], name=f"{n}/Concat", axis=1)
        if present is not None:
            last = g.op1(
                "Slice",
                [window, g.const([-k]), g.const([INT64_MAX]), g.const([1])],
                name=f"{n}/present/Slice",
            )
            g.op(
                "Transpose",
                [last],
                name=f"{n}/present/Transpose",
                outputs=[present],
                perm=[0, 2, 1],
            )
        # out[t] = sum_j w[j] * window[t + 1 + j]: shifted slices of the window.
        kernel = self.w(f"layers.{i}.conv.conv.weight").reshape(d, k)
        total = ""
        for j in range(k):
            start, stop = 1 + j, (j + 1 - k) if j + 1 < k else INT64_MAX
            tap = g.op1(
                "Slice",
                [window, g.const([start]), g.const([stop]), g.const([1])],
                name=f"{n}/tap{j}/Slice",
            )
            w = g.weight(f"{self.prefix}layers.{i}.conv.conv.weight.{j}", kernel[:, j].copy())
            term = g.op1("Mul", [tap, w], name=f"{n}/tap{j}/Mul")
            total = term if not total else g.op1("Add", [total, term], name=f"{n}/tap{j}/Add")
        y = g.op1("Mul", [c, total], name=f"{n}/Cy")
        return self.linear(y, f"layers.{i}.conv.out_proj.weight", f"{n}/out_proj/MatMul")

    def attention(
        self,
        i: int,
        x: str,
        past: tuple[str, str] | None,
        present: tuple[str, str] | None,
        lengths: tuple[str, str],
        rope: tuple[str, str],
        window: int | None = None,
    ) -> str:
        """Attention of layer i (GroupQueryAttention: rotate-half RoPE, causal, GQA, cache).

        `past`/`present` None: no cache in or out. `window`: attend to the last `window`
        positions only (the detokenizer's sliding attention)."""
        cfg, g = self.cfg, self.g
        past_names = past or ("", "")
        present_names = present or (
            f"/model/layers.{i}/present_key",
            f"/model/layers.{i}/present_value",
        )
        n = f"/model/layers.{i}/attn"
        a = f"layers.{i}.self_attn"
        q = self.linear(x, f"{a}.q_proj.weight", f"{n}/q_proj/MatMul")
        k = self.linear(x, f"{a}.k_proj.weight", f"{n}/k_proj/MatMul")
        v = self.linear(x, f"{a}.v_proj.weight", f"{n}/v_proj/MatMul")
        hd = cfg.head_dim
        q = self.head_norm(q, cfg.num_attention_heads, hd, f"{a}.q_layernorm.weight", f"{n}/q_norm")
        k = self.head_norm(k, cfg.num_key_value_heads, hd, f"{a}.k_layernorm.weight", f"{n}/k_norm")
        out = g.op(
            "GroupQueryAttention",
            [q, k, v, *past_names, lengths[0], lengths[1], rope[0], rope[1]],
            name=f"{n}/GroupQueryAttention",
            outputs=[f"{n}/GroupQueryAttention/output_0", *present_names],
            domain=MS_DOMAIN,
            num_heads=cfg.num_attention_heads,
            kv_num_heads=cfg.num_key_value_heads,
            do_rotary=1,
            rotary_interleaved=0,
            scale=float(cfg.head_dim**-0.5),
            local_window_size=-1 if window is None else window,
        )[0]
        return self.linear(out, f"{a}.out_proj.weight", f"{n}/out_proj/MatMul")


def build_decoder(
    g: GraphBuilder,
    cfg: BackboneConfig,
    weights: Mapping[str, Array],
    *,
    prefix: str = "lfm.",
    max_positions: int = 32768,
    logits_to_keep: bool = False,
    published: bool = False,
) -> onnx.ModelProto:
    """The decoder graph of the backbone `cfg` with `weights` (checkpoint names under `prefix`).

    `max_positions` sizes the RoPE tables: the longest context (past + current) the graph
    accepts. `logits_to_keep` adds the input `num_logits_to_keep` (int64 scalar n >= 0):
    `logits` holds the last n positions only (all when n >= sequence_length), and n = 0 skips
    the lm-head (the vocab x hidden table, the largest single read of a step) on steps whose
    text logits nobody reads, such as audio frames. Unlike transformers' `logits_to_keep`, 0
    means none. `published` writes the lm-head as the published export does: a Transpose of
    the text embedding table `model.embed_tokens.weight` [vocab, hidden] into a MatMul, which
    no weight quantizer touches (the head stays float32 and runs on every step).
    """
    d = cfg.hidden_size
    embeds = g.input("inputs_embeds", FLOAT, ["batch_size", "sequence_length", d])
    mask = g.input("attention_mask", INT64, ["batch_size", "total_sequence_length"])
    keep = g.input("num_logits_to_keep", INT64, []) if logits_to_keep else None
    kv_shape: list[int | str] = [
        "batch_size", cfg.num_key_value_heads, "past_sequence_length", cfg.head_dim,
    ]  # fmt: skip
    present_kv_shape: list[int | str] = [
        "batch_size", cfg.num_key_value_heads, "total_sequence_length", cfg.head_dim,
    ]  # fmt: skip
    conv_shape: list[int | str] = ["batch_size", d, cfg.conv_cache]
    past_names, present_names = cache_names(cfg)
    for name in past_names:
        g.input(name, FLOAT, conv_shape if name.startswith("past_conv") else kv_shape)

    logits_length = "logits_length" if logits_to_keep else "sequence_length"
    g.output("logits", FLOAT, ["batch_size", logits_length, cfg.vocab_size])
    g.output("hidden_states", FLOAT, ["batch_size", "sequence_length", d])
    for name in present_names:
        g.output(name, FLOAT, conv_shape if name.startswith("present_conv") else present_kv_shape)

    # GroupQueryAttention's lengths: seqlens_k = tokens so far - 1, and the total length.
    lengths: tuple[str, str] = ("", "")
    rope: tuple[str, str] = ("", "")
    if cfg.attention_layers:
        n = "/model/attn_mask"
        count = g.op1("ReduceSum", [mask, g.const([1])], name=f"{n}/ReduceSum", keepdims=0)
        minus = g.op1("Sub", [count, g.const(1)], name=f"{n}/Sub")
        seqlens_k = g.op1("Cast", [minus], name=f"{n}/seqlens_k", to=INT32)
        shape = g.op1("Shape", [mask], name=f"{n}/Shape")
        total = g.op1("Gather", [shape, g.const(1)], name=f"{n}/Gather", axis=0)
        total32 = g.op1("Cast", [total], name=f"{n}/total_seq_len", to=INT32)
        lengths = (seqlens_k, total32)
        cos, sin = rope_tables(cfg.head_dim, cfg.rope_theta, max_positions)
        rope = (g.weight("cos_cache", cos), g.weight("sin_cache", sin))

    bb = Lfm2Layers(g, cfg, weights, prefix)
    caches = iter(zip(past_names, present_names, strict=True))

    def mixer(i: int, h: str) -> str:
        if cfg.is_attention(i):
            pk, prk = next(caches)
            pv, prv = next(caches)
            return bb.attention(i, h, (pk, pv), (prk, prv), lengths, rope)
        past, present = next(caches)
        return bb.conv(i, h, past, present)

    x = bb.stack(embeds, mixer)

    g.op("Identity", [x], name="/model/hidden_states", outputs=["hidden_states"])
    if keep is not None:  # the last `keep` positions: x[:, max(S - keep, 0):]
        n = "/lm_head/keep"
        length = g.op1("Gather", [g.op1("Shape", [x], name=f"{n}/Shape"), g.const(1)], name=n)
        start = g.op1(
            "Max", [g.op1("Sub", [length, keep], name=f"{n}/Sub"), g.const(0)], name=f"{n}/Max"
        )
        start = g.op1("Unsqueeze", [start, g.const([0])], name=f"{n}/Unsqueeze")
        x = g.op1("Slice", [x, start, g.const([INT64_MAX]), g.const([1])], name=f"{n}/Slice")
    # Tied lm-head: logits = hidden_states @ embed_tokens.T.
    if published:
        table = g.weight("model.embed_tokens.weight", weights[f"{prefix}embed_tokens.weight"])
        head = g.op1("Transpose", [table], name="/lm_head/Transpose", perm=[1, 0])
        g.op("MatMul", [x, head], name="logits", outputs=["logits"])
    else:
        bb.linear(x, "embed_tokens.weight", "/lm_head/MatMul", out="logits")
    return g.model(doc="LFM2 backbone (lfm-satellite lfm_toolchain.decoder)")
