"""`lfm-satellite bench engine` on the tiny model: one run with `--reference` (ours and
liquid-audio's on the same weights, about 15 s on 2 cores) whose JSON must hold every figure of
issue 4 point 8, each consistent with the others; the byte count behind the bandwidth floor
checked against the weight layout; the query; the timing wrapper. No figure is compared with a
speed: these are benchmarks, not timed tests."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lfm_toolchain.build import build_model
from lfm_toolchain.cache import cached_model
from lfm_toolchain.config import tiny
from lfm_toolchain.weights import backbone_specs, default_seed

from satellite.bench import query as bench_query
from satellite.bench.floor import decoder_bytes
from satellite.bench.harness import TimedSession
from satellite.bench.query import prompt_ids, spoken_query
from satellite.cli import main
from satellite.engine.model import Model
from satellite.modeldir.manifest import read_manifest

ISSUE_FIGURES = (
    "mel_ms",
    "encoder_ms",
    "encoder_ms_per_audio_second",
    "prefill_tokens_per_s",
    "decoder_ms_per_step",
    "decoder_audio_ms_per_step",
    "python_overhead_ms_per_step",
    "depthformer_ms_per_frame",
    "detokenizer_ms_per_frame",
    "ttfa_ms",
    "ttfa_cold_ms",
    "rtf",
    "peak_rss_mb",
)
"""The engine's figures named by the issue (TTFA also cold; the Python side of a step)."""
REFERENCE_FIGURES = tuple(
    f for f in ISSUE_FIGURES if f not in ("python_overhead_ms_per_step", "ttfa_ms")
)
AUDIO_SECONDS = 1.0


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return cached_model("tiny", "fp32")  # the default tiny model, fp32


