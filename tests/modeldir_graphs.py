"""Tiny real ONNX graphs for the model-directory tests: one per role, built with the `onnx`
package, small enough to write in milliseconds, and runnable in onnxruntime. Their inputs and
outputs follow `satellite.modeldir.contract` (the official export's names), their fixed
dimensions the config numbers given.

`write_model_dir` lays them out like the official export (graphs under `onnx/`, side files,
tokenizer) and writes the manifest; `write_hub_repo` lays out a hub repository with several
variants, as `LiquidAI/LFM2.5-Audio-1.5B-ONNX` is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from satellite.modeldir.make import make_manifest
from satellite.modeldir.manifest import Manifest

FLOAT, INT64, INT32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32
Dim = int | str

CONFIG: dict[str, Any] = {
    "hidden_size": 16,
    "num_hidden_layers": 3,
    "layer_types": ["conv", "full_attention", "conv"],
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 32,
    "conv_cache": 3,
    "codebooks": 2,
    "codebook_size": 5,
    "n_mels": 8,
    "input_sample_rate": 16000,
    "output_sample_rate": 24000,
    "depthformer_layers": 2,
    "depthformer_dim": 8,
    "depthformer_kv_heads": 2,
    "depthformer_head_dim": 4,
}
"""Tiny numbers; head_dim = 16 / 4 = 4."""

OFFICIAL_FILES = {
    "decoder": "onnx/decoder{sfx}.onnx",
    "audio_encoder": "onnx/audio_encoder{sfx}.onnx",
    "audio_embedding": "onnx/audio_embedding{sfx}.onnx",
    "depthformer": "onnx/vocoder_depthformer{sfx}.onnx",
    "audio_detokenizer": "onnx/audio_detokenizer{sfx}.onnx",
}
SUFFIX = {"fp32": "", "fp16": "_fp16", "q4": "_q4", "q8": "_q8"}

_RNG = np.random.default_rng(7)


def _weight(name: str, shape: tuple[int, ...]) -> TensorProto:
    return numpy_helper.from_array(_RNG.standard_normal(shape).astype(np.float32), name)


def _model(
    name: str,
    inputs: list[tuple[str, int, list[Dim]]],
    outputs: list[tuple[str, int, list[Dim]]],
    nodes: list[onnx.NodeProto],
    initializers: Iterable[TensorProto] = (),
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        initializer=list(initializers),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    model.ir_version = 10
    return model


def decoder(
    cfg: Mapping[str, Any] = CONFIG,
    *,
    embeds_name: str = "inputs_embeds",
    embeds_type: int = FLOAT,
) -> onnx.ModelProto:
    """The backbone's interface: logits = x @ W, hidden_states = x, conv caches passed through,
    attention caches grown by the step's projected keys/values."""
    h, v, kv = cfg["hidden_size"], cfg["vocab_size"], cfg["num_key_value_heads"]
    hd = h // cfg["num_attention_heads"]
    ids = embeds_type == INT64  # token ids in: the graph embeds them itself
    embeds_shape: list[Dim] = ["batch_size", "sequence_length"] + ([] if ids else [h])
    inputs: list[tuple[str, int, list[Dim]]] = [
        (embeds_name, embeds_type, embeds_shape),
        ("attention_mask", INT64, ["batch_size", "total_sequence_length"]),
    ]
    outputs: list[tuple[str, int, list[Dim]]] = [
        ("logits", FLOAT, ["batch_size", "sequence_length", v]),
        ("hidden_states", FLOAT, ["batch_size", "sequence_length", h]),
    ]
    x = embeds_name
    nodes = []
    inits = []
    if ids:
        nodes.append(helper.make_node("Gather", ["embed_table", embeds_name], ["x_embedded"]))
        inits.append(_weight("embed_table", (v, h)))
        x = "x_embedded"
    elif embeds_type != FLOAT:
        nodes.append(helper.make_node("Cast", [embeds_name], ["x_float"], to=FLOAT))
        x = "x_float"
    nodes += [
        helper.make_node("MatMul", [x, "lm_head"], ["logits"]),
        helper.make_node("Identity", [x], ["hidden_states"]),
    ]
    inits += [
        _weight("lm_head", (h, v)),
        _weight("k_proj", (h, kv * hd)),
        numpy_helper.from_array(np.array([0, 0, kv, hd], np.int64), "kv_shape"),
    ]
    nodes += [
        helper.make_node("MatMul", [x, "k_proj"], ["k_flat"]),
        helper.make_node("Reshape", ["k_flat", "kv_shape"], ["k_bshd"]),
        helper.make_node("Transpose", ["k_bshd"], ["k_new"], perm=[0, 2, 1, 3]),
    ]
    for i, kind in enumerate(cfg["layer_types"]):
        if kind == "conv":
            shape: list[Dim] = ["batch_size", h, cfg["conv_cache"]]
            inputs.append((f"past_conv.{i}", FLOAT, shape))
            outputs.append((f"present_conv.{i}", FLOAT, shape))
            nodes.append(helper.make_node("Identity", [f"past_conv.{i}"], [f"present_conv.{i}"]))
        else:
            for part in ("key", "value"):
                inputs.append(
                    (
                        f"past_key_values.{i}.{part}",
                        FLOAT,
                        ["batch_size", kv, "past_sequence_length", hd],
                    )
                )
                outputs.append(
                    (f"present.{i}.{part}", FLOAT, ["batch_size", kv, "total_sequence_length", hd])
                )
                nodes.append(
                    helper.make_node(
                        "Concat",
                        [f"past_key_values.{i}.{part}", "k_new"],
                        [f"present.{i}.{part}"],
                        axis=2,
                    )
                )
    return _model("decoder", inputs, outputs, nodes, inits)


