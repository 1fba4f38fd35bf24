"""q8 and q4 model directories (`lfm_toolchain.quantize`) on the tiny model, against the fp32 one.

Every graph of both variants runs in onnxruntime; every weight MatMul became MatMulNBits
(symmetric, accuracy_level 4, the variant's block: 64 for q4, 32 for q8) and every embedding Gather GatherBlockQuantized; the
tied tables are stored once; `model verify` accepts the directory.

Text logits are measured two ways over 320 positions (a 256-token prefill, then 64 single
steps on the filled cache):

- against the fp32 graphs: the figure a user cares about. On this random-weight model it is
  dominated by the weights' rounding itself, which a random network amplifies far more than a
  trained one (4-bit rounding is ~7.6 % rms noise per weight; the tiny model turns that into
  ~70 % rms noise on the logits, the same as 7.6 % Gaussian weight noise does), so the q4
  bound here is loose by necessity;
- against fp32 graphs built from the *rounded* weights (the same blocks, dequantized in
  numpy): what the quantized graphs add on top of the rounding (MatMulNBits' int8
  activations, the shared-table layouts). This is the tight check of the implementation.

Tiny dimensions: the weights' input widths are 64, 128, 32, 256 and 512. At q4's block 64 the
encoder's width-32 MatMuls get one padded block each (MatMulNBits pads a partial last block);
a Gather table whose width is not a multiple of the block stays in float (the report says so).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from lfm_toolchain import decoder as decoder_graph
from lfm_toolchain import embeddings
from lfm_toolchain.build import build_model
from lfm_toolchain.config import tiny
from lfm_toolchain.onnx_graph import ExternalData, GraphBuilder, save
from lfm_toolchain.quantize import MIN_TABLE_ROWS, VARIANT_SPECS, quantize_graphs
from lfm_toolchain.weights import Array, model_weights
from reference import TINY_SEED

from satellite.engine.sessions import open_to_check, plain_session_options
from satellite.modeldir.manifest import read_manifest
from satellite.modeldir.verify import verify

VARIANTS = ("q8", "q4")
PREFILL, STEPS = 256, 64
Feeds = dict[str, np.ndarray]

# Bounds on the text logits (logits have std ~1.0, max |logit| ~4.5 on this model), measured
# figures in the comments.
VS_ROUNDED = {  # quantized graphs vs fp32 graphs of the rounded weights
    "q8": {"rms": 0.08, "max": 0.8, "top1": 0.85},  # measured rms 0.051 max 0.38 top1 0.91
    "q4": {"rms": 0.08, "max": 0.8, "top1": 0.85},  # measured rms 0.057 max 0.44 top1 0.92
}
VS_FP32 = {  # quantized graphs vs the fp32 graphs
    "q8": {"rms": 0.11, "max": 1.0, "top1": 0.82},  # measured rms 0.074 max 0.66 top1 0.89
    "q4": {"rms": 0.8, "max": 6.0, "top1": 0.12},  # measured rms 0.74 max 4.34 top1 0.17
}
AUDIO_BOUNDS = {
    # max abs error / max |fp32 output| (audio_embedding: the rounding bound itself, a code's
    # error is at most 1/8 (q4) or 1/128 (q8) of its block's largest value), or the share of
    # depthformer codes (argmax, 3 frames of 8 steps) that agree with fp32. Measured in comments.
    "q8": {
        "audio_encoder": 0.06,  # 0.025
        "audio_embedding": 1 / 128,  # 0.004
        "depthformer": 0.06,  # 0.026
        "depthformer codes agreeing": 0.75,  # 0.96
        "audio_detokenizer": 0.12,  # 0.051
    },
    "q4": {
        "audio_encoder": 0.4,  # 0.25
        "audio_embedding": 1 / 8,  # 0.089
        "depthformer": 0.45,  # 0.32
        "depthformer codes agreeing": 0.5,  # 0.75
        "audio_detokenizer": 0.9,  # 0.54
    },
}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model in each variant, its weights as drawn (`shaped=False`): the bounds are in
    logit units for rows of the drawn scale, and a shaped row (up to 2.8x) scales its logit's
    rounding error with it."""
    root = tmp_path_factory.mktemp("quantized")
    for variant in ("fp32", *VARIANTS):
        build_model(root / variant, size="tiny", seed=TINY_SEED, variant=variant, shaped=False)
    return {variant: root / variant for variant in ("fp32", *VARIANTS)}


