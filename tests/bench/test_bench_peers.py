"""`lfm-satellite bench peers`: the backbone as a llama.cpp GGUF, llama.cpp built from its
source on this machine, and the engine and llama-bench in interleaved rounds.

The end-to-end test builds the real llama.cpp (a few minutes on two cores, cached in the test's
own cache folder) and runs both on the tiny backbone; llama.cpp loading the GGUF and counting
exactly the backbone's parameters is the proof that the file is the same network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from lfm_toolchain import gguf_export, llamacpp
from lfm_toolchain.config import config_for
from lfm_toolchain.weights import RandomWeights, backbone_specs

from tests.paths import REPO

pytestmark = pytest.mark.slow

ROOT = REPO


def test_every_backbone_parameter_has_one_gguf_tensor() -> None:
    specs = backbone_specs(config_for("full").backbone)
    names = [gguf_export.tensor_name(s.name) for s in specs]
    assert len(set(names)) == len(specs)
    assert "token_embd.weight" in names and "output.weight" not in names  # the head is tied
    assert gguf_export.tensor_name("lfm.layers.2.self_attn.q_proj.weight") == "blk.2.attn_q.weight"
    with pytest.raises(ValueError, match=r"lfm\.layers\.0\.mystery\.weight"):
        gguf_export.tensor_name("lfm.layers.0.mystery.weight")


def test_the_gguf_holds_the_backbone_and_its_numbers(tmp_path: Path) -> None:
    config = config_for("tiny").backbone
    specs = backbone_specs(config)
    weights = RandomWeights(specs, 3)
    path = tmp_path / "tiny.gguf"
    size = gguf_export.write_backbone_gguf(config, weights, specs, path)
    assert size == path.stat().st_size

    reader = gguf.GGUFReader(str(path))
    fields = reader.fields
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "lfm2"
    kv_heads = [int(fields["lfm2.attention.head_count_kv"].parts[i][0])
                for i in fields["lfm2.attention.head_count_kv"].data]  # fmt: skip
    assert kv_heads == [config.num_key_value_heads if config.is_attention(i) else 0
                        for i in range(config.num_hidden_layers)]  # fmt: skip
    assert int(fields["lfm2.block_count"].parts[-1][0]) == config.num_hidden_layers
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == len(specs)
    for spec in specs:
        tensor = tensors[gguf_export.tensor_name(spec.name)]
        expected = weights[spec.name].reshape(gguf_export.tensor_shape(spec))
        stored = np.asarray(tensor.data).reshape(expected.shape)
        if gguf_export.keeps_float32(tensor.name, expected.shape):
            assert stored.dtype == np.float32
            np.testing.assert_array_equal(stored, expected)
        else:
            assert stored.dtype == np.float16
            np.testing.assert_array_equal(stored, expected.astype(np.float16))


def test_the_amx_fix_applies_once_and_only_where_expected(tmp_path: Path) -> None:
    source = tmp_path / "mmq.cpp"
    source.write_text("void f() {\n    TileConfig tc;\n" + llamacpp.AMX_LOAD + "}\n")
    assert llamacpp.patch_amx(source) is True
    patched = source.read_text()
    assert llamacpp.AMX_BARRIER + llamacpp.AMX_LOAD in patched
    assert llamacpp.patch_amx(source) is False and source.read_text() == patched
    source.write_text("void f() {}\n")
    with pytest.raises(llamacpp.LlamaCppError, match=r"mmq\.cpp: expected one"):
        llamacpp.patch_amx(source)


def test_llama_bench_output_is_read_and_checked() -> None:
    rows = [
        {"n_prompt": 64, "n_gen": 0, "avg_ts": 120.5, "stddev_ts": 2.0, "n_threads": 2,
         "model_type": "lfm2 1.2B Q4_0", "model_size": 658762752, "build_commit": "0c1e570"},
        {"n_prompt": 0, "n_gen": 32, "avg_ts": 40.0, "stddev_ts": 1.5, "n_threads": 2,
         "model_type": "lfm2 1.2B Q4_0", "model_size": 658762752, "build_commit": "0c1e570"},
    ]  # fmt: skip
    figures = llamacpp.parse_bench(rows)
    assert figures.prefill_tokens_per_s == 120.5 and figures.decode_ms_per_token == 25.0
    assert (figures.prompt_tokens, figures.decode_tokens, figures.build) == (64, 32, "0c1e570")
    with pytest.raises(llamacpp.LlamaCppError, match="one prefill and one decode"):
        llamacpp.parse_bench(rows[:1])


def test_bench_peers_runs_both_on_the_tiny_backbone(tmp_path: Path) -> None:
    """Builds llama.cpp from source (minutes; cached under the user's cache folder, as the
    command does), then two rounds of each on the tiny model: the engine with its backbone on
    onnxruntime and on llama.cpp, and llama-bench."""
    saved = tmp_path / "peers.json"
    result = subprocess.run(
        [sys.executable, "-m", "satellite", "bench", "peers", "--size", "tiny", "--rounds",
         "2", "--repeats", "1", "--json", str(saved)],
        cwd=ROOT, capture_output=True, text=True, timeout=1500, env=os.environ.copy(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(saved.read_text())
    specs = backbone_specs(config_for("tiny").backbone)
    assert report["peer"]["type"].startswith("lfm2 ")
    # llama.cpp loaded the file as the same network: exactly the backbone's parameters
    assert report["peer"]["params"] == sum(int(np.prod(s.shape)) for s in specs)
    assert set(report["engines"]) == {"onnxruntime", "llamacpp"}  # the binding is installed
    for engine in report["engines"].values():
        assert len(engine["rounds"]) == 2
        for figures in engine["rounds"]:
            assert figures["text_step_ms"] > 0 and figures["llama_decode_ms"] > 0
            assert figures["text_step_over_llama"] == pytest.approx(
                figures["text_step_ms"] / figures["llama_decode_ms"]
            )
            assert figures["prefill_over_llama"] == pytest.approx(
                figures["prefill_tokens_per_s"] / figures["llama_prefill_tokens_per_s"]
            )
        assert engine["median"]["text_step_ms"] == pytest.approx(
            float(np.median([f["text_step_ms"] for f in engine["rounds"]]))
        )
    assert report["cpu"] and report["cpu"] in result.stdout
    for backbone in report["engines"]:
        assert f"backbone on {backbone}:" in result.stdout
    assert "text step <= llama.cpp's decode:" in result.stdout
