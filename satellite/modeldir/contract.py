"""What each graph role must take and give, as data, and the matcher that checks a graph's
actual inputs and outputs against it.

The runtime never assumes tensor names: it reads them from the graph (or the session) and asks
`match_role` for a `Binding`, which maps each contract slot to the graph's own name. Names are
those of the official `LiquidAI/LFM2.5-Audio-1.5B-ONNX` export (and the onnxruntime-genai LFM2
convention for the decoder's caches), with a few aliases seen in other exports.

Slots
-----
decoder (LFM2 backbone, one step or a prefill chunk):
  in   inputs_embeds float32 [batch, sequence, hidden_size]   (or input_ids int64 [batch, sequence])
       attention_mask int64 [batch, total_sequence]
       past_conv.{i} [batch, hidden_size, conv_cache] for each conv layer i of config.layer_types
       past_key_values.{i}.key|value [batch, num_key_value_heads, past, head_dim] for each
       attention layer i; optional: position_ids int64 [batch, sequence],
       num_logits_to_keep int64 []
  out  logits float32 [batch, sequence, vocab_size], hidden_states float32 [batch, sequence,
       hidden_size] (final-norm output, feeds the depthformer), present_conv.{i},
       present.{i}.key|value (fed back as the matching past_* input)
audio_encoder: mel_spectrogram float32 [batch, frames, n_mels], mel_lengths int64 [batch]
       -> audio_embeddings float32 [batch, frames/8, hidden_size], audio_lengths int64 [batch]
audio_embedding: audio_codes int64 [batch, length] (flat codebook*codebook_size + code)
       -> audio_embeds float32 [batch, length, hidden_size]
depthformer, granularity "codebook_step" (official `vocoder_depthformer`, run once per codebook):
  in   hidden_states float32 [batch, hidden_size], depth_slices_in float32 [batch, codebooks,
       depthformer_dim], step_idx int64 [], prev_token int64 [batch], past_keys|past_values
       [depthformer_layers, batch, depthformer_kv_heads, past, depthformer_head_dim];
       optional seqlens_k int32 [batch], total_seq_len int32 []
  out  logits float32 [batch, codebook_size], depth_slices (-> depth_slices_in),
       new_keys (-> past_keys), new_values (-> past_values)
depthformer, granularity "frame" (a project-own export that samples a whole frame in-graph):
  in   hidden_states float32 [batch, hidden_size], uniform float32 [batch, codebooks] (random
       numbers in [0, 1), one per codebook, drive the sampling), temperature float32 [],
       top_k int64 []
  out  audio_codes int64 [batch, codebooks]
audio_detokenizer (LFM2.5): audio_codes int64 [batch, codebooks, frames] (codes 0..2047)
       -> stft_features float32 [batch, 6*frames, n_fft+2] (log-magnitude then phase)
audio_detokenizer_cached (optional, project-own; the same network for streaming, one call per
       new code frame or frames, its state fed back):
  in   audio_codes int64 [batch, codebooks, frames] (the new frames), past_conv float32
       [conv_layers, batch, detokenizer_hidden, conv_cache], past_keys|past_values float32
       [attention_layers, batch, kv_heads, past, head_dim] (keys before RoPE, at most
       sliding_window - 1 positions; zeros and length 0 to start)
  out  stft_features float32 [batch, 6*frames, n_fft+2], present_conv (-> past_conv),
       present_keys (-> past_keys), present_values (-> past_values)
mimi_decoder (LFM2-Audio v1; the project's own export): audio_codes int64 [batch, codebooks,
       frames] -> audio float32 [batch, 1, samples] (24 kHz)
mimi_decoder_cached (optional, project-own; the same Mimi decoder for streaming, its state fed
       back):
  in   audio_codes int64 [batch, codebooks, frames] (the new frames), past_conv float32
       [batch, conv_state] (every causal conv's last inputs and every transposed conv's
       overhang, flattened; zeros to start), past_keys|past_values float32 [layers, batch,
       heads, past, head_dim] (keys before RoPE, at most context - 1 positions; length 0 to
       start)
  out  audio float32 [batch, 1, samples], present_conv (-> past_conv), present_keys (->
       past_keys), present_values (-> past_values)
embed_tokens (optional graph; official exports ship a table instead): input_ids int64
       [batch, sequence] -> inputs_embeds float32 [batch, sequence, hidden_size]

Dimensions named after a config key (`hidden_size`) are checked wherever the graph fixes
them; symbolic dimensions always fit. Config keys that a manifest may omit
(`depthformer_*`, `head_dim`) are checked only when present (`head_dim` defaults to
hidden_size / num_attention_heads, `depthformer_head_dim` to depthformer_dim /
depthformer_heads).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from satellite.modeldir.manifest import UNKNOWN_RANK, TensorSpec

GRANULARITIES = ("codebook_step", "frame")
"""Depthformer graph granularities (manifest `graphs.depthformer.options.granularity`)."""

FLOAT = ("float32",)
CACHE_FLOAT = ("float32", "float16")
"""Cache tensors may be kept in float16 by an fp16 export; features and logits are float32."""
INT64 = ("int64",)
INT32 = ("int32",)

LayerKind = Literal["conv", "attention"]
LAYER_TYPES = {"conv": "conv", "full_attention": "attention", "attention": "attention"}
"""config.layer_types values -> the cache kind they carry."""


@dataclass(frozen=True)
class Dim:
    """One axis of a slot's shape: a label for messages, and optionally the config key whose
    value the graph's size must equal when the graph fixes it."""

    label: str
    key: str | None = None


