"""A streaming detokenizer for a published model: `model optimize` and `model fetch` add one.

The published export has only the stateless `audio_detokenizer` graph, which the engine re-runs
over the 17 code frames before the new ones for every call (`satellite.engine.detokenize.
WindowedDecoder`): 48 ms a call for one new frame on the full-size q4 model (AMD EPYC, 2
threads), where the project's own `audio_detokenizer_cached` graph takes the new frames alone
with its state fed back. This module writes that cached graph for a published directory from
the published graph's own weights:

- **Weights, as they are.** Float initializers are read as stored; a q4 projection is carried
  over as the `MatMulNBits` it is packed in (input B, scales, zero points and the node's
  attributes: `lfm_toolchain.layers.PackedLinear`), so the new graph computes with the very
  numbers of the published one. Each weight is found under either spelling known: this
  project's `published` layout (`lfm.layers.0.conv.in_proj.weight.T`) and the export's own
  builder (Liquid4All/onnx-export's `AudioDetokenizerBuilder`: `lfm.layers.0.in_proj.weight`,
  `q.weight`, `q_ln.weight`, `emb.weight`, a `[H, 1, 3]` conv kernel), with the quantizers'
  suffixes (`_Q4`, `_quant`).
- **Shape, from the weights.** Layers, their kinds (attention where there are q/k/v
  projections), widths, heads (from the q/k norms' width), the conv kernel, the attention
  window, RoPE theta and the norms' epsilon are read off the graph; what it does not say takes
  the LFM2.5-Audio detokenizer's values (window 30, theta 1e6, epsilon 1e-5, upsampling 6).
- **Checked before it is used.** The published graph decodes random codes in one shot
  (CHECK_FRAMES frames, well past the attention window); the new graph and the windowed path
  stream the same codes in uneven pieces. Only when the new graph is as close to the one-shot
  audio as the windowed path is (`Agreement`) does the manifest name it. Otherwise its files are removed and the windowed detokenizer stays: an export laid out
  in a way not known here costs speed, never correct speech.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from lfm_toolchain.config import BackboneConfig, DetokenizerConfig, LayerType
from lfm_toolchain.detokenizer import CACHED_MAX_FRAMES, build_cached_detokenizer
from lfm_toolchain.layers import PackedLinear
from lfm_toolchain.onnx_graph import write_graph
from lfm_toolchain.weights import Array
from satellite.engine.detokenize import (
    CachedDecoder,
    FrameDecoder,
    StreamingDetokenizer,
    WindowedDecoder,
    bind,
)
from satellite.engine.sessions import plain_session_options
from satellite.errors import UserError
from satellite.modeldir.make import data_file_paths
from satellite.modeldir.manifest import FileEntry, GraphEntry, Manifest, read_manifest, sha256_file
from satellite.modeldir.onnxread import read_graph
from satellite.modeldir.tensorio import TensorReadError, read_array

ROLE = "audio_detokenizer_cached"
SOURCE_ROLE = "audio_detokenizer"
SUFFIX = ".cached"
"""`onnx/audio_detokenizer_q4.onnx` -> `onnx/audio_detokenizer_q4.cached.onnx`."""
CHECK_FRAMES = 40
"""Code frames decoded by both graphs before the new one is used (240 positions: eight times
the attention window)."""
CHECK_PIECES = (1, 2, 4, 1, 8, 3, 5, 16)
"""How the check's frames are pushed: uneven pieces, as a reply's batches are."""
CHECK_TOLERANCE = 1e-3
"""Of full scale: the new graph may always be this far from the published graph's one-shot
decode (float graphs agree to about 1e-6)..."""
CHECK_FACTOR = 2.0
"""... or this many times as far as the windowed path is (see `Agreement.windowed`). A weight,
window or RoPE theta read wrongly puts it off by a good part of the signal (tested)."""
CHECK_SEED = 2026

DEFAULT_WINDOW = 30
DEFAULT_THETA = 1_000_000.0
DEFAULT_EPS = 1e-5
UPSAMPLE = 6
PACKED_SUFFIXES = ("_Q4", "_quant", "_Q8")
"""What the quantizers append to a projection's name for its packed weight."""


