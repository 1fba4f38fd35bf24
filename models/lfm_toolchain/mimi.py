"""The `mimi_decoder` graphs (LFM2-Audio-1.5B, v1): audio codes -> 24 kHz audio, fp32.

LFM2-Audio v1 speaks through Kyutai's Mimi codec (the `moshi` copy inside liquid-audio,
`MimiModel.decode`). Its decoder path, rebuilt here node by node:

1. RVQ decode: codebook c's vector for each code (table = `embedding_sum / clamp(cluster_usage,
   1e-5)`), codebook 0 projected by `rvq_first.output_proj`, the sum of codebooks 1..7 by
   `rvq_rest.output_proj` (1x1 convs, MatMul here), the two added: [B, T, 512] at 12.5 Hz.
2. Upsampling x2 to the 25 Hz of the transformer: a causal channel-wise transposed conv
   (kernel 4, stride 2, no bias).
3. The decoder transformer: pre-norm layers (LayerNorm, causal attention over the last
   `context` = 250 positions with interleaved-pair RoPE, max period 10000, GELU MLP), each
   branch scaled by a LayerScale.
4. The SEANet decoder: causal conv (kernel 7) to 1024 channels, then per ratio 8, 6, 5, 4 an
   ELU, a causal transposed conv (kernel 2*ratio, stride ratio, halving the channels) and a
   residual block (ELU, conv kernel 3, ELU, conv kernel 1, identity skip); ELU and a causal
   conv (kernel 3) to one channel. 960 samples per 25 Hz step: 1920 per 80 ms code frame.

Every convolution is causal (left padding only; transposed convs drop their right overhang),
so output sample n depends on code frames up to n // 1920 only.

Two graphs:

- `mimi_decoder` (the contract's role): `audio_codes` int64 [batch_size, 8, frames] (codes
  0..2047; end-of-audio frames dropped by the caller) -> `audio` f32 [batch_size, 1,
  1920*frames]. One-shot: the whole utterance at once, as `MimiModel.decode` outside streaming.
- `mimi_decoder_cached` (project-own, for streaming): the same network over the new frames
  only, its state fed back:

    in   audio_codes int64 [batch_size, 8, frames] (the new frames),
         past_conv f32 [batch_size, conv_state] (zeros to start): every causal conv's last
         (kernel-1)*dilation inputs and every transposed conv's pending overhang (before its
         bias), flattened one after another in network order (`conv_states`),
         past_keys|past_values f32 [layers, batch_size, heads, past_sequence_length, head_dim]
         (length 0 to start)
    out  audio f32 [batch_size, 1, 1920*frames], present_conv (-> past_conv),
         present_keys|present_values (-> past_keys|past_values; at most context - 1 long)

  Keys are cached *before* RoPE; every call rotates the cached and the new ones with positions
  counted from the oldest cached one. Attention scores depend on position differences only, so
  this equals the one-shot graph, and positions stay bounded however long the stream (the
  reference counts absolute positions in float32, whose rounding grows with the stream). The
  state is bounded: full size, 8 layers x 249 positions x 512 x 2 (8.2 MB) plus 12,672 conv
  floats. A stateless re-run over recent frames would not do: the stacked windows reach back
  layers x (context - 1) = 1992 positions (80 s).

Weights keep the Mimi checkpoint's names (`tokenizer-e351c8d8-checkpoint125.safetensors`:
`quantizer.rvq_first.vq.layers.0._codebook.embedding_sum`, `decoder_transformer.transformer.
layers.0.self_attn.in_proj_weight`, `decoder.model.2.convtr.convtr.weight`, ...); `mimi_specs`
lists the tensors the decoder reads. The checkpoint also holds the encoder side (`encoder.*`,
`encoder_transformer.*`, `downsample.*`, the quantizers' `input_proj`), the codebooks past the
8th and each codebook's `_initialized` flag, which decoding does not use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx

from lfm_toolchain.onnx_graph import FLOAT, INT64, GraphBuilder
from lfm_toolchain.weights import Array, ParamSpec, RandomWeights

CACHED_ROLE = "mimi_decoder_cached"
SEED_OFFSET = 0x4D494D49
"""Added to the build seed for Mimi's weights, so they are independent of the main model's."""
_INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True)
class MimiConfig:
    """Mimi's decoder numbers (`moshi.models.loaders` `_seanet_kwargs`, `_transformer_kwargs`,
    `_quantizer_kwargs`)."""

    dimension: int
    """SEANet latent width, which is also the transformer's (no projections around it)."""
    n_filters: int
    ratios: tuple[int, ...]
    codebook_dim: int
    transformer_layers: int
    transformer_heads: int
    transformer_ffn: int
    context: int
    """Causal attention span in 25 Hz positions (a position sees itself and context-1 before)."""
    n_residual_layers: int = 1
    kernel_size: int = 7
    residual_kernel_size: int = 3
    last_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    codebooks: int = 8
    """Codebooks decoded (the checkpoint holds 32; LFM2-Audio uses the first 8)."""
    codebook_size: int = 2048
    semantic_codebooks: int = 1
    max_period: float = 10_000.0
    norm_eps: float = 1e-5
    layer_scale: float = 0.01
    sample_rate: int = 24_000
    frame_rate: float = 12.5

    def __post_init__(self) -> None:
        if self.dimension % self.transformer_heads or self.head_dim % 2:
            raise ValueError("Mimi: transformer width must split into heads of even size")
        if self.sample_rate % self.hop_length:
            raise ValueError("Mimi: sample_rate must be a multiple of the SEANet hop")
        if (self.sample_rate / self.hop_length) % self.frame_rate:
            raise ValueError("Mimi: the encoder frame rate must be a multiple of frame_rate")
        if self.context < 2:
            raise ValueError("Mimi: context must be at least 2")

    @property
    def head_dim(self) -> int:
        return self.dimension // self.transformer_heads

    @property
    def hop_length(self) -> int:
        """Samples per transformer (25 Hz) position: the product of the ratios."""
        return math.prod(self.ratios)

    @property
    def upsample(self) -> int:
        """Transformer positions per code frame (2)."""
        return round(self.sample_rate / self.hop_length / self.frame_rate)

    @property
    def frame_samples(self) -> int:
        """Output samples per code frame (1920 = 80 ms at 24 kHz)."""
        return self.hop_length * self.upsample

    @property
    def kept_positions(self) -> int:
        """Cached keys/values per layer in the streaming graph: context - 1."""
        return self.context - 1

    def seanet_kwargs(self) -> dict[str, object]:
        """`SEANetDecoder(**...)` of the reference (and its encoder, which decoding ignores)."""
        return {
            "channels": 1,
            "dimension": self.dimension,
            "causal": True,
            "n_filters": self.n_filters,
            "n_residual_layers": self.n_residual_layers,
            "activation": "ELU",
            "compress": self.compress,
            "dilation_base": self.dilation_base,
            "disable_norm_outer_blocks": 0,
            "kernel_size": self.kernel_size,
            "residual_kernel_size": self.residual_kernel_size,
            "last_kernel_size": self.last_kernel_size,
            "norm": "none",
            "pad_mode": "constant",
            "ratios": list(self.ratios),
            "true_skip": True,
        }

    def transformer_kwargs(self) -> dict[str, object]:
        """`ProjectedTransformer(**...)` of the reference."""
        return {
            "d_model": self.dimension,
            "num_heads": self.transformer_heads,
            "num_layers": self.transformer_layers,
            "causal": True,
            "layer_scale": self.layer_scale,
            "context": self.context,
            "conv_layout": True,
            "max_period": self.max_period,
            "gating": "none",
            "norm": "layer_norm",
            "positional_embedding": "rope",
            "dim_feedforward": self.transformer_ffn,
            "input_dimension": self.dimension,
            "output_dimensions": [self.dimension],
        }

    def quantizer_kwargs(self) -> dict[str, object]:
        """`SplitResidualVectorQuantizer(**...)` of the reference, with only the codebooks used."""
        return {
            "dimension": self.codebook_dim,
            "n_q": self.codebooks,
            "bins": self.codebook_size,
            "input_dimension": self.dimension,
            "output_dimension": self.dimension,
        }

    def manifest_options(self) -> dict[str, int | float]:
        """The `mimi_decoder` graphs' manifest options."""
        return {
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "frame_samples": self.frame_samples,
            "codebook_size": self.codebook_size,
            "context": self.context,
        }


