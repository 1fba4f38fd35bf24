"""Graph pieces shared by the transformer-like graphs (decoder, depthformer, detokenizer).

`Layers` reads checkpoint tensors under a name prefix and emits the operators chosen for
onnxruntime: `MatMul` with a constant, transposed weight for every projection (what the 4-bit
quantizer turns into `MatMulNBits`), `SimplifiedLayerNormalization` for RMSNorm,
`SkipSimplifiedLayerNormalization` for a residual add followed by RMSNorm, and the SwiGLU MLP.
A projection handed over already packed (`PackedLinear`: a published q4 graph's `MatMulNBits`
weights, carried into a new graph as they are) is written as that `MatMulNBits`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lfm_toolchain.onnx_graph import MS_DOMAIN, GraphBuilder
from lfm_toolchain.weights import Array


@dataclass(frozen=True)
class PackedLinear:
    """A projection's weights as a `MatMulNBits` node holds them (input B, scales and zero
    points, and the node's attributes), to be written as they are."""

    packed: Array
    """uint8 [N, blocks, block_size * bits / 8]."""
    scales: Array
    zero_points: Array | None
    attributes: Mapping[str, int]
    """K, N, bits, block_size (and accuracy_level where the source set it)."""


class Layers:
    """Emits common layers into `g`, reading weights `prefix + name` from `weights`, or from
    `packed` for projections already packed as `MatMulNBits`."""

    def __init__(
        self,
        g: GraphBuilder,
        weights: Mapping[str, Array],
        prefix: str,
        norm_eps: float,
        packed: Mapping[str, PackedLinear] | None = None,
    ) -> None:
        self.g = g
        self.weights = weights
        self.prefix = prefix
        self.norm_eps = norm_eps
        self.packed = packed or {}

    def w(self, name: str) -> Array:
        return self.weights[self.prefix + name]

    def linear(
        self, x: str, name: str, node: str, *, bias: str | None = None, out: str | None = None
    ) -> str:
        """x @ W.T (+ b) for a torch-layout [out, in] weight, stored transposed for MatMul (or
        as the `MatMulNBits` it was packed as)."""
        g = self.g
        packed = self.packed.get(self.prefix + name)
        if packed is not None:
            return self._packed_linear(x, name, node, packed, bias=bias, out=out)
        weight = g.weight(f"{self.prefix}{name}.T", np.asarray(self.w(name).T, order="C"))
        if bias is None:
            return g.op("MatMul", [x, weight], name=node, outputs=[out] if out else 1)[0]
        product = g.op1("MatMul", [x, weight], name=node)
        b = g.weight(self.prefix + bias, self.w(bias))
        return g.op("Add", [product, b], name=f"{node}/Add", outputs=[out] if out else 1)[0]

    def _packed_linear(
        self,
        x: str,
        name: str,
        node: str,
        packed: PackedLinear,
        *,
        bias: str | None,
        out: str | None,
    ) -> str:
        g = self.g
        stem = f"{self.prefix}{name}.T"
        inputs = [
            x,
            g.weight(f"{stem}_Q4", packed.packed),
            g.weight(f"{stem}_scales", packed.scales),
        ]
        if packed.zero_points is not None:
            inputs.append(g.weight(f"{stem}_zero_points", packed.zero_points))
        attrs = dict(packed.attributes)
        if bias is None:
            outputs: int | list[str] = [out] if out else 1
            return g.op(
                "MatMulNBits", inputs, name=node, outputs=outputs, domain=MS_DOMAIN, **attrs
            )[0]
        product = g.op1("MatMulNBits", inputs, name=node, domain=MS_DOMAIN, **attrs)
        b = g.weight(self.prefix + bias, self.w(bias))
        return g.op("Add", [product, b], name=f"{node}/Add", outputs=[out] if out else 1)[0]

    def norm(self, x: str, name: str, node: str) -> str:
        """RMSNorm over the last axis with gain `name`."""
        weight = self.g.weight(self.prefix + name, self.w(name))
        return self.norm_with(x, weight, node)

    def norm_with(self, x: str, weight: str, node: str) -> str:
        return self.g.op1(
            "SimplifiedLayerNormalization", [x, weight], name=node,
            axis=-1, epsilon=self.norm_eps, stash_type=1,
        )  # fmt: skip

    def skip_norm(self, x: str, residual: str, name: str, node: str) -> tuple[str, str]:
        """RMSNorm(x + residual) and x + residual, in one fused kernel."""
        weight = self.g.weight(self.prefix + name, self.w(name))
        return self.skip_norm_with(x, residual, weight, node)

    def skip_norm_with(self, x: str, residual: str, weight: str, node: str) -> tuple[str, str]:
        normed, _, _, total = self.g.op(
            "SkipSimplifiedLayerNormalization", [x, residual, weight], name=node,
            outputs=[f"{node}/output_0", "", "", f"{node}/output_3"],
            domain=MS_DOMAIN, epsilon=self.norm_eps,
        )  # fmt: skip
        return normed, total

    def head_norm(self, x: str, heads: int, head_dim: int, name: str, node: str) -> str:
        """Per-head RMSNorm of [B, S, heads*head_dim] with a [head_dim] gain."""
        g = self.g
        split = g.op1("Reshape", [x, g.const([0, 0, heads, head_dim])], name=f"{node}/Reshape")
        normed = self.norm(split, name, f"{node}/SimplifiedLayerNormalization")
        return g.op1(
            "Reshape", [normed, g.const([0, 0, heads * head_dim])], name=f"{node}/Reshape_back"
        )

    def swiglu(self, x: str, name: str, node: str) -> str:
        """w2(silu(w1 x) * w3 x) with the weights `name`.w1/.w2/.w3."""
        g = self.g
        gate = self.linear(x, f"{name}.w1.weight", f"{node}/w1/MatMul")
        up = self.linear(x, f"{name}.w3.weight", f"{node}/w3/MatMul")
        sig = g.op1("Sigmoid", [gate], name=f"{node}/Sigmoid")
        silu = g.op1("Mul", [gate, sig], name=f"{node}/SiLU")
        h = g.op1("Mul", [silu, up], name=f"{node}/Mul")
        return self.linear(h, f"{name}.w2.weight", f"{node}/w2/MatMul")
