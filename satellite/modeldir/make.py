"""Write a manifest for a directory of graphs: read each graph's inputs and outputs and its
external data files, checksum every file. Used by `model fetch`; the model toolchain's
`model build` can use it the same way."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from satellite.modeldir.manifest import (
    FileEntry,
    GraphEntry,
    Manifest,
    ManifestError,
    file_entries,
    manifest_from_dict,
)
from satellite.modeldir.onnxread import read_graph


def data_file_paths(graph_file: str, locations: Iterable[str]) -> list[str]:
    """External data locations (relative to the graph's folder) as paths relative to the
    model directory, in POSIX form."""
    folder = PurePosixPath(graph_file).parent
    return sorted(str(folder / location) for location in locations)


def make_manifest(
    directory: Path,
    *,
    name: str,
    family: str,
    variant: str,
    config: Mapping[str, Any],
    graphs: Mapping[str, str],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    tokenizer: str | None = "tokenizer.json",
    side_files: Mapping[str, str] | None = None,
    extra_files: Iterable[str] = (),
    source: Mapping[str, Any] | None = None,
    checksums: Mapping[str, FileEntry] | None = None,
) -> Manifest:
    """Build (not write) the manifest of `directory`.

    `graphs` maps roles to graph files; the graphs' external data files are found from the
    graphs themselves. `files` covers the graphs, their data files, the tokenizer, the side
    files and `extra_files`; `checksums` supplies entries already computed (e.g. while
    downloading) so large files are not hashed twice. Raises ManifestError (naming the field)
    when the result would not be a valid manifest, GraphReadError when a graph is unreadable.
    """
    options = options or {}
    entries: dict[str, GraphEntry] = {}
    names: set[str] = set(extra_files)
    for role, file in graphs.items():
        info = read_graph(directory / file)
        data_files = data_file_paths(file, info.external_data)
        entries[role] = GraphEntry(
            file=file,
            data_files=data_files,
            inputs=list(info.inputs),
            outputs=list(info.outputs),
            options=dict(options.get(role, {})),
        )
        names.add(file)
        names.update(data_files)
    if tokenizer is not None:
        names.add(tokenizer)
    side = dict(side_files or {})
    for key in ("embed_tokens", "audio_embedding"):
        if key in side:
            names.add(str(PurePosixPath(side[key]).with_suffix(".bin")))
    names.update(side.values())
    known = dict(checksums or {})
    missing = [n for n in names if n not in known]
    absent = sorted(n for n in missing if not (directory / n).is_file())
    if absent:
        raise ManifestError(f"{directory}: cannot write a manifest, missing: {', '.join(absent)}")
    files = {**{n: known[n] for n in names if n in known}, **file_entries(directory, missing)}
    manifest = Manifest(
        name=name,
        family=family,  # type: ignore[arg-type]  # checked by manifest_from_dict below
        variant=variant,  # type: ignore[arg-type]
        config=dict(config),
        graphs=entries,
        files=dict(sorted(files.items())),
        tokenizer=tokenizer,
        source=dict(source or {}),
        side_files=side,
    )
    # Round-trip through the reader so a manifest that could not be read back is never written.
    manifest_from_dict(json.loads(manifest.to_json()), f"{directory} (new manifest)")
    return manifest