def full_mimi() -> MimiConfig:
    """Mimi as LFM2-Audio-1.5B ships it (`moshi.models.loaders.get_mimi`)."""
    return MimiConfig(
        dimension=512,
        n_filters=64,
        ratios=(8, 6, 5, 4),
        codebook_dim=256,
        transformer_layers=8,
        transformer_heads=8,
        transformer_ffn=2048,
        context=250,
    )


def tiny_mimi() -> MimiConfig:
    """The tiny same-architecture Mimi of the tests: the real ratios, sample rate and frame rate
    (so 1920 samples per frame), width 64, 8 filters, 2 transformer layers of 4 heads, and a
    context of 10 positions (5 frames), so that short tests already cross the window."""
    return MimiConfig(
        dimension=64,
        n_filters=8,
        ratios=(8, 6, 5, 4),
        codebook_dim=32,
        transformer_layers=2,
        transformer_heads=4,
        transformer_ffn=128,
        context=10,
    )


def mimi_config_for(size: str) -> MimiConfig:
    if size == "tiny":
        return tiny_mimi()
    if size == "full":
        return full_mimi()
    raise ValueError(f"unknown model size {size!r}; sizes are tiny, full")


# --- weights -------------------------------------------------------------------------------


def _codebook(prefix: str, config: MimiConfig) -> list[ParamSpec]:
    p = f"{prefix}._codebook."
    return [
        ParamSpec(f"{p}embedding_sum", (config.codebook_size, config.codebook_dim), "embedding"),
        # positive counts around 1 (the U(0.5, 1.5) rule of batch-norm variances)
        ParamSpec(f"{p}cluster_usage", (config.codebook_size,), "bn_var"),
    ]


