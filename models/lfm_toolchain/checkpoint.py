"""Read a real LFM2-Audio checkpoint directory in the Hugging Face hub's layout.

The layout is what liquid-audio's `from_pretrained` methods read (LFM2.5-Audio-1.5B, and
LFM2-Audio-1.5B for v1):

    config.json                  nested config: `lfm` (transformers' Lfm2Config), `encoder`
                                 (ConformerEncoderConfig), `preprocessor`, `depthformer`, plus
                                 codebooks, interleaving and training-only numbers
    model.safetensors            the main state dict (or model.safetensors.index.json + shards)
    tokenizer.json, tokenizer_config.json, special_tokens_map.json, chat_template.jinja
    audio_detokenizer/config.json, audio_detokenizer/model.safetensors
                                 LFM2.5-Audio's detokenizer (an Lfm2Config; `sliding_attention`
                                 layers, `sliding_window`)
    tokenizer-e351c8d8-checkpoint125.safetensors
                                 LFM2-Audio (v1): the Mimi codec's weights (`lfm_toolchain.mimi`
                                 names), instead of the above

`read_checkpoint` parses config.json into `lfm_toolchain.config` numbers, refusing with one line naming
the file and the key what is missing, of the wrong type, unknown (the reference's own config
classes would refuse it too) or not supported by the graphs; it opens the safetensors files
without loading them (memory-mapped, one tensor converted at a time, so a full-size conversion
holds one tensor in memory) and checks every tensor's name and shape against `lfm_toolchain.weights`.

Tensors are returned as float32 (bf16 is widened exactly by a 16-bit shift, fp16 by numpy);
integer tensors keep their type. Tensors the graphs do not use are ignored, as liquid-audio's
loader ignores them, and listed in `Checkpoint.ignored`; tied copies that must equal their
source (`depth_embeddings.*.to_logits` when the depthformer ties them) are checked.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lfm_toolchain.config import (
    AudioModelConfig,
    BackboneConfig,
    DepthformerConfig,
    DetokenizerConfig,
    EncoderConfig,
    PreprocessorConfig,
    tiny,
)
from lfm_toolchain.mimi import MimiConfig, full_mimi, mimi_specs, tiny_mimi
from lfm_toolchain.weights import Array, check_layout, detokenizer_specs, model_specs
from satellite.errors import UserError
from satellite.modeldir.sidefiles import read_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
DETOKENIZER_DIR = "audio_detokenizer"
MIMI_WEIGHTS = "tokenizer-e351c8d8-checkpoint125.safetensors"
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
ARCHITECTURES = ("LFM2AudioModel", "Lfm2AudioForConditionalGeneration")
"""`architectures` values of LFM2-Audio configs (liquid-audio's class, the hub's name)."""

Family = Literal["lfm2.5-audio", "lfm2-audio"]


class CheckpointError(UserError):
    """The checkpoint cannot be converted; the message names the file and the key."""


# ---------------------------------------------------------------------------------------------
# safetensors, read without the library (which has no bfloat16 for numpy)

_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: where its bytes are and what they hold."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    """Byte offset in the file (header included)."""
    end: int


def read_safetensors_header(path: Path) -> dict[str, TensorEntry]:
    """The tensors of a safetensors file by name, checked against the file's size."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            length = int.from_bytes(head, "little")
            size = path.stat().st_size
            if length > size - 8:
                raise CheckpointError(f"{path}: not a safetensors file (header length {length})")
            header = json.loads(f.read(length).decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a safetensors file (header: {err})") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read: {err}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not an object)")
    base = 8 + length
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            shape = tuple(int(n) for n in shape)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name}: malformed header entry") from None
        if dtype not in _DTYPES:
            raise CheckpointError(
                f"{path}: tensor {name}: dtype {dtype} is not supported "
                f"(supported: {', '.join(_DTYPES)})"
            )
        nbytes = math.prod(shape) * _DTYPES[dtype].itemsize
        if end - start != nbytes or start < 0 or base + end > size:
            raise CheckpointError(
                f"{path}: tensor {name}: byte range {start}..{end} does not hold "
                f"{dtype}{list(shape)} inside the file"
            )
        entries[name] = TensorEntry(path, dtype, shape, base + start, base + end)
    return entries


READ_PIECE = 16 << 20
"""Bytes read from a weight file at a time."""


