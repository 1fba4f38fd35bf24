"""The LFM2 backbone on llama.cpp, behind the `Decoder`'s interface (`model.backbone: llamacpp`).

llama.cpp's CPU kernels decode the same backbone faster than onnxruntime's on some CPUs (see
docs/PERFORMANCE.md); this runs a GGUF file of the backbone (architecture `lfm2`) through
llama-cpp-python's low-level binding, fed the engine's own input embeddings (text and audio,
as the ONNX graph is), so everything around it (encoder, depthformer, detokenizer, sampling)
stays as it is.

One difference shapes the interface: a llama.cpp step gives either the text logits (its head
applied) or the final-normed hidden state (its embeddings mode, which skips the head), not
both. The engine never needs both: a text step samples from the logits, an audio step feeds
the hidden state to the depthformer. So `step(logits=True)` returns logits and no hidden
state, `step(logits=False)` the hidden state and no logits.

A snapshot copies the sequence's state out of llama.cpp (`llama_state_seq_get_data`: the
attention keys and values, about 12 kB a position on the full model, and the conv states); a
restore writes it back. llama.cpp's own log goes to the `satellite.engine.llama` logger.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from pathlib import Path

import llama_cpp as llama
import numpy as np

from satellite.engine.decoder import DecoderState, QueuedInput, StepOutput
from satellite.engine.model import FloatArray
from satellite.errors import UserError

_LOG = logging.getLogger("satellite.engine.llama")

ARCHITECTURE = "lfm2"
STATE_KEY = "llama_state"
"""The snapshot's one cache entry: the sequence's state as llama.cpp serialises it."""

FILE_TYPE_FLOAT32 = "0"
"""`general.file_type` of a GGUF whose weights are all float32 (llama.cpp's LLAMA_FTYPE_ALL_F32)."""
_LOG_LEVELS = {3: logging.WARNING, 4: logging.ERROR}
"""ggml's log levels that are more than detail (1 debug, 2 info, 5 continued: debug here)."""


class BackboneLoadError(UserError):
    """The GGUF file cannot be run as this model's backbone (the message names the file)."""


def _log_to_python(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    message = text.decode("utf-8", errors="replace").rstrip()
    if message:
        _LOG.log(_LOG_LEVELS.get(level, logging.DEBUG), "%s", message)


_LOG_CALLBACK = llama.llama_log_callback(_log_to_python)
"""Kept for the life of the process: llama.cpp calls it from any thread, at any time."""
llama.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
llama.llama_backend_init()


def _metadata(model: llama.llama_model_p, key: str) -> str | None:
    buffer = ctypes.create_string_buffer(256)
    size = llama.llama_model_meta_val_str(model, key.encode(), buffer, len(buffer))
    return buffer.value.decode() if size >= 0 else None


_LOADED: dict[Path, llama.llama_model_p] = {}
"""Backbone files loaded in this process: every runner (a Chat each: the satellite's reply,
the services' requests) shares one copy of the weights and has its own context."""
_LOADING = threading.Lock()
"""The services' worker threads open chats at once: one of them loads a file."""


def load_weights(path: Path, hidden_size: int) -> llama.llama_model_p:
    """The loaded GGUF at `path` (loaded once per process). Raises BackboneLoadError naming the
    file when it is missing, unreadable, or not an LFM2 backbone of `hidden_size`."""
    key = path.resolve()
    with _LOADING:
        model = _LOADED.get(key)
        if model is None:
            model = _load(path)
            _LOADED[key] = model
    width = llama.llama_model_n_embd(model)
    if width != hidden_size:
        raise BackboneLoadError(
            f"{path}: hidden size {width}: not this model's backbone (hidden size {hidden_size})"
        )
    return model


def _load(path: Path) -> llama.llama_model_p:
    if not path.is_file():
        raise BackboneLoadError(f"{path}: no such backbone GGUF file")
    params = llama.llama_model_default_params()
    # read, not mapped: the CPU kernels use a repacked copy of the 4-bit weights, and a
    # mapped file stays resident beside it (full Q4_0: 844 MB RSS read, 1,396 MB mapped)
    params.load_mode = llama.LLAMA_LOAD_MODE_NONE
    model: llama.llama_model_p = llama.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise BackboneLoadError(
            f"{path}: llama.cpp cannot load it (see the satellite.engine.llama log)"
        )
    architecture = _metadata(model, "general.architecture")
    if architecture != ARCHITECTURE:
        llama.llama_model_free(model)
        raise BackboneLoadError(
            f"{path}: architecture {architecture!r}: not an LFM2 backbone ({ARCHITECTURE!r})"
        )
    return model


class LlamaDecoder(QueuedInput):
    """Runs a backbone GGUF with llama.cpp, carrying its caches from call to call; the same
    methods and attributes as `satellite.engine.decoder.Decoder`."""

    def __init__(
        self,
        path: Path,
        *,
        hidden_size: int,
        context_length: int,
        chunk: int = 64,
        threads: int = 0,
    ) -> None:
        """`threads` 0: every core. llama.cpp's defaults (float16 keys and values, flash
        attention where it helps), except for a float32 GGUF, which is there for exactness:
        float32 keys and values and plain attention."""
        self._context: llama.llama_context_p | None = None
        super().__init__(hidden_size, context_length, chunk)
        self.path = path
        self._model = load_weights(path, hidden_size)
        self._vocab = llama.llama_vocab_n_tokens(llama.llama_model_get_vocab(self._model))
        params = llama.llama_context_default_params()
        params.n_ctx = context_length
        params.n_batch = params.n_ubatch = chunk
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = threads or os.cpu_count() or 1
        params.no_perf = True
        if _metadata(self._model, "general.file_type") == FILE_TYPE_FLOAT32:
            # exact: float32 keys and values, and no flash attention (it rounds the queries
            # to float16: 5e-4 of the logits' scale against 4e-6 without, on the tiny model)
            params.type_k = params.type_v = llama.GGML_TYPE_F32
            params.flash_attn_type = llama.LLAMA_FLASH_ATTN_TYPE_DISABLED
        context = llama.llama_init_from_model(self._model, params)
        if not context:
            raise BackboneLoadError(
                f"{path}: llama.cpp cannot make a context of {context_length} positions "
                "(see the satellite.engine.llama log)"
            )
        self._context = context
        self._memory = llama.llama_get_memory(context)
        self._batch = llama.llama_batch_init(chunk, hidden_size, 1)
        self._embeddings_mode: bool | None = None

    def close(self) -> None:
        """Free this runner's llama.cpp context (the object is unusable after; the weights
        stay loaded for other runners)."""
        if self._context:
            llama.llama_batch_free(self._batch)
            llama.llama_free(self._context)
            self._context = None

    def __del__(self) -> None:
        self.close()

    def step(self, logits: bool = True) -> StepOutput:
        """Run the queued input; returns the last position's text logits (`logits=True`) or
        its final-normed hidden state (`logits=False`). Raises ContextFullError (running
        nothing) when it does not fit, ValueError when nothing is queued."""
        queued = self._take()
        self._set_mode(embeddings=not logits)
        for start in range(0, queued.shape[0], self.chunk):
            self._run(queued[start : start + self.chunk])
        if logits:
            return StepOutput(
                logits=self._read(llama.llama_get_logits_ith, self._vocab), hidden=None
            )
        return StepOutput(
            logits=None, hidden=self._read(llama.llama_get_embeddings_ith, self.hidden_size)
        )

    def _set_mode(self, embeddings: bool) -> None:
        if self._embeddings_mode is not embeddings:
            llama.llama_set_embeddings(self._context, embeddings)
            self._embeddings_mode = embeddings

    def _run(self, embeds: FloatArray) -> None:
        n = embeds.shape[0]
        batch = self._batch
        batch.n_tokens = n
        ctypes.memmove(batch.embd, embeds.ctypes.data, embeds.nbytes)
        positions = np.arange(self.length, self.length + n, dtype=np.int32)
        ctypes.memmove(batch.pos, positions.ctypes.data, positions.nbytes)
        every = bool(self._embeddings_mode)  # llama.cpp's embeddings mode outputs every position
        for i in range(n):
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = every or i == n - 1
        status = llama.llama_decode(self._context, batch)
        if status != 0:
            raise RuntimeError(f"{self.path}: llama_decode failed with status {status}")
        self.length += n
        self.calls += 1

    def _read(self, getter: object, size: int) -> FloatArray:
        pointer = getter(self._context, -1)  # type: ignore[operator]
        if not pointer:
            raise RuntimeError(f"{self.path}: llama.cpp returned no output for the last position")
        return np.ctypeslib.as_array(pointer, shape=(size,)).astype(np.float32)

    def snapshot(self) -> DecoderState:
        size = llama.llama_state_seq_get_size(self._context, 0)
        state = np.empty(size, dtype=np.uint8)
        written = llama.llama_state_seq_get_data(
            self._context, state.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), size, 0
        )
        if written != size:
            raise RuntimeError(f"{self.path}: llama.cpp wrote {written} of {size} state bytes")
        return DecoderState(
            cache={STATE_KEY: state}, length=self.length, pending=tuple(self._pending)
        )

    def restore(self, state: DecoderState) -> None:
        saved = state.cache[STATE_KEY]
        llama.llama_memory_clear(self._memory, True)
        if state.length:
            read = llama.llama_state_seq_set_data(
                self._context,
                saved.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
                saved.nbytes,
                0,
            )
            if read != saved.nbytes:
                raise RuntimeError(f"{self.path}: llama.cpp could not restore a snapshot")
        self.length = state.length
        self._pending = list(state.pending)

    def reset(self) -> None:
        """Empty caches, nothing queued."""
        llama.llama_memory_clear(self._memory, True)
        self.length = 0
        self._pending = []
