"""Rotary position tables: how they are made, and which theta a given table was made for.

One formula serves the model toolchain (`lfm_toolchain.layers` writes the tables into built graphs)
and the repair of published depthformer graphs (`satellite.modeldir.depthfix`), so a table the
fixer writes is the table the project's own builds carry, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]


def rope_tables(head_dim: int, theta: float, positions: int) -> tuple[Array, Array]:
    """cos and sin [positions, head_dim/2] of RoPE's angles `position * theta^(-2i/head_dim)`.

    The angles are formed in float32 (float32 inverse frequencies times float32 positions), as
    both references do (transformers' LFM2 and liquid-audio's depthformer); only cos/sin are
    taken in float64 before rounding, so long positions match the reference to an ulp.
    """
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = (1.0 / (np.float32(theta) ** exponent)).astype(np.float32)
    angles = np.arange(positions, dtype=np.float32)[:, None] * inv_freq[None, :]
    angles64 = angles.astype(np.float64)
    return np.cos(angles64).astype(np.float32), np.sin(angles64).astype(np.float32)


def table_theta(cos: npt.ArrayLike, sin: npt.ArrayLike) -> float | None:
    """The theta a pair of tables [positions, head_dim/2] was computed for, read from
    position 1 (whose angles are the inverse frequencies `theta^(-2i/head_dim)`): the least
    squares fit of log(angle_i) = -(2i/head_dim) log(theta) over the columns i >= 1.

    None when the tables cannot tell (fewer than 2 positions or 2 columns, or angles that are
    not the decreasing positive frequencies of RoPE)."""
    c = np.asarray(cos, dtype=np.float64)
    s = np.asarray(sin, dtype=np.float64)
    if c.ndim != 2 or c.shape != s.shape or c.shape[0] < 2 or c.shape[1] < 2:
        return None
    half = c.shape[1]
    angles = np.arctan2(s[1], c[1])[1:]
    if not np.all(np.isfinite(angles)) or np.any(angles <= 0) or np.any(np.diff(angles) > 0):
        return None
    exponents = np.arange(1, half, dtype=np.float64) / half  # 2i / head_dim
    log_theta = -float(np.dot(exponents, np.log(angles)) / np.dot(exponents, exponents))
    return math.exp(log_theta)


def same_theta(found: float | None, expected: float, tolerance: float = 1e-3) -> bool:
    """Whether a theta read from tables (`table_theta`) is `expected`, within a relative
    `tolerance` (float32 tables give about 6 significant digits)."""
    return found is not None and abs(found - expected) <= tolerance * expected
