"""`lfm-satellite model verify`: is this a model directory the runtime can load?

Checks, each finding naming the file it is about:
- the manifest reads and names every role the model family needs;
- every file it lists exists with the recorded size and sha256 (graphs, their `.onnx_data`
  files, tokenizer, tables), and every file the graphs or tables use is listed;
- each graph (read from the file, not from the manifest) fits its role's contract
  (`satellite.modeldir.contract`), with shapes consistent with the config numbers, and its
  inputs and outputs are what the manifest records;
- the config numbers agree with each other and with the side files (mel config, tables);
- known defects of published graphs: an RMSNorm after the audio_embedding lookup, the
  depthformer's attention without rotary embeddings or with tables for the wrong theta (each
  refused with the command that corrects it; a directory carrying the fix says so), a decoder
  of the newer onnxruntime-genai export (conv state of 2);
- optionally (`load=engine.sessions.open_to_check`) that onnxruntime loads each graph with
  the same interface.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from satellite.modeldir.contract import (
    LAYER_TYPES,
    Binding,
    ContractError,
    match_role,
    ort_dtype,
)
from satellite.modeldir.layout import newer_layout
from satellite.modeldir.manifest import (
    MANIFEST_NAME,
    GraphEntry,
    Manifest,
    ManifestError,
    TensorSpec,
    read_manifest,
    required_roles,
    sha256_file,
)
from satellite.modeldir.onnxread import GraphInfo, GraphReadError, describe_tensor, read_graph
from satellite.modeldir.rotary import check_rotary
from satellite.modeldir.sidefiles import (
    SideFileError,
    check_mel_config,
    check_table,
    read_table,
)

Level = Literal["error", "warning"]

NORM_OPS = frozenset(
    {
        "SimplifiedLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "RMSNormalization",
        "LayerNormalization",
    }
)
"""Normalisation operators that must not follow the audio_embedding lookup."""


@dataclass(frozen=True)
class Finding:
    """One problem (or warning) about one file."""

    path: str
    """The file it is about, as the user gave the directory (empty when about no file)."""
    message: str
    level: Level = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass(frozen=True)
class Report:
    directory: Path
    manifest: Manifest | None
    findings: tuple[Finding, ...]
    bindings: dict[str, Binding] = field(default_factory=dict)
    """Role -> how its graph's names map to the contract (roles whose graph could be read)."""
    hashed_bytes: int = 0
    notes: tuple[str, ...] = ()
    """Facts worth telling that are not problems (repairs the directory carries)."""

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


Opener = Callable[[Path], Any]
"""Opens a graph file in onnxruntime and returns the session (its errors pass through)."""


def verify(directory: Path, *, checksums: bool = True, load: Opener | None = None) -> Report:
    """Check `directory` (see the module docstring). Never raises for a bad directory: every
    problem becomes a finding. With `load`, each graph is also opened with it and its
    interface compared."""
    try:
        manifest = read_manifest(directory)
    except ManifestError as err:
        return Report(directory, None, (Finding("", str(err)),))
    return verify_manifest(directory, manifest, checksums=checksums, load=load)


def verify_manifest(
    directory: Path, manifest: Manifest, *, checksums: bool = True, load: Opener | None = None
) -> Report:
    """Check `directory` against `manifest` (which need not be written yet)."""
    check = _Checker(directory, manifest)
    check.layout()
    check.config()
    check.roles()
    check.files(checksums)
    for role, entry in manifest.graphs.items():
        check.graph(role, entry, load)
    check.side_files()
    check.text_embeddings()
    return Report(
        directory=directory,
        manifest=manifest,
        findings=tuple(check.findings),
        bindings=check.bindings,
        hashed_bytes=check.hashed,
        notes=tuple(check.notes),
    )