@dataclass(frozen=True)
class SeanetConv:
    """One convolution of the SEANet decoder, in network order."""

    name: str
    """Checkpoint prefix, e.g. `decoder.model.2.convtr.convtr`."""
    kind: Literal["conv", "convtr"]
    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    elu_before: bool = True
    block_start: bool = False
    """The first conv of a residual block (the block's input is kept for the skip)."""
    block_end: bool = False
    """The last conv of a residual block (the block's input is added to its output)."""


def seanet_layers(config: MimiConfig) -> list[SeanetConv]:
    """The decoder's convolutions in order, named as in `SEANetDecoder.model`."""
    nf = config.n_filters
    mult = 2 ** len(config.ratios)
    layers = [
        SeanetConv(
            "decoder.model.0.conv.conv", "conv", config.dimension, mult * nf,
            config.kernel_size, elu_before=False,
        )
    ]  # fmt: skip
    index = 1
    for ratio in config.ratios:
        channels = mult * nf // 2
        layers.append(
            SeanetConv(
                f"decoder.model.{index + 1}.convtr.convtr", "convtr", mult * nf, channels,
                2 * ratio, stride=ratio,
            )
        )  # fmt: skip
        index += 2
        hidden = channels // config.compress
        for j in range(config.n_residual_layers):
            block = f"decoder.model.{index}.block"
            layers.append(
                SeanetConv(
                    f"{block}.1.conv.conv", "conv", channels, hidden,
                    config.residual_kernel_size, dilation=config.dilation_base**j,
                    block_start=True,
                )
            )  # fmt: skip
            layers.append(
                SeanetConv(f"{block}.3.conv.conv", "conv", hidden, channels, 1, block_end=True)
            )
            index += 1
        mult //= 2
    layers.append(
        SeanetConv(f"decoder.model.{index + 1}.conv.conv", "conv", nf, 1, config.last_kernel_size)
    )
    return layers


def mimi_specs(config: MimiConfig) -> list[ParamSpec]:
    """The Mimi checkpoint's tensors that decoding reads (see the module doc)."""
    d, f = config.dimension, config.transformer_ffn
    specs = [*_codebook("quantizer.rvq_first.vq.layers.0", config)]
    specs.append(
        ParamSpec("quantizer.rvq_first.output_proj.weight", (d, config.codebook_dim, 1), "matrix")
    )
    for j in range(config.codebooks - config.semantic_codebooks):
        specs += _codebook(f"quantizer.rvq_rest.vq.layers.{j}", config)
    specs.append(
        ParamSpec("quantizer.rvq_rest.output_proj.weight", (d, config.codebook_dim, 1), "matrix")
    )
    specs.append(
        ParamSpec("upsample.convtr.convtr.convtr.weight", (d, 1, 2 * config.upsample), "matrix")
    )
    for i in range(config.transformer_layers):
        p = f"decoder_transformer.transformer.layers.{i}."
        specs += [
            ParamSpec(f"{p}self_attn.in_proj_weight", (3 * d, d), "matrix"),
            ParamSpec(f"{p}self_attn.out_proj.weight", (d, d), "matrix"),
            ParamSpec(f"{p}norm1.weight", (d,), "norm"),
            ParamSpec(f"{p}norm1.bias", (d,), "bias"),
            ParamSpec(f"{p}norm2.weight", (d,), "norm"),
            ParamSpec(f"{p}norm2.bias", (d,), "bias"),
            ParamSpec(f"{p}linear1.weight", (f, d), "matrix"),
            ParamSpec(f"{p}linear2.weight", (d, f), "matrix"),
            # N(0, 0.1^2): larger than the checkpoint's 0.01 init, so the transformer shows
            ParamSpec(f"{p}layer_scale_1.scale", (d,), "bias"),
            ParamSpec(f"{p}layer_scale_2.scale", (d,), "bias"),
        ]
    for conv in seanet_layers(config):
        if conv.kind == "conv":
            shape = (conv.out_channels, conv.in_channels, conv.kernel)
        else:
            shape = (conv.in_channels, conv.out_channels, conv.kernel)
        specs.append(ParamSpec(f"{conv.name}.weight", shape, "matrix"))
        specs.append(ParamSpec(f"{conv.name}.bias", (conv.out_channels,), "bias"))
    return specs


