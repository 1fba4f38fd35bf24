"""Weights by checkpoint name: the layout of the real checkpoints, and seeded random weights.

The weight layout *is* the checkpoint's: every tensor is named as in LFM2.5-Audio's
`model.safetensors` (the state dict of liquid-audio's `LFM2AudioModel`: `lfm.*` for the
transformers `Lfm2Model` backbone, `conformer.*`, `audio_adapter.*`, `audio_embedding.*`,
`depth_linear.*`, `depthformer.*`, `depth_embeddings.*`) and of its detokenizer's
`audio_detokenizer/model.safetensors` (`emb.*`, `lfm.*`, `lin.*`), with the same shapes.

So one graph builder serves three sources: a real checkpoint (`--from`), and the tiny and
full-size random models, whose tensors are generated here from a seed without torch or the
reference package. The parity tests load these same arrays into the reference modules
(`load_state_dict` by name), so reference and ONNX graphs compute with identical weights.

Random tensors are reproducible per name: each one draws from its own generator seeded with
`(seed, sha256(name))`, so a tensor does not depend on which other tensors were generated, or in
which order, and a full-size build can generate them one at a time (`RandomWeights` is a lazy
mapping). Initialisation keeps activations of order one at any width:

- matrices and conv kernels: N(0, 1/fan_in);
- embedding tables: N(0, 1/dim) (so tied logits are of order one);
- norm gains: 1 + N(0, 0.1^2), deliberately not all ones, so a misplaced norm weight shows;
- biases and the conformer's positional biases: N(0, 0.1^2);
- batch-norm statistics: mean N(0, 0.1^2), variance U(0.5, 1.5), `num_batches_tracked` 0.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lfm_toolchain.config import AudioModelConfig, BackboneConfig, DepthformerConfig, EncoderConfig

Array = npt.NDArray[Any]
Init = Literal["matrix", "embedding", "norm", "bias", "bn_mean", "bn_var", "count"]


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    init: Init

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(np.int64) if self.init == "count" else np.dtype(np.float32)


def _matrix(name: str, *shape: int) -> ParamSpec:
    return ParamSpec(name, tuple(shape), "matrix")


def _norm(name: str, dim: int) -> ParamSpec:
    return ParamSpec(name, (dim,), "norm")


def _bias(name: str, dim: int) -> ParamSpec:
    return ParamSpec(name, (dim,), "bias")


def _linear(name: str, n_out: int, n_in: int, *, bias: bool) -> list[ParamSpec]:
    specs = [_matrix(f"{name}.weight", n_out, n_in)]
    if bias:
        specs.append(_bias(f"{name}.bias", n_out))
    return specs


def _layer_norm(name: str, dim: int) -> list[ParamSpec]:
    return [_norm(f"{name}.weight", dim), _bias(f"{name}.bias", dim)]


def backbone_specs(cfg: BackboneConfig, prefix: str = "lfm.") -> list[ParamSpec]:
    """transformers `Lfm2Model`'s parameters."""
    d, f, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    specs = [ParamSpec(f"{prefix}embed_tokens.weight", (cfg.vocab_size, d), "embedding")]
    for i in range(cfg.num_hidden_layers):
        p = f"{prefix}layers.{i}."
        if cfg.is_attention(i):
            specs += [
                _matrix(f"{p}self_attn.q_proj.weight", cfg.num_attention_heads * hd, d),
                _matrix(f"{p}self_attn.k_proj.weight", cfg.num_key_value_heads * hd, d),
                _matrix(f"{p}self_attn.v_proj.weight", cfg.num_key_value_heads * hd, d),
                _matrix(f"{p}self_attn.out_proj.weight", d, cfg.num_attention_heads * hd),
                _norm(f"{p}self_attn.q_layernorm.weight", hd),
                _norm(f"{p}self_attn.k_layernorm.weight", hd),
            ]
        else:
            specs += [
                _matrix(f"{p}conv.conv.weight", d, 1, cfg.conv_cache),
                _matrix(f"{p}conv.in_proj.weight", 3 * d, d),
                _matrix(f"{p}conv.out_proj.weight", d, d),
            ]
        specs += [
            _matrix(f"{p}feed_forward.w1.weight", f, d),
            _matrix(f"{p}feed_forward.w3.weight", f, d),
            _matrix(f"{p}feed_forward.w2.weight", d, f),
            _norm(f"{p}operator_norm.weight", d),
            _norm(f"{p}ffn_norm.weight", d),
        ]
    specs.append(_norm(f"{prefix}embedding_norm.weight", d))
    return specs