def audio_encoder(
    cfg: Mapping[str, Any] = CONFIG, *, mel_name: str = "mel_spectrogram"
) -> onnx.ModelProto:
    h, m = cfg["hidden_size"], cfg["n_mels"]
    return _model(
        "audio_encoder",
        [
            (mel_name, FLOAT, ["batch_size", "time_steps", m]),
            ("mel_lengths", INT64, ["batch_size"]),
        ],
        [
            ("audio_embeddings", FLOAT, ["batch_size", "reduced_time", h]),
            ("audio_lengths", INT64, ["batch_size"]),
        ],
        [
            helper.make_node("MatMul", [mel_name, "adapter"], ["audio_embeddings"]),
            helper.make_node("Identity", ["mel_lengths"], ["audio_lengths"]),
        ],
        [_weight("adapter", (m, h))],
    )


def audio_embedding(
    cfg: Mapping[str, Any] = CONFIG,
    *,
    codes_name: str = "audio_codes",
    codes_type: int = INT64,
    with_norm: bool = False,
) -> onnx.ModelProto:
    """A Gather over the flat code table; `with_norm` adds the old exports' extra RMSNorm."""
    h, rows = cfg["hidden_size"], cfg["codebooks"] * cfg["codebook_size"]
    gathered = "gathered" if with_norm else "audio_embeds"
    nodes = [helper.make_node("Gather", ["table", codes_name], [gathered])]
    inits = [_weight("table", (rows, h))]
    if with_norm:
        nodes.append(
            helper.make_node(
                "SimplifiedLayerNormalization",
                [gathered, "norm_weight"],
                ["audio_embeds"],
                axis=-1,
                epsilon=1e-5,
            )
        )
        inits.append(numpy_helper.from_array(np.ones(h, np.float32), "norm_weight"))
    return _model(
        "audio_embedding",
        [(codes_name, codes_type, ["batch_size", "audio_length"])],
        [("audio_embeds", FLOAT, ["batch_size", "audio_length", h])],
        nodes,
        inits,
    )


