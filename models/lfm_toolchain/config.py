"""Architecture numbers of LFM2.5-Audio-1.5B, at full size and as the tiny test model.

`full()` holds the real model's numbers (DESIGN §3.1); `tiny()` keeps every structural
feature (the conv/attention layer pattern, grouped-query attention, q/k norms, the depthformer's
32 heads, the detokenizer's hard-wired width 512) but shrinks widths and depths so that the
reference implementation and the ONNX graphs run in milliseconds.

The dataclasses carry the *effective* sizes (e.g. the SwiGLU width actually used, 8192 for the
backbone); the `*_reference_*` helpers turn them into the keyword arguments of the reference
implementation's configs (transformers' `Lfm2Config`, liquid-audio's `ConformerEncoderConfig`,
...), so that the tests can build the reference model from the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

LayerType = Literal["conv", "full_attention", "sliding_attention"]
Size = Literal["tiny", "full"]
SIZES: tuple[Size, ...] = ("tiny", "full")


@dataclass(frozen=True)
class BackboneConfig:
    """An LFM2 stack (transformers `Lfm2Model`): the decoder, and the detokenizer's trunk."""

    hidden_size: int
    layer_types: tuple[LayerType, ...]
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    """Effective SwiGLU width (the rows of `w1`), after LFM2's 2/3 adjustment and rounding."""
    vocab_size: int
    conv_cache: int = 3
    """Short-conv kernel size, which is also the conv state length (`conv_L_cache`)."""
    rope_theta: float = 1_000_000.0
    norm_eps: float = 1e-5
    max_position_embeddings: int = 128_000
    sliding_window: int | None = None
    """Window of `sliding_attention` layers (the detokenizer's 30); None where there are none."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if "sliding_attention" in self.layer_types and self.sliding_window is None:
            raise ValueError("sliding_attention layers need a sliding_window")

    @property
    def num_hidden_layers(self) -> int:
        return len(self.layer_types)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def is_attention(self, layer: int) -> bool:
        return self.layer_types[layer] != "conv"

    @property
    def attention_layers(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_hidden_layers) if self.is_attention(i))

    @property
    def conv_layers(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_hidden_layers) if not self.is_attention(i))

    def reference_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of transformers' `Lfm2Config` for this stack.

        `sliding_attention` layers become `full_attention`: transformers' LFM2 has no window, the
        reference detokenizer applies it through its own attention mask.
        """
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "max_position_embeddings": self.max_position_embeddings,
            "norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "conv_bias": False,
            "conv_L_cache": self.conv_cache,
            "block_auto_adjust_ff_dim": False,
            "layer_types": ["conv" if t == "conv" else "full_attention" for t in self.layer_types],
            "tie_word_embeddings": True,
        }


@dataclass(frozen=True)
class EncoderConfig:
    """FastConformer audio encoder (rel-pos attention, dw-striding x8) and its adapter MLP."""

    n_mels: int
    n_layers: int
    d_model: int
    n_heads: int
    ff_expansion_factor: int
    conv_kernel_size: int
    subsampling_factor: int
    subsampling_conv_channels: int
    pos_emb_max_len: int = 5000

    def reference_kwargs(self) -> dict[str, Any]:
        """The 24 fields of liquid-audio's `ConformerEncoderConfig`.

        The reference code only works with `xscaling=False`, `rel_pos` attention and
        `dw_striding` subsampling (DESIGN §3.3.1); dropouts are irrelevant in eval mode.
        """
        return {
            "feat_in": self.n_mels,
            "feat_out": -1,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "subsampling": "dw_striding",
            "subsampling_factor": self.subsampling_factor,
            "subsampling_conv_channels": self.subsampling_conv_channels,
            "causal_downsampling": False,
            "reduction": None,
            "reduction_position": None,
            "reduction_factor": 1,
            "ff_expansion_factor": self.ff_expansion_factor,
            "self_attention_model": "rel_pos",
            "n_heads": self.n_heads,
            "att_context_size": [-1, -1],
            "xscaling": False,
            "untie_biases": True,
            "pos_emb_max_len": self.pos_emb_max_len,
            "conv_kernel_size": self.conv_kernel_size,
            "conv_norm_type": "batch_norm",
            "conv_context_size": None,
            "dropout": 0.1,
            "dropout_pre_encoder": 0.1,
            "dropout_emb": 0.0,
            "dropout_att": 0.1,
        }