def read_tensor(entry: TensorEntry) -> Array:
    """One tensor, widened to float32 if it is a float (native byte order otherwise), read
    `READ_PIECE` bytes at a time straight into the result: the largest tensor (the 512 MB
    embedding table at full size) costs its float32 size and no more, and nothing of the file
    stays mapped into the process."""
    source = _DTYPES[entry.dtype]
    count = math.prod(entry.shape)
    target = np.dtype(np.float32) if source.kind == "f" or entry.dtype == "BF16" else source
    out = np.empty(count, dtype=target.newbyteorder("="))
    per_piece = max(1, READ_PIECE // source.itemsize)
    with entry.file.open("rb") as f:
        fd = f.fileno()
        for first in range(0, count, per_piece):
            n = min(per_piece, count - first)
            data = os.pread(fd, n * source.itemsize, entry.start + first * source.itemsize)
            if len(data) != n * source.itemsize:
                raise CheckpointError(f"{entry.file}: ends inside a tensor (truncated?)")
            raw = np.frombuffer(data, dtype=source)
            if entry.dtype == "BF16":  # bfloat16 is the top half of a float32
                out.view(np.uint32)[first : first + n] = raw.astype(np.uint32) << 16
            else:
                out[first : first + n] = raw
    return out.reshape(entry.shape)


class SafetensorsWeights(Mapping[str, Array]):
    """Tensors of one or more safetensors files by name, read (and widened to float32) on
    access (`read_tensor`); nothing is kept."""

    def __init__(self, entries: Mapping[str, TensorEntry]) -> None:
        self.entries = dict(entries)

    @classmethod
    def open(cls, files: list[Path]) -> SafetensorsWeights:
        entries: dict[str, TensorEntry] = {}
        for path in files:
            for name, entry in read_safetensors_header(path).items():
                if name in entries:
                    raise CheckpointError(
                        f"{path}: tensor {name} is also in {entries[name].file.name}"
                    )
                entries[name] = entry
        return cls(entries)

    def __getitem__(self, name: str) -> Array:
        return read_tensor(self.entries[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def shapes(self) -> dict[str, Array]:
        """Zero-stride stand-ins with each tensor's shape (for `check_layout`; no data read)."""
        return {n: np.broadcast_to(np.float32(0), e.shape) for n, e in self.entries.items()}

    def where(self, name: str) -> Path:
        return self.entries[name].file


# ---------------------------------------------------------------------------------------------
# config.json


def _read_json(path: Path) -> dict[str, Any]:
    return read_json(path, CheckpointError)


class _Section:
    """One JSON object of a config file; every error names the file and the key path."""

    def __init__(self, raw: Any, path: Path, prefix: str) -> None:
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: {prefix.rstrip('.') or 'config'}: must be an object")
        self.raw: dict[str, Any] = raw
        self.path = path
        self.prefix = prefix

    def fail(self, key: str, message: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {self.prefix}{key}: {message}")

    def only(self, known: set[str]) -> None:
        unknown = sorted(set(self.raw) - known)
        if unknown:
            raise self.fail(unknown[0], f"unknown key (known: {', '.join(sorted(known))})")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.raw:
            if default is ...:
                raise self.fail(key, "missing")
            return default
        value = self.raw[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"{value!r} has the wrong type")
        if not isinstance(value, kinds):
            raise self.fail(key, f"{value!r} has the wrong type")
        return value

    def require(self, key: str) -> None:
        if key not in self.raw:
            raise self.fail(key, "missing")

    def positive(self, key: str, default: Any = ...) -> int:
        value = self.get(key, int, default)
        if value <= 0:
            raise self.fail(key, f"{value} must be positive")
        return int(value)

    def number(self, key: str, default: Any = ...) -> float:
        return float(self.get(key, (int, float), default))

    def expect(self, key: str, want: Any, why: str) -> None:
        """`key` must hold `want` (when present) because the graphs assume it."""
        if key in self.raw and self.raw[key] != want:
            raise self.fail(key, f"{self.raw[key]!r} is not supported ({why}; want {want!r})")

    def section(self, key: str) -> _Section:
        return _Section(self.get(key, dict), self.path, f"{self.prefix}{key}.")


def _lfm2_stack(s: _Section, *, sliding: bool) -> BackboneConfig:
    """transformers' Lfm2Config keys -> BackboneConfig (Lfm2Config's defaults where a key is
    absent; its aliases `block_ff_dim`, `theta`, `full_attn_idxs` understood; keys Lfm2Model does
    not read are ignored, as transformers ignores them)."""
    layers = s.positive("num_hidden_layers")
    hidden = s.positive("hidden_size")
    heads = s.positive("num_attention_heads")
    kv_heads = s.positive("num_key_value_heads", 8)
    if hidden % heads:
        raise s.fail("num_attention_heads", f"{heads} does not divide hidden_size {hidden}")
    if heads % kv_heads:
        raise s.fail("num_key_value_heads", f"{kv_heads} does not divide {heads} heads")
    if "head_dim" in s.raw and s.raw["head_dim"] != hidden // heads:
        raise s.fail("head_dim", f"{s.raw['head_dim']!r} is not hidden_size / heads")
    s.expect("conv_bias", False, "the short convolutions have no bias")
    s.expect("rope_scaling", None, "plain RoPE only")
    s.expect("partial_rotary_factor", 1.0, "RoPE over the whole head")
    ff_key = "block_ff_dim" if "block_ff_dim" in s.raw else "intermediate_size"
    ff = s.positive(ff_key, 12288)
    if s.get("block_auto_adjust_ff_dim", bool, True):
        ff = int(2 * ff / 3)
        multiplier = s.get("block_ffn_dim_multiplier", (int, float, type(None)), 1.0)
        if multiplier is not None:
            multiple = s.positive("block_multiple_of", 256)
            ff = int(multiplier * ff)
            ff = multiple * ((ff + multiple - 1) // multiple)
    allowed: tuple[str, ...] = ("conv", "full_attention", "sliding_attention")
    if not sliding:
        allowed = allowed[:2]
    if "layer_types" in s.raw and s.raw["layer_types"] is not None:
        types = s.get("layer_types", list)
        if len(types) != layers or any(t not in allowed for t in types):
            raise s.fail(
                "layer_types",
                f"must list {layers} layers, each one of {', '.join(allowed)}",
            )
    else:
        indices = s.get("full_attn_idxs", (list, type(None)), None)
        indices = list(range(layers)) if indices is None else indices
        if not all(isinstance(i, int) for i in indices):
            raise s.fail("full_attn_idxs", "must be a list of layer indices")
        types = ["full_attention" if i in indices else "conv" for i in range(layers)]
    window = None
    if "sliding_attention" in types:
        window = s.positive("sliding_window", 30)
    theta_key = "theta" if "theta" in s.raw else "rope_theta"
    try:
        return BackboneConfig(
            hidden_size=hidden,
            layer_types=tuple(types),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            intermediate_size=ff,
            vocab_size=s.positive("vocab_size", 65536),
            conv_cache=s.positive("conv_L_cache", 3),
            rope_theta=s.number(theta_key, 1_000_000.0),
            norm_eps=s.number("norm_eps", 1e-5),
            max_position_embeddings=s.positive("max_position_embeddings", 128_000),
            sliding_window=window,
        )
    except ValueError as err:
        raise CheckpointError(f"{s.path}: {s.prefix.rstrip('.')}: {err}") from None


_TOP_KEYS = {
    "architectures",
    "codebooks",
    "tie_audio_embeddings",
    "semantic_codebook_factor",
    "codebook_weight",
    "text_loss_multiplier",
    "audio_loss_multiplier",
    "interleaved_n_text",
    "interleaved_n_audio",
    "preprocessor",
    "encoder",
    "lfm",
    "depthformer",
}
"""liquid-audio's `LFM2AudioConfig` fields: its constructor refuses any other key."""

_ENCODER_NUMBERS = {
    "feat_in": "n_mels",
    "n_layers": "n_layers",
    "d_model": "d_model",
    "n_heads": "n_heads",
    "ff_expansion_factor": "ff_expansion_factor",
    "conv_kernel_size": "conv_kernel_size",
    "subsampling_factor": "subsampling_factor",
    "subsampling_conv_channels": "subsampling_conv_channels",
    "pos_emb_max_len": "pos_emb_max_len",
}
"""ConformerEncoderConfig keys the graphs take from the config -> EncoderConfig fields."""
_ENCODER_IGNORED = {"dropout", "dropout_pre_encoder", "dropout_emb", "dropout_att"}
"""Training-only encoder keys."""


def _encoder(s: _Section) -> EncoderConfig:
    fixed = {
        k: v
        for k, v in tiny().encoder.reference_kwargs().items()
        if k not in _ENCODER_NUMBERS and k not in _ENCODER_IGNORED
    }
    s.only(set(_ENCODER_NUMBERS) | _ENCODER_IGNORED | set(fixed))
    numbers = {field: s.positive(key) for key, field in _ENCODER_NUMBERS.items()}
    half = (numbers["conv_kernel_size"] - 1) // 2
    same = {  # spellings NeMo's encoder treats alike: one context size, or an explicit one
        "att_context_size": [[-1, -1]],
        "conv_context_size": [half, half],
    }
    for key, want in fixed.items():
        s.require(key)  # the reference's dataclass has no defaults: every key is required
        if key in same and s.raw[key] == same[key]:
            continue
        s.expect(key, want, "the encoder graph implements this setting only")
    factor = numbers["subsampling_factor"]
    if factor < 2 or factor & (factor - 1):
        raise s.fail("subsampling_factor", f"{factor} is not a power of two >= 2")
    if numbers["d_model"] % numbers["n_heads"]:
        raise s.fail("n_heads", f"{numbers['n_heads']} does not divide d_model")
    return EncoderConfig(**numbers)


def _preprocessor(s: _Section, n_mels: int) -> PreprocessorConfig:
    defaults = PreprocessorConfig()
    s.only(set(defaults.reference_kwargs()))
    for key, want in defaults.reference_kwargs().items():
        s.require(key)
        if key in ("features", "dither"):
            continue  # features: checked below; dither: training only
        s.expect(key, want, "the runtime's log-mel front end implements this setting only")
    features = s.positive("features")
    if features != n_mels:
        raise s.fail("features", f"{features} differs from encoder.feat_in {n_mels}")
    return replace(defaults, features=features, dither=s.number("dither"))


def _depthformer(s: _Section) -> DepthformerConfig:
    s.only({"layers", "dim", "tie"})
    dim = s.positive("dim")
    if dim % DepthformerConfig.num_heads:
        raise s.fail("dim", f"{dim} is not a multiple of {DepthformerConfig.num_heads} heads")
    return DepthformerConfig(layers=s.positive("layers"), dim=dim, tie=s.get("tie", bool))


def parse_config(path: Path, detokenizer_config: Path | None) -> AudioModelConfig:
    """The architecture numbers of a checkpoint's `config.json` (and of its detokenizer's)."""
    top = _Section(_read_json(path), path, "")
    top.only(_TOP_KEYS)
    if "architectures" in top.raw:
        names = top.get("architectures", list)
        if not any(name in ARCHITECTURES for name in names):
            raise top.fail("architectures", f"{names!r} is not one of {', '.join(ARCHITECTURES)}")
    backbone = _lfm2_stack(top.section("lfm"), sliding=False)
    encoder = _encoder(top.section("encoder"))
    preprocessor = _preprocessor(top.section("preprocessor"), encoder.n_mels)
    depth = _depthformer(top.section("depthformer"))
    if detokenizer_config is not None:
        det = _Section(_read_json(detokenizer_config), detokenizer_config, "")
        stack = _lfm2_stack(det, sliding=True)
        if stack.hidden_size != 512:
            raise det.fail("hidden_size", f"{stack.hidden_size} is not 512 (hard-wired)")
        detok = DetokenizerConfig(backbone=stack)
    else:
        detok = tiny().detokenizer  # v1 (Mimi) has none; kept only to fill the dataclass
    config = AudioModelConfig(
        size="full",
        backbone=backbone,
        encoder=encoder,
        depthformer=depth,
        detokenizer=detok,
        preprocessor=preprocessor,
        codebooks=top.positive("codebooks"),
        interleaved_n_text=top.positive("interleaved_n_text"),
        interleaved_n_audio=top.positive("interleaved_n_audio"),
        tie_audio_embeddings=top.get("tie_audio_embeddings", bool),
    )
    # `size` is a label only; call it tiny when the numbers are the tiny test model's.
    return replace(config, size="tiny") if replace(config, size="tiny") == tiny() else config


# ---------------------------------------------------------------------------------------------
# the directory


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint directory, parsed and checked."""

    directory: Path
    family: Family
    config: AudioModelConfig
    weights: SafetensorsWeights
    """The main state dict (checkpoint names, `lfm_toolchain.weights.model_specs`)."""
    detokenizer_weights: SafetensorsWeights | None
    """LFM2.5-Audio's detokenizer (`detokenizer_specs`); None for v1."""
    mimi: tuple[MimiConfig, SafetensorsWeights] | None
    """LFM2-Audio v1's Mimi codec (its config, found from the tensor shapes, and weights);
    None for LFM2.5-Audio."""
    tokenizer: Path | None
    tokenizer_config: Path | None
    ignored: tuple[str, ...] = field(default_factory=tuple)
    """Tensors of the checkpoint that no graph uses (buffers, training-only heads)."""


def _weight_files(directory: Path) -> list[Path]:
    index = directory / WEIGHTS_INDEX
    if index.is_file():
        weight_map = _Section(_read_json(index), index, "").get("weight_map", dict)
        files = sorted(set(weight_map.values()))
        if not all(isinstance(f, str) and "/" not in f and f for f in files):
            raise CheckpointError(f"{index}: weight_map: values must be file names")
        return [directory / f for f in files]
    if (directory / WEIGHTS).is_file():
        return [directory / WEIGHTS]
    if (directory / "pytorch_model.bin").exists():
        raise CheckpointError(
            f"{directory / 'pytorch_model.bin'}: pickled weights are not read; "
            "convert them to model.safetensors"
        )
    raise CheckpointError(f"{directory / WEIGHTS}: file not found (nor {WEIGHTS_INDEX})")


def _check_tied(weights: SafetensorsWeights, pairs: list[tuple[str, str]]) -> None:
    """Tied copies present in the file must equal their source."""
    for copy, source in pairs:
        if copy not in weights.entries or source not in weights.entries:
            continue
        same = weights.entries[copy].shape == weights.entries[source].shape
        if not same or not np.array_equal(weights[copy], weights[source]):
            raise CheckpointError(
                f"{weights.where(copy)}: {copy} differs from {source}, but the config ties them"
            )


def _checked(weights: SafetensorsWeights, specs: list[Any], where: Path) -> list[str]:
    """Check names and shapes; returns the names no spec uses."""
    try:
        check_layout(weights.shapes(), specs, str(where))
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    names = {spec.name for spec in specs}
    return sorted(n for n in weights if n not in names)


def read_mimi(path: Path) -> tuple[MimiConfig, SafetensorsWeights]:
    """The Mimi weights of an LFM2-Audio (v1) checkpoint and the Mimi configuration they fit:
    the real one (`full_mimi`), or the tiny test one. The encoder side is not used."""
    weights = SafetensorsWeights.open([path])
    shapes = weights.shapes()
    problem = ""
    for config in (tiny_mimi(), full_mimi()):  # the real one last: its mismatch is reported
        try:
            check_layout(shapes, mimi_specs(config), str(path))
        except ValueError as err:
            problem = str(err)
            continue
        return config, weights
    raise CheckpointError(f"{problem} (Mimi as LFM2-Audio-1.5B ships it)")


def read_checkpoint(directory: Path) -> Checkpoint:
    """Open and check a checkpoint directory (see the module doc for the layout)."""
    if not directory.is_dir():
        hint = ""
        if not directory.exists() and len(directory.parts) == 2:  # looks like owner/name
            hint = (
                f"; to convert the hub's {directory}, download it first: "
                f"huggingface-cli download {directory} --local-dir DIR, then --from DIR"
            )
        raise CheckpointError(f"{directory}: not a checkpoint directory{hint}")
    detok_dir = directory / DETOKENIZER_DIR
    mimi = directory / MIMI_WEIGHTS
    if detok_dir.is_dir():
        family: Family = "lfm2.5-audio"
    elif mimi.is_file():
        family = "lfm2-audio"
    else:
        raise CheckpointError(
            f"{directory}: neither {DETOKENIZER_DIR}/ (LFM2.5-Audio) nor {MIMI_WEIGHTS} "
            "(LFM2-Audio, Mimi) is there: not an LFM2-Audio checkpoint"
        )
    detok_config = detok_dir / CONFIG if family == "lfm2.5-audio" else None
    config = parse_config(directory / CONFIG, detok_config)
    weights = SafetensorsWeights.open(_weight_files(directory))
    extra = _checked(weights, model_specs(config), directory / WEIGHTS)
    tied = [
        (f"depth_embeddings.{c}.to_logits.weight", f"depth_embeddings.{c}.embedding.weight")
        for c in range(config.codebooks)
        if config.depthformer.tie
    ]
    if config.tie_audio_embeddings:
        tied.append(("audio_embedding.to_logits.weight", "audio_embedding.embedding.weight"))
    _check_tied(weights, tied)
    detok_weights = None
    if family == "lfm2.5-audio":
        detok_weights = SafetensorsWeights.open([detok_dir / WEIGHTS])
        extra += [
            f"{DETOKENIZER_DIR}/{n}"
            for n in _checked(detok_weights, detokenizer_specs(config), detok_dir / WEIGHTS)
        ]
    tokenizer = directory / TOKENIZER
    tokenizer_config = directory / TOKENIZER_CONFIG
    return Checkpoint(
        directory=directory,
        family=family,
        config=config,
        weights=weights,
        detokenizer_weights=detok_weights,
        mimi=read_mimi(mimi) if family == "lfm2-audio" else None,
        tokenizer=tokenizer if tokenizer.is_file() else None,
        tokenizer_config=tokenizer_config if tokenizer_config.is_file() else None,
        ignored=tuple(extra),
    )
