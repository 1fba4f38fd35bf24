"""The tests' name for the reference harness, which lives in `lfm_toolchain.reference` (the engine
benchmark runs it too): `from reference import ...` keeps working in the tests."""

from __future__ import annotations

from lfm_toolchain.reference import *  # noqa: F403
from lfm_toolchain.reference import (
    TINY_SEED,
    build_reference_model,
    liquid_audio,
    load_weights,
    reference_config,
    tiny_reference,
)

__all__ = [
    "TINY_SEED",
    "build_reference_model",
    "liquid_audio",
    "load_weights",
    "reference_config",
    "tiny_reference",
]
