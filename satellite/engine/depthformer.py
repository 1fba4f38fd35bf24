"""One audio frame from the depthformer graph (granularity `codebook_step`, the official
`vocoder_depthformer` contract): one call per codebook, the code sampled after each call and
fed back as `prev_token`, `depth_slices` fed back as `depth_slices_in`, and the key/value cache
grown by one position per call and started empty for every frame.

The input is the decoder's final-normed hidden state at the last position run (read at step 0,
where the graph computes `depth_linear` of it into the slices).

The cache can start empty (length 0, growing by one a step: onnxruntime-genai's way, and the
default on CPU) or preallocated at the frame's full length (`codebooks` positions, zeros, with
`seqlens_k` telling the attention how much of it is filled): some providers fail on the empty
cache (FINDINGS §1: WebGPU's "Shape mismatch attempting to re-use buffer {1,8,0,32} !=
{1,8,1,32}"), so every provider but CPU gets the preallocated one. On CPU both give the same
codes (tests/engine/test_engine_depthformer.py).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from satellite.engine.model import BoundGraph, numpy_dtype
from satellite.engine.sampling import Sampler, Sampling
from satellite.modeldir.contract import config_dims


class Depthformer:
    """Samples frames of `codebooks` codes."""

    def __init__(
        self, graph: BoundGraph, config: dict[str, object], preallocate: bool | None = None
    ) -> None:
        """`preallocate`: start the cache at its full length (None: unless on CPU)."""
        self.graph = graph
        dims = config_dims(config)
        self.codebooks = dims["codebooks"]
        self.hidden_size = dims["hidden_size"]
        cache = graph.input_shape("past_keys")
        slices = graph.input_shape("depth_slices_in")

        def size(axis_value: int | str | None, key: str, default: int | None = None) -> int:
            if isinstance(axis_value, int):
                return axis_value
            if key in dims:
                return dims[key]
            if default is not None:
                return default
            raise ValueError(f"{graph.path}: cannot tell the depthformer's {key}")

        self.dim = size(slices[2] if len(slices) == 3 else None, "depthformer_dim")
        layers = size(cache[0] if len(cache) == 5 else None, "depthformer_layers")
        kv_heads = size(cache[2] if len(cache) == 5 else None, "depthformer_kv_heads", 8)
        heads = dims.get("depthformer_heads", 32)
        head_dim = size(
            cache[4] if len(cache) == 5 else None, "depthformer_head_dim", self.dim // heads
        )
        dtype = numpy_dtype(graph.input_type("past_keys"))
        if preallocate is None:
            preallocate = graph.session.get_providers()[0] != "CPUExecutionProvider"
        self.preallocated = preallocate
        length = self.codebooks if preallocate else 0
        self._empty_cache = np.zeros((layers, 1, kv_heads, length, head_dim), dtype)
        self._outputs = ["logits", "depth_slices", "new_keys", "new_values"]

    def frame(
        self, hidden: npt.NDArray[np.floating], sampling: Sampling, sampler: Sampler
    ) -> list[int]:
        """The codes of one frame for the decoder hidden state `hidden` [hidden_size]."""
        feeds: dict[str, npt.NDArray[np.generic]] = {
            "hidden_states": np.asarray(hidden, dtype=np.float32).reshape(1, self.hidden_size),
            "depth_slices_in": np.zeros((1, self.codebooks, self.dim), dtype=np.float32),
            "prev_token": np.zeros(1, dtype=np.int64),
            "past_keys": self._empty_cache,
            "past_values": self._empty_cache,
        }
        codes: list[int] = []
        for step in range(self.codebooks):
            feeds["step_idx"] = np.array(step, dtype=np.int64)
            if self.graph.has_input("seqlens_k"):
                feeds["seqlens_k"] = np.array([step], dtype=np.int32)
            if self.graph.has_input("total_seq_len"):
                feeds["total_seq_len"] = np.array(step + 1, dtype=np.int32)
            logits, slices, keys, values = self.graph.run(self._outputs, feeds)
            code = sampler(logits[0], sampling)
            codes.append(code)
            feeds["depth_slices_in"] = slices
            feeds["prev_token"] = np.array([code], dtype=np.int64)
            feeds["past_keys"] = keys
            feeds["past_values"] = values
        return codes