def depthformer(
    cfg: Mapping[str, Any] = CONFIG,
    *,
    symbolic_cache: bool = False,
    gqa_without_rotary: bool = False,
) -> onnx.ModelProto:
    """The one-codebook-step interface. `symbolic_cache` leaves the cache's head axes unnamed
    sizes (so catalog defaults for the full model do not apply); `gqa_without_rotary` adds a
    GroupQueryAttention node with rotary tables but no do_rotary, as the published graph has."""
    h, cb, cs = cfg["hidden_size"], cfg["codebooks"], cfg["codebook_size"]
    d, layers = cfg["depthformer_dim"], cfg["depthformer_layers"]
    heads: list[Dim] = (
        ["kv_heads", "head_dim"]
        if symbolic_cache
        else [cfg["depthformer_kv_heads"], cfg["depthformer_head_dim"]]
    )
    past: list[Dim] = [layers, "batch", heads[0], "past_len", heads[1]]
    new: list[Dim] = [layers, "batch", heads[0], "new_len", heads[1]]
    nodes = [
        helper.make_node("MatMul", ["hidden_states", "head"], ["logits"]),
        helper.make_node("Identity", ["depth_slices_in"], ["depth_slices"]),
        helper.make_node("Identity", ["past_keys"], ["new_keys"]),
        helper.make_node("Identity", ["past_values"], ["new_values"]),
    ]
    if gqa_without_rotary:
        nodes.append(
            helper.make_node(
                "GroupQueryAttention",
                ["q", "k", "v", "pk", "pv", "seqlens_k", "total_seq_len", "layer0.gqa_cos", "s"],
                ["attn"],
                domain="com.microsoft",
                num_heads=4,
                kv_num_heads=2,
            )
        )
    return _model(
        "vocoder_depthformer",
        [
            ("hidden_states", FLOAT, ["batch", h]),
            ("depth_slices_in", FLOAT, ["batch", cb, d]),
            ("step_idx", INT64, []),
            ("prev_token", INT64, ["batch"]),
            ("past_keys", FLOAT, past),
            ("past_values", FLOAT, past),
            ("seqlens_k", INT32, ["batch"]),
            ("total_seq_len", INT32, []),
        ],
        [
            ("logits", FLOAT, ["batch", cs]),
            ("depth_slices", FLOAT, ["batch", cb, d]),
            ("new_keys", FLOAT, new),
            ("new_values", FLOAT, new),
        ],
        nodes,
        [_weight("head", (h, cs))],
    )


def audio_detokenizer(cfg: Mapping[str, Any] = CONFIG) -> onnx.ModelProto:
    cb = cfg["codebooks"]
    return _model(
        "audio_detokenizer",
        [("audio_codes", INT64, ["batch_size", cb, "time"])],
        [("stft_features", FLOAT, ["batch_size", "stft_time", cb])],
        [
            helper.make_node("Cast", ["audio_codes"], ["codes_f"], to=FLOAT),
            helper.make_node("Transpose", ["codes_f"], ["stft_features"], perm=[0, 2, 1]),
        ],
    )


BUILDERS = {
    "decoder": decoder,
    "audio_encoder": audio_encoder,
    "audio_embedding": audio_embedding,
    "depthformer": depthformer,
    "audio_detokenizer": audio_detokenizer,
}