def _d(label: str) -> Dim:
    return Dim(label)


def _k(key: str) -> Dim:
    return Dim(key, key)


@dataclass(frozen=True)
class Slot:
    """One input or output of a role."""

    key: str
    """Canonical name; for per-layer slots a pattern with `{i}` (the decoder layer index)."""
    dtypes: tuple[str, ...]
    shape: tuple[Dim, ...] | None
    """Expected axes; None leaves the shape unchecked."""
    required: bool = True
    aliases: tuple[str, ...] = ()
    """Other names accepted for the same tensor (patterns too)."""
    layers: LayerKind | None = None
    """Repeated once per decoder layer of this kind (from config.layer_types)."""
    one_of: str | None = None
    """Exactly one slot of the same group must be present."""
    feeds: str | None = None
    """For outputs: the input slot this output becomes on the next call (caches)."""
    doc: str = ""

    def names(self) -> tuple[str, ...]:
        return (self.key, *self.aliases)

    def describe(self) -> str:
        """`past_conv.{i} float32 [batch, hidden_size, conv_cache]`."""
        shape = "" if self.shape is None else " [" + ", ".join(d.label for d in self.shape) + "]"
        return f"{self.key} {'|'.join(self.dtypes)}{shape}"


@dataclass(frozen=True)
class RoleContract:
    role: str
    granularity: str | None
    inputs: tuple[Slot, ...]
    outputs: tuple[Slot, ...]
    doc: str


B = _d("batch")
S = _d("sequence")

DECODER = RoleContract(
    role="decoder",
    granularity=None,
    doc="LFM2 backbone: embeddings and caches in, text logits, final hidden states and caches out",
    inputs=(
        Slot("inputs_embeds", FLOAT, (B, S, _k("hidden_size")), one_of="tokens"),
        Slot("input_ids", INT64, (B, S), one_of="tokens"),
        Slot("attention_mask", INT64, (B, _d("total_sequence"))),
        Slot("position_ids", INT64, (B, S), required=False),
        Slot("num_logits_to_keep", INT64, (), required=False),
        Slot(
            "past_conv.{i}",
            CACHE_FLOAT,
            (B, _k("hidden_size"), _k("conv_cache")),
            layers="conv",
        ),
        Slot(
            "past_key_values.{i}.key",
            CACHE_FLOAT,
            (B, _k("num_key_value_heads"), _d("past_sequence"), _k("head_dim")),
            layers="attention",
        ),
        Slot(
            "past_key_values.{i}.value",
            CACHE_FLOAT,
            (B, _k("num_key_value_heads"), _d("past_sequence"), _k("head_dim")),
            layers="attention",
        ),
    ),
    outputs=(
        Slot("logits", FLOAT, (B, S, _k("vocab_size"))),
        Slot("hidden_states", FLOAT, (B, S, _k("hidden_size")), doc="final-norm output"),
        Slot(
            "present_conv.{i}",
            CACHE_FLOAT,
            (B, _k("hidden_size"), _k("conv_cache")),
            layers="conv",
            feeds="past_conv.{i}",
        ),
        Slot(
            "present.{i}.key",
            CACHE_FLOAT,
            (B, _k("num_key_value_heads"), _d("total_sequence"), _k("head_dim")),
            layers="attention",
            feeds="past_key_values.{i}.key",
        ),
        Slot(
            "present.{i}.value",
            CACHE_FLOAT,
            (B, _k("num_key_value_heads"), _d("total_sequence"), _k("head_dim")),
            layers="attention",
            feeds="past_key_values.{i}.value",
        ),
    ),
)

