"""The official export's non-graph files: the source `config.json` (decoder config nested under
`lfm`), `onnx/mel_config.json`, and the embedding tables `onnx/embed_tokens.bin` /
`onnx/audio_embedding.bin`, each described by a JSON file beside it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satellite.errors import UserError

TABLE_DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2}
"""Element types an embedding table may have, with their sizes in bytes."""


class SideFileError(UserError):
    """A side file is missing or malformed; the message names the file and the key."""


def read_json(path: Path, error: type[UserError] = SideFileError) -> dict[str, Any]:
    """A JSON object from `path`; `error` (SideFileError by default) naming the file
    otherwise."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise error(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: cannot read: {err}") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a JSON object")
    return raw


def _int(raw: Mapping[str, Any], key: str, where: str) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SideFileError(f"{where}: {key}: {value!r} is not a positive integer")
    return value


@dataclass(frozen=True)
class TableInfo:
    """An embedding table stored as raw little-endian rows in `bin_path`."""

    json_path: Path
    bin_path: Path
    vocab_size: int
    hidden_size: int
    dtype: str
    num_codebooks: int | None = None
    codebook_vocab: int | None = None

    @property
    def expected_bytes(self) -> int:
        return self.vocab_size * self.hidden_size * TABLE_DTYPES[self.dtype]


def read_table(json_path: Path) -> TableInfo:
    """Parse a table descriptor (`embed_tokens.json`, `audio_embedding.json`); the table is
    the `.bin` file of the same name."""
    raw = read_json(json_path)
    where = str(json_path)
    dtype = raw.get("dtype", "float32")
    if dtype not in TABLE_DTYPES:
        raise SideFileError(f"{where}: dtype: {dtype!r} is not one of {', '.join(TABLE_DTYPES)}")
    order = raw.get("byte_order", "little")
    if order != "little":
        raise SideFileError(f"{where}: byte_order: {order!r}; only little-endian tables load")
    codebooks = raw.get("num_codebooks")
    codebook_vocab = raw.get("codebook_vocab")
    return TableInfo(
        json_path=json_path,
        bin_path=json_path.with_suffix(".bin"),
        vocab_size=_int(raw, "vocab_size", where),
        hidden_size=_int(raw, "hidden_size", where),
        dtype=str(dtype),
        num_codebooks=_int(raw, "num_codebooks", where) if codebooks is not None else None,
        codebook_vocab=_int(raw, "codebook_vocab", where) if codebook_vocab is not None else None,
    )


def check_table(table: TableInfo, role: str, config: Mapping[str, Any]) -> list[tuple[Path, str]]:
    """Problems of a table against the manifest config: (file, what is wrong)."""
    problems: list[tuple[Path, str]] = []
    where = table.json_path
    want_vocab = config.get("vocab_size")
    if role == "audio_embedding":
        codebooks, size = config.get("codebooks"), config.get("codebook_size")
        want_vocab = (
            codebooks * size if isinstance(codebooks, int) and isinstance(size, int) else None
        )
        if table.num_codebooks is not None and table.num_codebooks != codebooks:
            problems.append(
                (where, f"num_codebooks is {table.num_codebooks}, config codebooks is {codebooks}")
            )
        if table.codebook_vocab is not None and table.codebook_vocab != size:
            problems.append(
                (where, f"codebook_vocab is {table.codebook_vocab}, config codebook_size is {size}")
            )
    if want_vocab is not None and table.vocab_size != want_vocab:
        problems.append(
            (where, f"vocab_size is {table.vocab_size}, the config implies {want_vocab}")
        )
    hidden = config.get("hidden_size")
    if hidden is not None and table.hidden_size != hidden:
        problems.append(
            (where, f"hidden_size is {table.hidden_size}, config hidden_size is {hidden}")
        )
    try:
        actual = table.bin_path.stat().st_size
    except FileNotFoundError:
        problems.append((table.bin_path, f"missing (the table {table.json_path.name} describes)"))
        return problems
    if actual != table.expected_bytes:
        problems.append(
            (
                table.bin_path,
                f"{actual} bytes, but {table.json_path.name} describes {table.vocab_size} x "
                f"{table.hidden_size} {table.dtype} = {table.expected_bytes} bytes",
            )
        )
    return problems


def check_mel_config(path: Path, config: Mapping[str, Any]) -> list[tuple[Path, str]]:
    """Problems of `mel_config.json` against the manifest config: (file, what is wrong)."""
    raw = read_json(path)
    problems: list[tuple[Path, str]] = []
    for key, config_key in (("n_mels", "n_mels"), ("sample_rate", "input_sample_rate")):
        if key in raw and config.get(config_key) is not None and raw[key] != config[config_key]:
            problems.append(
                (path, f"{key} is {raw[key]!r}, config {config_key} is {config[config_key]}")
            )
    return problems


HUB_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "hidden_size": ("lfm", "hidden_size"),
    "num_hidden_layers": ("lfm", "num_hidden_layers"),
    "layer_types": ("lfm", "layer_types"),
    "num_attention_heads": ("lfm", "num_attention_heads"),
    "num_key_value_heads": ("lfm", "num_key_value_heads"),
    "vocab_size": ("lfm", "vocab_size"),
    "conv_cache": ("lfm", "conv_L_cache"),
    "head_dim": ("lfm", "head_dim"),
    "codebooks": ("codebooks",),
    "n_mels": ("preprocessor", "features"),
    "input_sample_rate": ("preprocessor", "sample_rate"),
    "interleaved_n_text": ("interleaved_n_text",),
    "interleaved_n_audio": ("interleaved_n_audio",),
    "depthformer_layers": ("depthformer", "layers"),
    "depthformer_dim": ("depthformer", "dim"),
}
"""Manifest config key -> where the LFM2-Audio `config.json` keeps it."""


def config_from_hub(
    config_json: Path, mel_config: Path | None, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """The manifest's config numbers: `defaults` (from the catalog), overridden by what the
    source's `config.json` says (decoder numbers nested under `lfm`) and by `mel_config.json`.

    An LFM2 config that gives `full_attn_idxs` instead of `layer_types` is converted."""
    raw = read_json(config_json)
    config: dict[str, Any] = dict(defaults)
    for key, path in HUB_CONFIG_KEYS.items():
        node: Any = raw
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            config[key] = node
    lfm = raw.get("lfm")
    if "layer_types" not in config and isinstance(lfm, dict):
        attn = lfm.get("full_attn_idxs")
        layers = config.get("num_hidden_layers")
        if isinstance(attn, list) and isinstance(layers, int):
            config["layer_types"] = [
                "full_attention" if i in attn else "conv" for i in range(layers)
            ]
    if mel_config is not None:
        mel = read_json(mel_config)
        if isinstance(mel.get("n_mels"), int):
            config["n_mels"] = mel["n_mels"]
        if isinstance(mel.get("sample_rate"), int):
            config["input_sample_rate"] = mel["sample_rate"]
    return config
