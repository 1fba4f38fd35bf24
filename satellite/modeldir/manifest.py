"""The model directory's manifest: what the runtime loads, and the one contract between the
model toolchain (`models/`) and the daemon (`satellite/`).

A model directory holds `manifest.json`, one ONNX graph per role (with `.onnx_data` files for
external weights), the tokenizer and any embedding tables. The manifest names the model
family and variant, the architecture numbers the runtime needs, each role's graph file and the
input/output names and shapes read from that graph, and the sha256 and size of every file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from satellite.errors import UserError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1

Family = Literal["lfm2.5-audio", "lfm2-audio"]
Variant = Literal["fp32", "fp16", "q8", "q4"]
UNKNOWN_RANK = "..."
"""`TensorSpec.shape == [UNKNOWN_RANK]`: the graph declares no shape (the rank is unknown)."""

FAMILIES: tuple[Family, ...] = ("lfm2.5-audio", "lfm2-audio")
VARIANTS: tuple[Variant, ...] = ("fp32", "fp16", "q8", "q4")

ROLES = (
    "decoder",
    "audio_encoder",
    "audio_embedding",
    "depthformer",
    "audio_detokenizer",
    "audio_detokenizer_cached",
    "mimi_decoder",
    "mimi_decoder_cached",
    "embed_tokens",
)
"""Graph roles. `audio_detokenizer` belongs to LFM2.5-Audio, `mimi_decoder` to LFM2-Audio v1;
`embed_tokens` is optional (present where the decoder takes embeddings, not token ids), and so
are `audio_detokenizer_cached` and `mimi_decoder_cached` (the project's streaming
detokenizers, used when present)."""


def required_roles(family: str) -> tuple[str, ...]:
    """Roles a model of `family` cannot run without."""
    vocoder = "mimi_decoder" if family == "lfm2-audio" else "audio_detokenizer"
    return ("decoder", "audio_encoder", "audio_embedding", "depthformer", vocoder)


class ManifestError(UserError):
    """The manifest is missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as read from the graph."""

    name: str
    dtype: str
    """ONNX element type name, e.g. `float32`, `int64`."""
    shape: list[int | str]
    """Fixed sizes as ints, symbolic dimensions as their names (`"?"` for an unnamed one);
    `[UNKNOWN_RANK]` when the graph declares no shape at all."""


@dataclass(frozen=True)
class GraphEntry:
    """One role's graph."""

    file: str
    """Graph file, relative to the model directory."""
    data_files: list[str] = field(default_factory=list)
    """External weight files the graph refers to."""
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    """Role-specific facts, e.g. for `depthformer` {"granularity": "codebook_step"} or
    {"granularity": "frame"}."""


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    name: str
    """Human name of the model, e.g. `LiquidAI/LFM2.5-Audio-1.5B-ONNX` or `tiny`."""
    family: Family
    variant: Variant
    config: dict[str, Any]
    """Architecture numbers (see `REQUIRED_CONFIG`)."""
    graphs: dict[str, GraphEntry]
    """Role -> graph."""
    files: dict[str, FileEntry]
    """Every file of the directory except the manifest -> checksum and size."""
    tokenizer: str | None = "tokenizer.json"
    """Tokenizer file (the `tokenizers` library's JSON), relative to the directory."""
    source: dict[str, Any] = field(default_factory=dict)
    """Where it came from: hub repo and revision, or the builder and its arguments."""
    format_version: int = FORMAT_VERSION
    side_files: dict[str, str] = field(default_factory=dict)
    """Named non-graph files, relative to the directory (see `SIDE_FILES`), e.g.
    {"embed_tokens": "onnx/embed_tokens.json"}. Each must also be listed in `files`."""

    @property
    def random_weights(self) -> bool:
        """Built from seeded random weights (`source.weights` is `random`: the tiny and full
        test models of `lfm-satellite model build`), not a trained checkpoint."""
        return self.source.get("weights") == "random"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)
        return path


SIDE_FILES = {
    "config": "the source's own config.json (informational)",
    "tokenizer_config": "tokenizer_config.json (chat template, special tokens)",
    "mel_config": "mel front-end settings (JSON: sample_rate, n_fft, n_mels, ...)",
    "embed_tokens": "text embedding table descriptor (JSON: vocab_size, hidden_size, dtype, "
    "byte_order); the raw table is the file beside it with the suffix .bin",
    "audio_embedding": "audio code embedding table descriptor (JSON: vocab_size, hidden_size, "
    "num_codebooks, codebook_vocab, dtype, byte_order); the table is beside it as .bin",
}
"""Known `side_files` keys and what they name."""

REQUIRED_CONFIG: dict[str, type | tuple[type, ...]] = {
    "hidden_size": int,
    "num_hidden_layers": int,
    "layer_types": list,
    "num_attention_heads": int,
    "num_key_value_heads": int,
    "vocab_size": int,
    "conv_cache": int,
    "codebooks": int,
    "codebook_size": int,
    "n_mels": int,
    "input_sample_rate": int,
    "output_sample_rate": int,
}
"""Config numbers every manifest carries, with their types. `layer_types` lists
`conv` or `full_attention` per decoder layer; `conv_cache` is the short-conv state length (3);
`codebook_size` counts the end-of-audio code (2049)."""