class UnknownDetokenizerError(UserError):
    """The published detokenizer's weights are not laid out in a way known here."""


@dataclass(frozen=True)
class PublishedDetokenizer:
    """A published detokenizer graph's weights, by the checkpoint's names."""

    config: DetokenizerConfig
    weights: dict[str, Array]
    """Float weights (projections in torch's [out, in] layout)."""
    packed: dict[str, PackedLinear]
    """Projections packed as MatMulNBits, as they are."""


def _linear_spellings(key: str) -> list[str]:
    """Names a projection's (transposed) weight may have in a published graph."""
    names = [f"{key}.T"]
    parts = key.split(".")
    if key == "lin.weight":
        return [*names, key]
    if parts[:2] == ["lfm", "layers"]:
        layer = ".".join(parts[:3])
        short = {
            "conv.in_proj.weight": "in_proj.weight",
            "conv.out_proj.weight": "out_proj.weight",
            "feed_forward.w1.weight": "w1.weight",
            "feed_forward.w2.weight": "w2.weight",
            "feed_forward.w3.weight": "w3.weight",
            "self_attn.q_proj.weight": "q.weight",
            "self_attn.k_proj.weight": "k.weight",
            "self_attn.v_proj.weight": "v.weight",
            "self_attn.out_proj.weight": "o.weight",
        }.get(".".join(parts[3:]))
        if short:
            names.append(f"{layer}.{short}")
    return names


def _plain_spellings(key: str) -> list[str]:
    """Names a float weight other than a projection may have."""
    if key == "emb.emb.weight":
        return [key, "emb.weight"]
    for long, short in (("self_attn.q_layernorm", "q_ln"), ("self_attn.k_layernorm", "k_ln")):
        if long in key:
            return [key, key.replace(long, short)]
    return [key]


class _Graph:
    """A published detokenizer graph's initializers and MatMulNBits nodes, by name."""

    def __init__(self, model: onnx.ModelProto, where: Path) -> None:
        self.where = where
        self.model = model
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.packed: dict[str, onnx.NodeProto] = {}
        for node in model.graph.node:
            if node.op_type == "MatMulNBits" and len(node.input) > 1:
                stem = node.input[1]
                for suffix in PACKED_SUFFIXES:
                    stem = stem.removesuffix(suffix)
                self.packed[stem] = node

    def array(self, name: str) -> Array:
        try:
            return read_array(self.initializers[name], self.where.parent)
        except (OSError, TensorReadError) as err:
            raise UnknownDetokenizerError(f"{self.where}: cannot read {name}: {err}") from None

    def plain(self, key: str) -> Array | None:
        for name in _plain_spellings(key):
            if name in self.initializers:
                return self.array(name)
        return None

    def linear(self, key: str) -> Array | PackedLinear | None:
        """The projection `key`: its [out, in] float weight, or its packed MatMulNBits."""
        for name in _linear_spellings(key):
            node = self.packed.get(name)
            if node is not None:
                return self._packed(key, node)
            if name in self.initializers:
                return np.ascontiguousarray(self.array(name).T)
        return None

    def _packed(self, key: str, node: onnx.NodeProto) -> PackedLinear:
        inputs = list(node.input) + [""] * (4 - len(node.input))
        if any(name for name in node.input[4:]):
            raise UnknownDetokenizerError(
                f"{self.where}: {key}: a MatMulNBits with inputs beyond zero points "
                f"({', '.join(node.input[4:])}) is not carried over"
            )
        attributes = {a.name: int(onnx.helper.get_attribute_value(a)) for a in node.attribute}
        return PackedLinear(
            packed=self.array(inputs[1]),
            scales=self.array(inputs[2]),
            zero_points=self.array(inputs[3]) if inputs[3] else None,
            attributes=attributes,
        )

    def window(self) -> int:
        """The attention window: GroupQueryAttention's `local_window_size`, or the export's
        mask (`Greater(distance, -window)`), else the LFM2.5 detokenizer's 30."""
        for node in self.model.graph.node:
            if node.op_type == "GroupQueryAttention":
                for a in node.attribute:
                    if a.name == "local_window_size" and a.i > 0:
                        return int(a.i)
            if node.op_type == "Greater" and node.input[1] in self.initializers:
                value = self.array(node.input[1])
                if value.size == 1 and int(value) < 0:
                    return -int(value)
        return DEFAULT_WINDOW

    def theta(self, head_dim: int) -> float:
        """RoPE theta from the graph's tables (a cos cache, or inverse frequencies)."""
        for name, tensor in self.initializers.items():
            if name.endswith("rope_inv_freq"):
                inv = self.array(name).reshape(-1)
                if inv.size > 1 and 0 < inv[1] < 1:
                    return _rounded(float(inv[1]) ** (-head_dim / 2.0))
            if name.endswith("cos_cache") and len(tensor.dims) == 2 and tensor.dims[0] > 1:
                angle = float(np.arccos(np.clip(self.array(name)[1, 1], -1.0, 1.0)))
                if 0 < angle < math.pi:
                    return _rounded(angle ** (-head_dim / 2.0))
        return DEFAULT_THETA

    def epsilon(self) -> float:
        for node in self.model.graph.node:
            if node.op_type in ("SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"):
                for a in node.attribute:
                    if a.name == "epsilon":
                        return float(a.f)
        return DEFAULT_EPS