AUDIO_ENCODER = RoleContract(
    role="audio_encoder",
    granularity=None,
    doc="FastConformer + adapter: log-mel frames in, one embedding per 80 ms out",
    inputs=(
        Slot("mel_spectrogram", FLOAT, (B, _d("frames"), _k("n_mels")), aliases=("mel_features",)),
        Slot("mel_lengths", INT64, (B,)),
    ),
    outputs=(
        Slot("audio_embeddings", FLOAT, (B, _d("embeddings"), _k("hidden_size"))),
        Slot("audio_lengths", INT64, (B,), aliases=("output_lengths",)),
    ),
)

AUDIO_EMBEDDING = RoleContract(
    role="audio_embedding",
    granularity=None,
    doc="lookup of flat audio codes (codebook * codebook_size + code)",
    inputs=(Slot("audio_codes", INT64, (B, _d("length"))),),
    outputs=(Slot("audio_embeds", FLOAT, (B, _d("length"), _k("hidden_size"))),),
)

_DEPTH_CACHE = (
    _k("depthformer_layers"),
    B,
    _k("depthformer_kv_heads"),
    _d("past"),
    _k("depthformer_head_dim"),
)

DEPTHFORMER_STEP = RoleContract(
    role="depthformer",
    granularity="codebook_step",
    doc="one codebook of one audio frame per call; the caller samples and loops 8 times",
    inputs=(
        Slot("hidden_states", FLOAT, (B, _k("hidden_size"))),
        Slot("depth_slices_in", FLOAT, (B, _k("codebooks"), _k("depthformer_dim"))),
        Slot("step_idx", INT64, None),
        Slot("prev_token", INT64, (B,)),
        Slot("past_keys", CACHE_FLOAT, _DEPTH_CACHE),
        Slot("past_values", CACHE_FLOAT, _DEPTH_CACHE),
        Slot("seqlens_k", INT32, (B,), required=False),
        Slot("total_seq_len", INT32, None, required=False),
    ),
    outputs=(
        Slot("logits", FLOAT, (B, _k("codebook_size"))),
        Slot(
            "depth_slices",
            FLOAT,
            (B, _k("codebooks"), _k("depthformer_dim")),
            feeds="depth_slices_in",
        ),
        Slot("new_keys", CACHE_FLOAT, _DEPTH_CACHE, feeds="past_keys"),
        Slot("new_values", CACHE_FLOAT, _DEPTH_CACHE, feeds="past_values"),
    ),
)

DEPTHFORMER_FRAME = RoleContract(
    role="depthformer",
    granularity="frame",
    doc="a whole audio frame per call, sampled in the graph from the caller's random numbers",
    inputs=(
        Slot("hidden_states", FLOAT, (B, _k("hidden_size"))),
        Slot("uniform", FLOAT, (B, _k("codebooks"))),
        Slot("temperature", FLOAT, ()),
        Slot("top_k", INT64, ()),
    ),
    outputs=(Slot("audio_codes", INT64, (B, _k("codebooks"))),),
)

AUDIO_DETOKENIZER = RoleContract(
    role="audio_detokenizer",
    granularity=None,
    doc="LFM2.5 detokenizer: codes to STFT log-magnitude and phase (ISTFT outside the graph)",
    inputs=(Slot("audio_codes", INT64, (B, _k("codebooks"), _d("frames"))),),
    outputs=(Slot("stft_features", FLOAT, (B, _d("stft_frames"), _d("bins"))),),
)

_DETOK_CONV = (_d("conv_layers"), B, _d("detokenizer_hidden"), _d("conv_cache"))
_DETOK_KV = (_d("attention_layers"), B, _d("kv_heads"), _d("past"), _d("head_dim"))
"""The detokenizer trunk's own numbers, which the manifest's config (the backbone's) does not
hold: only the rank is checked."""