@pytest.fixture(scope="module")
def run(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One `bench engine --reference` run on the tiny model: its JSON and what it printed."""
    import contextlib
    import io

    saved = tmp_path_factory.mktemp("bench") / "engine.json"
    printed = io.StringIO()
    argv = [
        "bench", "engine", "--model", str(model_dir), "--json", str(saved), "--threads", "1",
        "--repeats", "2", "--steps", "12", "--audio-seconds", str(AUDIO_SECONDS),
        "--bandwidth-mb", "32", "--reference",
    ]  # fmt: skip
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return json.loads(saved.read_text()), printed.getvalue()


def positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def test_every_figure_of_the_issue_is_saved(run: tuple[dict[str, Any], str]) -> None:
    report, printed = run
    engine, reference = report["engine"], report["reference"]
    bad = {k: engine.get(k) for k in ISSUE_FIGURES if not positive_number(engine.get(k))}
    assert not bad, f"engine figures missing or not positive: {bad}"
    bad = {k: reference.get(k) for k in REFERENCE_FIGURES if not positive_number(reference.get(k))}
    assert not bad, f"reference figures missing or not positive: {bad}"
    assert positive_number(report["machine"]["memory_bandwidth_gb_s"])
    bound = report["decoder_bound"]
    for key in ("bytes_per_step", "floor_ms_per_step", "measured_over_floor"):
        assert positive_number(bound[key]), f"decoder_bound.{key}: {bound[key]}"
    assert report["query"]["seconds"] == 4.0
    assert engine["detokenizer_backend"] == "cached"  # the tiny build has the cached graph
    for label in ("TTFA", "floor", "ours/ref", "real-time factor", "(text head run", "target"):
        assert label in printed, f"{label!r} not printed"


def test_figures_agree_with_each_other(run: tuple[dict[str, Any], str]) -> None:
    """Per-second, per-token and per-step figures follow from the totals they come from
    (within the rounding of the saved figures, 1e-3 relative)."""
    engine = run[0]["engine"]
    assert engine["mel_frames"] == 4 * 16000 // 160 + 1  # a centred STFT: N // hop + 1
    assert engine["audio_embeddings"] == math.ceil(engine["mel_frames"] / 8)
    assert engine["encoder_ms_per_audio_second"] == pytest.approx(
        engine["encoder_ms"] / engine["audio_seconds_in"], rel=1e-3
    )
    prompt = prompt_ids(Model.load(Path(run[0]["model"])).tokenizer())
    text = len(prompt.system) + len(prompt.user_open) + len(prompt.user_close)
    assert engine["prefill_tokens"] == text + engine["audio_embeddings"]
    assert engine["prefill_tokens_per_s"] == pytest.approx(
        engine["prefill_tokens"] / engine["prefill_ms"] * 1000, rel=1e-3
    )
    assert engine["decoder_context_end"] - engine["decoder_context_start"] == 12
    assert 0 < engine["python_overhead_ms_per_step"] <= engine["decoder_ms_per_step"]
    assert 0 < engine["decoder_run_ms_per_step"] <= engine["decoder_ms_per_step"]
    assert engine["depthformer_run_ms_per_frame"] <= engine["depthformer_ms_per_frame"]
    assert engine["rss_after_load_mb"] <= engine["peak_rss_mb"]
    parts = engine["rss_at_load_mb"]
    assert {"decoder", "audio_encoder", "depthformer", "detokenizer"} <= set(parts)
    # the parts are the steps of loading: together they make the RSS after loading (5%)
    assert sum(parts.values()) == pytest.approx(engine["rss_after_load_mb"], rel=0.05)


def test_first_audio_follows_the_interleaved_budget(run: tuple[dict[str, Any], str]) -> None:
    """Interleaved mode yields 6 text tokens, then audio, whatever a random model says: the
    first audio frame comes after them, in ours and in the reference."""
    engine, reference = run[0]["engine"], run[0]["reference"]
    assert engine["text_tokens_before_audio"] == reference["text_tokens_before_audio"] == 6
    for side in (engine, reference):
        assert 0 < side["ttfa_first_text_ms"] < side["ttfa_first_frame_ms"]
        assert side["ttfa_detokenizer_ms"] > 0
    # the breakdown is that of the middle run: no faster than the fastest
    middle = engine["ttfa_first_frame_ms"] + engine["ttfa_detokenizer_ms"]
    assert engine["ttfa_min_ms"] <= middle + 1e-3
    assert engine["ttfa_min_ms"] <= engine["ttfa_ms"]


def test_real_time_factor_covers_the_audio_asked_for(run: tuple[dict[str, Any], str]) -> None:
    """At least AUDIO_SECONDS of audio, no more than one frame beyond; the LFM2.5 stream's
    first frame gives 1440 samples, every later one 1920 (end-of-audio frames give none)."""
    for side in (run[0]["engine"], run[0]["reference"]):
        seconds, frames = side["rtf_audio_seconds"], side["rtf_audio_frames"]
        assert AUDIO_SECONDS <= seconds < AUDIO_SECONDS + 0.08 + 1e-6
        assert seconds <= frames * 0.08 + 1e-6
        assert side["rtf_with_prompt"] >= side["rtf"] > 0


def test_ratios_are_ours_over_the_reference(run: tuple[dict[str, Any], str]) -> None:
    report = run[0]
    ratios, engine, reference = report["ratios"], report["engine"], report["reference"]
    assert set(REFERENCE_FIGURES) <= set(ratios)
    for key, value in ratios.items():
        assert value == pytest.approx(engine[key] / reference[key], rel=1e-3), key
    # the reference holds the arrays the build was made from: the default tiny model's, shaped
    assert f"random weights, size tiny, seed {default_seed('tiny')}, shaped" in reference["weights"]


def expected_matmul_bytes(bytes_per_weight: float) -> tuple[float, float]:
    """The tiny backbone's MatMul weights (projections, FFN, the tied lm-head; not the conv
    kernels, which the graph applies as multiply-adds) from the weight layout."""
    config = tiny()
    matrices = [
        s
        for s in backbone_specs(config.backbone)
        if s.init == "matrix" and not s.name.endswith("conv.conv.weight")
    ]
    head = config.backbone.vocab_size * config.backbone.hidden_size
    total = sum(math.prod(s.shape) for s in matrices) + head
    return total * bytes_per_weight, head * bytes_per_weight


def test_decoder_bytes_fp32(run: tuple[dict[str, Any], str]) -> None:
    """fp32: every MatMul weight at 4 bytes; the floor is bytes / bandwidth; the cache read is
    the attention layers' keys and values at the positions measured, plus the conv states."""
    bound = run[0]["decoder_bound"]
    matmul, head = expected_matmul_bytes(4)
    assert bound["matmul_bytes"] == matmul and bound["lm_head_bytes"] == head
    cfg = tiny().backbone
    attention = sum(cfg.is_attention(i) for i in range(cfg.num_hidden_layers))
    kv = attention * 2 * cfg.num_key_value_heads * cfg.head_dim * bound["cache_positions"] * 4
    conv = (cfg.num_hidden_layers - attention) * cfg.hidden_size * 3 * 4
    assert bound["cache_bytes"] == kv + conv
    assert bound["bytes_per_step"] == matmul + bound["other_weight_bytes"] + kv + conv
    # the fp32 build keeps every logit row: its audio steps read the head too
    inputs = {i.name for i in read_manifest(Path(run[0]["model"])).graphs["decoder"].inputs}
    assert run[0]["engine"]["decoder_audio_skips_lm_head"] == ("num_logits_to_keep" in inputs)
    skipped = head if run[0]["engine"]["decoder_audio_skips_lm_head"] else 0
    assert bound["bytes_per_audio_step"] == bound["bytes_per_step"] - skipped
    floor = bound["bytes_per_step"] / (bound["bandwidth_gb_s"] * 1e9) * 1000
    assert bound["floor_ms_per_step"] == pytest.approx(floor, rel=1e-2, abs=1e-3)