def _rounded(theta: float) -> float:
    """A theta read back from float32 tables, to the 4 significant digits they hold."""
    return float(f"{theta:.4g}")


def _width(item: Array | PackedLinear) -> int:
    """Output width of a projection."""
    if isinstance(item, PackedLinear):
        return int(item.attributes["N"])
    return int(item.shape[0])


def read_published(path: Path) -> PublishedDetokenizer:
    """The weights and shape of the published detokenizer graph at `path`. Raises
    UnknownDetokenizerError naming the first weight it cannot find."""
    try:  # the weights are read from their files as needed (`satellite.modeldir.tensorio`)
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError) as err:
        raise UnknownDetokenizerError(f"{path}: cannot read the graph: {err}") from None
    graph = _Graph(model, path)

    def need(item: Any, key: str) -> Any:
        if item is None:
            raise UnknownDetokenizerError(f"{path}: no weight for {key} under any known name")
        return item

    weights: dict[str, Array] = {}
    packed: dict[str, PackedLinear] = {}

    def take_linear(key: str) -> Array | PackedLinear:
        item: Array | PackedLinear = need(graph.linear(key), key)
        if isinstance(item, PackedLinear):
            packed[key] = item
        else:
            weights[key] = item
        return item

    def take_plain(key: str) -> Array:
        array: Array = need(graph.plain(key), key)
        weights[key] = array
        return array

    emb = take_plain("emb.emb.weight")
    layers = 0
    while graph.plain(f"lfm.layers.{layers}.operator_norm.weight") is not None:
        layers += 1
    if layers == 0:
        raise UnknownDetokenizerError(f"{path}: no trunk layers (lfm.layers.N.operator_norm)")
    kinds: list[LayerType] = []
    head_dim = heads = kv_heads = intermediate = 0
    conv_cache = 3
    for i in range(layers):
        n = f"lfm.layers.{i}"
        take_plain(f"{n}.operator_norm.weight")
        take_plain(f"{n}.ffn_norm.weight")
        intermediate = _width(take_linear(f"{n}.feed_forward.w1.weight"))
        take_linear(f"{n}.feed_forward.w2.weight")
        take_linear(f"{n}.feed_forward.w3.weight")
        if graph.linear(f"{n}.self_attn.q_proj.weight") is not None:
            kinds.append("sliding_attention")
            q = take_linear(f"{n}.self_attn.q_proj.weight")
            k = take_linear(f"{n}.self_attn.k_proj.weight")
            take_linear(f"{n}.self_attn.v_proj.weight")
            take_linear(f"{n}.self_attn.out_proj.weight")
            head_dim = int(take_plain(f"{n}.self_attn.q_layernorm.weight").size)
            take_plain(f"{n}.self_attn.k_layernorm.weight")
            heads, kv_heads = _width(q) // head_dim, _width(k) // head_dim
        else:
            kinds.append("conv")
            take_linear(f"{n}.conv.in_proj.weight")
            take_linear(f"{n}.conv.out_proj.weight")
            kernel = _conv_kernel(graph, n)
            weights[f"{n}.conv.conv.weight"] = kernel
            conv_cache = int(kernel.shape[-1])
    take_plain("lfm.embedding_norm.weight")
    lin = take_linear("lin.weight")
    take_plain("lin.bias")
    if not heads:
        raise UnknownDetokenizerError(f"{path}: the trunk has no attention layer")
    codebooks = 8  # the contract's (`audio_codes` [batch, 8, frames])
    backbone = BackboneConfig(
        hidden_size=int(emb.shape[1]),
        layer_types=tuple(kinds),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        vocab_size=int(emb.shape[0]),
        conv_cache=conv_cache,
        rope_theta=graph.theta(head_dim),
        norm_eps=graph.epsilon(),
        sliding_window=graph.window(),
    )
    config = DetokenizerConfig(
        backbone=backbone,
        codebooks=codebooks,
        codebook_size=int(emb.shape[0]) // codebooks,
        upsample=UPSAMPLE,
        n_fft=_width(lin) - 2,
    )
    return PublishedDetokenizer(config, weights, packed)


