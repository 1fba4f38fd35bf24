"""The tests' name for the reference harness, which lives in `models.reference` (the engine
benchmark runs it too): `from reference import ...` keeps working in the tests."""

from __future__ import annotations

from models.reference import *  # noqa: F403
from models.reference import (
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
