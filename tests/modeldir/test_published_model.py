"""The model as users get it: a tiny directory laid out like the published
LiquidAI/LFM2.5-Audio-1.5B-ONNX export, its defects included (`model build --layout published`,
`lfm_toolchain.published`), against the reference (liquid-audio + transformers) on the same weights.

- Unfixed, the engine refuses it (naming `model fix`); run anyway, its speech codes differ from
  the reference's: the depthformer attends without positions.
- `model fix` writes the corrected depthformer beside the original: the engine is then
  token-exact with the reference (`generate_sequential` and `generate_interleaved`, every text
  id and all 8 codes of every frame compared for equality).
- `model optimize`'s depthformer rewrite on top (`satellite.modeldir.depthfold`: the q/k
  rearrangement folded into the projections, one head per codebook) is token-exact too, the
  same comparison.
- Which rotation is right is proven, not assumed: the published graph rearranges q and k into
  halves itself, so the fix keeps `rotary_interleaved` 0; the same fix with
  `rotary_interleaved=1` gives other codes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
from engine_support import (
    AUDIO,
    CHAT_SYSTEM,
    CLOSE_AND_ASSISTANT,
    TTS_SYSTEM,
    TURN_END,
    USER,
    ReferenceChat,
    reply_of,
    shaped_reference,
    waveform,
)
from lfm_toolchain.build import build_model
from onnx import helper
from reference import TINY_SEED

from satellite.cli import main
from satellite.engine.chat import Chat, Speech
from satellite.engine.mel import LogMel
from satellite.engine.model import Model, ModelLoadError
from satellite.engine.sessions import SessionConfig
from satellite.modeldir.depthfold import fold_model
from satellite.modeldir.manifest import read_manifest
from satellite.modeldir.onnxread import read_graph
from satellite.modeldir.repair import fix_model
from satellite.modeldir.rotary import check_rotary
from satellite.modeldir.verify import verify

pytestmark = pytest.mark.parity

TTS_TEXT = [*USER, *range(60, 72), *CLOSE_AND_ASSISTANT]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shaped tiny weights (`shaped_reference`'s) in the published layout, fp32, unfixed."""
    out = tmp_path_factory.mktemp("published") / "model"
    build_model(out, size="tiny", seed=TINY_SEED, layout="published")
    return out


