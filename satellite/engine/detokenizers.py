"""The streaming detokenizer a model gets: Mimi's stateful graph for LFM2-Audio v1
(`mimi`), else the cached or the exact windowed graph (`detokenize`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

from satellite.engine.detokenize import (
    CachedDecoder,
    Choice,
    DetokenizerError,
    FrameDecoder,
    GraphSource,
    StreamingDetokenizer,
    WindowedDecoder,
    bind,
    choose_role,
)
from satellite.engine.mimi import mimi_detokenizer
from satellite.engine.sessions import plain_session_options
from satellite.modeldir.manifest import Manifest, read_manifest


def detokenizer_for(
    manifest: Manifest,
    open_graph: Callable[[str], tuple[Any, str]],
    choice: Choice = "auto",
    *,
    context_frames: int | None = None,
) -> StreamingDetokenizer:
    """A StreamingDetokenizer for `manifest`; `open_graph(role)` returns that role's session
    and its file (for messages). `context_frames` overrides the windowed backend's context."""
    if manifest.family == "lfm2-audio":
        return mimi_detokenizer(manifest, open_graph)
    role = choose_role(manifest, choice)
    session, where = open_graph(role)
    entry = manifest.graphs[role]
    graph = bind(role, session, manifest.config, entry.options, where)
    codebooks = int(manifest.config["codebooks"])
    decoder: FrameDecoder
    if role == "audio_detokenizer_cached":
        decoder = CachedDecoder(graph, codebooks)
    else:
        decoder = WindowedDecoder(graph, codebooks, context_frames)
    eoa = int(manifest.config["codebook_size"]) - 1
    return StreamingDetokenizer(decoder, end_of_audio=eoa, codebook_size=eoa)


def from_model(model: GraphSource, choice: Choice = "auto") -> StreamingDetokenizer:
    """A StreamingDetokenizer on the sessions of a loaded model (`model.graph(role)`)."""

    def open_graph(role: str) -> tuple[Any, str]:
        entry = model.manifest.graphs[role]
        return model.graph(role).session, str(model.directory / entry.file)

    return detokenizer_for(model.manifest, open_graph, choice)


def open_detokenizer(
    directory: Path,
    choice: Choice = "auto",
    *,
    session_options: Any = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    context_frames: int | None = None,
) -> StreamingDetokenizer:
    """A StreamingDetokenizer on the model directory `directory`, with its own session."""
    manifest = read_manifest(directory)

    def open_graph(role: str) -> tuple[Any, str]:
        path = directory / manifest.graphs[role].file
        try:
            options = session_options or plain_session_options()
            session = ort.InferenceSession(str(path), options, providers=list(providers))
        except Exception as err:  # onnxruntime raises its own untyped errors
            text = str(err).strip()
            raise DetokenizerError(
                f"{path}: onnxruntime cannot open it: {text.splitlines()[0] if text else err!r}"
            ) from None
        return session, str(path)

    return detokenizer_for(manifest, open_graph, choice, context_frames=context_frames)
