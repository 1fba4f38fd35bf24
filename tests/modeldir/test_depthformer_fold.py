"""`model optimize`'s depthformer rewrite (`satellite.modeldir.depthfold`) on a tiny directory
laid out like the published q4 export: the q/k pairs-to-halves rearrangement folded into the
projection rows and norm gains, and one head per codebook chosen by `step_idx`.

The float graph is proven token-exact with the reference after the rewrite
(tests/modeldir/test_published_model.py). On q4 the 4-bit bytes are the same bytes moved, but the q/k
norms' sums of squares run in another order, and where that moves an activation across a
rounding edge of the int8 activations (`accuracy_level` 4) the next projection differs by one
step of them. Measured over 800 runs (100 frames): 5 % of runs differ by more than 1e-4, at most
by 0.037 in the logits (whose range is about +-4; the q4 weights' own error against float is
20x that, tests/modeldir/test_repack.py), the greedy code the same in 797 of 800. Bounds here: every
output of every run within 0.05, at most a fifth of the runs beyond 1e-4, and 22 of 24 frames
with the same 8 codes through the engine's `Depthformer`, greedy and sampled (top-k 4, seeded).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from lfm_toolchain.build import build_model

from satellite.cli import main
from satellite.engine.depthformer import Depthformer
from satellite.engine.model import Model
from satellite.engine.sampling import GREEDY, INTERLEAVED_AUDIO, Sampler
from satellite.engine.sessions import plain_session_options
from satellite.modeldir import depthfold
from satellite.modeldir.depthfold import find_rearrangements, find_stacked_head, fold_model
from satellite.modeldir.manifest import read_manifest
from satellite.modeldir.repair import fix_model

FRAMES = 24
SAME_FRAMES = 22
BOUND = 0.05
CLOSE = 1e-4
MOST_OFF = 0.2


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("published") / "q4"
    build_model(out, size="tiny", variant="q4", layout="published")
    fix_model(out)  # the rotary fix alone: the graph the rewrite starts from
    return out


@pytest.fixture(scope="module")
def optimized(published: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("optimized") / "q4"
    shutil.copytree(published, out)
    assert main(["model", "optimize", str(out)]) == 0
    return out


def graph(directory: Path) -> onnx.ModelProto:
    return onnx.load(str(directory / read_manifest(directory).graphs["depthformer"].file),
                     load_external_data=False)  # fmt: skip


def test_optimize_rewrites_the_published_depthformer(published: Path, optimized: Path) -> None:
    before, after = graph(published), graph(optimized)
    assert len(find_rearrangements(before.graph)) == 4  # q and k of the tiny model's 2 layers
    assert find_stacked_head(before.graph) is not None
    assert find_rearrangements(after.graph) == []
    assert find_stacked_head(after.graph) is None
    assert not any(n.op_type == "Transpose" for n in after.graph.node)
    entry = read_manifest(optimized).graphs["depthformer"]
    assert entry.file == "onnx/vocoder_depthformer_q4.rope_fixed.folded.onnx"
    assert entry.options["fold"]["from"] == read_manifest(published).graphs["depthformer"].file
    assert "onnx/vocoder_depthformer_q4.rope_fixed.folded.onnx_data" in entry.data_files
    # the graph and its new data are listed with their sizes, and verify passes on them
    files = read_manifest(optimized).files
    data = optimized / "onnx/vocoder_depthformer_q4.rope_fixed.folded.onnx_data"
    assert (
        files["onnx/vocoder_depthformer_q4.rope_fixed.folded.onnx_data"].size == data.stat().st_size
    )
    assert main(["model", "verify", str(optimized)]) == 0


def session(directory: Path) -> ort.InferenceSession:
    path = directory / read_manifest(directory).graphs["depthformer"].file
    return ort.InferenceSession(
        str(path), plain_session_options(), providers=["CPUExecutionProvider"]
    )


def test_every_step_gives_the_same_outputs(published: Path, optimized: Path) -> None:
    before, after = session(published), session(optimized)
    hidden = int(read_manifest(published).config["hidden_size"])
    shapes = {i.name: i.shape for i in before.get_inputs()}
    layers, _, kv_heads, _, head_dim = shapes["past_keys"]
    books, dim = shapes["depth_slices_in"][1:]
    rng = np.random.default_rng(3)
    worst, off, runs = 0.0, 0, 0
    for _ in range(6):
        empty = np.zeros((layers, 1, kv_heads, 0, head_dim), np.float32)
        feeds = {
            "hidden_states": rng.standard_normal((1, hidden)).astype(np.float32),
            "depth_slices_in": np.zeros((1, books, dim), np.float32),
            "prev_token": np.zeros(1, np.int64),
            "past_keys": empty,
            "past_values": empty,
        }
        for step in range(books):
            feeds["step_idx"] = np.array(step, np.int64)
            feeds["seqlens_k"] = np.array([step], np.int32)
            feeds["total_seq_len"] = np.array(step + 1, np.int32)
            want = before.run(None, feeds)
            got = after.run(None, feeds)
            diff = 0.0
            for w, g in zip(want, got, strict=True):
                assert w.shape == g.shape
                diff = max(diff, float(np.max(np.abs(w - g))))
            worst, off, runs = max(worst, diff), off + (diff > CLOSE), runs + 1
            logits, slices, keys, values = want
            feeds.update(
                depth_slices_in=slices, past_keys=keys, past_values=values,
                prev_token=np.array([int(rng.integers(0, logits.shape[1] - 1))], np.int64),
            )  # fmt: skip
    assert worst <= BOUND, worst
    assert off <= MOST_OFF * runs, f"{off} of {runs} runs differ by more than {CLOSE}"


def test_the_engine_samples_the_same_codes(published: Path, optimized: Path) -> None:
    models = [Model.load(d) for d in (published, optimized)]
    runners = [Depthformer(m.graph("depthformer"), m.manifest.config) for m in models]
    rng = np.random.default_rng(5)
    for sampling in (GREEDY, INTERLEAVED_AUDIO):
        same = 0
        for frame in range(FRAMES):
            hidden = rng.standard_normal(models[0].hidden_size).astype(np.float32)
            samplers = [Sampler(seed=frame), Sampler(seed=frame)]
            codes = [r.frame(hidden, sampling, s) for r, s in zip(runners, samplers, strict=True)]
            same += codes[0] == codes[1]
        assert same >= SAME_FRAMES, f"{same} of {FRAMES} frames the same ({sampling})"


def test_a_second_optimize_folds_nothing(
    optimized: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = (optimized / "manifest.json").read_text()
    assert main(["model", "optimize", str(optimized)]) == 0
    assert "nothing to fix, repack, fold or make streaming" in capsys.readouterr().out
    assert (optimized / "manifest.json").read_text() == manifest


def test_a_failed_write_leaves_the_directory_as_it_was(
    published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stand-in: the disk fills while the rewritten graph is saved (a real filesystem cannot be
    made to fill at that moment), so `onnx.save` raises ENOSPC as the write would."""
    directory = tmp_path / "q4"
    shutil.copytree(published, directory)
    listing = sorted(p.name for p in (directory / "onnx").iterdir())
    manifest = (directory / "manifest.json").read_text()

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(depthfold.onnx, "save", full)
    with pytest.raises(OSError):
        fold_model(directory)
    assert sorted(p.name for p in (directory / "onnx").iterdir()) == listing
    assert (directory / "manifest.json").read_text() == manifest