AUDIO_DETOKENIZER_CACHED = RoleContract(
    role="audio_detokenizer_cached",
    granularity=None,
    doc="LFM2.5 detokenizer for streaming: new code frames and fed-back state in, their STFT "
    "frames and the next state out",
    inputs=(
        Slot("audio_codes", INT64, (B, _k("codebooks"), _d("frames"))),
        Slot("past_conv", CACHE_FLOAT, _DETOK_CONV),
        Slot("past_keys", CACHE_FLOAT, _DETOK_KV),
        Slot("past_values", CACHE_FLOAT, _DETOK_KV),
    ),
    outputs=(
        Slot("stft_features", FLOAT, (B, _d("stft_frames"), _d("bins"))),
        Slot("present_conv", CACHE_FLOAT, _DETOK_CONV, feeds="past_conv"),
        Slot("present_keys", CACHE_FLOAT, _DETOK_KV, feeds="past_keys"),
        Slot("present_values", CACHE_FLOAT, _DETOK_KV, feeds="past_values"),
    ),
)

MIMI_DECODER = RoleContract(
    role="mimi_decoder",
    granularity=None,
    doc="Mimi decoder (LFM2-Audio v1): codes to 24 kHz audio",
    inputs=(Slot("audio_codes", INT64, (B, _k("codebooks"), _d("frames")), aliases=("codes",)),),
    outputs=(Slot("audio", FLOAT, (B, _d("channels"), _d("samples")), aliases=("audio_values",)),),
)

_MIMI_CONV = (B, _d("conv_state"))
_MIMI_KV = (_d("layers"), B, _d("heads"), _d("past"), _d("head_dim"))
"""Mimi's own numbers, which the manifest's config (the backbone's) does not hold."""

MIMI_DECODER_CACHED = RoleContract(
    role="mimi_decoder_cached",
    granularity=None,
    doc="Mimi decoder for streaming: new code frames and fed-back state in, their audio and the "
    "next state out",
    inputs=(
        Slot("audio_codes", INT64, (B, _k("codebooks"), _d("frames"))),
        Slot("past_conv", CACHE_FLOAT, _MIMI_CONV),
        Slot("past_keys", CACHE_FLOAT, _MIMI_KV),
        Slot("past_values", CACHE_FLOAT, _MIMI_KV),
    ),
    outputs=(
        Slot("audio", FLOAT, (B, _d("channels"), _d("samples"))),
        Slot("present_conv", CACHE_FLOAT, _MIMI_CONV, feeds="past_conv"),
        Slot("present_keys", CACHE_FLOAT, _MIMI_KV, feeds="past_keys"),
        Slot("present_values", CACHE_FLOAT, _MIMI_KV, feeds="past_values"),
    ),
)

EMBED_TOKENS = RoleContract(
    role="embed_tokens",
    granularity=None,
    doc="text token embeddings",
    inputs=(Slot("input_ids", INT64, (B, S)),),
    outputs=(Slot("inputs_embeds", FLOAT, (B, S, _k("hidden_size"))),),
)

CONTRACTS: dict[tuple[str, str | None], RoleContract] = {
    (c.role, c.granularity): c
    for c in (
        DECODER,
        AUDIO_ENCODER,
        AUDIO_EMBEDDING,
        DEPTHFORMER_STEP,
        DEPTHFORMER_FRAME,
        AUDIO_DETOKENIZER,
        AUDIO_DETOKENIZER_CACHED,
        MIMI_DECODER,
        MIMI_DECODER_CACHED,
        EMBED_TOKENS,
    )
}


class ContractError(ValueError):
    """No contract for a role or granularity; the message says which."""


def contract_for(role: str, options: Mapping[str, Any] | None = None) -> RoleContract:
    """The contract of `role`; the depthformer's depends on `options["granularity"]`
    (default `codebook_step`)."""
    if role == "depthformer":
        granularity = (options or {}).get("granularity", "codebook_step")
        if granularity not in GRANULARITIES:
            raise ContractError(
                f"options.granularity: {granularity!r} is not one of {', '.join(GRANULARITIES)}"
            )
        return CONTRACTS[(role, str(granularity))]
    try:
        return CONTRACTS[(role, None)]
    except KeyError:
        raise ContractError(f"{role!r} is not a graph role") from None


