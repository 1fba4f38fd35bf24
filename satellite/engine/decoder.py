"""The LFM2 backbone with its caches: feed embeddings, get the last position's text logits and
final-normed hidden state, keep the conv states and attention keys/values for the next call.

Input is queued (`push`) and run when an output is needed (`step`), so whatever was queued but
not yet run (the last sampled token of an interrupted reply, the closing tokens of a turn) simply
waits for the next call: the cache always holds exactly what was run, and `length` +
`pending_length` is what the context holds once the queue is run.

A long queue is run in chunks of at most `chunk` positions: the graph computes the same for
one token, a prompt, or a chunk on a filled cache, and the logits of a chunk ([chunk, vocab]
floats) stay small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from satellite.engine.model import BoundGraph, FloatArray, numpy_dtype
from satellite.errors import UserError
from satellite.modeldir.contract import config_dims, layer_indices

DEFAULT_CHUNK = 64


class ContextFullError(UserError):
    """The queued input does not fit in the context; nothing was run."""

    def __init__(self, needed: int, limit: int) -> None:
        super().__init__(f"context full: {needed} positions needed, the limit is {limit}")
        self.needed = needed
        self.limit = limit


@dataclass(frozen=True)
class DecoderState:
    """A snapshot of the caches (arrays are never modified in place, so it shares them)."""

    cache: dict[str, npt.NDArray[np.generic]]
    length: int
    pending: tuple[FloatArray, ...] = field(default=())


@dataclass(frozen=True)
class StepOutput:
    logits: FloatArray | None
    """[vocab] text logits of the last position run; None when the step was asked to skip the
    text head (graphs with a `num_logits_to_keep` input)."""
    hidden: FloatArray | None
    """[hidden] final-normed hidden state of the last position (the depthformer's input); None
    from a backbone that gives one or the other (llama.cpp) when logits were asked for."""


class Backbone(Protocol):
    """What the engine asks of a backbone runner: `Decoder` (onnxruntime) and
    `satellite.engine.llamabackbone.LlamaDecoder` (llama.cpp)."""

    hidden_size: int
    context_length: int
    chunk: int
    length: int
    calls: int

    @property
    def pending_length(self) -> int: ...

    @property
    def free(self) -> int: ...

    def push(self, embeds: npt.ArrayLike) -> None: ...

    def step(self, logits: bool = True) -> StepOutput: ...

    def snapshot(self) -> DecoderState: ...

    def restore(self, state: DecoderState) -> None: ...

    def reset(self) -> None: ...


class QueuedInput:
    """What both backbone runners share: embeddings queued by `push` until the next step
    takes them (`_take`), against a context of `context_length` positions of which `length`
    are run."""

    def __init__(self, hidden_size: int, context_length: int, chunk: int) -> None:
        if context_length <= 0 or chunk <= 0:
            raise ValueError("context_length and chunk must be positive")
        self.hidden_size = hidden_size
        self.context_length = context_length
        self.chunk = chunk
        self.length = 0
        self._pending: list[FloatArray] = []
        self.calls = 0
        """Runs so far (for statistics)."""

    @property
    def pending_length(self) -> int:
        return sum(p.shape[0] for p in self._pending)

    @property
    def free(self) -> int:
        """Positions left once the queue is run."""
        return self.context_length - self.length - self.pending_length

    def push(self, embeds: npt.ArrayLike) -> None:
        """Queue [n, hidden] embeddings to be run by the next `step`."""
        array = np.asarray(embeds, dtype=np.float32).reshape(-1, self.hidden_size)
        if array.shape[0]:
            self._pending.append(array)

    def _take(self) -> FloatArray:
        """The whole queue as one [n, hidden] array, emptying it. Raises ContextFullError
        (taking nothing) when it does not fit, ValueError when nothing is queued."""
        if not self._pending:
            raise ValueError("nothing queued to run")
        needed = self.length + self.pending_length
        if needed > self.context_length:
            raise ContextFullError(needed, self.context_length)
        queued = np.ascontiguousarray(np.concatenate(self._pending, axis=0))
        self._pending = []
        return queued


class Decoder(QueuedInput):
    """Runs the `decoder` graph, carrying its caches from call to call."""

    def __init__(
        self,
        graph: BoundGraph,
        config: dict[str, object],
        *,
        context_length: int,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        dims = config_dims(config)
        super().__init__(dims["hidden_size"], context_length, chunk)
        self.graph = graph
        self._empty: dict[str, npt.NDArray[np.generic]] = {}
        for i in layer_indices(config, "conv"):
            slot = f"past_conv.{i}"
            dtype = numpy_dtype(graph.input_type(slot))
            self._empty[slot] = np.zeros((1, self.hidden_size, dims["conv_cache"]), dtype)
        for i in layer_indices(config, "attention"):
            for part in ("key", "value"):
                slot = f"past_key_values.{i}.{part}"
                dtype = numpy_dtype(graph.input_type(slot))
                shape = (1, dims["num_key_value_heads"], 0, dims["head_dim"])
                self._empty[slot] = np.zeros(shape, dtype)
        # present output slot -> past input slot (contract keys)
        inputs = {v: k for k, v in graph.binding.inputs.items()}
        outputs = {v: k for k, v in graph.binding.outputs.items()}
        self._feedback = [(outputs[o], inputs[i]) for o, i in graph.binding.feedback]
        self._outputs = ["logits", "hidden_states", *(o for o, _ in self._feedback)]
        self.cache = dict(self._empty)

    def step(self, logits: bool = True) -> StepOutput:
        """Run the queued input; returns the last position's logits and hidden state.
        `logits=False` skips the text head where the graph allows it (audio steps read only the
        hidden state: the head is 2 x vocab x hidden bytes of reads saved per step).
        Raises ContextFullError (running nothing) when it does not fit, ValueError when
        nothing is queued."""
        queued = self._take()
        out: StepOutput | None = None
        last = (queued.shape[0] - 1) // self.chunk * self.chunk
        for start in range(0, queued.shape[0], self.chunk):
            out = self._run(queued[start : start + self.chunk], logits and start == last)
        assert out is not None
        return out

    def _run(self, embeds: FloatArray, logits: bool) -> StepOutput:
        n = embeds.shape[0]
        total = self.length + n
        feeds: dict[str, npt.NDArray[np.generic]] = {
            "inputs_embeds": embeds[None, :, :],
            "attention_mask": np.ones((1, total), dtype=np.int64),
            **self.cache,
        }
        if self.graph.has_input("position_ids"):
            feeds["position_ids"] = np.arange(self.length, total, dtype=np.int64)[None, :]
        skip_head = not logits and self.graph.has_input("num_logits_to_keep")
        if self.graph.has_input("num_logits_to_keep"):
            feeds["num_logits_to_keep"] = np.array(0 if skip_head else 1, dtype=np.int64)
        results = self.graph.run(self._outputs, feeds)
        self.cache = {past: results[2 + k] for k, (_, past) in enumerate(self._feedback)}
        self.length = total
        self.calls += 1
        hidden = np.asarray(results[1][0, -1], dtype=np.float32)
        if skip_head:
            return StepOutput(logits=None, hidden=hidden)
        return StepOutput(logits=np.asarray(results[0][0, -1], dtype=np.float32), hidden=hidden)

    def snapshot(self) -> DecoderState:
        return DecoderState(
            cache=dict(self.cache), length=self.length, pending=tuple(self._pending)
        )

    def restore(self, state: DecoderState) -> None:
        self.cache = dict(state.cache)
        self.length = state.length
        self._pending = list(state.pending)

    def reset(self) -> None:
        """Empty caches, nothing queued."""
        self.cache = dict(self._empty)
        self.length = 0
        self._pending = []