def _conv_kernel(graph: _Graph, layer: str) -> Array:
    """[H, 1, k]: the export's one tensor, or this project's taps `...conv.conv.weight.j`."""
    for name in (f"{layer}.conv.conv.weight", f"{layer}.conv.weight"):
        if name in graph.initializers:
            kernel = graph.array(name)
            return kernel.reshape(kernel.shape[0], 1, -1)
    taps: list[Array] = []
    j = 0
    while f"{layer}.conv.conv.weight.{j}" in graph.initializers:
        taps.append(graph.array(f"{layer}.conv.conv.weight.{j}"))
        j += 1
    if not taps:
        raise UnknownDetokenizerError(f"{graph.where}: no conv kernel for {layer}")
    return np.stack(taps, axis=-1)[:, None, :]


def cached_name(graph_file: str) -> str:
    """`onnx/audio_detokenizer_q4.onnx` -> `onnx/audio_detokenizer_q4.cached.onnx`."""
    path = PurePosixPath(graph_file)
    return str(path.with_name(path.name.removesuffix(".onnx") + SUFFIX + ".onnx"))


@dataclass(frozen=True)
class Agreement:
    """How closely each streaming path follows the published graph's one-shot decode of the
    check's codes (max abs difference of the samples, of full scale)."""

    cached: float
    windowed: float
    """The windowed path the engine runs without the new graph: with 4-bit weights at
    onnxruntime's accuracy level 4 (int8 activations) it is off by some 1e-3 itself, the
    rounding of activations that differ in their last bits; float graphs by about 1e-6."""

    @property
    def ok(self) -> bool:
        return self.cached <= max(CHECK_TOLERANCE, CHECK_FACTOR * self.windowed)