class MimiWeights(Mapping[str, Array]):
    """Seeded random Mimi decoder weights, generated on access (`lfm_toolchain.weights` rules).

    Transposed-conv kernels are rescaled: the N(0, 1/fan_in) rule reads their fan-in from the
    wrong axis ([in, out, kernel]); an output of a stride-s transposed conv sums in*kernel/s
    products, and that is the fan-in used, so the signal keeps its size through the upsampling.
    """

    def __init__(self, config: MimiConfig, seed: int) -> None:
        self._random = RandomWeights(mimi_specs(config), seed + SEED_OFFSET)
        self._gains: dict[str, np.float32] = {}
        for conv in seanet_layers(config):
            if conv.kind == "convtr":
                fan = conv.in_channels * conv.kernel / conv.stride
                self._gains[f"{conv.name}.weight"] = np.float32(
                    math.sqrt(conv.out_channels * conv.kernel / fan)
                )
        # channel-wise (one input channel per group), kernel 2u, stride u: 2 products per output
        self._gains["upsample.convtr.convtr.convtr.weight"] = np.float32(
            math.sqrt(2 * config.upsample / 2)
        )

    def __getitem__(self, name: str) -> Array:
        value = self._random[name]
        gain = self._gains.get(name)
        return value if gain is None else value * gain

    def __iter__(self) -> Iterator[str]:
        return iter(self._random)

    def __len__(self) -> int:
        return len(self._random)


def random_mimi_weights(config: MimiConfig, seed: int) -> MimiWeights:
    return MimiWeights(config, seed)


def codebook_tables(config: MimiConfig, weights: Mapping[str, Array]) -> Array:
    """The codebooks' vectors, stacked [codebooks * codebook_size, codebook_dim]: each one's
    `embedding_sum / clamp(cluster_usage, 1e-5)` (`EuclideanCodebook.embedding`)."""
    names = ["quantizer.rvq_first.vq.layers.0"] + [
        f"quantizer.rvq_rest.vq.layers.{j}"
        for j in range(config.codebooks - config.semantic_codebooks)
    ]
    tables = []
    for name in names:
        total = np.asarray(weights[f"{name}._codebook.embedding_sum"], dtype=np.float32)
        usage = np.asarray(weights[f"{name}._codebook.cluster_usage"], dtype=np.float32)
        tables.append(total / np.maximum(usage, np.float32(1e-5))[:, None])
    return np.concatenate(tables, axis=0)


# --- state layout of the cached graph ------------------------------------------------------


@dataclass(frozen=True)
class ConvState:
    """One piece of `past_conv`: a conv's last inputs or a transposed conv's overhang."""

    name: str
    channels: int
    length: int

    @property
    def size(self) -> int:
        return self.channels * self.length


def conv_states(config: MimiConfig) -> list[ConvState]:
    """The pieces of `past_conv`, in order (convs of kernel 1 keep none)."""
    states = [ConvState("upsample.convtr", config.dimension, config.upsample)]
    for conv in seanet_layers(config):
        if conv.kind == "convtr":
            states.append(ConvState(conv.name, conv.out_channels, conv.kernel - conv.stride))
        elif conv.kernel > 1:
            states.append(ConvState(conv.name, conv.in_channels, (conv.kernel - 1) * conv.dilation))
    return states


def conv_state_size(config: MimiConfig) -> int:
    return sum(state.size for state in conv_states(config))


# --- the graph -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """Per-call RoPE factors and attention mask, shared by the transformer's layers."""

    cos_q: str
    sin_q: str
    """[new, head_dim/2, 1]"""
    cos_k: str
    sin_k: str
    """[past + new, head_dim/2, 1]"""
    bias: str
    """[new, past + new]: 0 where the query sees the key, else -inf."""


