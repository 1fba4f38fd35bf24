"""The model catalog (`models/lfm_toolchain/catalog.yaml`): which models exist, where they come from and
which files each variant needs.

The catalog is a data file of the model toolchain's package (`lfm_toolchain`, in the
`models/` folder of the source); it is found without importing that package (the daemon never
imports the toolchain). `--catalog FILE` or $LFM_SATELLITE_CATALOG
point to another one.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from satellite.errors import UserError
from satellite.modeldir.manifest import FAMILIES, ROLES, SIDE_FILES, VARIANTS

CATALOG_ENV = "LFM_SATELLITE_CATALOG"
CATALOG_NAME = "catalog.yaml"
KINDS = ("onnx", "checkpoint", "build")

Kind = Literal["onnx", "checkpoint", "build"]

BACKBONE_REPO = "LiquidAI/LFM2.5-Audio-1.5B-GGUF"
"""Liquid AI's GGUF files of LFM2.5-Audio-1.5B (for llama.cpp's own runners): the backbone is
`LFM2.5-Audio-1.5B-<QUANT>.gguf` (architecture lfm2), which `model.backbone: llamacpp` runs;
the encoder (`mmproj-...`), vocoder and tokenizer files there are not used (the ONNX model
directory has those parts)."""
BACKBONE_FILE = "LFM2.5-Audio-1.5B-Q4_0.gguf"
"""The 4-bit backbone (about 700 MB; Q4_0 is what llama.cpp's CPU kernels run fastest)."""


class CatalogError(UserError):
    """The catalog is missing or malformed, or has no such model; the message says which."""


@dataclass(frozen=True)
class KnownFile:
    """What a file of the pinned revision is known to be."""

    size: int | None = None
    sha256: str | None = None
    """Lower-case hex."""


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    kind: Kind
    family: str
    description: str
    variants: dict[str, dict[str, str]]
    """Variant -> role -> graph file (empty for kinds other than onnx), in catalog order."""
    default_variant: str
    repo: str | None = None
    revision: str = "main"
    files: tuple[str, ...] = ()
    optional_files: tuple[str, ...] = ()
    tokenizer: str | None = None
    side_files: dict[str, str] = field(default_factory=dict)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    build: str | None = None
    known_files: dict[str, KnownFile] = field(default_factory=dict)
    """Path -> size and sha256 at `revision`, where known (the hub must agree)."""


def catalog_path(override: str | os.PathLike[str] | None = None) -> Path:
    """Where the catalog is: `override`, else $LFM_SATELLITE_CATALOG, else `catalog.yaml` of
    the `lfm_toolchain` package (located, not imported), else the source checkout's copy."""
    chosen = override or os.environ.get(CATALOG_ENV)
    if chosen:
        return Path(chosen).expanduser()
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec("lfm_toolchain")  # finds it without running it
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / CATALOG_NAME for p in spec.submodule_search_locations]
    candidates.append(
        Path(__file__).resolve().parents[2] / "models" / "lfm_toolchain" / CATALOG_NAME
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[-1]


def load_catalog(path: Path | None = None) -> list[CatalogEntry]:
    """Read and check the catalog; CatalogError names the file and the key on any problem."""
    path = path or catalog_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(
            f"{path}: model catalog not found (give one with --catalog or ${CATALOG_ENV})"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise CatalogError(f"{where}: invalid YAML: {getattr(err, 'problem', err)}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CatalogError(f"{path}: cannot read the catalog: {err}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), list):
        raise CatalogError(f"{path}: expected a mapping with a `models` list")
    if raw.get("format_version") != 1:
        raise CatalogError(
            f"{path}: format_version: {raw.get('format_version')!r} is not supported (expected 1)"
        )
    entries = [_entry(item, f"{path}: models[{i}]") for i, item in enumerate(raw["models"])]
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if entry.name in seen:
            raise CatalogError(f"{path}: models[{i}].name: {entry.name!r} appears twice")
        seen.add(entry.name)
    return entries


def find_entry(entries: list[CatalogEntry], name: str) -> CatalogEntry:
    """The entry called `name`: exact, else ignoring case, else by the part after the
    organisation (`LFM2.5-Audio-1.5B-ONNX`) when that is unique."""
    for entry in entries:
        if entry.name == name:
            return entry
    folded = [e for e in entries if e.name.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    short = [e for e in entries if e.name.split("/")[-1].lower() == name.lower()]
    if len(short) == 1:
        return short[0]
    names = [e.name for e in entries]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise CatalogError(
        f"{name!r} is not in the model catalog{hint} (known: {', '.join(names)}; "
        "see `lfm-satellite model list`)"
    )


def _entry(raw: Any, where: str) -> CatalogEntry:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: each model must be a mapping")

    def text(key: str, required: bool = True) -> str | None:
        value = raw.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise CatalogError(f"{where}.{key}: {value!r} must be a non-empty string")
        return value

    def names(key: str) -> tuple[str, ...]:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CatalogError(f"{where}.{key}: must be a list of file names")
        return tuple(value)

    def mapping(key: str) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            raise CatalogError(f"{where}.{key}: must be a mapping")
        return value

    name = text("name")
    assert name is not None
    where = f"{where} ({name})"
    kind = text("kind")
    if kind not in KINDS:
        raise CatalogError(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
    family = text("family")
    if family not in FAMILIES:
        raise CatalogError(f"{where}.family: {family!r} is not one of {', '.join(FAMILIES)}")
    variants: dict[str, dict[str, str]] = {}
    for variant, spec in mapping("variants").items():
        if variant not in VARIANTS:
            raise CatalogError(f"{where}.variants: {variant!r} is not one of {', '.join(VARIANTS)}")
        graphs = (spec or {}).get("graphs", {}) if isinstance(spec, dict | None) else None
        if not isinstance(graphs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in graphs.items()
        ):
            raise CatalogError(f"{where}.variants.{variant}.graphs: must map roles to files")
        for role in graphs:
            if role not in ROLES:
                raise CatalogError(
                    f"{where}.variants.{variant}.graphs.{role}: not a role ({', '.join(ROLES)})"
                )
        if kind == "onnx" and not graphs:
            raise CatalogError(f"{where}.variants.{variant}.graphs: an onnx model needs graphs")
        variants[variant] = dict(graphs)
    if not variants:
        raise CatalogError(f"{where}.variants: at least one variant is needed")
    default = text("default_variant", required=False) or next(iter(variants))
    if default not in variants:
        raise CatalogError(f"{where}.default_variant: {default!r} is not one of its variants")
    side_files = mapping("side_files")
    for key, value in side_files.items():
        if key not in SIDE_FILES or not isinstance(value, str):
            raise CatalogError(
                f"{where}.side_files.{key}: unknown name or not a file "
                f"(names: {', '.join(SIDE_FILES)})"
            )
    options = mapping("options")
    if not all(isinstance(v, dict) for v in options.values()):
        raise CatalogError(f"{where}.options: must map roles to mappings")
    repo = text("repo", required=kind != "build")
    build = text("build", required=kind != "onnx")
    known_files = {
        str(path): _known_file(spec, f"{where}.known_files.{path}")
        for path, spec in mapping("known_files").items()
    }
    revision = raw.get("revision", "main")
    if not isinstance(revision, str) or not revision:
        raise CatalogError(f"{where}.revision: {revision!r} must be a branch, tag or commit")
    return CatalogEntry(
        name=name,
        kind=kind,  # type: ignore[arg-type]  # checked against KINDS above
        family=str(family),
        description=text("description") or "",
        variants=variants,
        default_variant=default,
        repo=repo,
        revision=revision,
        files=names("files"),
        optional_files=names("optional_files"),
        tokenizer=text("tokenizer", required=False),
        side_files={str(k): str(v) for k, v in side_files.items()},
        options={str(k): dict(v) for k, v in options.items()},
        config=dict(mapping("config")),
        build=build,
        known_files=known_files,
    )


def _known_file(spec: Any, where: str) -> KnownFile:
    if not isinstance(spec, dict) or not spec or set(spec) - {"size", "sha256"}:
        raise CatalogError(f"{where}: must be a mapping with size and/or sha256")
    size = spec.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise CatalogError(f"{where}.size: {size!r} must be a whole number of bytes")
    digest = spec.get("sha256")
    if digest is not None and (
        not isinstance(digest, str)
        or len(digest) != 64
        or any(c not in "0123456789abcdefABCDEF" for c in digest)
    ):
        raise CatalogError(f"{where}.sha256: {digest!r} must be 64 hexadecimal digits")
    return KnownFile(size=size, sha256=digest.lower() if digest else None)


def entry_as_dict(entry: CatalogEntry) -> Mapping[str, Any]:
    """A JSON-ready summary for `model list --json`."""
    return {
        "name": entry.name,
        "kind": entry.kind,
        "family": entry.family,
        "variants": list(entry.variants),
        "default_variant": entry.default_variant,
        "repo": entry.repo,
        "revision": entry.revision,
        "description": entry.description,
        "build": entry.build,
    }