class _Checker:
    def __init__(self, directory: Path, manifest: Manifest) -> None:
        self.dir = directory
        self.m = manifest
        self.findings: list[Finding] = []
        self.bindings: dict[str, Binding] = {}
        self.hashed = 0
        self.absent: set[str] = set()
        self.notes: list[str] = []

    def add(self, rel: str, message: str, level: Level = "error") -> None:
        self.findings.append(Finding(str(self.dir / rel), message, level))

    def manifest_problem(self, message: str) -> None:
        self.add(MANIFEST_NAME, message)

    # -- manifest-level -----------------------------------------------------------------

    def layout(self) -> None:
        marker = newer_layout(
            p.relative_to(self.dir).as_posix()
            for pattern in ("genai_config.json", "onnx/embeddings*.onnx")
            for p in self.dir.glob(pattern)
        )
        if marker is not None:
            self.add(
                marker,
                "marks the newer onnxruntime-genai export (conv state of 2, its own embeddings "
                "graph), which this version of lfm-satellite cannot run; fetch the pinned "
                "revision of the catalog (`lfm-satellite model fetch NAME` without --revision)",
            )

    def config(self) -> None:
        c = self.m.config
        types = c["layer_types"]
        if len(types) != c["num_hidden_layers"]:
            self.manifest_problem(
                f"config.layer_types lists {len(types)} layers but config.num_hidden_layers "
                f"is {c['num_hidden_layers']}"
            )
        for i, kind in enumerate(types):
            if not isinstance(kind, str) or kind not in LAYER_TYPES:
                self.manifest_problem(
                    f"config.layer_types[{i}]: {kind!r} is not one of {', '.join(LAYER_TYPES)}"
                )
        heads, kv = c["num_attention_heads"], c["num_key_value_heads"]
        if heads <= 0 or kv <= 0 or heads % kv:
            self.manifest_problem(
                f"config.num_attention_heads ({heads}) must be a positive multiple of "
                f"config.num_key_value_heads ({kv})"
            )
        elif "head_dim" not in c and c["hidden_size"] % heads:
            self.manifest_problem(
                f"config.hidden_size ({c['hidden_size']}) is not divisible by "
                f"config.num_attention_heads ({heads}); give config.head_dim"
            )
        for key in ("hidden_size", "vocab_size", "codebooks", "n_mels", "conv_cache"):
            if c[key] <= 0:
                self.manifest_problem(f"config.{key}: {c[key]} must be positive")
        if c["codebook_size"] < 2:
            self.manifest_problem(
                f"config.codebook_size: {c['codebook_size']} must count the codes and the "
                "end-of-audio code"
            )

    def roles(self) -> None:
        needed = required_roles(self.m.family)
        for role in needed:
            if role not in self.m.graphs:
                self.manifest_problem(
                    f"graphs: role {role} is missing; a {self.m.family} model needs "
                    f"{', '.join(needed)}"
                )

    def files(self, checksums: bool) -> None:
        listed = self.m.files
        for name, entry in listed.items():
            if not _inside(name):
                self.manifest_problem(
                    f"files: {name!r} is not a relative path inside the directory"
                )
                self.absent.add(name)
                continue
            path = self.dir / name
            if not path.is_file():
                self.add(name, f"missing (listed in {MANIFEST_NAME})")
                self.absent.add(name)
                continue
            size = path.stat().st_size
            if size != entry.size:
                self.add(
                    name,
                    f"size is {size} bytes, {MANIFEST_NAME} records {entry.size}: the file is "
                    "truncated, corrupted or replaced",
                )
                continue
            if checksums:
                try:
                    digest = sha256_file(path)
                except OSError as err:
                    self.add(name, f"cannot read: {err.strerror or err}")
                    continue
                self.hashed += size
                if digest != entry.sha256.lower():
                    self.add(
                        name,
                        f"sha256 mismatch: the file is corrupted or replaced "
                        f"(is {digest[:16]}…, {MANIFEST_NAME} records {entry.sha256[:16]}…)",
                    )
        used: list[str] = []
        for entry_ in self.m.graphs.values():
            used.append(entry_.file)
            used.extend(entry_.data_files)
        if self.m.tokenizer is not None:
            used.append(self.m.tokenizer)
        used.extend(self.m.side_files.values())
        for name in used:
            if not _inside(name):
                self.manifest_problem(f"{name!r} is not a relative path inside the directory")
                self.absent.add(name)
                continue
            if name in listed:
                continue
            if (self.dir / name).is_file():
                self.add(
                    name, f"not listed in {MANIFEST_NAME} files, so its checksum cannot be checked"
                )
            elif name not in self.absent:
                self.add(name, f"missing (and not listed in {MANIFEST_NAME} files)")
                self.absent.add(name)

    # -- graphs -------------------------------------------------------------------------

    def graph(self, role: str, entry: GraphEntry, load: Opener | None) -> None:
        if entry.file in self.absent:
            return  # already reported
        try:
            info = read_graph(self.dir / entry.file)
        except GraphReadError as err:
            self.add(entry.file, str(err).removeprefix(f"{self.dir / entry.file}: "))
            return
        self.data_files(entry, info)
        try:
            match = match_role(role, info.inputs, info.outputs, self.m.config, entry.options)
        except ContractError as err:
            self.manifest_problem(f"graphs.{role}.{err}")
            return
        self.bindings[role] = match.binding
        for problem in match.problems:
            self.add(entry.file, f"{problem} [{role}]")
        self.recorded(entry, "input", entry.inputs, info.inputs)
        self.recorded(entry, "output", entry.outputs, info.outputs)
        self.defects(role, entry, info)
        if load is not None:
            self.load(entry, info, load)

    def data_files(self, entry: GraphEntry, info: GraphInfo) -> None:
        folder = PurePosixPath(entry.file).parent
        referenced = {str(folder / location) for location in info.external_data}
        for name in sorted(referenced):
            if name not in entry.data_files:
                self.add(
                    entry.file,
                    f"keeps weights in {name}, which {MANIFEST_NAME} does not list in its "
                    "data_files",
                )
            if not (self.dir / name).is_file() and name not in self.absent:
                self.add(name, f"missing: {entry.file} keeps its weights there")
                self.absent.add(name)
        for name in entry.data_files:
            if name not in referenced:
                self.add(
                    entry.file,
                    f"{MANIFEST_NAME} lists data file {name}, but the graph does not use it",
                    "warning",
                )

    def recorded(
        self,
        entry: GraphEntry,
        side: str,
        recorded: list[TensorSpec],
        actual: tuple[TensorSpec, ...],
    ) -> None:
        if not recorded:
            self.add(
                entry.file,
                f"{MANIFEST_NAME} records no {side}s for this graph; the graph's are not compared",
                "warning",
            )
            return
        mine = {t.name: t for t in recorded}
        theirs = {t.name: t for t in actual}
        for name, spec in theirs.items():
            if name not in mine:
                self.add(
                    entry.file,
                    f"{side} {name} is in the graph but {MANIFEST_NAME} does not record it",
                )
            elif (spec.dtype, list(spec.shape)) != (mine[name].dtype, list(mine[name].shape)):
                self.add(
                    entry.file,
                    f"{side} {name}: {MANIFEST_NAME} records {describe_tensor(mine[name])}, "
                    f"the graph has {describe_tensor(spec)}",
                )
        for name in mine:
            if name not in theirs:
                self.add(
                    entry.file,
                    f"{MANIFEST_NAME} records {side} {name}, which the graph does not have",
                )

    def defects(self, role: str, entry: GraphEntry, info: GraphInfo) -> None:
        if role == "audio_embedding":
            norms = sorted({n.op_type for n in info.nodes if n.op_type in NORM_OPS})
            if norms:
                self.add(
                    entry.file,
                    f"applies {', '.join(norms)} after the code lookup: a known defect of early "
                    "audio_embedding exports (the norm belongs to the output head only), so its "
                    "embeddings are wrong; use a current export",
                )
        if role == "depthformer":
            self.rotary(entry, info)
        if role == "decoder":
            conv = [
                t
                for t in info.inputs
                if t.name.startswith("past_conv") and len(t.shape) == 3 and t.shape[2] == 2
            ]
            if conv:
                self.add(
                    entry.file,
                    f"{conv[0].name} holds a conv state of 2: the newer onnxruntime-genai "
                    "export, which this version of lfm-satellite cannot run; fetch the pinned "
                    "revision of the catalog (`lfm-satellite model fetch NAME` without --revision)",
                )

    def rotary(self, entry: GraphEntry, info: GraphInfo) -> None:
        """The published depthformer's rotary defect (satellite.modeldir.rotary): each defect
        read from the graph, and whether the directory carries the fix."""
        try:
            check = check_rotary(info)
        except OSError as err:
            self.add(entry.file, f"cannot read its rotary tables: {err}")
            return
        fix = entry.options.get("rope_fix")
        if check.defective:
            for problem in check.problems():
                self.add(
                    entry.file,
                    f"{problem}: a known defect of the published vocoder_depthformer graphs "
                    "(codebooks 1-7 come out wrong, the speech is degraded); correct it with "
                    f"`lfm-satellite model fix {self.dir}`",
                )
            return
        if isinstance(fix, dict) and check.theta is not None:
            self.notes.append(
                f"{entry.file}: carries the rotary fix of {fix.get('from', '?')} (do_rotary=1 "
                f"on {check.attention_nodes} attention nodes, tables for theta "
                f"{check.theta:,.0f})"
            )

    def load(self, entry: GraphEntry, info: GraphInfo, opener: Opener) -> None:
        try:
            session = opener(self.dir / entry.file)
        except Exception as err:  # onnxruntime raises its own untyped errors
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            self.add(entry.file, f"onnxruntime cannot load it: {first}")
            return
        for side, nodes, specs in (
            ("input", session.get_inputs(), info.inputs),
            ("output", session.get_outputs(), info.outputs),
        ):
            loaded = {n.name: ort_dtype(n.type) for n in nodes}
            read = {s.name: s.dtype for s in specs}
            if loaded != read:
                self.add(
                    entry.file,
                    f"onnxruntime sees {side}s {_fmt(loaded)}, the file declares {_fmt(read)}",
                )

    # -- side files ---------------------------------------------------------------------

    def side_files(self) -> None:
        side = self.m.side_files
        for key in ("embed_tokens", "audio_embedding"):
            rel = side.get(key)
            if rel is None or rel in self.absent or not (self.dir / rel).is_file():
                continue
            try:
                table = read_table(self.dir / rel)
            except SideFileError as err:
                self.add(rel, str(err).removeprefix(f"{self.dir / rel}: "))
                continue
            bin_rel = str(PurePosixPath(rel).with_suffix(".bin"))
            if bin_rel in self.absent:
                continue  # already reported
            if bin_rel not in self.m.files:
                self.add(bin_rel, f"not listed in {MANIFEST_NAME} files (the {key} table)")
            for path, message in check_table(table, key, self.m.config):
                self.findings.append(Finding(str(path), message))
        rel = side.get("mel_config")
        if rel is not None and rel not in self.absent and (self.dir / rel).is_file():
            try:
                problems = check_mel_config(self.dir / rel, self.m.config)
            except SideFileError as err:
                problems = [(self.dir / rel, str(err).removeprefix(f"{self.dir / rel}: "))]
            for path, message in problems:
                self.findings.append(Finding(str(path), message))

    def text_embeddings(self) -> None:
        binding = self.bindings.get("decoder")
        if binding is None or "inputs_embeds" not in binding.inputs:
            return
        if "embed_tokens" in self.m.graphs or "embed_tokens" in self.m.side_files:
            return
        self.manifest_problem(
            "the decoder takes inputs_embeds, so the model needs text embeddings: an "
            "embed_tokens graph (graphs.embed_tokens) or table (side_files.embed_tokens)"
        )


def _inside(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name


def _fmt(mapping: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items()) or "none"