def test_decoder_bytes_q4(tmp_path: Path) -> None:
    """q4: MatMulNBits weights at the bits per weight the build reports (4-bit codes and
    their block scales), the lm-head among them."""
    build_model(tmp_path, size="tiny", variant="q4", seed=0)
    options = read_manifest(tmp_path).graphs["decoder"].options["quantization"]
    counted = decoder_bytes(tmp_path)
    matmul, head = expected_matmul_bytes(options["bits_per_weight"] / 8)
    assert counted.matmul == matmul and counted.lm_head == head
    assert counted.method == "graph constants by consuming operator"


def test_query_is_four_seconds_of_speech(monkeypatch: pytest.MonkeyPatch) -> None:
    query = spoken_query()
    assert query.samples.shape == (64000,) and query.samples.dtype == np.float32
    assert query.source.startswith("espeak-ng") and 2.0 < query.speech_seconds <= 4.0
    tail = query.samples[int(query.speech_seconds * 16000) :]
    assert not np.any(tail), "padded with silence after the speech"
    assert np.abs(query.samples).max() > 0.05
    monkeypatch.setattr(bench_query.shutil, "which", lambda _: None)
    stand_in = spoken_query()
    assert stand_in.samples.shape == (64000,) and "espeak-ng is not installed" in stand_in.source
    assert np.abs(stand_in.samples).max() > 0.05


def test_timed_session_counts_time_inside_run() -> None:
    class Slow:
        providers = ("CPUExecutionProvider",)

        def run(self, names: Any, feeds: Any, options: Any = None) -> list[int]:
            time.sleep(0.02)
            return [len(feeds)]

    timed = TimedSession(Slow())
    assert timed.run(["x"], {"a": 1, "b": 2}) == [2]
    assert timed.calls == 1 and 0.02 <= timed.seconds < 1.0
    assert timed.providers == ("CPUExecutionProvider",)


def test_missing_reference_extras_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], model_dir: Path
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    assert main(["bench", "engine", "--model", str(model_dir), "--reference"]) != 0
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --reference needs the export and test extras (missing: torch)")
    assert "\n" not in error