class _Writer:
    """Emits the decoder into `g`; `cached` switches the convs and attention to carried state."""

    def __init__(
        self, g: GraphBuilder, config: MimiConfig, weights: Mapping[str, Array], cached: bool
    ) -> None:
        self.g = g
        self.config = config
        self.weights = weights
        self.cached = cached
        self._offset = 0
        self.present_conv: list[str] = []
        self.present_keys: list[str] = []
        self.present_values: list[str] = []

    def const(self, value: object, dtype: object = np.int64) -> str:
        return self.g.const(value, dtype)

    def slice(self, x: str, start: int, end: int, axis: int, name: str) -> str:
        c = self.const
        return self.g.op1("Slice", [x, c([start]), c([end]), c([axis])], name=name)

    def matmul(self, x: str, name: str, node: str, matrix: Array | None = None) -> str:
        """x @ W.T for a torch-layout [out, in] weight `name` (or `matrix`)."""
        w = np.asarray(self.weights[name] if matrix is None else matrix, dtype=np.float32)
        weight = self.g.weight(f"{name}.T", np.ascontiguousarray(w.T))
        return self.g.op1("MatMul", [x, weight], name=node)

    # -- conv state

    def _past(self, channels: int, length: int, node: str) -> str:
        """The next piece of `past_conv`, as [B, channels, length]."""
        g, start = self.g, self._offset
        self._offset += channels * length
        flat = self.slice("past_conv", start, self._offset, 1, f"{node}/past")
        return g.op1("Reshape", [flat, self.const([0, channels, length])], name=f"{node}/past/3d")

    def _present(self, state: str, node: str) -> None:
        flat = self.g.op1("Reshape", [state, self.const([0, -1])], name=f"{node}/present")
        self.present_conv.append(flat)

    def conv(self, x: str, conv: SeanetConv, node: str) -> str:
        """Causal conv: left padding of (kernel-1)*dilation, zeros or the carried inputs."""
        g = self.g
        w = g.weight(f"{conv.name}.weight", self.weights[f"{conv.name}.weight"])
        b = g.weight(f"{conv.name}.bias", self.weights[f"{conv.name}.bias"])
        pad = (conv.kernel - 1) * conv.dilation
        if pad and self.cached:
            past = self._past(conv.in_channels, pad, node)
            x = g.op1("Concat", [past, x], name=f"{node}/Concat", axis=2)
            self._present(self.slice(x, -pad, _INT64_MAX, 2, f"{node}/tail"), node)
            pads = [0, 0]
        else:
            pads = [pad, 0]
        return g.op1(
            "Conv", [x, w, b], name=f"{node}/Conv",
            kernel_shape=[conv.kernel], dilations=[conv.dilation], pads=pads, strides=[1],
        )  # fmt: skip

    def conv_transpose(
        self,
        x: str,
        name: str,
        channels: int,
        kernel: int,
        stride: int,
        node: str,
        *,
        bias: bool = True,
        group: int = 1,
    ) -> str:
        """Causal transposed conv: T inputs give T*stride outputs; the kernel-stride outputs
        that overhang the end are dropped (one-shot) or carried into the next call."""
        g = self.g
        w = g.weight(f"{name}.weight", self.weights[f"{name}.weight"])
        b = g.weight(f"{name}.bias", self.weights[f"{name}.bias"]) if bias else None
        overhang = kernel - stride
        attrs: dict[str, Any] = {"kernel_shape": [kernel], "strides": [stride], "group": group}
        if not self.cached:
            inputs = [x, w] + ([b] if b else [])
            return g.op1(
                "ConvTranspose", inputs, name=f"{node}/ConvTranspose", pads=[0, overhang], **attrs
            )
        y = g.op1("ConvTranspose", [x, w], name=f"{node}/ConvTranspose", pads=[0, 0], **attrs)
        past = self._past(channels, overhang, node)
        head = self.slice(y, 0, overhang, 2, f"{node}/head")
        body = self.slice(y, overhang, -overhang, 2, f"{node}/body")
        self._present(self.slice(y, -overhang, _INT64_MAX, 2, f"{node}/overhang"), node)
        head = g.op1("Add", [head, past], name=f"{node}/carry")
        y = g.op1("Concat", [head, body], name=f"{node}/Concat", axis=2)
        if b is None:
            return y
        column = g.op1("Unsqueeze", [b, self.const([1])], name=f"{node}/bias/Unsqueeze")
        return g.op1("Add", [y, column], name=f"{node}/bias")

    # -- parts

    def quantizer(self) -> str:
        """`audio_codes` [B, K, T] -> the latent [B, T, dimension]."""
        g, cfg = self.g, self.config
        offsets = (np.arange(cfg.codebooks, dtype=np.int64) * cfg.codebook_size)[:, None]
        rows = g.op1("Add", ["audio_codes", self.const(offsets)], name="/quantizer/offsets")
        table = g.weight("quantizer.codebooks", codebook_tables(cfg, self.weights))
        vectors = g.op1("Gather", [table, rows], name="/quantizer/Gather", axis=0)  # [B,K,T,Dq]
        n = cfg.semantic_codebooks
        parts = []
        for what, start, end in (("rvq_first", 0, n), ("rvq_rest", n, cfg.codebooks)):
            picked = self.slice(vectors, start, end, 1, f"/quantizer/{what}/Slice")
            summed = g.op1(
                "ReduceSum", [picked, self.const([1])], name=f"/quantizer/{what}/ReduceSum",
                keepdims=0,
            )  # fmt: skip
            name = f"quantizer.{what}.output_proj.weight"
            proj = np.asarray(self.weights[name])[:, :, 0]
            parts.append(self.matmul(summed, name, f"/quantizer/{what}/output_proj", proj))
        return g.op1("Add", parts, name="/quantizer/Add")

    def window(self, x: str) -> _Window:
        """RoPE factors and mask for `x` [B, new, D]; positions count from the oldest key."""
        g, cfg, c = self.g, self.config, self.const
        n = "/decoder_transformer/window"
        new = g.op1("Gather", [g.op1("Shape", [x], name=f"{n}/Shape"), c(1)], name=f"{n}/new")
        if self.cached:
            shape = g.op1("Shape", ["past_keys"], name=f"{n}/past/Shape")
            past = g.op1("Gather", [shape, c(3)], name=f"{n}/past")
            total = g.op1("Add", [past, new], name=f"{n}/total")
        else:
            past, total = c(0), new
        one = c(1)
        k_pos = g.op1("Range", [c(0), total, one], name=f"{n}/k_pos")
        q_pos = g.op1("Range", [past, total, one], name=f"{n}/q_pos")
        distance = g.op1(
            "Sub", [g.op1("Unsqueeze", [q_pos, c([1])], name=f"{n}/q_col"), k_pos],
            name=f"{n}/distance",
        )  # fmt: skip
        ahead = g.op1("Less", [distance, c(0)], name=f"{n}/ahead")
        behind = g.op1("GreaterOrEqual", [distance, c(cfg.context)], name=f"{n}/behind")
        hidden = g.op1("Or", [ahead, behind], name=f"{n}/hidden")
        bias = g.op1(
            "Where", [hidden, c(-np.inf, np.float32), c(0.0, np.float32)], name=f"{n}/bias"
        )
        # angles in float32 as the reference: exp(i * -2 ln(max_period) / head_dim) * position
        half = cfg.head_dim // 2
        scale = np.float32(-math.log(cfg.max_period) * 2 / cfg.head_dim)
        freqs = np.exp(np.arange(half, dtype=np.float32) * scale).astype(np.float32)
        positions = g.op1("Cast", [k_pos], name=f"{n}/positions", to=FLOAT)
        column = g.op1("Unsqueeze", [positions, c([1])], name=f"{n}/positions/col")
        angles = g.op1("Mul", [column, c(freqs, np.float32)], name=f"{n}/angles")
        angles = g.op1("Unsqueeze", [angles, c([2])], name=f"{n}/angles/pair")  # [L, half, 1]
        cos_k = g.op1("Cos", [angles], name=f"{n}/cos")
        sin_k = g.op1("Sin", [angles], name=f"{n}/sin")
        if not self.cached:
            return _Window(cos_k, sin_k, cos_k, sin_k, bias)
        start = g.op1("Unsqueeze", [past, c([0])], name=f"{n}/start")
        stop = c([_INT64_MAX])
        cos_q = g.op1("Slice", [cos_k, start, stop, c([0])], name=f"{n}/cos_q")
        sin_q = g.op1("Slice", [sin_k, start, stop, c([0])], name=f"{n}/sin_q")
        return _Window(cos_q, sin_q, cos_k, sin_k, bias)

    def rope(self, t: str, cos: str, sin: str, node: str) -> str:
        """Interleaved-pair RoPE of [B, H, L, hd]: (x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos)."""
        g, c, hd = self.g, self.const, self.config.head_dim
        pairs = g.op1("Reshape", [t, c([0, 0, 0, hd // 2, 2])], name=f"{node}/pairs")
        real = self.slice(pairs, 0, 1, 4, f"{node}/real")
        imag = self.slice(pairs, 1, 2, 4, f"{node}/imag")
        out_r = g.op1(
            "Sub",
            [
                g.op1("Mul", [real, cos], name=f"{node}/rc"),
                g.op1("Mul", [imag, sin], name=f"{node}/is"),
            ],
            name=f"{node}/out_r",
        )
        out_i = g.op1(
            "Add",
            [
                g.op1("Mul", [real, sin], name=f"{node}/rs"),
                g.op1("Mul", [imag, cos], name=f"{node}/ic"),
            ],
            name=f"{node}/out_i",
        )
        joined = g.op1("Concat", [out_r, out_i], name=f"{node}/join", axis=4)
        return g.op1("Reshape", [joined, c([0, 0, 0, hd])], name=f"{node}/merge")

    def attention(self, i: int, x: str, window: _Window) -> str:
        g, cfg, c = self.g, self.config, self.const
        p = f"decoder_transformer.transformer.layers.{i}.self_attn."
        n = f"/decoder_transformer/layers.{i}/self_attn"
        heads, hd = cfg.transformer_heads, cfg.head_dim
        qkv = self.matmul(x, f"{p}in_proj_weight", f"{n}/in_proj")  # [B, L, 3D]
        split = g.op1("Reshape", [qkv, c([0, 0, 3, heads, hd])], name=f"{n}/qkv/Reshape")
        qkv_t = g.op1("Transpose", [split], name=f"{n}/qkv/Transpose", perm=[2, 0, 3, 1, 4])
        q, k, v = (
            g.op1("Gather", [qkv_t, c(j)], name=f"{n}/{what}", axis=0)
            for j, what in enumerate("qkv")
        )  # each [B, H, L, hd]
        if self.cached:
            layer = c(i)
            past_k = g.op1("Gather", ["past_keys", layer], name=f"{n}/past_keys", axis=0)
            past_v = g.op1("Gather", ["past_values", layer], name=f"{n}/past_values", axis=0)
            k = g.op1("Concat", [past_k, k], name=f"{n}/k/Concat", axis=2)
            v = g.op1("Concat", [past_v, v], name=f"{n}/v/Concat", axis=2)
            keep = cfg.kept_positions
            for cache, t, what in (
                (self.present_keys, k, "keys"),
                (self.present_values, v, "values"),
            ):
                tail = self.slice(t, -keep, _INT64_MAX, 2, f"{n}/present_{what}")
                cache.append(g.op1("Unsqueeze", [tail, c([0])], name=f"{n}/present_{what}/stack"))
        q = self.rope(q, window.cos_q, window.sin_q, f"{n}/q_rope")
        k = self.rope(k, window.cos_k, window.sin_k, f"{n}/k_rope")
        k_t = g.op1("Transpose", [k], name=f"{n}/k/T", perm=[0, 1, 3, 2])
        scores = g.op1("MatMul", [q, k_t], name=f"{n}/scores")
        scaled = g.op1("Mul", [scores, c(hd**-0.5, np.float32)], name=f"{n}/scale")
        masked = g.op1("Add", [scaled, window.bias], name=f"{n}/mask")
        probs = g.op1("Softmax", [masked], name=f"{n}/Softmax", axis=-1)
        context = g.op1("MatMul", [probs, v], name=f"{n}/context")  # [B, H, new, hd]
        merged = g.op1("Transpose", [context], name=f"{n}/merge/Transpose", perm=[0, 2, 1, 3])
        flat = g.op1("Reshape", [merged, c([0, 0, heads * hd])], name=f"{n}/merge/Reshape")
        return self.matmul(flat, f"{p}out_proj.weight", f"{n}/out_proj")

    def layer_norm(self, x: str, name: str, node: str) -> str:
        g = self.g
        scale = g.weight(f"{name}.weight", self.weights[f"{name}.weight"])
        bias = g.weight(f"{name}.bias", self.weights[f"{name}.bias"])
        return g.op1(
            "LayerNormalization", [x, scale, bias], name=node, axis=-1,
            epsilon=self.config.norm_eps,
        )  # fmt: skip

    def layer_scale(self, x: str, name: str, node: str) -> str:
        scale = self.g.weight(name, self.weights[name])
        return self.g.op1("Mul", [x, scale], name=node)

    def transformer(self, x: str) -> str:
        """[B, L, D] -> [B, L, D] through the decoder transformer's layers."""
        g = self.g
        window = self.window(x)
        for i in range(self.config.transformer_layers):
            p = f"decoder_transformer.transformer.layers.{i}."
            n = f"/decoder_transformer/layers.{i}"
            h = self.layer_norm(x, f"{p}norm1", f"{n}/norm1")
            h = self.attention(i, h, window)
            h = self.layer_scale(h, f"{p}layer_scale_1.scale", f"{n}/layer_scale_1")
            x = g.op1("Add", [x, h], name=f"{n}/residual_1")
            h = self.layer_norm(x, f"{p}norm2", f"{n}/norm2")
            h = self.matmul(h, f"{p}linear1.weight", f"{n}/linear1")
            h = g.op1("Gelu", [h], name=f"{n}/Gelu")
            h = self.matmul(h, f"{p}linear2.weight", f"{n}/linear2")
            h = self.layer_scale(h, f"{p}layer_scale_2.scale", f"{n}/layer_scale_2")
            x = g.op1("Add", [x, h], name=f"{n}/residual_2")
        return x

    def seanet(self, x: str) -> str:
        """[B, D, L] -> [B, 1, L * hop]."""
        g = self.g
        block_input = x
        for conv in seanet_layers(self.config):
            node = "/" + conv.name.replace(".conv.conv", "").replace(".convtr.convtr", "")
            if conv.block_start:
                block_input = x
            if conv.elu_before:
                x = g.op1("Elu", [x], name=f"{node}/Elu", alpha=1.0)
            if conv.kind == "convtr":
                x = self.conv_transpose(
                    x, conv.name, conv.out_channels, conv.kernel, conv.stride, node
                )
            else:
                x = self.conv(x, conv, node)
            if conv.block_end:
                x = g.op1("Add", [block_input, x], name=f"{node}/residual")
        return x

    def write(self) -> None:
        g, cfg = self.g, self.config
        latent = self.quantizer()  # [B, T, D]
        x = g.op1("Transpose", [latent], name="/upsample/Transpose", perm=[0, 2, 1])
        x = self.conv_transpose(
            x, "upsample.convtr.convtr.convtr", cfg.dimension, 2 * cfg.upsample, cfg.upsample,
            "/upsample", bias=False, group=cfg.dimension,
        )  # fmt: skip
        x = g.op1("Transpose", [x], name="/decoder_transformer/Transpose", perm=[0, 2, 1])
        x = self.transformer(x)
        x = g.op1("Transpose", [x], name="/decoder/Transpose", perm=[0, 2, 1])
        g.op("Identity", [self.seanet(x)], name="/audio", outputs=["audio"])
        if self.cached:
            if self._offset != conv_state_size(cfg):
                raise AssertionError("conv state layout out of step with conv_states()")
            for name, parts in (
                ("present_conv", self.present_conv),
                ("present_keys", self.present_keys),
                ("present_values", self.present_values),
            ):
                axis = 1 if name == "present_conv" else 0
                g.op("Concat", parts, name=f"/{name}/Concat", outputs=[name], axis=axis)


def build_mimi_decoder(
    g: GraphBuilder, config: MimiConfig, weights: Mapping[str, Array]
) -> onnx.ModelProto:
    """The one-shot `mimi_decoder` graph with Mimi checkpoint `weights` (`mimi_specs`)."""
    g.input("audio_codes", INT64, ["batch_size", config.codebooks, "frames"])
    g.output("audio", FLOAT, ["batch_size", 1, "samples"])
    _Writer(g, config, weights, cached=False).write()
    return g.model(doc="LFM2-Audio Mimi decoder (lfm-satellite lfm_toolchain.mimi)")


def build_mimi_decoder_cached(
    g: GraphBuilder, config: MimiConfig, weights: Mapping[str, Array]
) -> onnx.ModelProto:
    """The streaming `mimi_decoder_cached` graph (see the module doc)."""
    cache: list[int | str] = [
        config.transformer_layers, "batch_size", config.transformer_heads,
        "past_sequence_length", config.head_dim,
    ]  # fmt: skip
    present: list[int | str] = [*cache[:3], "present_sequence_length", config.head_dim]
    conv: list[int | str] = ["batch_size", conv_state_size(config)]
    g.input("audio_codes", INT64, ["batch_size", config.codebooks, "frames"])
    g.input("past_conv", FLOAT, conv)
    g.input("past_keys", FLOAT, cache)
    g.input("past_values", FLOAT, cache)
    g.output("audio", FLOAT, ["batch_size", 1, "samples"])
    g.output("present_conv", FLOAT, conv)
    g.output("present_keys", FLOAT, present)
    g.output("present_values", FLOAT, present)
    _Writer(g, config, weights, cached=True).write()
    return g.model(doc="LFM2-Audio streaming Mimi decoder (lfm-satellite lfm_toolchain.mimi)")


def graph_builders(
    config: MimiConfig, weights: Mapping[str, Array]
) -> dict[str, Callable[[GraphBuilder], onnx.ModelProto]]:
    """Role -> graph writer, for `lfm_toolchain.build`: `mimi_decoder` and `mimi_decoder_cached`."""
    return {
        "mimi_decoder": lambda g: build_mimi_decoder(g, config, weights),
        CACHED_ROLE: lambda g: build_mimi_decoder_cached(g, config, weights),
    }