OPTIONAL_CONFIG: dict[str, type | tuple[type, ...]] = {
    "head_dim": int,
    "depthformer_layers": int,
    "depthformer_dim": int,
    "depthformer_heads": int,
    "depthformer_kv_heads": int,
    "depthformer_head_dim": int,
    "interleaved_n_text": int,
    "interleaved_n_audio": int,
}
"""Config numbers a manifest may carry; graph shapes are checked against them when present
(`head_dim` defaults to hidden_size / num_attention_heads, `depthformer_head_dim` to
depthformer_dim / depthformer_heads). Other keys (e.g. `rope_theta`) are kept as they are."""


def read_manifest(directory: Path) -> Manifest:
    """Parse `directory/manifest.json`. Raises ManifestError naming the file and the key."""
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise ManifestError(f"{directory}: model directory not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: no manifest; is this a model directory? "
            "(`lfm-satellite model fetch` and `lfm-satellite model build` write one)"
        ) from None
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: cannot read: {err}") from None
    return manifest_from_dict(raw, str(path))


def manifest_from_dict(raw: Any, where: str) -> Manifest:
    """Build a Manifest from parsed JSON, naming `where` and the key in every error."""

    def need(mapping: Mapping[str, Any], key: str, kind: type | tuple[type, ...], ctx: str) -> Any:
        if key not in mapping:
            raise ManifestError(f"{where}: {ctx}{key}: missing")
        value = mapping[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise ManifestError(f"{where}: {ctx}{key}: {value!r} has the wrong type")
        return value

    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: the manifest must be a JSON object")
    version = need(raw, "format_version", int, "")
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"{where}: format_version {version} is not supported (this version reads {FORMAT_VERSION})"
        )
    family = need(raw, "family", str, "")
    if family not in FAMILIES:
        raise ManifestError(f"{where}: family: {family!r} is not one of {', '.join(FAMILIES)}")
    variant = need(raw, "variant", str, "")
    if variant not in VARIANTS:
        raise ManifestError(f"{where}: variant: {variant!r} is not one of {', '.join(VARIANTS)}")
    config = need(raw, "config", dict, "")
    for key, kind in REQUIRED_CONFIG.items():
        need(config, key, kind, "config.")
    for key, kind in OPTIONAL_CONFIG.items():
        if key in config:
            need(config, key, kind, "config.")
    graphs: dict[str, GraphEntry] = {}
    for role, entry in need(raw, "graphs", dict, "").items():
        if role not in ROLES:
            raise ManifestError(
                f"{where}: graphs.{role}: unknown role; roles are {', '.join(ROLES)}"
            )
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: graphs.{role}: must be an object")
        ctx = f"graphs.{role}."
        for key, kind in (("data_files", list), ("inputs", list), ("outputs", list)):
            if key in entry:
                need(entry, key, kind, ctx)
        if "options" in entry:
            need(entry, "options", dict, ctx)
        data_files = entry.get("data_files", [])
        if not all(isinstance(name, str) for name in data_files):
            raise ManifestError(f"{where}: {ctx}data_files: must be a list of file names")
        graphs[role] = GraphEntry(
            file=need(entry, "file", str, ctx),
            data_files=list(data_files),
            inputs=[_tensor(t, where, f"{ctx}inputs") for t in entry.get("inputs", [])],
            outputs=[_tensor(t, where, f"{ctx}outputs") for t in entry.get("outputs", [])],
            options=dict(entry.get("options", {})),
        )
    files: dict[str, FileEntry] = {}
    for name, entry in need(raw, "files", dict, "").items():
        ctx = f"files.{name}."
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: files.{name}: must be an object")
        files[name] = FileEntry(
            sha256=need(entry, "sha256", str, ctx), size=need(entry, "size", int, ctx)
        )
    side_files = raw.get("side_files", {})
    if not isinstance(side_files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in side_files.items()
    ):
        raise ManifestError(f"{where}: side_files: must map names to file names")
    tokenizer = raw.get("tokenizer")
    if tokenizer is not None and not isinstance(tokenizer, str):
        raise ManifestError(f"{where}: tokenizer: {tokenizer!r} must be a file name or null")
    return Manifest(
        name=need(raw, "name", str, ""),
        family=family,
        variant=variant,
        config=config,
        graphs=graphs,
        files=files,
        tokenizer=tokenizer,
        source=dict(raw.get("source", {})),
        format_version=version,
        side_files=dict(side_files),
    )


def _tensor(raw: Any, where: str, ctx: str) -> TensorSpec:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ManifestError(f"{where}: {ctx}: each entry needs a name")
    return TensorSpec(
        name=raw["name"], dtype=str(raw.get("dtype", "")), shape=list(raw.get("shape", []))
    )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces (model files are large)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entries(directory: Path, names: list[str]) -> dict[str, FileEntry]:
    """Checksums and sizes of `names` inside `directory`, for a new manifest."""
    return {
        name: FileEntry(
            sha256=sha256_file(directory / name), size=(directory / name).stat().st_size
        )
        for name in sorted(names)
    }


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover
