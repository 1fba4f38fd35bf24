"""A model directory loaded for the engine: its manifest, one onnxruntime session per graph role
(opened on first use), bound to the graph's own tensor names, and the embedding lookups.

Tensor names are never assumed: each session's inputs and outputs go through
`satellite.modeldir.contract.match_role`, which maps the contract's slots (`inputs_embeds`,
`past_conv.0`, `depth_slices_in`, ...) to whatever the graph calls them, so the project's own
builds and the official `LiquidAI/LFM2.5-Audio-1.5B-ONNX` layout load through the same code.

Embeddings: text embeddings come from the `embed_tokens` table side file when the manifest
names one, else from the `embed_tokens` graph: read directly (`satellite.engine.tables`, rows
by `pread`, no session) when it is a plain block-quantized lookup, as the project's q4/q8
builds are, else run in its session. Audio code embeddings likewise from the `audio_embedding`
table or graph. A frame's embedding is the sum over codebooks of row `code_c + codebook_size
* c`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from satellite.engine.sessions import SessionConfig, open_session, resolve_providers
from satellite.engine.tables import BlockTable, EmbeddingTable, block_table
from satellite.engine.template import Tokens
from satellite.errors import UserError
from satellite.modeldir.contract import Binding, match_role, session_specs
from satellite.modeldir.integrity import check_integrity
from satellite.modeldir.manifest import Manifest, read_manifest, required_roles
from satellite.modeldir.onnxread import GraphReadError, read_graph
from satellite.modeldir.rotary import check_rotary
from satellite.modeldir.sidefiles import SideFileError, check_table, read_table

_LOG = logging.getLogger("satellite.engine.model")

FloatArray = npt.NDArray[np.float32]
Table = EmbeddingTable | BlockTable


class ModelLoadError(UserError):
    """The model directory cannot be run by this engine; the message names the file."""


@dataclass(frozen=True)
class BoundGraph:
    """One role's session and how its tensor names map to the contract's slots."""

    role: str
    path: Path
    session: Any
    """The `onnxruntime.InferenceSession`."""
    binding: Binding

    def has_input(self, slot: str) -> bool:
        return slot in self.binding.inputs

    def input_type(self, slot: str) -> str:
        """onnxruntime's element type of input `slot`, e.g. `tensor(float16)`."""
        name = self.binding.inputs[slot]
        return str(next(i.type for i in self.session.get_inputs() if i.name == name))

    def input_shape(self, slot: str) -> list[int | str | None]:
        name = self.binding.inputs[slot]
        return list(next(i.shape for i in self.session.get_inputs() if i.name == name))

    def run(self, outputs: Sequence[str], feeds: Mapping[str, Any]) -> list[Any]:
        """Run with inputs and outputs named by slot; returns the outputs in order."""
        names = [self.binding.outputs[key] for key in outputs]
        by_name = {self.binding.inputs[key]: value for key, value in feeds.items()}
        return list(self.session.run(names, by_name))


def numpy_dtype(ort_type: str) -> np.dtype[Any]:
    """onnxruntime's `tensor(float16)` -> numpy's float16 (float32 for anything else float)."""
    return np.dtype(np.float16) if ort_type == "tensor(float16)" else np.dtype(np.float32)


class Embeddings:
    """Text and audio-code embeddings, from tables or graphs."""

    def __init__(self, model: Model) -> None:
        self.model = model
        config = model.manifest.config
        self.codebooks = int(config["codebooks"])
        self.codebook_size = int(config["codebook_size"])
        self.offsets = np.arange(self.codebooks, dtype=np.int64) * self.codebook_size
        self._text_table = model.table("embed_tokens")
        self._audio_table = model.table("audio_embedding")

    def text(self, ids: Sequence[int] | npt.NDArray[np.int64]) -> FloatArray:
        """[n] token ids -> [n, hidden]."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            return np.zeros((0, self.model.hidden_size), dtype=np.float32)
        if self._text_table is not None:
            return self._text_table(ids)
        graph = self.model.graph("embed_tokens")
        (out,) = graph.run(["inputs_embeds"], {"input_ids": ids[None, :]})
        return np.asarray(out[0], dtype=np.float32)

    def frames(self, codes: npt.ArrayLike) -> FloatArray:
        """[n, codebooks] codes (0..codebook_size-1; the end-of-audio code included) ->
        [n, hidden]: per frame the sum of its codebooks' rows."""
        codes = np.asarray(codes, dtype=np.int64).reshape(-1, self.codebooks)
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"audio codes must lie in 0..{self.codebook_size - 1}")
        flat = (codes + self.offsets[None, :]).reshape(-1)
        if self._audio_table is not None:
            rows = self._audio_table(flat)
        else:
            graph = self.model.graph("audio_embedding")
            (out,) = graph.run(["audio_embeds"], {"audio_codes": flat[None, :]})
            rows = np.asarray(out[0], dtype=np.float32)
        summed: FloatArray = rows.reshape(codes.shape[0], self.codebooks, -1).sum(axis=1)
        return summed