def _subsampled_features(n_mels: int, factor: int) -> int:
    size = n_mels
    for _ in range(int(np.log2(factor))):
        size = (size + 2 - 3) // 2 + 1  # kernel 3, stride 2, padding 1
    return size


def encoder_specs(cfg: EncoderConfig, hidden: int) -> list[ParamSpec]:
    """liquid-audio's `ConformerEncoder` (dw-striding, rel-pos) and the adapter MLP."""
    d, c = cfg.d_model, cfg.subsampling_conv_channels
    p = "conformer.pre_encode."
    specs = [_matrix(f"{p}conv.0.weight", c, 1, 3, 3), _bias(f"{p}conv.0.bias", c)]
    # Each further x2 stage: depthwise 3x3 (index k) then pointwise 1x1 (k+1), ReLU between.
    index = 2
    for _ in range(int(np.log2(cfg.subsampling_factor)) - 1):
        specs += [_matrix(f"{p}conv.{index}.weight", c, 1, 3, 3), _bias(f"{p}conv.{index}.bias", c)]
        index += 1
        specs += [_matrix(f"{p}conv.{index}.weight", c, c, 1, 1), _bias(f"{p}conv.{index}.bias", c)]
        index += 2
    freq = _subsampled_features(cfg.n_mels, cfg.subsampling_factor)
    specs += _linear(f"{p}out", d, c * freq, bias=True)
    ff = d * cfg.ff_expansion_factor
    for i in range(cfg.n_layers):
        p = f"conformer.layers.{i}."
        for k in ("1", "2"):
            specs += _layer_norm(f"{p}norm_feed_forward{k}", d)
            specs += _linear(f"{p}feed_forward{k}.linear1", ff, d, bias=True)
            specs += _linear(f"{p}feed_forward{k}.linear2", d, ff, bias=True)
        specs += _layer_norm(f"{p}norm_conv", d)
        specs += [
            _matrix(f"{p}conv.pointwise_conv1.weight", 2 * d, d, 1),
            _bias(f"{p}conv.pointwise_conv1.bias", 2 * d),
            _matrix(f"{p}conv.depthwise_conv.weight", d, 1, cfg.conv_kernel_size),
            _bias(f"{p}conv.depthwise_conv.bias", d),
            *_layer_norm(f"{p}conv.batch_norm", d),
            ParamSpec(f"{p}conv.batch_norm.running_mean", (d,), "bn_mean"),
            ParamSpec(f"{p}conv.batch_norm.running_var", (d,), "bn_var"),
            ParamSpec(f"{p}conv.batch_norm.num_batches_tracked", (), "count"),
            _matrix(f"{p}conv.pointwise_conv2.weight", d, d, 1),
            _bias(f"{p}conv.pointwise_conv2.bias", d),
        ]
        specs += _layer_norm(f"{p}norm_self_att", d)
        head = d // cfg.n_heads
        specs += [
            ParamSpec(f"{p}self_attn.pos_bias_u", (cfg.n_heads, head), "bias"),
            ParamSpec(f"{p}self_attn.pos_bias_v", (cfg.n_heads, head), "bias"),
        ]
        for proj in ("q", "k", "v", "out"):
            specs += _linear(f"{p}self_attn.linear_{proj}", d, d, bias=True)
        specs += _linear(f"{p}self_attn.linear_pos", d, d, bias=False)
        specs += _layer_norm(f"{p}norm_out", d)
    specs += _layer_norm("audio_adapter.model.0", d)
    specs += _linear("audio_adapter.model.1", hidden, d, bias=True)
    specs += _linear("audio_adapter.model.3", hidden, hidden, bias=True)
    return specs


def audio_embedding_specs(config: AudioModelConfig) -> list[ParamSpec]:
    """The backbone-side audio code embedding (8 x 2049 rows) and its unused logits head."""
    rows, d = config.codebooks * config.codebook_size, config.backbone.hidden_size
    specs = [
        ParamSpec("audio_embedding.embedding.weight", (rows, d), "embedding"),
        _norm("audio_embedding.embedding_norm.weight", d),
    ]
    if not config.tie_audio_embeddings:
        specs.append(_matrix("audio_embedding.to_logits.weight", rows, d))
    return specs