def session(directory: Path, role: str) -> ort.InferenceSession:
    options = plain_session_options()
    options.intra_op_num_threads = 1
    file = read_manifest(directory).graphs[role].file
    return ort.InferenceSession(str(directory / file), options, providers=["CPUExecutionProvider"])


def graph(directory: Path, role: str) -> onnx.GraphProto:
    file = read_manifest(directory).graphs[role].file
    return onnx.load(str(directory / file), load_external_data=False).graph


def all_nodes(g: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes of `g` and of its subgraphs (the depthformer's If branches)."""
    found = []
    for node in g.node:
        found.append(node)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found += all_nodes(attr.g)
    return found


def attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def external(tensor: onnx.TensorProto) -> tuple[str, int, int]:
    """(location, offset, length) of an external initializer."""
    info = {e.key: e.value for e in tensor.external_data}
    return info["location"], int(info.get("offset", 0)), int(info["length"])


def round_to_blocks(table: Array, bits: int) -> Array:
    """A [rows, width] tensor rounded to the variant's blocks along the width (onnxruntime's
    quantizer picks the scales and codes; the dequantization is numpy's own): what the
    quantized graphs compute with for a torch-layout weight or an embedding table."""
    packed, scales, _ = (
        VARIANT_SPECS[f"q{bits}"].quantizer().qbits_block_quant(np.ascontiguousarray(table.T))
    )
    rows, blocks, _ = packed.shape
    if bits == 4:
        codes = np.stack([packed & 15, packed >> 4], axis=-1).astype(np.int32) - 8
    else:
        codes = packed.astype(np.int32) - 128
    values: Array = codes.reshape(rows, blocks, -1) * scales[:, :, None]
    return values.reshape(rows, -1).astype(np.float32)


@pytest.fixture(scope="module")
def rounded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32 `decoder` and `embed_tokens` graphs of the backbone's weights rounded to q8/q4
    blocks (every 2-D backbone tensor is a MatMul weight or the tied table)."""
    config = tiny()
    weights = dict(model_weights(config, TINY_SEED, shaped=False))
    out = {}
    for variant in VARIANTS:
        bits = VARIANT_SPECS[variant].bits
        changed = {
            name: round_to_blocks(value, bits)
            if name.startswith("lfm.") and value.ndim == 2
            else value
            for name, value in weights.items()
        }
        folder = tmp_path_factory.mktemp(f"rounded_{variant}")
        for stem in ("decoder", "embed_tokens"):
            data = ExternalData(folder / f"{stem}.onnx_data")
            g = GraphBuilder(stem, data)
            if stem == "decoder":
                model = decoder_graph.build_decoder(g, config.backbone, changed)
            else:
                model = embeddings.build_embed_tokens(g, config, changed)
            data.close()
            save(model, folder / f"{stem}.onnx")
        out[variant] = folder
    return out


def text_logits(embed: ort.InferenceSession, dec: ort.InferenceSession, ids: np.ndarray) -> Array:
    """Logits of every position: a prefill of the first PREFILL ids, then one step per id."""
    cfg = tiny().backbone
    past, present = decoder_graph.cache_names(cfg)
    cache: Feeds = {
        name: np.zeros(
            (1, cfg.hidden_size, cfg.conv_cache)
            if name.startswith("past_conv")
            else (1, cfg.num_key_value_heads, 0, cfg.head_dim),
            dtype=np.float32,
        )
        for name in past
    }
    keeps = "num_logits_to_keep" in {i.name for i in dec.get_inputs()}
    rows, done = [], 0
    for chunk in [ids[:, :PREFILL]] + [ids[:, i : i + 1] for i in range(PREFILL, ids.shape[1])]:
        done += chunk.shape[1]
        feeds = {
            **cache,
            "inputs_embeds": embed.run(None, {"input_ids": chunk})[0],
            "attention_mask": np.ones((1, done), dtype=np.int64),
        }
        if keeps:
            feeds["num_logits_to_keep"] = np.array(chunk.shape[1], dtype=np.int64)
        outputs = dict(zip([o.name for o in dec.get_outputs()], dec.run(None, feeds), strict=True))
        rows.append(outputs["logits"][0])
        cache = {p: outputs[q] for p, q in zip(past, present, strict=True)}
    return np.concatenate(rows)


def compare(got: Array, want: Array) -> dict[str, float]:
    return {
        "rms": float(np.sqrt(np.mean((got - want) ** 2))),
        "max": float(np.max(np.abs(got - want))),
        "top1": float(np.mean(got.argmax(-1) == want.argmax(-1))),
    }


@pytest.fixture(scope="module")
def ids() -> np.ndarray:
    rng = np.random.default_rng(11)
    return rng.integers(0, tiny().backbone.vocab_size, size=(1, PREFILL + STEPS)).astype(np.int64)


@pytest.mark.parametrize("variant", VARIANTS)
def test_text_logits_error(
    variant: str, dirs: dict[str, Path], rounded: dict[str, Path], ids: np.ndarray
) -> None:
    fp32 = text_logits(session(dirs["fp32"], "embed_tokens"), session(dirs["fp32"], "decoder"), ids)
    got = text_logits(
        session(dirs[variant], "embed_tokens"), session(dirs[variant], "decoder"), ids
    )
    options = plain_session_options()
    ref = rounded[variant]
    want = text_logits(
        ort.InferenceSession(str(ref / "embed_tokens.onnx"), options),
        ort.InferenceSession(str(ref / "decoder.onnx"), options),
        ids,
    )
    assert got.shape == fp32.shape == (PREFILL + STEPS, tiny().backbone.vocab_size)
    for name, measured, bounds in (
        ("vs fp32 graphs of the rounded weights", compare(got, want), VS_ROUNDED[variant]),
        ("vs fp32 graphs", compare(got, fp32), VS_FP32[variant]),
    ):
        text = ", ".join(f"{k} {v:.3f}" for k, v in measured.items())
        print(f"{variant} text logits over {len(got)} positions {name}: {text}")
        assert measured["rms"] <= bounds["rms"], f"{variant} {name}: {text}; bounds {bounds}"
        assert measured["max"] <= bounds["max"], f"{variant} {name}: {text}; bounds {bounds}"
        assert measured["top1"] >= bounds["top1"], f"{variant} {name}: {text}; bounds {bounds}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_layouts_are_exact_with_float_activations(
    variant: str, dirs: dict[str, Path], rounded: dict[str, Path], ids: np.ndarray, tmp_path: Path
) -> None:
    """With accuracy_level 0 (float activations) the quantized decoder and the embedding table
    it shares compute exactly with the rounded weights: packing, zero points and the shared
    table's two shapes are right. Bound 1e-4 (float summation order)."""
    spec = dataclasses.replace(VARIANT_SPECS[variant], accuracy_level=0)
    fp32 = read_manifest(dirs["fp32"])
    files, _ = quantize_graphs(
        dirs["fp32"],
        {role: fp32.graphs[role].file for role in ("decoder", "embed_tokens")},
        tmp_path,
        spec,
        suffix="_exact",
    )
    got = text_logits(
        ort.InferenceSession(str(tmp_path / files["embed_tokens"]), plain_session_options()),
        ort.InferenceSession(str(tmp_path / files["decoder"]), plain_session_options()),
        ids,
    )
    ref = rounded[variant]
    want = text_logits(
        ort.InferenceSession(str(ref / "embed_tokens.onnx"), plain_session_options()),
        ort.InferenceSession(str(ref / "decoder.onnx"), plain_session_options()),
        ids,
    )
    error = float(np.max(np.abs(got - want)))
    print(f"{variant} accuracy_level 0 vs rounded weights: max abs error {error:.2e}")
    assert error <= 1e-4, f"{variant}: max abs error {error:.3g} > 1e-4"


def relative(got: Array, want: Array) -> float:
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_audio_graphs_run(variant: str, dirs: dict[str, Path]) -> None:
    """Encoder, audio embedding, depthformer and detokenizer run and stay near fp32 (max abs
    error relative to the largest fp32 output; bounds in `AUDIO_BOUNDS`)."""
    config = tiny()
    rng = np.random.default_rng(5)
    errors: dict[str, float] = {}

    mel = rng.standard_normal((1, 160, config.encoder.n_mels)).astype(np.float32)
    feeds: Feeds = {"mel_spectrogram": mel, "mel_lengths": np.array([160], dtype=np.int64)}
    want, want_len = session(dirs["fp32"], "audio_encoder").run(None, feeds)
    got, got_len = session(dirs[variant], "audio_encoder").run(None, feeds)
    assert got.shape == want.shape == (1, 20, config.backbone.hidden_size)
    np.testing.assert_array_equal(got_len, want_len)
    errors["audio_encoder"] = relative(got, want)

    codes = rng.integers(0, 2049, size=(1, 24)) + np.tile(np.arange(8) * 2049, 3)
    feeds = {"audio_codes": codes.astype(np.int64)}
    (got,) = session(dirs[variant], "audio_embedding").run(None, feeds)
    table = model_weights(config, TINY_SEED, shaped=False)["audio_embedding.embedding.weight"]
    exact = round_to_blocks(table, VARIANT_SPECS[variant].bits)[codes[0]][None]
    error = float(np.max(np.abs(got - exact)))
    assert error <= 1e-6, f"audio_embedding: rows differ from the rounded table by {error:.3g}"
    (want,) = session(dirs["fp32"], "audio_embedding").run(None, feeds)
    errors["audio_embedding"] = relative(got, want)

    want_steps, got_steps = [], []
    for _ in range(3):
        hidden = rng.standard_normal((1, config.backbone.hidden_size)).astype(np.float32)
        want, codes_fp32 = depthformer_frame(session(dirs["fp32"], "depthformer"), hidden, None)
        got, _ = depthformer_frame(session(dirs[variant], "depthformer"), hidden, codes_fp32)
        want_steps += want
        got_steps += got
    pairs = list(zip(got_steps, want_steps, strict=True))
    errors["depthformer"] = max(relative(g, w) for g, w in pairs)
    errors["depthformer codes agreeing"] = float(
        np.mean([g.argmax() == w.argmax() for g, w in pairs])
    )

    codes = rng.integers(0, 2048, size=(1, 8, 6)).astype(np.int64)
    (want,) = session(dirs["fp32"], "audio_detokenizer").run(None, {"audio_codes": codes})
    (got,) = session(dirs[variant], "audio_detokenizer").run(None, {"audio_codes": codes})
    assert got.shape == want.shape == (1, 36, 1282)
    errors["audio_detokenizer"] = relative(got, want)

    print(f"{variant}: " + ", ".join(f"{k} {v:.3f}" for k, v in errors.items()))
    bounds = AUDIO_BOUNDS[variant]
    for key, bound in bounds.items():
        if key.endswith("agreeing"):
            assert errors[key] >= bound, f"{variant} {key}: {errors[key]:.3f} < {bound}"
        else:
            assert errors[key] <= bound, (
                f"{variant} {key}: relative error {errors[key]:.3f} > {bound}"
            )


def depthformer_frame(
    sess: ort.InferenceSession, hidden: Array, codes: list[int] | None
) -> tuple[list[Array], list[int]]:
    """One frame of 8 codebook steps, feeding back `codes` (or the argmax where None)."""
    config = tiny()
    df = config.depthformer
    slices = np.zeros((1, config.codebooks, df.dim), dtype=np.float32)
    keys = np.zeros((df.layers, 1, df.num_kv_heads, 0, df.head_dim), dtype=np.float32)
    values = keys.copy()
    prev = np.zeros(1, dtype=np.int64)
    steps, chosen = [], []
    for step in range(config.codebooks):
        logits, slices, keys, values = sess.run(
            None,
            {
                "hidden_states": hidden,
                "depth_slices_in": slices,
                "step_idx": np.array(step, dtype=np.int64),
                "prev_token": prev,
                "past_keys": keys,
                "past_values": values,
                "seqlens_k": np.array([step], dtype=np.int32),
                "total_seq_len": np.array(step + 1, dtype=np.int32),
            },
        )
        code = int(logits[0].argmax()) if codes is None else codes[step]
        steps.append(logits[0])
        chosen.append(code)
        prev = np.array([code], dtype=np.int64)
    return steps, chosen


def weight_matmuls(g: onnx.GraphProto) -> list[onnx.NodeProto]:
    """MatMul nodes whose second input is an initializer (a weight)."""
    names = {t.name for t in g.initializer}
    return [n for n in all_nodes(g) if n.op_type == "MatMul" and n.input[1] in names]


def table_gathers(g: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Gathers over float initializer tables of embedding size (>= MIN_TABLE_ROWS rows)."""
    tables = {
        t.name
        for t in g.initializer
        if t.data_type == onnx.TensorProto.FLOAT
        and len(t.dims) == 2
        and t.dims[0] >= MIN_TABLE_ROWS
    }
    return [n for n in all_nodes(g) if n.op_type == "Gather" and n.input[0] in tables]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_weight_matmul_and_table_is_quantized(variant: str, dirs: dict[str, Path]) -> None:
    spec = VARIANT_SPECS[variant]
    manifest = read_manifest(dirs[variant])
    assert manifest.variant == variant
    assert set(manifest.graphs) == set(read_manifest(dirs["fp32"]).graphs)
    for role, entry in manifest.graphs.items():
        before, after = graph(dirs["fp32"], role), graph(dirs[variant], role)
        assert (
            entry.file
            == f"{Path(read_manifest(dirs['fp32']).graphs[role].file).stem}_{variant}.onnx"
        )
        nbits = [n for n in all_nodes(after) if n.op_type == "MatMulNBits"]
        gbq = [n for n in all_nodes(after) if n.op_type == "GatherBlockQuantized"]
        report = entry.options["quantization"]
        print(
            f"{variant} {role}: MatMul {len(all_nodes_of(before, 'MatMul'))} -> "
            f"{len(all_nodes_of(after, 'MatMul'))} (+{len(nbits)} MatMulNBits), "
            f"table Gathers {len(table_gathers(before))} -> {len(gbq)} GatherBlockQuantized"
        )
        assert weight_matmuls(after) == [], f"{role}: weight MatMuls left in float"
        assert len(nbits) == len(weight_matmuls(before)), role
        assert table_gathers(after) == [] and len(gbq) == len(table_gathers(before)), role
        for node in nbits:
            a = attrs(node)
            assert (a["bits"], a["block_size"], a["accuracy_level"]) == (
                spec.bits,
                spec.block_size,
                4,
            )
            assert len(node.input) == 3, f"{node.name}: symmetric blocks carry no zero points"
        for node in gbq:
            assert (attrs(node)["bits"], attrs(node)["block_size"]) == (spec.bits, spec.block_size)
        assert report["matmul_weights"] == report["matmul_quantized"] == len(nbits), role
        assert report["gather_quantized"] == len(gbq), role
        kept = sum(k["count"] for k in report["unquantized"] if k["op"] == "MatMul")
        assert report["matmul_total"] == len(nbits) + kept, role
    encoder = manifest.graphs["audio_encoder"].options["quantization"]["unquantized"]
    reasons = {k["op"]: k["reason"] for k in encoder}
    assert "activation x activation" in reasons["MatMul"] and "convolution" in reasons["Conv"]
    depth = manifest.graphs["depthformer"].options["quantization"]["unquantized"]
    assert [k["nodes"] for k in depth] == [["/head/gain"]]


def all_nodes_of(g: onnx.GraphProto, op: str) -> list[onnx.NodeProto]:
    return [n for n in all_nodes(g) if n.op_type == op]


@pytest.mark.parametrize("variant", VARIANTS)
def test_tied_tables_are_stored_once(variant: str, dirs: dict[str, Path]) -> None:
    """The text embedding reads the lm-head's packed weight and scales in the decoder's data
    file; the depthformer's code embedding reads its head's packed weight. Across the directory
    the bytes referenced exceed the bytes stored by exactly the shared tables."""
    directory = dirs[variant]
    manifest = read_manifest(directory)
    dec, emb = graph(directory, "decoder"), graph(directory, "embed_tokens")
    head = next(n for n in dec.node if n.op_type == "MatMulNBits" and n.name.startswith("/lm_head"))
    (gather,) = [n for n in emb.node if n.op_type == "GatherBlockQuantized"]
    dec_init = {t.name: t for t in dec.initializer}
    emb_init = {t.name: t for t in emb.initializer}
    for head_input, gather_input in (
        (head.input[1], gather.input[0]),
        (head.input[2], gather.input[2]),
    ):
        assert external(emb_init[gather_input]) == external(dec_init[head_input])
    location = external(dec_init[head.input[1]])[0]
    assert (
        manifest.graphs["embed_tokens"].data_files
        == [location]
        == manifest.graphs["decoder"].data_files
    )
    assert not (directory / f"embed_tokens_{variant}.onnx_data").exists()
    assert (directory / f"embed_tokens_{variant}.onnx").stat().st_size < 2048

    depth = graph(directory, "depthformer")
    (depth_head,) = [n for n in depth.node if n.op_type == "MatMulNBits" and "head" in n.name]
    (depth_gather,) = [n for n in depth.node if n.op_type == "GatherBlockQuantized"]
    assert depth_gather.input[0] == depth_head.input[1]

    referenced, stored = 0, 0
    ranges: set[tuple[str, int, int]] = set()
    for role in manifest.graphs:
        for tensor in graph(directory, role).initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                referenced += external(tensor)[2]
                ranges.add(external(tensor))
    stored = sum(length for _, _, length in ranges)
    shared = sum(external(dec_init[name])[2] for name in head.input[1:3])
    assert referenced - stored == shared, (referenced, stored, shared)
    config = tiny().backbone
    bits, block = VARIANT_SPECS[variant].bits, VARIANT_SPECS[variant].block_size
    assert shared == config.vocab_size * config.hidden_size * (bits + 32 / block) // 8
    data_bytes = sum(
        (directory / name).stat().st_size for name in manifest.files if name.endswith(".onnx_data")
    )
    assert stored <= data_bytes, "the data files hold every referenced range"
    fp32_table = config.vocab_size * config.hidden_size * 4
    print(
        f"{variant}: shared text table {shared} bytes (fp32 table {fp32_table} bytes), stored once"
    )


def test_num_logits_to_keep(dirs: dict[str, Path]) -> None:
    """n = 0 skips the lm-head (no logits, the same hidden states and caches); n = 1 gives the
    last position's logits; n >= the chunk gives all of them."""
    dec = session(dirs["q4"], "decoder")
    cfg = tiny().backbone
    rng = np.random.default_rng(3)
    past, _ = decoder_graph.cache_names(cfg)
    feeds: Feeds = {
        name: np.zeros(
            (1, cfg.hidden_size, cfg.conv_cache)
            if name.startswith("past_conv")
            else (1, cfg.num_key_value_heads, 0, cfg.head_dim),
            dtype=np.float32,
        )
        for name in past
    }
    feeds["inputs_embeds"] = rng.standard_normal((1, 5, cfg.hidden_size)).astype(np.float32)
    feeds["attention_mask"] = np.ones((1, 5), dtype=np.int64)
    runs = {
        n: dec.run(None, {**feeds, "num_logits_to_keep": np.array(n, dtype=np.int64)})
        for n in (0, 1, 5, 9)
    }
    assert runs[0][0].shape == (1, 0, cfg.vocab_size)
    assert runs[1][0].shape == (1, 1, cfg.vocab_size)
    np.testing.assert_array_equal(runs[1][0][0, 0], runs[5][0][0, -1])
    np.testing.assert_array_equal(runs[9][0], runs[5][0])
    for other in runs[0][1:], runs[1][1:]:
        for a, b in zip(other, runs[5][1:], strict=True):
            np.testing.assert_array_equal(a, b)


def test_verify_accepts_the_q4_directory(dirs: dict[str, Path]) -> None:
    report = verify(dirs["q4"], load=open_to_check)
    assert [str(f) for f in report.errors] == []
    manifest = read_manifest(dirs["q4"])
    assert set(report.bindings) == set(manifest.graphs)
    assert report.bindings["decoder"].inputs["num_logits_to_keep"] == "num_logits_to_keep"
    on_disk = {p.name for p in dirs["q4"].iterdir()} - {"manifest.json"}
    assert set(manifest.files) == on_disk, "no scratch files left behind"


def test_block_size_option_builds_the_official_block(tmp_path: Path) -> None:
    """`model build --variant q4 --block-size 32`: every MatMulNBits and GatherBlockQuantized
    of every graph uses blocks of 32 (the official export's), and the manifest says so."""
    from satellite.cli import main

    out = tmp_path / "q4-b32"
    code = main(
        [
            "model",
            "build",
            "--size",
            "tiny",
            "--variant",
            "q4",
            "--block-size",
            "32",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    manifest = read_manifest(out)
    blocked = 0
    for role, entry in manifest.graphs.items():
        assert entry.options["quantization"]["block_size"] == 32, role
        for node in all_nodes(graph(out, role)):
            if node.op_type in ("MatMulNBits", "GatherBlockQuantized"):
                assert attrs(node)["block_size"] == 32, f"{role}: {node.name}"
                blocked += 1
    assert blocked > 0