def config_dims(config: Mapping[str, Any]) -> dict[str, int]:
    """The integer config numbers shapes are checked against, with `head_dim` derived from
    hidden_size / num_attention_heads when the config does not give it."""
    dims = {k: v for k, v in config.items() if isinstance(v, int) and not isinstance(v, bool)}
    heads = dims.get("num_attention_heads")
    if "head_dim" not in dims and heads and dims.get("hidden_size", 0) % heads == 0:
        dims["head_dim"] = dims["hidden_size"] // heads
    depth_heads = dims.get("depthformer_heads")
    depth_dim = dims.get("depthformer_dim", 0)
    if "depthformer_head_dim" not in dims and depth_heads and depth_dim % depth_heads == 0:
        dims["depthformer_head_dim"] = depth_dim // depth_heads
    return dims


def layer_indices(config: Mapping[str, Any], kind: LayerKind) -> list[int]:
    """Decoder layer indices whose cache is of `kind`, from config.layer_types."""
    types = config.get("layer_types") or []
    return [i for i, t in enumerate(types) if LAYER_TYPES.get(str(t)) == kind]


@dataclass(frozen=True)
class Binding:
    """Contract slots -> the graph's own tensor names, for the runtime.

    Keys are slot keys with `{i}` filled in (`past_conv.0`, `present.2.key`); slots the graph
    lacks (optional ones, the unused member of a one-of group) have no key."""

    role: str
    granularity: str | None
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    feedback: tuple[tuple[str, str], ...] = ()
    """(output name, input name) pairs: after each call, feed the output back as the input."""

    def input_name(self, key: str) -> str:
        """The graph's name for input slot `key`; KeyError if the graph lacks it."""
        return self.inputs[key]

    def output_name(self, key: str) -> str:
        return self.outputs[key]


@dataclass(frozen=True)
class Match:
    binding: Binding
    problems: tuple[str, ...]
    """Sentences naming the input or output and what is wrong; empty when the graph fits."""


def match_role(
    role: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    config: Mapping[str, Any],
    options: Mapping[str, Any] | None = None,
) -> Match:
    """Check a graph's inputs and outputs against `role`'s contract and map slots to names.

    Raises ContractError for an unknown role or granularity."""
    contract = contract_for(role, options)
    dims = config_dims(config)
    problems: list[str] = []
    bound_in = _bind_side("input", contract.inputs, inputs, config, dims, problems, role)
    bound_out = _bind_side("output", contract.outputs, outputs, config, dims, problems, role)
    feedback: list[tuple[str, str]] = []
    for slot in contract.outputs:
        if slot.feeds is None:
            continue
        for key in _expand(slot, config):
            target = _fill(slot.feeds, key, slot.key)
            if key in bound_out and target in bound_in:
                feedback.append((bound_out[key], bound_in[target]))
    binding = Binding(
        role=role,
        granularity=contract.granularity,
        inputs=bound_in,
        outputs=bound_out,
        feedback=tuple(feedback),
    )
    return Match(binding=binding, problems=tuple(problems))


_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(bfloat16)": "bfloat16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}


def ort_dtype(type_name: str) -> str:
    """onnxruntime's `tensor(float)` -> the manifest's `float32`."""
    return _ORT_TYPES.get(type_name, type_name)


def session_specs(session: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an `onnxruntime.InferenceSession` as TensorSpecs, so the runtime
    can bind a loaded session: `match_role(role, *session_specs(session), config, options)`.
    Unnamed dynamic dimensions become `"?"`."""

    def spec(arg: Any) -> TensorSpec:
        shape = arg.shape
        dims: list[int | str] = (
            [UNKNOWN_RANK]
            if shape is None
            else [d if isinstance(d, int) else (d or "?") for d in shape]
        )
        return TensorSpec(name=arg.name, dtype=ort_dtype(arg.type), shape=dims)

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


def _expand(slot: Slot, config: Mapping[str, Any]) -> list[str]:
    """Slot keys with `{i}` filled in for each layer of the slot's kind."""
    if slot.layers is None:
        return [slot.key]
    return [slot.key.format(i=i) for i in layer_indices(config, slot.layers)]


def _fill(pattern: str, key: str, slot_pattern: str) -> str:
    """The layer index of `key` (an expansion of `slot_pattern`) put into `pattern`."""
    if "{i}" not in slot_pattern:
        return pattern
    found = _pattern_regex(slot_pattern).fullmatch(key)
    return pattern.format(i=found.group(1)) if found else pattern


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace(re.escape("{i}"), r"(\d+)"))