def save(model: onnx.ModelProto, path: Path, data_files: list[str] | None = None) -> None:
    """Write `model`; with `data_files`, its initializers go to those external files (beside
    the graph) in turn, as a large export splits its weights."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if data_files:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        handles = {name: (path.parent / name).open("wb") for name in data_files}
        try:
            weights = [t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT]
            for k, tensor in enumerate(weights):  # small int constants stay inline
                name = data_files[k % len(data_files)]
                raw = numpy_helper.to_array(tensor).tobytes()
                handle = handles[name]
                offset = handle.tell()
                handle.write(raw)
                tensor.ClearField("raw_data")
                tensor.ClearField("float_data")
                tensor.ClearField("int64_data")
                tensor.data_location = TensorProto.EXTERNAL
                for key, value in (("location", name), ("offset", offset), ("length", len(raw))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, str(value)
        finally:
            for handle in handles.values():
                handle.close()
    onnx.save_model(model, str(path))


def hub_config_json(cfg: Mapping[str, Any] = CONFIG) -> dict[str, Any]:
    """`config.json` as the checkpoint (and the ONNX repo) has it: decoder under `lfm`."""
    return {
        "architectures": ["LFM2AudioModel"],
        "codebooks": cfg["codebooks"],
        "interleaved_n_text": 6,
        "interleaved_n_audio": 12,
        "preprocessor": {"sample_rate": cfg["input_sample_rate"], "features": cfg["n_mels"]},
        "lfm": {
            "hidden_size": cfg["hidden_size"],
            "num_hidden_layers": cfg["num_hidden_layers"],
            "num_attention_heads": cfg["num_attention_heads"],
            "num_key_value_heads": cfg["num_key_value_heads"],
            "conv_L_cache": cfg["conv_cache"],
            "layer_types": list(cfg["layer_types"]),
            "vocab_size": cfg["vocab_size"],
        },
        "depthformer": {"layers": cfg["depthformer_layers"], "dim": cfg["depthformer_dim"]},
    }


def write_side_files(root: Path, cfg: Mapping[str, Any] = CONFIG) -> None:
    """config.json, tokenizer files, mel config and both embedding tables (bin + json)."""
    (root / "onnx").mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(hub_config_json(cfg), indent=2))
    (root / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"vocab": {}}}))
    (root / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    (root / "onnx" / "mel_config.json").write_text(
        json.dumps({"sample_rate": cfg["input_sample_rate"], "n_fft": 512, "n_mels": cfg["n_mels"]})
    )
    h = cfg["hidden_size"]
    tables = {
        "embed_tokens": {"vocab_size": cfg["vocab_size"], "hidden_size": h},
        "audio_embedding": {
            "vocab_size": cfg["codebooks"] * cfg["codebook_size"],
            "hidden_size": h,
            "num_codebooks": cfg["codebooks"],
            "codebook_vocab": cfg["codebook_size"],
        },
    }
    for name, meta in tables.items():
        rows = _RNG.standard_normal((meta["vocab_size"], h)).astype("<f4")
        (root / "onnx" / f"{name}.bin").write_bytes(rows.tobytes())
        described = {**meta, "dtype": "float32", "byte_order": "little"}
        (root / "onnx" / f"{name}.json").write_text(json.dumps(described))


SIDE_FILES = {
    "config": "config.json",
    "tokenizer_config": "tokenizer_config.json",
    "mel_config": "onnx/mel_config.json",
    "embed_tokens": "onnx/embed_tokens.json",
    "audio_embedding": "onnx/audio_embedding.json",
}


def write_model_dir(
    root: Path,
    cfg: Mapping[str, Any] = CONFIG,
    *,
    variant: str = "fp32",
    graphs: Mapping[str, onnx.ModelProto] | None = None,
    decoder_data: list[str] | None = None,
) -> Manifest:
    """A complete model directory in the official layout with its manifest written.
    `graphs` replaces some roles' graphs; the decoder's weights go to `decoder_data` files
    (default: one `.onnx_data` file)."""
    sfx = SUFFIX[variant]
    files = {role: pattern.format(sfx=sfx) for role, pattern in OFFICIAL_FILES.items()}
    chosen = {role: build(cfg) for role, build in BUILDERS.items()}
    chosen.update(graphs or {})
    for role, model in chosen.items():
        data = None
        if role == "decoder":
            name = Path(files[role]).name
            data = decoder_data if decoder_data is not None else [f"{name}_data"]
        save(model, root / files[role], data)
    write_side_files(root, cfg)
    manifest = index(root, cfg, {r: files[r] for r in chosen}, variant)
    manifest.write(root)
    return manifest


def index(
    root: Path, cfg: Mapping[str, Any], files: Mapping[str, str], variant: str = "fp32"
) -> Manifest:
    """The manifest of an official-layout directory (not written)."""
    return make_manifest(
        root,
        name="test/tiny-official-layout",
        family="lfm2.5-audio",
        variant=variant,
        config=dict(cfg),
        graphs=files,
        options={"depthformer": {"granularity": "codebook_step"}},
        tokenizer="tokenizer.json",
        side_files=SIDE_FILES,
        source={"test": True},
    )


def write_hub_repo(
    root: Path,
    cfg: Mapping[str, Any],
    variants: Iterable[str] = ("fp32", "q4"),
    *,
    q4_padding: int = 0,
) -> None:
    """A directory laid out like the hub repository `LiquidAI/LFM2.5-Audio-1.5B-ONNX`:
    root files, `onnx/` graphs for each variant (the decoder's weights split over
    `.onnx_data` and `.onnx_data_1` for q4, one `.onnx_data` otherwise), side files, and
    files a fetch must leave alone (README, another precision). `q4_padding` bytes of unused
    weights go into `onnx/decoder_q4.onnx_data`, to make it large enough that a download cut
    midway has written part of it (huggingface_hub writes 10 MiB pieces)."""
    write_side_files(root, cfg)
    (root / "README.md").write_text("# tiny test repo\n")
    for variant in variants:
        sfx = SUFFIX[variant]
        for role, pattern in OFFICIAL_FILES.items():
            rel = pattern.format(sfx=sfx)
            if role == "depthformer":
                model = depthformer(cfg, symbolic_cache=True)
            else:
                model = BUILDERS[role](cfg)
            if role == "decoder" and variant == "q4" and q4_padding:
                pad = np.zeros(q4_padding // 4, np.float32)
                model.graph.initializer.insert(0, numpy_helper.from_array(pad, "padding"))
            data = None
            if role == "decoder":
                name = Path(rel).name
                data = [f"{name}_data", f"{name}_data_1"] if variant == "q4" else [f"{name}_data"]
            save(model, root / rel, data)
