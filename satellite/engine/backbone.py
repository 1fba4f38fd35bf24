"""Which runner carries a model's LFM2 backbone (`model.backbone`): the decoder graph on
onnxruntime (`Decoder`, the default), or a GGUF file of the backbone on llama.cpp
(`LlamaDecoder`). Both take the same embeddings and keep their own caches; the rest of the
engine does not know which it has.

llama-cpp-python is an optional extra, imported only when the llama.cpp backbone is asked for,
so a satellite on onnxruntime never loads it (or needs it installed).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from satellite.engine.decoder import DEFAULT_CHUNK, Backbone, Decoder
from satellite.engine.model import Model, ModelLoadError

EXTRA = "pip install 'lfm-satellite[llamacpp]'"
LLAMA_CONTEXT = 4096
"""The most positions a llama.cpp runner holds. llama.cpp sets aside its keys and values for
the whole context when the runner opens (12 kB a position on the full model: 48 MB here, 400 MB
for the model's 32,768), where onnxruntime's cache grows as it fills; a voice conversation
takes some 250 positions a turn, and the chat drops its history (keeping the system prompt)
when the next turn does not fit."""


def gguf_path(model: Model) -> Path:
    """The llama.cpp backbone's file: `backbone_gguf` (relative to the model directory), else
    the one `.gguf` file in the model directory. Raises ModelLoadError saying what to set."""
    configured = model.config.backbone_gguf
    if configured:
        path = model.directory / Path(configured).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"model.backbone_gguf: {path}: no such file")
        return path
    found = sorted(model.directory.glob("*.gguf"))
    if len(found) != 1:
        what = "no .gguf file" if not found else f"{len(found)} .gguf files"
        raise ModelLoadError(
            f"model.backbone llamacpp: {model.directory} has {what}; set model.backbone_gguf to "
            "the backbone's GGUF file"
        )
    return found[0]


def open_backbone(model: Model, context_length: int, chunk: int = DEFAULT_CHUNK) -> Backbone:
    """A fresh backbone runner for `model`, as its session config says, holding up to
    `context_length` positions (on llama.cpp at most LLAMA_CONTEXT: the runner's
    `context_length` says what it holds)."""
    if model.config.backbone == "onnxruntime":
        return Decoder(
            model.graph("decoder"), model.manifest.config, context_length=context_length,
            chunk=chunk,
        )  # fmt: skip
    path = gguf_path(model)
    try:
        llama = importlib.import_module("satellite.engine.llamabackbone")
    except ImportError as err:
        raise ModelLoadError(
            f"model.backbone llamacpp needs llama-cpp-python ({err}): {EXTRA}"
        ) from None
    except (OSError, RuntimeError) as err:  # the binding found no usable libllama
        raise ModelLoadError(
            f"model.backbone llamacpp: llama-cpp-python cannot load llama.cpp ({err}); "
            "reinstall it, or set LLAMA_CPP_LIB_PATH to the folder of a libllama.so"
        ) from None
    decoder: Backbone = llama.LlamaDecoder(
        path,
        hidden_size=model.hidden_size,
        context_length=min(context_length, LLAMA_CONTEXT),
        chunk=chunk,
        threads=model.config.threads,
    )
    return decoder