class Model:
    """A loaded model directory. Sessions open on first use of their role (`graph`), or all at
    once with `open`; every session shares one SessionConfig and provider list."""

    def __init__(
        self, directory: Path, manifest: Manifest, config: SessionConfig | None = None
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.config = config or SessionConfig()
        self.providers = resolve_providers(self.config.providers)
        self._graphs: dict[str, BoundGraph] = {}
        self._tables: dict[str, Table | None] = {}
        self._embeddings: Embeddings | None = None
        self._tokenizer: Any = None

    @classmethod
    def load(cls, directory: Path, config: SessionConfig | None = None) -> Self:
        """Read the manifest of `directory` and check that the engine can run it (the roles
        it needs, the depthformer's granularity, text embeddings) and that its files are the
        manifest's (`satellite.modeldir.integrity`: sizes each time, checksums once per
        change; DamagedModelError names a damaged file). Sessions open lazily."""
        manifest = read_manifest(directory)
        model = cls(directory, manifest, config)
        model._check()
        check_integrity(directory, manifest)
        return model

    @property
    def hidden_size(self) -> int:
        return int(self.manifest.config["hidden_size"])

    @property
    def max_context(self) -> int | None:
        """The longest sequence the decoder supports, where the model says."""
        options = self.manifest.graphs["decoder"].options
        for value in (
            options.get("max_sequence_length"),
            self.manifest.config.get("max_sequence_length"),
            self.manifest.config.get("max_position_embeddings"),
        ):
            if isinstance(value, int) and value > 0:
                return value
        return None

    def _check(self) -> None:
        where = self.directory / "manifest.json"
        missing = [r for r in required_roles(self.manifest.family) if r not in self.manifest.graphs]
        # the vocoder is not needed to generate tokens; the detokenizer's owner checks it
        missing = [r for r in missing if r in ("decoder", "audio_encoder", "depthformer")]
        if missing:
            raise ModelLoadError(f"{where}: graphs: missing role(s) {', '.join(missing)}")
        granularity = self.manifest.graphs["depthformer"].options.get(
            "granularity", "codebook_step"
        )
        if granularity != "codebook_step":
            raise ModelLoadError(
                f"{where}: graphs.depthformer.options.granularity {granularity!r}: this engine "
                "runs codebook_step depthformers only"
            )
        self._check_rotary()
        for role, table in (
            ("embed_tokens", "embed_tokens"),
            ("audio_embedding", "audio_embedding"),
        ):
            if role not in self.manifest.graphs and table not in self.manifest.side_files:
                raise ModelLoadError(
                    f"{where}: no {role}: the model needs an {role} graph (graphs.{role}) or "
                    f"table (side_files.{table})"
                )

    def _check_rotary(self) -> None:
        """Refuse the published depthformer's rotary defect (satellite.modeldir.rotary): its
        speech would be audibly wrong, and `model fix` corrects it in a second."""
        path = self.directory / self.manifest.graphs["depthformer"].file
        try:
            check = check_rotary(read_graph(path))
        except GraphReadError as err:
            raise ModelLoadError(str(err)) from None
        except OSError as err:
            raise ModelLoadError(f"{path}: cannot read its rotary tables: {err}") from None
        if check.defective:
            raise ModelLoadError(
                f"{path}: {'; '.join(check.problems())}: the published graph's known defect "
                f"(the speech would come out wrong); correct it with "
                f"`lfm-satellite model fix {self.directory}`"
            )

    def open(self, roles: Sequence[str] | None = None) -> None:
        """Open the sessions of `roles` now (default: every graph of the manifest but the
        lookups read as tables, see `table`)."""
        if roles is None:
            roles = [r for r in self.manifest.graphs if self.table(r) is None]
        for role in roles:
            self.graph(role)

    def graph(self, role: str) -> BoundGraph:
        """The bound session of `role`, opened on first use. Raises ModelLoadError naming the
        graph file when its inputs and outputs do not fit the role's contract."""
        bound = self._graphs.get(role)
        if bound is not None:
            return bound
        entry = self.manifest.graphs.get(role)
        if entry is None:
            raise ModelLoadError(
                f"{self.directory / 'manifest.json'}: graphs.{role}: the model has no {role} graph"
            )
        path = self.directory / entry.file
        session = open_session(path, self.config, self.providers)
        match = match_role(role, *session_specs(session), self.manifest.config, entry.options)
        if match.problems:
            raise ModelLoadError(
                f"{path}: does not fit the {role} contract: " + "; ".join(match.problems)
            )
        if role == "decoder" and "inputs_embeds" not in match.binding.inputs:
            raise ModelLoadError(
                f"{path}: the decoder takes token ids only; the engine needs one that takes "
                "inputs_embeds (audio frames are fed as embeddings)"
            )
        bound = BoundGraph(role=role, path=path, session=session, binding=match.binding)
        _LOG.debug("opened %s (%s) on %s", role, path, ", ".join(session.get_providers()))
        self._graphs[role] = bound
        return bound

    def table(self, key: str) -> Table | None:
        """The embedding table `key` (`embed_tokens`, `audio_embedding`), read without a
        session (`satellite.engine.tables`): the side file of that name, else the role's
        graph when it is a plain block-quantized lookup; None when there is neither."""
        if key in self._tables:
            return self._tables[key]
        rel = self.manifest.side_files.get(key)
        table: Table | None = None
        entry = self.manifest.graphs.get(key)
        if rel is None and entry is not None:
            try:
                table = block_table(read_graph(self.directory / entry.file))
            except GraphReadError as err:
                raise ModelLoadError(str(err)) from None
            except OSError as err:  # the table's data file
                raise ModelLoadError(
                    f"{self.directory / entry.file}: cannot read its table: {err}"
                ) from None
        if rel is not None:
            path = self.directory / rel
            try:
                info = read_table(path)
            except SideFileError as err:
                raise ModelLoadError(str(err)) from None
            problems = check_table(info, key, self.manifest.config)
            if problems:
                raise ModelLoadError("; ".join(f"{p}: {m}" for p, m in problems))
            table = EmbeddingTable(info)
        self._tables[key] = table
        return table

    @property
    def embeddings(self) -> Embeddings:
        if self._embeddings is None:
            self._embeddings = Embeddings(self)
        return self._embeddings

    def tokenizer(self) -> Any:
        """The `tokenizers.Tokenizer` of the directory, or None when it has none."""
        if self._tokenizer is None and self.manifest.tokenizer:
            path = self.directory / self.manifest.tokenizer
            if path.is_file():
                try:
                    self._tokenizer = Tokenizer.from_file(str(path))
                except Exception as err:  # tokenizers raises its own untyped errors
                    raise ModelLoadError(f"{path}: cannot read the tokenizer: {err}") from None
        return self._tokenizer

    def tokens(self, needed_by: str) -> Tokens:
        """The tokenizer with the template's special tokens; ModelLoadError saying what
        `needed_by` (e.g. "the satellite needs one to read the model's text") when the
        directory has none."""
        tokenizer = self.tokenizer()
        if tokenizer is None:
            raise ModelLoadError(
                f"{self.directory}: the model directory has no tokenizer (manifest `tokenizer`); "
                f"{needed_by}"
            )
        return Tokens(tokenizer, str(self.directory / str(self.manifest.tokenizer)))
