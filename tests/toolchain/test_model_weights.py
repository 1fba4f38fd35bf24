"""The weight layout is the checkpoint's: random weights load into the reference modules by
name, at tiny size for real and at full size by shape; seeded generation is reproducible."""

from __future__ import annotations

import numpy as np
import pytest
from lfm_toolchain.config import AudioModelConfig, full, tiny
from lfm_toolchain.weights import (
    CODEBOOK0_EMBEDDING,
    END_OF_AUDIO_SCALE,
    SHAPED_TEXT_ROWS,
    TEXT_EMBEDDING,
    ParamSpec,
    RandomWeights,
    ShapedWeights,
    check_layout,
    detokenizer_specs,
    model_specs,
    model_weights,
    random_detokenizer_weights,
    random_model_weights,
    random_tensor,
    shaped_model_weights,
)
from reference import build_reference_model, liquid_audio, load_weights, reference_config

pytestmark = pytest.mark.parity

# Persistent buffers of the reference that are fixed tables, not checkpoint weights we generate.
FIXED_BUFFERS = {"codebook_offsets", "audio_loss_weights", "istft.window"}


def tied_aliases(config: AudioModelConfig) -> set[str]:
    if not config.depthformer.tie:
        return set()
    return {f"depth_embeddings.{c}.to_logits.weight" for c in range(config.codebooks)}


def test_tiny_weights_load_into_the_reference_model() -> None:
    config = tiny()
    weights = dict(random_model_weights(config, seed=7))
    model = build_reference_model(config, weights)  # raises on a missing or misshapen tensor
    state = model.state_dict()
    for name, value in weights.items():
        np.testing.assert_array_equal(state[name].numpy(), value, err_msg=name)
    # Tied heads follow their embedding.
    np.testing.assert_array_equal(
        state["depth_embeddings.3.to_logits.weight"].numpy(),
        weights["depth_embeddings.3.embedding.weight"],
    )


def test_tiny_detokenizer_weights_load_into_the_reference_detokenizer() -> None:
    import torch
    from transformers import Lfm2Config

    config = tiny()
    la = liquid_audio()
    torch.manual_seed(0)
    detok = la.detokenizer.LFM2AudioDetokenizer(
        Lfm2Config(**config.detokenizer.backbone.reference_kwargs())
    )
    load_weights(detok, dict(random_detokenizer_weights(config, seed=7)))


@pytest.mark.parametrize("make", [tiny, full], ids=["tiny", "full"])
def test_layout_matches_the_reference_state_dict(make: type[AudioModelConfig]) -> None:
    """Names and shapes against the reference built without memory (full size: 1.47 B + 79 M)."""
    from accelerate import init_empty_weights
    from transformers import Lfm2Config

    config = make()
    la = liquid_audio()
    with init_empty_weights():
        model = la.lfm2_audio.LFM2AudioModel(reference_config(config))
        detok = la.detokenizer.LFM2AudioDetokenizer(
            Lfm2Config(**config.detokenizer.backbone.reference_kwargs())
        )
    for module, specs in ((model, model_specs(config)), (detok, detokenizer_specs(config))):
        want = {
            k: tuple(v.shape)
            for k, v in module.state_dict().items()
            if k not in FIXED_BUFFERS | tied_aliases(config)
        }
        got = {spec.name: spec.shape for spec in specs}
        assert sorted(set(want) ^ set(got)) == []
        assert {k: v for k, v in got.items() if want[k] != v} == {}


def test_full_size_parameter_counts() -> None:
    """Learned parameters (batch-norm statistics excluded): 1.45 B + the 79 M detokenizer."""
    config = full()
    learned = [s for s in model_specs(config) if s.init not in ("bn_mean", "bn_var", "count")]
    backbone = sum(int(np.prod(s.shape)) for s in learned if s.name.startswith("lfm."))
    assert backbone == 1_170_340_608
    assert sum(int(np.prod(s.shape)) for s in learned) == 1_453_505_664
    assert sum(int(np.prod(s.shape)) for s in detokenizer_specs(config)) == 78_531_010


def test_random_weights_are_reproducible_per_name() -> None:
    config = tiny()
    a = random_model_weights(config, seed=3)
    b = random_model_weights(config, seed=3)
    c = random_model_weights(config, seed=4)
    name = "lfm.layers.2.self_attn.q_proj.weight"
    np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a[name], c[name])
    # A tensor does not depend on the other tensors or their order.
    alone = RandomWeights([a.spec(name)], seed=3)
    np.testing.assert_array_equal(alone[name], a[name])
    assert a[name].dtype == np.float32


def test_initialisation_scales() -> None:
    big = random_tensor(ParamSpec("m", (512, 2048), "matrix"), seed=0)
    assert abs(float(big.std()) - 2048**-0.5) < 1e-3
    norm = random_tensor(ParamSpec("n", (4096,), "norm"), seed=0)
    assert abs(float(norm.mean()) - 1.0) < 0.01 and 0.05 < float(norm.std()) < 0.2
    var = random_tensor(ParamSpec("v", (4096,), "bn_var"), seed=0)
    assert float(var.min()) >= 0.5 and float(var.max()) <= 1.5
    count = random_tensor(ParamSpec("c", (), "count"), seed=0)
    assert count.shape == () and count.dtype == np.int64


def test_check_layout_names_the_problem() -> None:
    config = tiny()
    weights = dict(random_model_weights(config, seed=0))
    del weights["lfm.embedding_norm.weight"]
    weights["lfm.layers.0.ffn_norm.weight"] = np.zeros(3, dtype=np.float32)
    with pytest.raises(ValueError, match=r"embedding_norm\.weight: missing") as err:
        check_layout(weights, model_specs(config), "test")
    assert "layers.0.ffn_norm.weight: shape (3,)" in str(err.value)


def test_shaped_weights_scale_the_special_rows_and_nothing_else() -> None:
    """`<|im_end|>`, `<|audio_start|>` and `<|text_end|>` of the text embedding and codebook 0's
    end-of-audio row, by their named scales; every other value as drawn; lazy and repeatable."""
    config = tiny()
    plain, shaped = random_model_weights(config, seed=3), shaped_model_weights(config, seed=3)
    assert list(shaped) == list(plain) and shaped.spec(TEXT_EMBEDDING) == plain.spec(TEXT_EMBEDDING)
    scaled = {
        TEXT_EMBEDDING: SHAPED_TEXT_ROWS,
        CODEBOOK0_EMBEDDING: {config.codebook_size - 1: END_OF_AUDIO_SCALE},
    }
    assert set(SHAPED_TEXT_ROWS) == {7, 128, 130} and config.codebook_size - 1 == 2048
    for name in plain:
        want, got = plain[name], shaped[name]
        rows = scaled.get(name, {})
        for row, scale in rows.items():
            np.testing.assert_array_equal(got[row], want[row] * np.float32(scale), err_msg=name)
        keep = np.ones(want.shape[:1], dtype=bool) if want.ndim else np.ones((), dtype=bool)
        if rows:
            keep[list(rows)] = False
        np.testing.assert_array_equal(got[keep], want[keep], err_msg=name)
    np.testing.assert_array_equal(shaped[TEXT_EMBEDDING], shaped[TEXT_EMBEDDING])


def test_random_builds_are_shaped_by_default_at_tiny_size_only() -> None:
    assert isinstance(model_weights(tiny(), 0), ShapedWeights)
    assert not isinstance(model_weights(tiny(), 0, shaped=False), ShapedWeights)
    assert not isinstance(model_weights(full(), 0), ShapedWeights)
    assert isinstance(model_weights(full(), 0, shaped=True), ShapedWeights)