@pytest.fixture(scope="module")
def fixed(published: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fixed") / "model"
    shutil.copytree(published, out)
    fix_model(out)
    return out


@pytest.fixture(scope="module")
def folded(fixed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("folded") / "model"
    shutil.copytree(fixed, out)
    _, done = fold_model(out)
    assert len(done) == 2, "both rewrites apply to the float graph"
    return out


@pytest.fixture(params=["fixed", "folded"])
def corrected(request: pytest.FixtureRequest) -> Path:
    """The fixed directory, and the same with the depthformer rewritten for speed."""
    path: Path = request.getfixturevalue(request.param)
    return path


def tts_reply(model: Model) -> list[int | tuple[int, ...]]:
    chat = Chat(model, prefix=[TTS_SYSTEM], turn_end=TURN_END)
    config = chat.generation_config("sequential", max_new_tokens=200, audio=AUDIO)
    return reply_of(chat.turn([TTS_TEXT], config))[0]


def reference_tts() -> list[int | tuple[int, ...]]:
    _, _, reference = shaped_reference()
    ref = ReferenceChat()
    ref.add_ids(TTS_SYSTEM + TTS_TEXT)
    return ref.generate(reference, "sequential", 200)


def test_the_layout_is_the_published_one(published: Path) -> None:
    files = {p.relative_to(published).as_posix() for p in published.rglob("*") if p.is_file()}
    assert {
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "onnx/decoder.onnx",
        "onnx/vocoder_depthformer.onnx",
        "onnx/embed_tokens.bin",
        "onnx/embed_tokens.json",
        "onnx/audio_embedding.bin",
        "onnx/audio_embedding.json",
        "onnx/mel_config.json",
    } <= files
    assert not any("embed_tokens.onnx" in f or "cached" in f for f in files)
    decoder = read_graph(published / "onnx/decoder.onnx")
    assert "num_logits_to_keep" not in {t.name for t in decoder.inputs}
    head = [n for n in decoder.nodes if n.name == "logits"]
    assert [n.op_type for n in head] == ["MatMul"], "float32 lm-head"
    check = check_rotary(read_graph(published / "onnx/vocoder_depthformer.onnx"))
    assert check.rotary_off == check.attention_nodes == 2
    assert check.theta is not None and round(check.theta) == 10_000
    assert [pair[0] for pair in check.tables] == ["layer.0.gqa_cos", "layer.1.gqa_cos"]


def test_unfixed_is_refused_and_verify_names_each_defect(
    published: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ModelLoadError, match=r"model fix .*model"):
        Model.load(published)
    report = verify(published)
    messages = [f.message for f in report.errors]
    assert any("2 of 2 GroupQueryAttention nodes leave do_rotary unset" in m for m in messages)
    assert any(
        "are for theta 10,000; the model's depthformer uses 1,000,000" in m for m in messages
    )
    assert main(["model", "verify", str(published)]) == 1
    assert f"lfm-satellite model fix {published}" in capsys.readouterr().err


def test_unfixed_speech_differs_from_the_reference(published: Path) -> None:
    # Model() skips the refusal of Model.load: this is what the engine would say unrefused.
    model = Model(published, read_manifest(published), SessionConfig(threads=1))
    got, want = tts_reply(model), reference_tts()
    assert any(isinstance(x, tuple) for x in want)
    assert got != want


def test_fixed_is_token_exact_sequential(corrected: Path) -> None:
    got, want = tts_reply(Model.load(corrected, SessionConfig(threads=1))), reference_tts()
    assert got == want, f"engine {got}\nreference {want}"
    assert sum(isinstance(x, tuple) and x[0] != 2048 for x in got) > 3, "several audio frames"


def test_fixed_is_token_exact_interleaved(corrected: Path) -> None:
    _, _, reference = shaped_reference()
    speech = waveform(1.0, seed=2)
    chat = Chat(
        Model.load(corrected, SessionConfig(threads=1)), prefix=[CHAT_SYSTEM], turn_end=TURN_END
    )
    config = chat.generation_config("interleaved", max_new_tokens=150, audio=AUDIO)
    got, _ = reply_of(chat.turn([USER, Speech(speech), CLOSE_AND_ASSISTANT], config))
    ref = ReferenceChat()
    ref.add_ids(CHAT_SYSTEM + USER)
    ref.add_mel(LogMel()(speech))
    ref.add_ids(CLOSE_AND_ASSISTANT)
    want = ref.generate(reference, "interleaved", 150)
    assert got == want, f"engine {got}\nreference {want}"
    assert sum(isinstance(x, tuple) for x in got) > 12


def test_interleaved_rotation_on_top_is_wrong(fixed: Path, tmp_path: Path) -> None:
    """The published graph makes rotate-half pairs itself; rotating interleaved pairs on top
    (rotary_interleaved=1) is not the model."""
    out = tmp_path / "model"
    shutil.copytree(fixed, out)
    path = out / read_manifest(out).graphs["depthformer"].file
    graph = onnx.load(str(path), load_external_data=False)
    for node in graph.graph.node:
        if node.op_type == "GroupQueryAttention":
            node.attribute.append(helper.make_attribute("rotary_interleaved", 1))
    onnx.save(graph, str(path))
    model = Model(out, read_manifest(out), SessionConfig(threads=1))
    assert tts_reply(model) != reference_tts()


def test_fix_records_itself_and_keeps_the_download(
    published: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    shutil.copytree(published, out)
    original = (out / "onnx/vocoder_depthformer.onnx").read_bytes()
    assert main(["model", "fix", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "vocoder_depthformer.rope_fixed.onnx" in printed
    assert "carries the rotary fix of onnx/vocoder_depthformer.onnx" in printed
    assert (out / "onnx/vocoder_depthformer.onnx").read_bytes() == original
    entry = read_manifest(out).graphs["depthformer"]
    assert entry.file == "onnx/vocoder_depthformer.rope_fixed.onnx"
    assert entry.data_files == ["onnx/vocoder_depthformer.onnx_data"], "shares the weights"
    record = entry.options["rope_fix"]
    assert record["from"] == "onnx/vocoder_depthformer.onnx" and record["theta"] == 1e6
    assert round(record["theta_before"]) == 10_000 and record["rotary_interleaved"] is False
    assert verify(out).ok
    # a second run finds nothing to do
    assert main(["model", "fix", str(out)]) == 0
    assert "no known defect to correct" in capsys.readouterr().out
