"""The depthformer's cache started empty (CPU's default, onnxruntime-genai's way) or
preallocated at the frame's full length (for providers that fail on an empty cache, FINDINGS
§1): on CPU both give the same logits and codes, and the preallocated cache keeps one shape."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from lfm_toolchain.cache import cached_model

from satellite.engine.depthformer import Depthformer
from satellite.engine.model import BoundGraph, Model
from satellite.engine.sampling import Sampler, Sampling
from satellite.engine.sessions import SessionConfig


class Recording:
    """A BoundGraph that keeps every run's feeds and outputs."""

    def __init__(self, graph: BoundGraph) -> None:
        self.graph = graph
        self.session = graph.session
        self.calls: list[tuple[dict[str, Any], list[Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.graph, name)

    def run(self, outputs: list[str], feeds: dict[str, Any]) -> list[Any]:
        result = self.graph.run(outputs, feeds)
        self.calls.append((dict(feeds), result))
        return result


@pytest.fixture(scope="module")
def model() -> Model:
    return Model.load(cached_model("tiny", "fp32"), SessionConfig(threads=1))


def frames(
    model: Model, preallocate: bool | None
) -> tuple[list[list[int]], Recording, Depthformer]:
    graph = Recording(model.graph("depthformer"))
    depthformer = Depthformer(graph, model.manifest.config, preallocate=preallocate)  # type: ignore[arg-type]
    sampler = Sampler(seed=3)
    rng = np.random.default_rng(7)
    codes = [
        depthformer.frame(
            rng.standard_normal(model.hidden_size).astype(np.float32),
            Sampling(temperature=1.0, top_k=4),
            sampler,
        )
        for _ in range(6)
    ]
    return codes, graph, depthformer


def test_both_caches_give_the_same_codes_on_cpu(model: Model) -> None:
    empty_codes, empty, default = frames(model, None)
    full_codes, full, _ = frames(model, True)
    assert not default.preallocated, "CPU starts the cache empty"
    assert empty_codes == full_codes
    assert len({tuple(c) for c in empty_codes}) > 1
    for (_, a), (_, b) in zip(empty.calls, full.calls, strict=True):
        np.testing.assert_allclose(a[0], b[0], rtol=0, atol=1e-5)  # logits


def test_the_preallocated_cache_keeps_one_shape(model: Model) -> None:
    _, full, _ = frames(model, True)
    _, empty, _ = frames(model, False)
    books = int(model.manifest.config["codebooks"])
    full_lengths = {call[0]["past_keys"].shape[3] for call in full.calls}
    assert full_lengths == {books}
    assert {out[2].shape[3] for _, out in full.calls} == {books}
    assert [call[0]["past_keys"].shape[3] for call in empty.calls[:books]] == list(range(books))
