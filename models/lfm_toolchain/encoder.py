"""The `audio_encoder` graph: FastConformer encoder + adapter MLP, fp32.

Interface (the official export's): `mel_spectrogram` f32 [batch_size, time_steps, n_mels]
(log-mel frames, time-major) and `mel_lengths` int64 [batch_size] -> `audio_embeddings` f32
[batch_size, ceil(time_steps / 8), hidden] and `audio_lengths` int64 [batch_size]
(= ceil(mel_lengths / 8)). Rows past a sequence's length are padding; the caller takes
`audio_lengths[b]` rows.

As liquid-audio's `ConformerEncoder` (NeMo FastConformer, eval mode) and `MLP` adapter:

- dw-striding subsampling: Conv2d(1->C, 3x3, stride 2) + ReLU, then per further x2 a depthwise
  3x3 stride-2 conv and a pointwise 1x1 conv + ReLU; the time axis is masked to each stage's
  length before every layer; Linear(C * freq -> d_model);
- per layer (macaron): x += 0.5 FF(LN x); x += RelPosMHA(LN x); x += Conv(LN x);
  x += 0.5 FF(LN x); x = LN x. FF: Linear, SiLU, Linear. Conv: pointwise to 2d, GLU, padding
  masked to zero, depthwise conv (kernel 9, centred) with the eval-mode batch norm folded into
  it, SiLU, pointwise. Attention: Transformer-XL relative positions (sinusoidal table over
  relative distances T-1 .. -(T-1), `linear_pos`, biases u and v, the "rel shift"), padding
  masked with -10000 before the softmax and 0 after;
- adapter: LayerNorm, Linear(d_model -> hidden), GELU (erf), Linear(hidden -> hidden).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import onnx

from lfm_toolchain.config import AudioModelConfig
from lfm_toolchain.layers import Layers
from lfm_toolchain.onnx_graph import FLOAT, INT64, GraphBuilder
from lfm_toolchain.weights import Array

LN_EPS = 1e-5
BN_EPS = 1e-5
MASK_VALUE = -10000.0


class _Encoder(Layers):
    def __init__(self, g: GraphBuilder, config: AudioModelConfig, weights: Mapping[str, Array]):
        super().__init__(g, weights, "", LN_EPS)
        self.cfg = config.encoder
        self.hidden = config.backbone.hidden_size

    def layer_norm(self, x: str, name: str, node: str) -> str:
        g = self.g
        scale = g.weight(f"{name}.weight", self.w(f"{name}.weight"))
        bias = g.weight(f"{name}.bias", self.w(f"{name}.bias"))
        return g.op1("LayerNormalization", [x, scale, bias], name=node, axis=-1, epsilon=LN_EPS)

    def dense(self, x: str, name: str, node: str, *, bias: bool = True) -> str:
        return self.linear(x, f"{name}.weight", node, bias=f"{name}.bias" if bias else None)

    def time_mask(self, lengths: str, frames: str, node: str) -> str:
        """[B, T] bool: t < length."""
        g = self.g
        steps = g.op1("Range", [g.const(0), frames, g.const(1)], name=f"{node}/Range")
        return g.op1(
            "Less",
            [
                g.op1("Unsqueeze", [steps, g.const([0])], name=f"{node}/Unsqueeze_t"),
                g.op1("Unsqueeze", [lengths, g.const([1])], name=f"{node}/Unsqueeze_len"),
            ],
            name=f"{node}/Less",
        )

    def mask_time(self, x: str, mask: str, node: str) -> str:
        """Zero time steps past the length of x [B, C, T, F] with mask [B, T]."""
        g = self.g
        m = g.op1("Cast", [mask], name=f"{node}/Cast", to=FLOAT)
        m = g.op1("Unsqueeze", [m, g.const([1, 3])], name=f"{node}/Unsqueeze")
        return g.op1("Mul", [x, m], name=f"{node}/Mul")

    def conv2d(self, x: str, index: int, *, stride: int, groups: int) -> str:
        g, p = self.g, f"conformer.pre_encode.conv.{index}"
        w = g.weight(f"{p}.weight", self.w(f"{p}.weight"))
        b = g.weight(f"{p}.bias", self.w(f"{p}.bias"))
        pad = 1 if stride > 1 else 0
        return g.op1(
            "Conv",
            [x, w, b],
            name=f"/pre_encode/conv.{index}/Conv",
            strides=[stride, stride],
            pads=[pad, pad, pad, pad],
            group=groups,
        )

    def frames(self, x: str, axis: int, node: str) -> str:
        """The size of axis `axis` of x, as an int64 scalar."""
        shape = self.g.op1("Shape", [x], name=f"{node}/Shape")
        return self.g.op1("Gather", [shape, self.g.const(axis)], name=f"{node}/Gather")

    def halve(self, length: str, node: str) -> str:
        """A stride-2, kernel-3, padding-1 conv's output length: (length - 1) // 2 + 1."""
        g = self.g
        less = g.op1("Sub", [length, g.const(1)], name=f"{node}/Sub")
        half = g.op1("Div", [less, g.const(2)], name=f"{node}/Div")
        return g.op1("Add", [half, g.const(1)], name=f"{node}/Add")

    def subsample(self, mel: str, lengths: str) -> tuple[str, str]:
        """[B, T, F] log-mel -> [B, T/8, d_model] and the new lengths [B]."""
        g, c = self.g, self.cfg.subsampling_conv_channels
        x = g.op1("Unsqueeze", [mel, g.const([1])], name="/pre_encode/Unsqueeze")  # [B,1,T,F]
        length = lengths
        # (layer index, stride, groups): the first conv, then per further x2 stage a depthwise
        # strided conv and a pointwise conv. ReLU follows the first and each pointwise conv.
        plan: list[tuple[int, int, int]] = [(0, 2, 1)]
        for stage in range(int(math.log2(self.cfg.subsampling_factor)) - 1):
            plan += [(2 + 3 * stage, 2, c), (3 + 3 * stage, 1, 1)]
        n = "/pre_encode"
        for k, (layer, stride, groups) in enumerate(plan):
            mask = self.time_mask(length, self.frames(x, 2, f"{n}/{k}/frames"), f"{n}/{k}/mask")
            x = self.mask_time(x, mask, f"{n}/{k}/apply_mask")
            x = self.conv2d(x, layer, stride=stride, groups=groups)
            if stride > 1:
                length = self.halve(length, f"{n}/{k}/length")
            if groups == 1:
                frames = self.frames(x, 2, f"{n}/{k}/frames_relu")
                mask = self.time_mask(length, frames, f"{n}/{k}/mask_relu")
                x = self.mask_time(x, mask, f"{n}/{k}/apply_mask_relu")
                x = g.op1("Relu", [x], name=f"{n}/{k}/Relu")
        mask = self.time_mask(length, self.frames(x, 2, f"{n}/frames"), f"{n}/mask")
        x = self.mask_time(x, mask, f"{n}/apply_mask")
        x = g.op1("Transpose", [x], name=f"{n}/Transpose", perm=[0, 2, 1, 3])  # [B,T,C,F]
        x = g.op1("Reshape", [x, g.const([0, 0, -1])], name=f"{n}/Reshape")
        return self.dense(x, "conformer.pre_encode.out", f"{n}/out/MatMul"), length

    def relative_positions(self, frames: str) -> str:
        """The sinusoidal table [1, 2T-1, d_model] of relative positions T-1, ..., -(T-1)."""
        g, d = self.g, self.cfg.d_model
        n = "/pos_enc"
        count = g.op1(
            "Sub",
            [g.op1("Mul", [frames, g.const(2)], name=f"{n}/Mul"), g.const(1)],
            name=f"{n}/Sub",
        )
        top = g.op1("Sub", [frames, g.const(1)], name=f"{n}/top")
        steps = g.op1("Range", [g.const(0), count, g.const(1)], name=f"{n}/Range")
        positions = g.op1(
            "Cast", [g.op1("Sub", [top, steps], name=f"{n}/positions")], name=f"{n}/Cast", to=FLOAT
        )
        div = np.exp(
            np.arange(0, d, 2, dtype=np.float32) * np.float32(-(math.log(10000.0) / d))
        ).astype(np.float32)
        angles = g.op1(
            "Mul",
            [
                g.op1("Unsqueeze", [positions, g.const([1])], name=f"{n}/Unsqueeze"),
                g.const(div, np.float32, "div_term"),
            ],
            name=f"{n}/angles",
        )
        sin = g.op1(
            "Unsqueeze", [g.op1("Sin", [angles], name=f"{n}/Sin"), g.const([2])], name=f"{n}/sin"
        )
        cos = g.op1(
            "Unsqueeze", [g.op1("Cos", [angles], name=f"{n}/Cos"), g.const([2])], name=f"{n}/cos"
        )
        table = g.op1("Concat", [sin, cos], name=f"{n}/Concat", axis=2)  # even sin, odd cos
        return g.op1("Reshape", [table, g.const([1, -1, d])], name=f"{n}/Reshape")

    def shift_index(self, frames: str) -> str:
        """[T, T] indices T-1-i+j: the rel-shift as a gather over the 2T-1 relative positions."""
        g, n = self.g, "/rel_shift"
        steps = g.op1("Range", [g.const(0), frames, g.const(1)], name=f"{n}/Range")
        rows = g.op1("Unsqueeze", [steps, g.const([1])], name=f"{n}/rows")
        cols = g.op1("Unsqueeze", [steps, g.const([0])], name=f"{n}/cols")
        top = g.op1("Sub", [frames, g.const(1)], name=f"{n}/top")
        return g.op1("Add", [g.op1("Sub", [cols, rows], name=f"{n}/Sub"), top], name=f"{n}/index")

    def attention(self, i: int, x: str, pos: str, shift: str, masked: str | None) -> str:
        g, cfg = self.g, self.cfg
        h, dk = cfg.n_heads, cfg.d_model // cfg.n_heads
        p, n = f"conformer.layers.{i}.self_attn", f"/layers.{i}/self_attn"
        heads = g.const([0, 0, h, dk])

        def split(t: str, node: str) -> str:  # [B, T, d] -> [B, T, h, dk]
            return g.op1("Reshape", [t, heads], name=f"{node}/Reshape")

        q = split(self.dense(x, f"{p}.linear_q", f"{n}/q/MatMul"), f"{n}/q")
        k = split(self.dense(x, f"{p}.linear_k", f"{n}/k/MatMul"), f"{n}/k")
        v = split(self.dense(x, f"{p}.linear_v", f"{n}/v/MatMul"), f"{n}/v")
        r = split(self.dense(pos, f"{p}.linear_pos", f"{n}/pos/MatMul", bias=False), f"{n}/pos")
        u = g.weight(f"{p}.pos_bias_u", self.w(f"{p}.pos_bias_u"))
        vb = g.weight(f"{p}.pos_bias_v", self.w(f"{p}.pos_bias_v"))
        qu = g.op1(
            "Transpose", [g.op1("Add", [q, u], name=f"{n}/qu")], name=f"{n}/qu/T", perm=[0, 2, 1, 3]
        )
        qv = g.op1(
            "Transpose",
            [g.op1("Add", [q, vb], name=f"{n}/qv")],
            name=f"{n}/qv/T",
            perm=[0, 2, 1, 3],
        )
        kt = g.op1("Transpose", [k], name=f"{n}/k/T", perm=[0, 2, 3, 1])  # [B, h, dk, T]
        rt = g.op1("Transpose", [r], name=f"{n}/pos/T", perm=[0, 2, 3, 1])  # [1, h, dk, 2T-1]
        vt = g.op1("Transpose", [v], name=f"{n}/v/T", perm=[0, 2, 1, 3])  # [B, h, T, dk]
        ac = g.op1("MatMul", [qu, kt], name=f"{n}/ac")  # [B, h, T, T]
        bd = g.op1("MatMul", [qv, rt], name=f"{n}/bd")  # [B, h, T, 2T-1]
        index = g.op1("Expand", [shift, g.op1("Shape", [ac], name=f"{n}/Shape")], name=f"{n}/index")
        bd = g.op1("GatherElements", [bd, index], name=f"{n}/rel_shift", axis=-1)
        scores = g.op1("Add", [ac, bd], name=f"{n}/scores")
        scores = g.op1(
            "Mul", [scores, g.const(1.0 / math.sqrt(dk), np.float32, "scale")], name=f"{n}/scale"
        )
        if masked is not None:
            scores = g.op1(
                "Where",
                [masked, g.const(MASK_VALUE, np.float32, "mask_value"), scores],
                name=f"{n}/mask",
            )
        probs = g.op1("Softmax", [scores], name=f"{n}/Softmax", axis=-1)
        if masked is not None:
            probs = g.op1(
                "Where", [masked, g.const(0.0, np.float32, "zero"), probs], name=f"{n}/mask_probs"
            )
        out = g.op1("MatMul", [probs, vt], name=f"{n}/context")  # [B, h, T, dk]
        out = g.op1("Transpose", [out], name=f"{n}/context/T", perm=[0, 2, 1, 3])
        out = g.op1("Reshape", [out, g.const([0, 0, cfg.d_model])], name=f"{n}/merge")
        return self.dense(out, f"{p}.linear_out", f"{n}/out/MatMul")

    def convolution(self, i: int, x: str, padding: str | None) -> str:
        g, d, k = self.g, self.cfg.d_model, self.cfg.conv_kernel_size
        p, n = f"conformer.layers.{i}.conv", f"/layers.{i}/conv"
        pw1 = self.w(f"{p}.pointwise_conv1.weight")[:, :, 0]
        w1 = g.weight(f"{p}.pointwise_conv1.weight.T", np.asarray(pw1.T, order="C"))
        b1 = g.weight(f"{p}.pointwise_conv1.bias", self.w(f"{p}.pointwise_conv1.bias"))
        y = g.op1("Add", [g.op1("MatMul", [x, w1], name=f"{n}/pw1/MatMul"), b1], name=f"{n}/pw1")
        a, gate = g.op("Split", [y], name=f"{n}/glu/Split", outputs=2, axis=-1, num_outputs=2)
        y = g.op1("Mul", [a, g.op1("Sigmoid", [gate], name=f"{n}/glu/Sigmoid")], name=f"{n}/glu")
        if padding is not None:  # [B, T, 1] float, 1 where valid
            y = g.op1("Mul", [y, padding], name=f"{n}/pad_mask")
        # Depthwise conv with the eval-mode batch norm folded in.
        bn = f"{p}.batch_norm"
        scale = self.w(f"{bn}.weight").astype(np.float64) / np.sqrt(
            self.w(f"{bn}.running_var").astype(np.float64) + BN_EPS
        )
        shift = self.w(f"{bn}.bias") - self.w(f"{bn}.running_mean") * scale
        kernel = self.w(f"{p}.depthwise_conv.weight").astype(np.float64) * scale[:, None, None]
        bias = self.w(f"{p}.depthwise_conv.bias") * scale + shift
        y = g.op1("Transpose", [y], name=f"{n}/dw/T", perm=[0, 2, 1])  # [B, d, T]
        y = g.op1(
            "Conv",
            [
                y,
                g.weight(f"{p}.depthwise_bn.weight", kernel.astype(np.float32)),
                g.weight(f"{p}.depthwise_bn.bias", bias.astype(np.float32)),
            ],
            name=f"{n}/dw/Conv",
            group=d,
            pads=[(k - 1) // 2, (k - 1) // 2],
        )
        y = g.op1("Transpose", [y], name=f"{n}/dw/T_back", perm=[0, 2, 1])  # [B, T, d]
        y = g.op1("Mul", [y, g.op1("Sigmoid", [y], name=f"{n}/silu/Sigmoid")], name=f"{n}/silu")
        pw2 = self.w(f"{p}.pointwise_conv2.weight")[:, :, 0]
        w2 = g.weight(f"{p}.pointwise_conv2.weight.T", np.asarray(pw2.T, order="C"))
        b2 = g.weight(f"{p}.pointwise_conv2.bias", self.w(f"{p}.pointwise_conv2.bias"))
        return g.op1("Add", [g.op1("MatMul", [y, w2], name=f"{n}/pw2/MatMul"), b2], name=f"{n}/pw2")

    def feed_forward(self, i: int, x: str, which: str) -> str:
        g = self.g
        p, n = f"conformer.layers.{i}.feed_forward{which}", f"/layers.{i}/ff{which}"
        y = self.dense(x, f"{p}.linear1", f"{n}/linear1/MatMul")
        y = g.op1("Mul", [y, g.op1("Sigmoid", [y], name=f"{n}/Sigmoid")], name=f"{n}/SiLU")
        y = self.dense(y, f"{p}.linear2", f"{n}/linear2/MatMul")
        return g.op1("Mul", [y, g.const(0.5, np.float32, "half")], name=f"{n}/half")

    def layer(
        self, i: int, x: str, pos: str, shift: str, att_mask: str | None, padding: str | None
    ) -> str:
        g, p, n = self.g, f"conformer.layers.{i}", f"/layers.{i}"
        y = self.feed_forward(i, self.layer_norm(x, f"{p}.norm_feed_forward1", f"{n}/ln_ff1"), "1")
        x = g.op1("Add", [x, y], name=f"{n}/res_ff1")
        y = self.attention(
            i, self.layer_norm(x, f"{p}.norm_self_att", f"{n}/ln_att"), pos, shift, att_mask
        )
        x = g.op1("Add", [x, y], name=f"{n}/res_att")
        y = self.convolution(i, self.layer_norm(x, f"{p}.norm_conv", f"{n}/ln_conv"), padding)
        x = g.op1("Add", [x, y], name=f"{n}/res_conv")
        y = self.feed_forward(i, self.layer_norm(x, f"{p}.norm_feed_forward2", f"{n}/ln_ff2"), "2")
        x = g.op1("Add", [x, y], name=f"{n}/res_ff2")
        return self.layer_norm(x, f"{p}.norm_out", f"{n}/ln_out")


def build_audio_encoder(
    g: GraphBuilder, config: AudioModelConfig, weights: Mapping[str, Array]
) -> onnx.ModelProto:
    """The encoder + adapter graph of `config` with checkpoint `weights`."""
    enc = _Encoder(g, config, weights)
    mel = g.input("mel_spectrogram", FLOAT, ["batch_size", "time_steps", config.encoder.n_mels])
    lengths = g.input("mel_lengths", INT64, ["batch_size"])
    g.output("audio_embeddings", FLOAT, ["batch_size", "reduced_time", config.backbone.hidden_size])
    g.output("audio_lengths", INT64, ["batch_size"])

    x, length = enc.subsample(mel, lengths)
    g.op("Identity", [length], name="/audio_lengths", outputs=["audio_lengths"])
    frames = g.op1(
        "Gather", [g.op1("Shape", [x], name="/frames/Shape"), g.const(1)], name="/frames"
    )
    pos = enc.relative_positions(frames)
    shift = enc.shift_index(frames)
    valid = enc.time_mask(length, frames, "/pad_mask")  # [B, T] bool
    # att_mask[b, i, j]: i or j is padding (all False for an unpadded batch).
    pair = g.op1(
        "And",
        [
            g.op1("Unsqueeze", [valid, g.const([2])], name="/att_mask/rows"),
            g.op1("Unsqueeze", [valid, g.const([1])], name="/att_mask/cols"),
        ],
        name="/att_mask/And",
    )
    att_mask = g.op1(
        "Unsqueeze", [g.op1("Not", [pair], name="/att_mask/Not"), g.const([1])], name="/att_mask"
    )
    padding = g.op1(
        "Unsqueeze",
        [g.op1("Cast", [valid], name="/pad_mask/Cast", to=FLOAT), g.const([2])],
        name="/pad_mask/float",
    )
    for i in range(config.encoder.n_layers):
        x = enc.layer(i, x, pos, shift, att_mask, padding)

    # Adapter MLP: LayerNorm, Linear, GELU, Linear.
    x = enc.layer_norm(x, "audio_adapter.model.0", "/adapter/LayerNorm")
    x = enc.dense(x, "audio_adapter.model.1", "/adapter/linear1/MatMul")
    x = g.op1("Gelu", [x], name="/adapter/Gelu")
    enc.linear(
        x,
        "audio_adapter.model.3.weight",
        "/adapter/linear2/MatMul",
        bias="audio_adapter.model.3.bias",
        out="audio_embeddings",
    )
    return g.model(doc="FastConformer encoder + adapter (lfm-satellite lfm_toolchain.encoder)")
