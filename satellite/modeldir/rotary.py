"""The depthformer's rotary embedding as a graph has it: is it the model's, or the published
export's defect?

The published `vocoder_depthformer*.onnx` graphs (`LiquidAI/LFM2.5-Audio-1.5B-ONNX` at the
pinned commit) run their GroupQueryAttention nodes with `do_rotary` unset, so the cos/sin
tables they are handed are ignored and the attention has no positions at all, and those tables
are computed for theta 10,000 where the model (liquid-audio's depthformer `MHA`) uses
1,000,000. Codebooks 1-7 are then predicted from wrong logits. `check_rotary` reads both facts
from the graph (the tables' theta is fitted from their values, `satellite.modeldir.rope`);
`satellite.modeldir.repair` writes the corrected graph.

This module only reads (through `onnxread`, no `onnx` package), so the engine can refuse a
defective directory at load.
"""

from __future__ import annotations

from dataclasses import dataclass

from satellite.modeldir.onnxread import GraphInfo, NodeInfo, initializer_array
from satellite.modeldir.rope import same_theta, table_theta

MODEL_THETA = 1_000_000.0
"""The depthformer's RoPE base in liquid-audio (`MHA`'s default), for LFM2-Audio and
LFM2.5-Audio alike."""

COS_INPUT, SIN_INPUT = 7, 8
"""GroupQueryAttention's cos_cache and sin_cache inputs."""


@dataclass(frozen=True)
class RotaryCheck:
    """What one depthformer graph does about rotary embeddings."""

    attention_nodes: int
    """GroupQueryAttention nodes."""
    rotary_off: int
    """Of those, nodes handed cos/sin tables that leave `do_rotary` unset or 0."""
    interleaved: int
    """Of those, nodes with `rotary_interleaved` = 1."""
    tables: tuple[tuple[str, str], ...]
    """(cos, sin) initializer names the nodes read, each pair once."""
    theta: float | None
    """The theta the first pair of tables was computed for; None if they could not be read."""
    unreadable: tuple[str, ...] = ()
    """Tables that are not plain initializers read by `onnxread` (computed, or too large)."""

    @property
    def wrong_theta(self) -> bool:
        return self.theta is not None and not same_theta(self.theta, MODEL_THETA)

    @property
    def defective(self) -> bool:
        return self.rotary_off > 0 or self.wrong_theta

    def problems(self) -> list[str]:
        """One sentence per defect, naming the attribute or the tables' theta."""
        found: list[str] = []
        if self.rotary_off:
            found.append(
                f"{self.rotary_off} of {self.attention_nodes} GroupQueryAttention nodes leave "
                "do_rotary unset, so attention runs without rotary embeddings"
            )
        if self.wrong_theta:
            found.append(
                f"the rotary tables ({self.tables[0][0]}, ...) are for theta "
                f"{self.theta:,.0f}; the model's depthformer uses {MODEL_THETA:,.0f}"
            )
        return found


def attention_nodes(info: GraphInfo) -> list[NodeInfo]:
    return [n for n in info.nodes if n.op_type == "GroupQueryAttention"]


def _has_tables(node: NodeInfo) -> bool:
    return len(node.inputs) > SIN_INPUT and bool(node.inputs[COS_INPUT])


def check_rotary(info: GraphInfo) -> RotaryCheck:
    """Read the rotary facts of the depthformer graph `info`.

    Raises OSError when a table's external data file cannot be read."""
    nodes = attention_nodes(info)
    with_tables = [n for n in nodes if _has_tables(n)]
    pairs = tuple(dict.fromkeys((n.inputs[COS_INPUT], n.inputs[SIN_INPUT]) for n in with_tables))
    theta: float | None = None
    unreadable: list[str] = []
    for cos_name, sin_name in pairs:
        cos, sin = initializer_array(info, cos_name), initializer_array(info, sin_name)
        if cos is None or sin is None:
            unreadable += [n for n, a in ((cos_name, cos), (sin_name, sin)) if a is None]
            continue
        if theta is None:
            theta = table_theta(cos, sin)
    return RotaryCheck(
        attention_nodes=len(nodes),
        rotary_off=sum(1 for n in with_tables if not n.ints.get("do_rotary", 0)),
        interleaved=sum(1 for n in with_tables if n.ints.get("rotary_interleaved", 0)),
        tables=pairs,
        theta=theta,
        unreadable=tuple(unreadable),
    )