def depthformer_specs(cfg: DepthformerConfig, config: AudioModelConfig) -> list[ParamSpec]:
    """`depth_linear`, the depthformer blocks and the per-codebook embeddings/heads."""
    d, hd = cfg.dim, cfg.head_dim
    specs = _linear("depth_linear", config.codebooks * d, config.backbone.hidden_size, bias=True)
    for i in range(cfg.layers):
        p = f"depthformer.layers.{i}."
        specs += [
            _matrix(f"{p}operator.qkv_proj.weight", d + 2 * cfg.num_kv_heads * hd, d),
            _matrix(f"{p}operator.out_proj.weight", d, d),
            _norm(f"{p}operator.bounded_attention.q_layernorm.weight", hd),
            _norm(f"{p}operator.bounded_attention.k_layernorm.weight", hd),
            _matrix(f"{p}feed_forward.w1.weight", cfg.ff_dim, d),
            _matrix(f"{p}feed_forward.w3.weight", cfg.ff_dim, d),
            _matrix(f"{p}feed_forward.w2.weight", d, cfg.ff_dim),
            _norm(f"{p}operator_norm.weight", d),
            _norm(f"{p}ffn_norm.weight", d),
        ]
    for c in range(config.codebooks):
        p = f"depth_embeddings.{c}."
        specs += [
            ParamSpec(f"{p}embedding.weight", (config.codebook_size, d), "embedding"),
            _norm(f"{p}embedding_norm.weight", d),
        ]
        if not cfg.tie:
            specs.append(_matrix(f"{p}to_logits.weight", config.codebook_size, d))
    return specs


def model_specs(config: AudioModelConfig) -> list[ParamSpec]:
    """Every parameter of the main checkpoint (`model.safetensors`)."""
    return [
        *backbone_specs(config.backbone),
        *encoder_specs(config.encoder, config.backbone.hidden_size),
        *audio_embedding_specs(config),
        *depthformer_specs(config.depthformer, config),
    ]


def detokenizer_specs(config: AudioModelConfig) -> list[ParamSpec]:
    """Every parameter of the detokenizer checkpoint (`audio_detokenizer/model.safetensors`)."""
    det = config.detokenizer
    d = det.backbone.hidden_size
    return [
        ParamSpec("emb.emb.weight", (det.codebooks * det.codebook_size, d), "embedding"),
        *backbone_specs(det.backbone, prefix="lfm."),
        *_linear("lin", det.output_size, d, bias=True),
    ]


def _generator(seed: int, name: str) -> np.random.Generator:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng(np.random.SeedSequence([seed, *words]))


def random_tensor(spec: ParamSpec, seed: int) -> Array:
    """The seeded random value of one parameter (see the module doc for the rules)."""
    rng = _generator(seed, spec.name)
    shape = spec.shape
    if spec.init == "count":
        return np.zeros(shape, dtype=np.int64)
    if spec.init == "bn_var":
        return rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    if spec.init == "matrix":
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = fan_in**-0.5
    elif spec.init == "embedding":
        scale = shape[-1] ** -0.5
    else:  # norm, bias, bn_mean
        scale = 0.1
    values = rng.standard_normal(size=shape, dtype=np.float32)
    values *= np.float32(scale)
    if spec.init == "norm":
        values += np.float32(1.0)
    return values


class RandomWeights(Mapping[str, Array]):
    """Seeded random weights for `specs`, generated on access (nothing is kept).

    A full-size build reads each tensor once and writes it out, so at most one tensor is in
    memory; use `dict(weights)` where all are wanted at once (the tiny model).
    """

    def __init__(self, specs: list[ParamSpec], seed: int) -> None:
        self.seed = seed
        self._specs = {spec.name: spec for spec in specs}
        if len(self._specs) != len(specs):
            raise ValueError("duplicate parameter names")

    def __getitem__(self, name: str) -> Array:
        return random_tensor(self._specs[name], self.seed)

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def spec(self, name: str) -> ParamSpec:
        return self._specs[name]


def random_model_weights(config: AudioModelConfig, seed: int) -> RandomWeights:
    """The main checkpoint's tensors, random, seeded."""
    return RandomWeights(model_specs(config), seed)


# ---------------------------------------------------------------------------------------------
# the shaped tiny model: special rows scaled so that a random model reaches every branch

