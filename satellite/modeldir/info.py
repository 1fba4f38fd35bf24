"""`lfm-satellite model info`: what a model directory holds, from its manifest, for people
(text) and programs (`--json`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from satellite.modeldir.manifest import Manifest, TensorSpec, human_size
from satellite.modeldir.onnxread import describe_shape

_LAYER_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)")


def group_tensors(specs: Sequence[TensorSpec]) -> list[tuple[str, int, TensorSpec]]:
    """Per-layer tensors of one kind folded into one line: (name with `{i}`, count, first
    spec), in first-seen order. `past_conv.0`, `past_conv.1` -> (`past_conv.{i}`, 2, ...)."""
    groups: dict[tuple[str, str, str], list[TensorSpec]] = {}
    for spec in specs:
        pattern = _LAYER_INDEX.sub("{i}", spec.name)
        groups.setdefault((pattern, spec.dtype, describe_shape(spec.shape)), []).append(spec)
    return [(key[0], len(members), members[0]) for key, members in groups.items()]


def describe_layers(layer_types: Sequence[Any]) -> str:
    """`16 layers: 10 conv, 6 full_attention (at 2, 5, 8, 10, 12, 14)`."""
    counts: dict[str, int] = {}
    for kind in layer_types:
        counts[str(kind)] = counts.get(str(kind), 0) + 1
    attention = [str(i) for i, kind in enumerate(layer_types) if "attention" in str(kind)]
    text = f"{len(layer_types)} layers: " + ", ".join(f"{n} {k}" for k, n in counts.items())
    return text + (f" (attention at {', '.join(attention)})" if attention else "")


def format_info(directory: Path, manifest: Manifest) -> str:
    """Readable summary: identity, source, config numbers, each role's file, size and I/O."""
    total = sum(e.size for e in manifest.files.values())
    lines = [
        f"directory  {directory}",
        f"name       {manifest.name}",
        f"family     {manifest.family}",
        f"variant    {manifest.variant}",
        f"source     {_source(manifest.source)}",
        f"files      {len(manifest.files)}, {human_size(total)}",
        f"tokenizer  {manifest.tokenizer or '(none)'}",
        "config",
    ]
    config = manifest.config
    for key, value in config.items():
        shown = describe_layers(value) if key == "layer_types" else value
        lines.append(f"  {key:<22} {shown}")
    lines.append("graphs")
    for role, entry in manifest.graphs.items():
        size = sum(
            manifest.files[f].size for f in [entry.file, *entry.data_files] if f in manifest.files
        )
        data = f" + {len(entry.data_files)} data file{'s' * (len(entry.data_files) != 1)}"
        lines.append(
            f"  {role:<18} {entry.file}{data if entry.data_files else ''}, {human_size(size)}"
            + (f"  {entry.options}" if entry.options else "")
        )
        for side, specs in (("in ", entry.inputs), ("out", entry.outputs)):
            for name, count, spec in group_tensors(specs):
                times = f" x{count}" if count > 1 else ""
                lines.append(
                    f"      {side} {name}{times} {spec.dtype} {describe_shape(spec.shape)}"
                )
    if manifest.side_files:
        lines.append("side files")
        for key, rel in manifest.side_files.items():
            lines.append(f"  {key:<18} {rel}")
    return "\n".join(lines)


def info_dict(directory: Path, manifest: Manifest) -> dict[str, Any]:
    """The manifest as JSON-ready data, with the directory and total size added."""
    data = asdict(manifest)
    data["directory"] = str(directory)
    data["total_size"] = sum(e.size for e in manifest.files.values())
    return data


def _source(source: dict[str, Any]) -> str:
    if not source:
        return "(not recorded)"
    if source.get("repo") and source.get("revision"):
        endpoint = source.get("endpoint")
        where = f" from {endpoint}" if endpoint else ""
        return f"{source['repo']} @ {source['revision']}{where}"
    return ", ".join(f"{k}={v}" for k, v in source.items())