@dataclass(frozen=True)
class DepthformerConfig:
    """The per-frame codebook transformer (liquid-audio `RawLMBackbone` of `StandardBlock`s)."""

    layers: int
    dim: int
    num_heads: int = 32
    """Fixed by the reference (`MHA`'s default); `dim` must be a multiple of it."""
    num_kv_heads: int = 8
    rope_theta: float = 1_000_000.0
    norm_eps: float = 1e-5
    tie: bool = True

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"depthformer dim {self.dim} must be a multiple of {self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def ff_dim(self) -> int:
        """SwiGLU width as the reference computes it: 2/3 of 4*dim, rounded up to 256."""
        width = int(2 * (4 * self.dim) / 3)
        return 256 * ((width + 255) // 256)


@dataclass(frozen=True)
class DetokenizerConfig:
    """LFM2.5-Audio's detokenizer: codes -> 75 Hz LFM2 trunk -> STFT frames -> 24 kHz."""

    backbone: BackboneConfig
    codebooks: int = 8
    codebook_size: int = 2048
    upsample: int = 6
    n_fft: int = 1280
    hop_length: int = 320

    @property
    def output_size(self) -> int:
        return 2 * (self.n_fft // 2 + 1)


@dataclass(frozen=True)
class PreprocessorConfig:
    """Log-mel front end (DESIGN §3.1), in liquid-audio's `PreprocessorConfig` fields."""

    sample_rate: int = 16_000
    features: int = 128
    n_fft: int = 512
    window_size: float = 0.025
    window_stride: float = 0.01
    window: str = "hann"
    normalize: str = "per_feature"
    log: bool = True
    frame_splicing: int = 1
    dither: float = 1e-5
    pad_to: int = 0
    pad_value: float = 0.0

    def reference_kwargs(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "normalize": self.normalize,
            "window_size": self.window_size,
            "window_stride": self.window_stride,
            "window": self.window,
            "features": self.features,
            "n_fft": self.n_fft,
            "log": self.log,
            "frame_splicing": self.frame_splicing,
            "dither": self.dither,
            "pad_to": self.pad_to,
            "pad_value": self.pad_value,
        }


@dataclass(frozen=True)
class AudioModelConfig:
    """The whole LFM2.5-Audio model: backbone, encoder, depthformer, detokenizer."""

    size: Size
    backbone: BackboneConfig
    encoder: EncoderConfig
    depthformer: DepthformerConfig
    detokenizer: DetokenizerConfig
    preprocessor: PreprocessorConfig = field(default_factory=PreprocessorConfig)
    family: Literal["lfm2.5-audio"] = "lfm2.5-audio"
    codebooks: int = 8
    codebook_size: int = 2049
    """Codes per codebook including end-of-audio (2048)."""
    interleaved_n_text: int = 6
    interleaved_n_audio: int = 12
    tie_audio_embeddings: bool = False
    output_sample_rate: int = 24_000

    def manifest_config(self) -> dict[str, Any]:
        """The manifest's `config` object (see `satellite.modeldir.manifest.REQUIRED_CONFIG`)."""
        b = self.backbone
        return {
            "hidden_size": b.hidden_size,
            "num_hidden_layers": b.num_hidden_layers,
            "layer_types": list(b.layer_types),
            "num_attention_heads": b.num_attention_heads,
            "num_key_value_heads": b.num_key_value_heads,
            "head_dim": b.head_dim,
            "vocab_size": b.vocab_size,
            "conv_cache": b.conv_cache,
            "rope_theta": b.rope_theta,
            "norm_eps": b.norm_eps,
            "codebooks": self.codebooks,
            "codebook_size": self.codebook_size,
            "n_mels": self.preprocessor.features,
            "input_sample_rate": self.preprocessor.sample_rate,
            "output_sample_rate": self.output_sample_rate,
            "interleaved_n_text": self.interleaved_n_text,
            "interleaved_n_audio": self.interleaved_n_audio,
            "depthformer_layers": self.depthformer.layers,
            "depthformer_dim": self.depthformer.dim,
            "depthformer_heads": self.depthformer.num_heads,
            "depthformer_kv_heads": self.depthformer.num_kv_heads,
        }

    def reference_config_json(self) -> dict[str, Any]:
        """The checkpoint's `config.json` (liquid-audio layout), as `from_pretrained` reads it."""
        return {
            "architectures": ["LFM2AudioModel"],
            "codebooks": self.codebooks,
            "tie_audio_embeddings": self.tie_audio_embeddings,
            "semantic_codebook_factor": 100,
            "codebook_weight": "log",
            "interleaved_n_text": self.interleaved_n_text,
            "interleaved_n_audio": self.interleaved_n_audio,
            "preprocessor": self.preprocessor.reference_kwargs(),
            "encoder": self.encoder.reference_kwargs(),
            "lfm": self.backbone.reference_kwargs(),
            "depthformer": {
                "layers": self.depthformer.layers,
                "dim": self.depthformer.dim,
                "tie": self.depthformer.tie,
            },
        }


# LFM2-1.2B's layer pattern: attention at 2, 5, 8, 10, 12, 14 of 16.
_FULL_ATTENTION = (2, 5, 8, 10, 12, 14)
_DETOKENIZER_LAYERS: tuple[LayerType, ...] = (
    "conv",
    "conv",
    "sliding_attention",
    "conv",
    "sliding_attention",
    "conv",
    "sliding_attention",
    "conv",
)


def full() -> AudioModelConfig:
    """LFM2.5-Audio-1.5B at its real size (same shapes, FLOPs and bytes as the checkpoint)."""
    return AudioModelConfig(
        size="full",
        backbone=BackboneConfig(
            hidden_size=2048,
            layer_types=tuple(
                "full_attention" if i in _FULL_ATTENTION else "conv" for i in range(16)
            ),
            num_attention_heads=32,
            num_key_value_heads=8,
            intermediate_size=8192,
            vocab_size=65536,
        ),
        encoder=EncoderConfig(
            n_mels=128,
            n_layers=17,
            d_model=512,
            n_heads=8,
            ff_expansion_factor=4,
            conv_kernel_size=9,
            subsampling_factor=8,
            subsampling_conv_channels=256,
        ),
        depthformer=DepthformerConfig(layers=6, dim=1024),
        detokenizer=DetokenizerConfig(
            backbone=BackboneConfig(
                hidden_size=512,
                layer_types=_DETOKENIZER_LAYERS,
                num_attention_heads=16,
                num_key_value_heads=8,
                intermediate_size=2304,
                vocab_size=65536,
                max_position_embeddings=4096,
                sliding_window=30,
            )
        ),
    )


def tiny() -> AudioModelConfig:
    """The tiny same-architecture model of the tests and the demo.

    The backbone keeps the real model's first six layers' pattern (conv, conv, attention, conv,
    conv, attention), grouped-query attention (4 query / 2 KV heads) and q/k norms; the vocabulary
    still holds the special ids up to 130. The depthformer keeps 32 query heads and so needs
    width 512: head_dim 16 is the least onnxruntime's GroupQueryAttention (with rotary) accepts
    on CPU. The detokenizer keeps its hard-wired width 512.
    """
    return AudioModelConfig(
        size="tiny",
        backbone=BackboneConfig(
            hidden_size=64,
            layer_types=("conv", "conv", "full_attention", "conv", "conv", "full_attention"),
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
            vocab_size=512,
            max_position_embeddings=4096,
        ),
        encoder=EncoderConfig(
            n_mels=128,
            n_layers=2,
            d_model=32,
            n_heads=2,
            ff_expansion_factor=2,
            conv_kernel_size=9,
            subsampling_factor=8,
            subsampling_conv_channels=16,
        ),
        depthformer=DepthformerConfig(layers=2, dim=512),
        detokenizer=DetokenizerConfig(
            backbone=BackboneConfig(
                hidden_size=512,
                layer_types=("conv", "sliding_attention", "conv"),
                num_attention_heads=16,
                num_key_value_heads=8,
                intermediate_size=256,
                vocab_size=64,
                max_position_embeddings=4096,
                sliding_window=30,
            )
        ),
    )


def config_for(size: Size) -> AudioModelConfig:
    if size == "tiny":
        return tiny()
    if size == "full":
        return full()
    raise ValueError(f"unknown model size {size!r}; sizes are {', '.join(SIZES)}")