def check_against(directory: Path, manifest: Manifest, cached: GraphEntry) -> Agreement:
    """Decode the check's codes (pushed in CHECK_PIECES) with the new graph and the windowed
    path, and compare each with the published graph's one-shot decode."""
    codebooks = int(manifest.config["codebooks"])
    eoa = int(manifest.config["codebook_size"]) - 1

    def detokenizer(role: str, entry: GraphEntry) -> StreamingDetokenizer:
        where = directory / entry.file
        session = ort.InferenceSession(
            str(where), plain_session_options(), providers=["CPUExecutionProvider"]
        )
        graph = bind(role, session, manifest.config, entry.options, str(where))
        decoder: FrameDecoder = (
            CachedDecoder(graph, codebooks) if role == ROLE else WindowedDecoder(graph, codebooks)
        )
        return StreamingDetokenizer(decoder, end_of_audio=eoa, codebook_size=eoa)

    source = manifest.graphs[SOURCE_ROLE]
    codes = np.random.default_rng(CHECK_SEED).integers(0, eoa, size=(codebooks, CHECK_FRAMES))
    oneshot = detokenizer(SOURCE_ROLE, source).decode(codes)
    bounds = np.cumsum([0, *CHECK_PIECES])

    def streamed(detok: StreamingDetokenizer) -> float:
        pieces = [detok.push(codes[:, a:b]) for a, b in itertools.pairwise(bounds)]
        samples = np.concatenate([*pieces, detok.finish()])
        if samples.shape != oneshot.shape:
            return math.inf
        return float(np.max(np.abs(samples - oneshot), initial=0.0))

    return Agreement(
        cached=streamed(detokenizer(ROLE, cached)),
        windowed=streamed(detokenizer(SOURCE_ROLE, source)),
    )


def add_streaming_detokenizer(
    directory: Path, manifest: Manifest | None = None
) -> tuple[Manifest, list[str]]:
    """Give a published directory an `audio_detokenizer_cached` graph made from its
    `audio_detokenizer` (see the module docstring) and name it in the manifest. Returns the
    manifest and what was done; nothing when the directory has one already or no stateless
    graph, and a line saying why when the published graph's weights are not known or the new
    graph did not agree with it (its files are removed then)."""
    manifest = manifest or read_manifest(directory)
    source = manifest.graphs.get(SOURCE_ROLE)
    if source is None or ROLE in manifest.graphs:
        return manifest, []
    target = cached_name(source.file)
    stem = PurePosixPath(target).name.removesuffix(".onnx")
    folder = directory / PurePosixPath(target).parent
    written = [folder / f"{stem}.onnx", folder / f"{stem}.onnx_data"]
    try:
        published = read_published(directory / source.file)
    except UnknownDetokenizerError as err:
        return manifest, [f"kept the windowed detokenizer: {err}"]
    try:
        write_graph(
            folder,
            stem,
            lambda g: build_cached_detokenizer(
                g, published.config, published.weights, max_frames=CACHED_MAX_FRAMES,
                packed=published.packed,
            ),
        )  # fmt: skip
        info = read_graph(directory / target)
        entry = GraphEntry(
            file=target,
            data_files=data_file_paths(target, info.external_data),
            inputs=list(info.inputs),
            outputs=list(info.outputs),
            options={"max_frames": CACHED_MAX_FRAMES, "from": source.file},
        )
        agreement = check_against(directory, manifest, entry)
    except Exception:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    if not agreement.ok:
        for path in written:
            path.unlink(missing_ok=True)
        return manifest, [
            f"kept the windowed detokenizer: the streaming graph made from {source.file} was "
            f"{agreement.cached:.3g} of full scale off its one-shot audio, the windowed path "
            f"{agreement.windowed:.3g}"
        ]
    files = dict(manifest.files)
    for name in (entry.file, *entry.data_files):
        path = directory / name
        files[name] = FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
    graphs = {**manifest.graphs, ROLE: entry}
    manifest = dataclasses.replace(manifest, graphs=graphs, files=files)
    manifest.write(directory)
    return manifest, [
        f"{source.file} -> {target}: the detokenizer streams (new frames only, its state fed "
        f"back); {agreement.cached:.2g} of full scale off {source.file}'s one-shot audio on "
        f"{CHECK_FRAMES} frames (the windowed path: {agreement.windowed:.2g})"
    ]