def _bind_side(
    side: str,
    slots: tuple[Slot, ...],
    tensors: Sequence[TensorSpec],
    config: Mapping[str, Any],
    dims: Mapping[str, int],
    problems: list[str],
    role: str,
) -> dict[str, str]:
    by_name = {t.name: t for t in tensors}
    used: set[str] = set()
    bound: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    layer_types = list(config.get("layer_types") or [])
    for slot in slots:
        expected = _expand(slot, config)
        for key in expected:
            index = _fill("{i}", key, slot.key) if slot.layers else None
            names = [n.format(i=index) if index is not None else n for n in slot.names()]
            found = next((n for n in names if n in by_name), None)
            if found is None:
                if slot.one_of is not None:
                    continue
                if slot.required:
                    why = ""
                    if slot.layers is not None:
                        why = f" (config layer_types[{index}] is {layer_types[int(index or 0)]})"
                    problems.append(
                        f"{side} {key} is missing{why}; the {role} contract wants "
                        f"{_describe_key(slot, key)}"
                    )
                continue
            used.add(found)
            bound[key] = found
            if slot.one_of is not None:
                groups.setdefault(slot.one_of, []).append(found)
            problems.extend(_check_tensor(side, by_name[found], slot, dims))
        if slot.layers is not None:
            # names of this slot's pattern for layers of another kind, or past the last layer
            for pattern in slot.names():
                regex = _pattern_regex(pattern)
                for tensor in tensors:
                    hit = regex.fullmatch(tensor.name)
                    if hit is None or tensor.name in used:
                        continue
                    used.add(tensor.name)
                    layer = int(hit.group(1))
                    if layer < len(layer_types):
                        what = f"config layer_types[{layer}] is {layer_types[layer]}"
                    else:
                        what = f"config layer_types has {len(layer_types)} layers"
                    problems.append(
                        f"{side} {tensor.name} does not fit the config: {what} "
                        f"(the graph's caches must follow config.layer_types)"
                    )
    for group in sorted({s.one_of for s in slots if s.one_of is not None}):
        members = [s for s in slots if s.one_of == group]
        found_names = groups.get(group, [])
        if not found_names:
            wanted = " or ".join(s.describe() for s in members)
            problems.append(f"{side} missing: the {role} contract wants {wanted}")
        elif len(found_names) > 1:
            problems.append(
                f"{side}s {' and '.join(found_names)} are alternatives; the {role} graph must "
                "have exactly one of them"
            )
    if side == "input":
        for tensor in tensors:
            if tensor.name not in used:
                known = ", ".join(s.key for s in slots)
                problems.append(
                    f"input {tensor.name} is not part of the {role} contract, so the runtime "
                    f"cannot feed it (known inputs: {known})"
                )
    return bound


def _describe_key(slot: Slot, key: str) -> str:
    return slot.describe().replace(slot.key, key, 1)


def _check_tensor(side: str, tensor: TensorSpec, slot: Slot, dims: Mapping[str, int]) -> list[str]:
    problems: list[str] = []
    if tensor.dtype not in slot.dtypes:
        problems.append(
            f"{side} {tensor.name} has element type {tensor.dtype}, "
            f"expected {' or '.join(slot.dtypes)}"
        )
    if slot.shape is None or tensor.shape == [UNKNOWN_RANK]:
        return problems
    want = slot.shape
    if len(tensor.shape) != len(want):
        labels = ", ".join(d.label for d in want)
        problems.append(
            f"{side} {tensor.name} has rank {len(tensor.shape)} {_shape(tensor.shape)}, "
            f"expected rank {len(want)} [{labels}]"
        )
        return problems
    for axis, (actual, dim) in enumerate(zip(tensor.shape, want, strict=True)):
        if dim.key is None or not isinstance(actual, int) or dim.key not in dims:
            continue
        if actual != dims[dim.key]:
            problems.append(
                f"{side} {tensor.name} axis {axis} is {actual}, expected config "
                f"{dim.key} = {dims[dim.key]} (shape {_shape(tensor.shape)})"
            )
    return problems


def _shape(shape: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
