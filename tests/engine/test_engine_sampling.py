"""Sampling: the greedy rule, seeded reproducibility, the top-k cut and the temperature."""

from __future__ import annotations

import numpy as np
import pytest

from satellite.engine.sampling import INTERLEAVED_AUDIO, TTS_AUDIO, Sampler, Sampling

LOGITS = np.array([0.5, 2.0, -1.0, 1.5, 2.0, 0.0, 1.9, -3.0], dtype=np.float32)


@pytest.mark.parametrize(
    "sampling",
    [Sampling(), Sampling(0.0), Sampling(-1.0, 5), Sampling(None, 4), Sampling(2.0, top_k=1)],
)
def test_greedy_rule(sampling: Sampling) -> None:
    """Greedy when the temperature is None or <= 0 or top_k is 1: the first largest logit,
    whatever the generator would draw."""
    assert sampling.greedy
    draws = {Sampler(seed)(LOGITS, sampling) for seed in range(20)}
    assert draws == {1}


def test_not_greedy() -> None:
    assert not Sampling(0.5).greedy and not Sampling(1.0, 2).greedy
    assert not INTERLEAVED_AUDIO.greedy and not TTS_AUDIO.greedy
    with pytest.raises(ValueError, match="top_k"):
        Sampling(1.0, 0)


def draws(seed: int | None, sampling: Sampling, n: int, logits: np.ndarray = LOGITS) -> list[int]:
    sampler = Sampler(seed)
    return [sampler(logits, sampling) for _ in range(n)]


def test_seeded_and_reproducible() -> None:
    sampling = Sampling(1.0)
    assert draws(7, sampling, 200) == draws(7, sampling, 200)
    assert draws(7, sampling, 200) != draws(8, sampling, 200)
    assert len(set(draws(7, sampling, 200))) >= 6  # it does sample


def test_top_k_is_obeyed_and_follows_the_softmax() -> None:
    """top_k 3 keeps indices 1, 4 (tied at 2.0) and 6 (1.9); their frequencies over 6000
    draws are their softmax weights within 0.03 (4.6 standard errors at most)."""
    n = 6000
    got = np.bincount(draws(3, Sampling(1.0, 3), n), minlength=LOGITS.size) / n
    assert set(np.flatnonzero(got)) == {1, 4, 6}
    kept = np.exp(LOGITS[[1, 4, 6]] - 2.0)
    want = kept / kept.sum()
    assert np.max(np.abs(got[[1, 4, 6]] - want)) < 0.03, (got[[1, 4, 6]], want)


def test_ties_with_the_kth_logit_are_kept() -> None:
    """As in the reference (`logits < kth` are dropped): top_k 1 of the non-greedy path is
    never reached, but top_k 2 with three equal logits keeps all three."""
    logits = np.array([1.0, 3.0, 3.0, 3.0, 0.0])
    assert set(draws(0, Sampling(1.0, 2), 500, logits)) == {1, 2, 3}


def test_temperature_sharpens_and_flattens() -> None:
    """Lower temperature puts more mass on the largest logit (measured over 4000 draws)."""
    n = 4000

    def share_of_best(temperature: float) -> float:
        return draws(11, Sampling(temperature), n).count(1) / n

    cold, warm, hot = share_of_best(0.2), share_of_best(1.0), share_of_best(5.0)
    assert cold > warm > hot, (cold, warm, hot)
    assert hot > 0.08  # near uniform (1/8) among 8 at high temperature


def test_large_top_k_is_no_cut() -> None:
    assert draws(5, Sampling(1.0, 100), 300) == draws(5, Sampling(1.0), 300)