IM_END, AUDIO_START, TEXT_END = 7, 128, 130
"""Text ids of `<|im_end|>`, `<|audio_start|>` and `<|text_end|>` (LFM2's tokenizer)."""
IM_END_SCALE = 1.8
"""Scale of the text embedding's `<|im_end|>` row: a turn ends (ASR, interleaved)."""
AUDIO_START_SCALE = 2.8
"""Scale of the `<|audio_start|>` row: a sequential turn (TTS) starts its audio."""
TEXT_END_SCALE = 2.5
"""Scale of the `<|text_end|>` row: an interleaved reply ends its text and goes on in audio."""
END_OF_AUDIO_SCALE = 2.0
"""Scale of codebook 0's end-of-audio row (code 2048) in the depthformer's embedding, tied to
its logits: audio ends."""
SHAPED_TEXT_ROWS = {IM_END: IM_END_SCALE, AUDIO_START: AUDIO_START_SCALE, TEXT_END: TEXT_END_SCALE}
TEXT_EMBEDDING = "lfm.embed_tokens.weight"
CODEBOOK0_EMBEDDING = "depth_embeddings.0.embedding.weight"
DEFAULT_SEEDS = {"tiny": 216, "full": 0}
"""The seed of a random build when none is given. Tiny: a seed whose shaped model (the demo's,
the commands' and the tests' default), in q4 and in fp32, gives a few words before
`<|audio_start|>` (a transcript), goes on to audio after the first text run of a spoken reply
rather than ending at `<|im_end|>` (with a wide margin), gives text before `<|text_end|>` (a
conversation's answer), and reaches `<|audio_start|>` before `<|im_end|>` for most texts to
speak (in every voice: 92 of 100 sentences tried in q4, 99 in fp32). The first steps of a reply
follow nearly the same path whatever the prompt, so whether a random model does these is a
property of its seed more than of the input: seed 0's first step is `<|audio_start|>`, which
empties every transcript. tests/cli/test_engine_commands.py fails when the default tiny model
stops reaching audio."""


def default_seed(size: str) -> int:
    """The seed of a random build of `size` when none is given (`DEFAULT_SEEDS`)."""
    return DEFAULT_SEEDS.get(size, 0)


def shaped_by_default(size: str) -> bool:
    """Whether a random build of `size` is shaped unless asked otherwise: the tiny one."""
    return size == "tiny"


class ShapedWeights(RandomWeights):
    """`RandomWeights` with the special rows scaled (`shaped_model_weights`); lazy like them."""

    def __init__(self, specs: list[ParamSpec], seed: int, codebook_size: int) -> None:
        super().__init__(specs, seed)
        self.end_of_audio = codebook_size - 1

    def __getitem__(self, name: str) -> Array:
        values = super().__getitem__(name)
        if name == TEXT_EMBEDDING:
            for row, scale in SHAPED_TEXT_ROWS.items():
                values[row] *= np.float32(scale)
        elif name == CODEBOOK0_EMBEDDING:
            values[self.end_of_audio] *= np.float32(END_OF_AUDIO_SCALE)
        return values


def shaped_model_weights(config: AudioModelConfig, seed: int) -> RandomWeights:
    """The main checkpoint's seeded random tensors with the special rows scaled.

    A random model rarely samples a special token: with tied embeddings a token's logit is its
    row's dot product with the hidden state, of order one for every row, so among hundreds of
    rows the few that steer generation (`<|im_end|>` ends a turn, `<|audio_start|>` starts a
    TTS reply's audio, `<|text_end|>` ends an interleaved reply's text, code 2048 of codebook 0
    ends the audio) come up once in a long while, or never, and a reply runs to its step limit
    with no audio in it. Scaling a row by a few times (`SHAPED_TEXT_ROWS`, `END_OF_AUDIO_SCALE`)
    makes its logit the largest whenever the hidden state points its way, so the token turns
    up after some steps rather than at once or never, and every branch of the generation state
    machine is reached (DESIGN §3.3.1). The parity tests load the same arrays into the
    reference, so it follows the same branches. The rows also embed the tokens they stand for;
    nothing else changes."""
    return ShapedWeights(model_specs(config), seed, config.codebook_size)


def model_weights(
    config: AudioModelConfig, seed: int, *, shaped: bool | None = None
) -> RandomWeights:
    """The main checkpoint's tensors of a random-weight build: `shaped_model_weights` when
    `shaped` (default: `shaped_by_default(config.size)`, the tiny model), else
    `random_model_weights`."""
    if shaped is None:
        shaped = shaped_by_default(config.size)
    return shaped_model_weights(config, seed) if shaped else random_model_weights(config, seed)


def random_detokenizer_weights(config: AudioModelConfig, seed: int) -> RandomWeights:
    """The detokenizer checkpoint's tensors, random, seeded (independent of the main ones)."""
    return RandomWeights(detokenizer_specs(config), seed + 0x5EED)


def check_layout(weights: Mapping[str, Array], specs: list[ParamSpec], where: str) -> None:
    """Raise ValueError unless `weights` holds every tensor of `specs` with its shape."""
    problems = []
    for spec in specs:
        if spec.name not in weights:
            problems.append(f"{spec.name}: missing")
            continue
        shape = tuple(weights[spec.name].shape)
        if shape != spec.shape:
            problems.append(f"{spec.name}: shape {shape}, expected {spec.shape}")
    if problems:
        shown = "; ".join(problems[:5]) + (
            f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        )
        raise ValueError(f"{where}: weights do not fit the architecture: {shown}")
