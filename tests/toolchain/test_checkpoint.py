"""`model build --from CHECKPOINT_DIR`: a checkpoint in the hub's layout, written here from the
tiny seeded weights (the reference model's own state dict, buffers and tied copies included),
in fp32 and in bf16.

- fp32: the converted graphs are byte-identical to those built from the same weights directly;
- bf16: the decoder's outputs equal those of a directory built directly from the same
  bf16-rounded weights (max abs error 0), and match liquid-audio's `LFM2AudioModel.from_pretrained`
  loading the same directory within 1e-4; the detokenizer graph matches the reference
  detokenizer loaded the way liquid-audio's processor loads it, within 1e-4;
- the checkpoint's tokenizer is copied; broken checkpoints are refused with one line naming the
  file and the key; the CLI converts and verifies end to end.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from lfm_toolchain.build import BuildError, build_graphs, build_model
from lfm_toolchain.checkpoint import CheckpointError, read_checkpoint
from lfm_toolchain.config import tiny
from lfm_toolchain.decoder import cache_names
from lfm_toolchain.mimi import random_mimi_weights, tiny_mimi
from lfm_toolchain.random_checkpoint import detokenizer_config
from lfm_toolchain.tokenizer import build_tokenizer, write_tokenizer
from lfm_toolchain.weights import random_detokenizer_weights
from reference import TINY_SEED, liquid_audio, tiny_reference
from safetensors.torch import save_file

from satellite.engine.sessions import plain_session_options
from satellite.modeldir.manifest import read_manifest
from tests.paths import REPO

pytestmark = pytest.mark.parity

TOLERANCE = 1e-4


def write_checkpoint(out: Path, dtype: torch.dtype, *, tokenizer: bool = True) -> Path:
    """A tiny checkpoint in the hub's layout: the reference model's state dict (with
    `codebook_offsets`, `audio_loss_weights` and the tied `to_logits` copies), the detokenizer's
    weights plus its ISTFT window buffer, configs, and tokenizer files."""
    config, _, model = tiny_reference()
    (out / "audio_detokenizer").mkdir(parents=True)

    def cast(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().clone().contiguous()
        return t.to(dtype) if t.is_floating_point() else t

    save_file(
        {k: cast(v) for k, v in model.state_dict().items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    raw = {**config.reference_config_json(), "architectures": ["Lfm2AudioForConditionalGeneration"]}
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    detok = {
        k: torch.from_numpy(v) for k, v in random_detokenizer_weights(config, TINY_SEED).items()
    }
    detok["istft.window"] = torch.hann_window(1280)
    save_file(
        {k: cast(v) for k, v in detok.items()},
        str(out / "audio_detokenizer" / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (out / "audio_detokenizer" / "config.json").write_text(json.dumps(detokenizer_config(config)))
    if tokenizer:
        write_tokenizer(out, config.backbone.vocab_size)
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("checkpoints")
    return {
        "fp32": write_checkpoint(base / "fp32", torch.float32),
        "bf16": write_checkpoint(base / "bf16", torch.bfloat16),
    }


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Path]
) -> dict[str, Path]:
    """Model directories: from each checkpoint, and directly from the seeded weights."""
    base = tmp_path_factory.mktemp("built")
    out = {name: base / name for name in ("fp32", "bf16", "direct")}
    build_model(out["fp32"], checkpoint=checkpoints["fp32"])
    build_model(out["bf16"], checkpoint=checkpoints["bf16"])
    build_model(out["direct"], size="tiny", seed=TINY_SEED)
    return out


def decoder_session(directory: Path) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(directory / "decoder.onnx"), plain_session_options(), providers=["CPUExecutionProvider"]
    )


def run_decoder(directory: Path, embeds: np.ndarray) -> dict[str, np.ndarray]:
    b = tiny().backbone
    past, _ = cache_names(b)
    feeds: dict[str, np.ndarray] = {
        "inputs_embeds": embeds,
        "attention_mask": np.ones((1, embeds.shape[1]), dtype=np.int64),
    }
    for name in past:
        shape = (1, b.hidden_size, b.conv_cache) if name.startswith("past_conv") else (
            1, b.num_key_value_heads, 0, b.head_dim
        )  # fmt: skip
        feeds[name] = np.zeros(shape, dtype=np.float32)
    session = decoder_session(directory)
    wanted = {i.name for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, values, strict=True))


def embeddings(length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, length, tiny().backbone.hidden_size)).astype(np.float32)


def max_error(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b)))


def test_fp32_checkpoint_gives_the_same_graphs(built: dict[str, Path]) -> None:
    """Every graph and weight file is byte-identical to the direct build's."""
    got, want = read_manifest(built["fp32"]), read_manifest(built["direct"])
    graph_files = {n for n in want.files if ".onnx" in n}
    assert graph_files and graph_files <= set(got.files)
    for name in sorted(graph_files):
        assert got.files[name].sha256 == want.files[name].sha256, name
    assert got.config == want.config
    assert got.source["weights"] == "checkpoint" and got.name == "fp32"
    embeds = embeddings(9, 1)
    a, b = run_decoder(built["fp32"], embeds), run_decoder(built["direct"], embeds)
    assert max_error(a["logits"], b["logits"]) == 0.0


def test_bf16_checkpoint_equals_a_direct_build_of_the_rounded_weights(
    built: dict[str, Path], tmp_path: Path
) -> None:
    """The bf16 checkpoint's decoder equals one built directly from the bf16-rounded weights
    (max abs error 0: widening bf16 is exact), and differs from the fp32 one by rounding only."""
    config, weights, _ = tiny_reference()

    def rounded(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            k: torch.from_numpy(v).to(torch.bfloat16).float().numpy()
            if v.dtype == np.float32
            else v
            for k, v in tensors.items()
        }

    out = tmp_path / "rounded"
    out.mkdir()
    detok = dict(random_detokenizer_weights(config, TINY_SEED))
    build_graphs(out, config, rounded(weights), rounded(detok), max_positions=4096)
    embeds = embeddings(12, 2)
    got, want = run_decoder(built["bf16"], embeds), run_decoder(out, embeds)
    for name in ("logits", "hidden_states"):
        assert max_error(got[name], want[name]) == 0.0, name
    drift = max_error(got["hidden_states"], run_decoder(built["direct"], embeds)["hidden_states"])
    assert 0.0 < drift < 0.5, f"bf16 rounding moved hidden_states by {drift:.3g}"


def test_bf16_checkpoint_matches_the_reference_loading_it(
    built: dict[str, Path], checkpoints: dict[str, Path]
) -> None:
    """liquid-audio's own loader (`LFM2AudioModel.from_pretrained`, on CPU in fp32) reads the
    same directory: its backbone's full-sequence output equals the decoder graph's within 1e-4."""
    la = liquid_audio()
    model = la.lfm2_audio.LFM2AudioModel.from_pretrained(
        checkpoints["bf16"], device="cpu", dtype=torch.float32
    ).eval()
    embeds = embeddings(10, 3)
    with torch.no_grad():
        hidden = model.lfm(inputs_embeds=torch.from_numpy(embeds), use_cache=False)
        hidden = hidden.last_hidden_state
        logits = torch.nn.functional.linear(hidden, model.lfm.embed_tokens.weight)
    got = run_decoder(built["bf16"], embeds)
    error = max_error(got["hidden_states"], hidden.numpy())
    assert error <= TOLERANCE, f"hidden_states: max abs error {error:.3g} > {TOLERANCE:g}"
    error = max_error(got["logits"], logits.numpy())
    assert error <= TOLERANCE, f"logits: max abs error {error:.3g} > {TOLERANCE:g}"


def test_detokenizer_matches_the_reference_loading_it(
    built: dict[str, Path], checkpoints: dict[str, Path]
) -> None:
    """The detokenizer graph against `LFM2AudioDetokenizer` built as liquid-audio's processor
    builds it (Lfm2Config from `audio_detokenizer/config.json`, sliding layers renamed,
    `load_state_dict` of `audio_detokenizer/model.safetensors`): STFT features within 1e-4."""
    from safetensors.torch import load_file
    from transformers import Lfm2Config

    la = liquid_audio()
    folder = checkpoints["bf16"] / "audio_detokenizer"
    config = Lfm2Config.from_pretrained(folder / "config.json")
    config.layer_types = ["conv" if t == "conv" else "full_attention" for t in config.layer_types]
    det = la.detokenizer.LFM2AudioDetokenizer(config)
    det.load_state_dict({k: v.float() for k, v in load_file(folder / "model.safetensors").items()})
    det.lfm.set_attn_implementation("sdpa")
    det = det.float().eval()
    codes = np.random.default_rng(4).integers(0, 2048, size=(1, 8, 7))
    with torch.no_grad():
        x = det.emb(torch.from_numpy(codes))
        x = torch.nn.functional.interpolate(x.mT, 6 * x.shape[1], mode="nearest-exact").mT
        idx = torch.arange(x.shape[1])
        d_idx = idx - idx[:, None]
        mask = torch.logical_and(d_idx <= 0, d_idx > -det.sliding_window_size)[None, None]
        hidden = det.lfm(inputs_embeds=x, attention_mask=mask, use_cache=False).last_hidden_state
        want = det.lin(hidden).numpy()
    session = ort.InferenceSession(
        str(built["bf16"] / "audio_detokenizer.onnx"),
        plain_session_options(),
        providers=["CPUExecutionProvider"],
    )
    (got,) = session.run(None, {"audio_codes": codes})
    error = max_error(got, want)
    assert error <= TOLERANCE, f"stft features: max abs error {error:.3g} > {TOLERANCE:g}"


def test_tokenizer_and_manifest(built: dict[str, Path], checkpoints: dict[str, Path]) -> None:
    manifest = read_manifest(built["bf16"])
    assert manifest.tokenizer == "tokenizer.json"
    assert manifest.side_files["tokenizer_config"] == "tokenizer_config.json"
    assert manifest.source["tokenizer"] == "checkpoint"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (built["bf16"] / name).read_bytes() == (checkpoints["bf16"] / name).read_bytes()
    assert set(manifest.source["ignored_tensors"]) == {
        "audio_loss_weights",
        "codebook_offsets",
        *(f"depth_embeddings.{c}.to_logits.weight" for c in range(8)),
        "audio_detokenizer/istft.window",
    }
    on_disk = {p.name for p in built["bf16"].iterdir()} - {"manifest.json"}
    assert set(manifest.files) == on_disk
    direct = read_manifest(built["direct"])
    assert direct.source["tokenizer"] == "generated" and direct.tokenizer == "tokenizer.json"


def test_checkpoint_tokenizer_is_copied_not_regenerated(tmp_path: Path) -> None:
    """A tokenizer with fewer ids than the model (300 of 512) is kept as it is; one without the
    special ids, or with more ids than the model, is refused naming the file."""
    ckpt = write_checkpoint(tmp_path / "ckpt", torch.float32)
    build_tokenizer(300).save(str(ckpt / "tokenizer.json"))
    (ckpt / "tokenizer_config.json").unlink()
    build_model(tmp_path / "a", checkpoint=ckpt)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (
        ckpt / "tokenizer.json"
    ).read_bytes()
    assert json.loads((tmp_path / "a" / "tokenizer_config.json").read_text())["eos_token"] == (
        "<|im_end|>"
    )
    build_tokenizer(600).save(str(ckpt / "tokenizer.json"))
    with pytest.raises(BuildError, match=r"tokenizer\.json: 600 token ids, more than .* 512"):
        build_model(tmp_path / "b", checkpoint=ckpt)
    (ckpt / "tokenizer.json").unlink()
    build_model(tmp_path / "c", checkpoint=ckpt)
    assert read_manifest(tmp_path / "c").source["tokenizer"] == "generated"


def test_sharded_checkpoint_reads_the_same_tensors(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """`model.safetensors.index.json` + shards, as `save_pretrained` writes large models."""
    from safetensors.torch import load_file

    ckpt = tmp_path / "sharded"
    shutil.copytree(checkpoints["bf16"], ckpt)
    state = load_file(ckpt / "model.safetensors")
    (ckpt / "model.safetensors").unlink()
    names = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    for file, part in shards.items():
        save_file({n: state[n] for n in part}, str(ckpt / file))
    weight_map = {n: f for f, part in shards.items() for n in part}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    sharded, single = read_checkpoint(ckpt), read_checkpoint(checkpoints["bf16"])
    assert set(sharded.weights) == set(single.weights)
    for name in single.weights:
        assert np.array_equal(sharded.weights[name], single.weights[name]), name
    assert sharded.weights["lfm.embed_tokens.weight"].dtype == np.float32


# --- refusals ---------------------------------------------------------------------------------

Edit = Callable[[Path], None]


def edit_json(relative: str, change: Callable[[dict[str, Any]], None]) -> Edit:
    def apply(ckpt: Path) -> None:
        raw = json.loads((ckpt / relative).read_text())
        change(raw)
        (ckpt / relative).write_text(json.dumps(raw))

    return apply


def edit_tensors(relative: str, change: Callable[[dict[str, torch.Tensor]], None]) -> Edit:
    def apply(ckpt: Path) -> None:
        from safetensors.torch import load_file

        state = load_file(ckpt / relative)
        change(state)
        save_file(state, str(ckpt / relative))

    return apply


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        *parents, key = path.split(".")
        for parent in parents:
            raw = raw[parent]
        if value is KeyError:
            del raw[key]
        else:
            raw[key] = value

    return change


REFUSALS: list[tuple[str, Edit, str]] = [
    ("no config", lambda c: (c / "config.json").unlink(), r"config\.json: file not found"),
    (
        "no weights",
        lambda c: (c / "model.safetensors").unlink(),
        r"model\.safetensors: file not found",
    ),
    (
        "no detokenizer",
        lambda c: shutil.rmtree(c / "audio_detokenizer"),
        r"neither audio_detokenizer/ .* nor tokenizer-e351c8d8-checkpoint125\.safetensors",
    ),
    (
        "bad JSON",
        lambda c: (c / "config.json").write_text('{\n  "lfm": '),
        r"config\.json:2:\d+: invalid JSON",
    ),
    (
        "unknown top key",
        edit_json("config.json", _set("flavour", 1)),
        r"config\.json: flavour: unknown key",
    ),
    (
        "unknown encoder key",
        edit_json("config.json", _set("encoder.use_bias", True)),
        r"config\.json: encoder\.use_bias: unknown key",
    ),
    (
        "missing lfm key",
        edit_json("config.json", _set("lfm.hidden_size", KeyError)),
        r"config\.json: lfm\.hidden_size: missing",
    ),
    (
        "missing encoder key",
        edit_json("config.json", _set("encoder.conv_norm_type", KeyError)),
        r"config\.json: encoder\.conv_norm_type: missing",
    ),
    (
        "wrong type",
        edit_json("config.json", _set("depthformer.layers", "2")),
        r"config\.json: depthformer\.layers: '2' has the wrong type",
    ),
    (
        "unsupported encoder setting",
        edit_json("config.json", _set("encoder.xscaling", True)),
        r"config\.json: encoder\.xscaling: True is not supported",
    ),
    (
        "unsupported front end",
        edit_json("config.json", _set("preprocessor.n_fft", 400)),
        r"config\.json: preprocessor\.n_fft: 400 is not supported",
    ),
    (
        "conv bias",
        edit_json("config.json", _set("lfm.conv_bias", True)),
        r"config\.json: lfm\.conv_bias: True is not supported",
    ),
    (
        "bad layer types",
        edit_json("config.json", _set("lfm.layer_types", ["conv"] * 5)),
        r"config\.json: lfm\.layer_types: must list 6 layers",
    ),
    (
        "detokenizer width",
        edit_json("audio_detokenizer/config.json", _set("hidden_size", 256)),
        r"audio_detokenizer/config\.json: hidden_size: 256 is not 512",
    ),
    (
        "wrong shape",
        edit_tensors(
            "model.safetensors", lambda s: s.update({"lfm.embedding_norm.weight": torch.ones(63)})
        ),
        r"model\.safetensors: weights do not fit the architecture: lfm\.embedding_norm\.weight: "
        r"shape \(63,\), expected \(64,\)",
    ),
    (
        "missing tensor",
        edit_tensors("model.safetensors", lambda s: s.pop("depth_linear.bias")),
        r"model\.safetensors: weights do not fit the architecture: depth_linear\.bias: missing",
    ),
    (
        "missing detokenizer tensor",
        edit_tensors("audio_detokenizer/model.safetensors", lambda s: s.pop("lin.bias")),
        r"audio_detokenizer/model\.safetensors: weights do not fit .*lin\.bias: missing",
    ),
    (
        "untied copy",
        edit_tensors(
            "model.safetensors",
            lambda s: s.update({"depth_embeddings.3.to_logits.weight": torch.zeros(2049, 512)}),
        ),
        r"model\.safetensors: depth_embeddings\.3\.to_logits\.weight differs from "
        r"depth_embeddings\.3\.embedding\.weight",
    ),
    (
        "truncated weights",
        lambda c: (c / "model.safetensors").write_bytes(
            (c / "model.safetensors").read_bytes()[:5000]
        ),
        r"model\.safetensors: (tensor \S+: byte range|not a safetensors file)",
    ),
    (
        "wrong special ids",
        lambda c: _foreign_tokenizer(c / "tokenizer.json"),
        r"tokenizer\.json: special token <\|startoftext\|> has id None",
    ),
]


def _foreign_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models

    tokenizer = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    tokenizer.add_special_tokens(["<|pad|>"])
    tokenizer.save(str(path))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("pristine") / "ckpt", torch.float32)


@pytest.mark.parametrize(("case", "edit", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_broken_checkpoints_are_refused(
    pristine: Path, tmp_path: Path, case: str, edit: Edit, message: str
) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(pristine, ckpt)
    edit(ckpt)
    with pytest.raises(BuildError) as caught:
        build_model(tmp_path / "out", checkpoint=ckpt)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("--from"), text
    assert re.search(message, text), f"{case}: {text}"
    assert str(ckpt) in text, f"{case}: the message does not name the file: {text}"


def test_not_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CheckpointError, match=r"nowhere: not a checkpoint directory$"):
        read_checkpoint(tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        CheckpointError, match=r"huggingface-cli download LiquidAI/LFM2\.5-Audio-1\.5B"
    ):
        read_checkpoint(Path("LiquidAI/LFM2.5-Audio-1.5B"))


def test_equivalent_encoder_spellings(pristine: Path, tmp_path: Path) -> None:
    """NeMo reads `att_context_size` [[-1, -1]] as [-1, -1], and an explicit symmetric
    `conv_context_size` as None; anything else is refused."""
    ckpt = tmp_path / "spellings"
    shutil.copytree(pristine, ckpt)
    edit_json("config.json", _set("encoder.att_context_size", [[-1, -1]]))(ckpt)
    edit_json("config.json", _set("encoder.conv_context_size", [4, 4]))(ckpt)
    assert read_checkpoint(ckpt).config == tiny()
    edit_json("config.json", _set("encoder.conv_context_size", [8, 0]))(ckpt)
    with pytest.raises(
        CheckpointError, match=r"encoder\.conv_context_size: \[8, 0\] is not supported"
    ):
        read_checkpoint(ckpt)


def test_v1_checkpoint_builds_mimi(pristine: Path, tmp_path: Path) -> None:
    """LFM2-Audio (v1): Mimi's weights (`tokenizer-e351c8d8-checkpoint125.safetensors`, with an
    encoder-side tensor the decoder does not use) instead of `audio_detokenizer/`. The Mimi
    configuration is found from the shapes, and every graph is byte-identical to a direct v1
    build from the same seeded weights."""
    ckpt = tmp_path / "v1"
    shutil.copytree(pristine, ckpt)
    shutil.rmtree(ckpt / "audio_detokenizer")
    weights = {
        k: torch.from_numpy(np.ascontiguousarray(v))
        for k, v in random_mimi_weights(tiny_mimi(), TINY_SEED).items()
    }
    weights["encoder.model.0.conv.conv.weight"] = torch.zeros(8, 1, 7)
    save_file(weights, str(ckpt / "tokenizer-e351c8d8-checkpoint125.safetensors"))
    parsed = read_checkpoint(ckpt)
    assert parsed.family == "lfm2-audio" and parsed.detokenizer_weights is None
    assert parsed.mimi is not None and parsed.mimi[0] == tiny_mimi()
    got = build_model(tmp_path / "from-checkpoint", checkpoint=ckpt)
    want = build_model(tmp_path / "direct", size="tiny", seed=TINY_SEED, family="lfm2-audio")
    assert got.family == want.family == "lfm2-audio"
    assert set(got.graphs) == set(want.graphs) and "mimi_decoder" in got.graphs
    for name, entry in want.files.items():
        if ".onnx" in name:
            assert got.files[name].sha256 == entry.sha256, name
    with pytest.raises(BuildError, match="leave out --family"):
        build_model(tmp_path / "x", checkpoint=ckpt, family="lfm2-audio")
    weights["decoder.model.0.conv.conv.bias"] = torch.zeros(3)
    save_file(weights, str(ckpt / "tokenizer-e351c8d8-checkpoint125.safetensors"))
    with pytest.raises(
        BuildError,
        match=r"checkpoint125\.safetensors: weights do not fit the architecture: .*"
        r"\(Mimi as LFM2-Audio-1\.5B ships it\)",
    ):
        build_model(tmp_path / "y", checkpoint=ckpt)


def test_config_parses_back_to_the_tiny_numbers(pristine: Path) -> None:
    parsed = read_checkpoint(pristine)
    assert parsed.config == tiny()
    assert parsed.family == "lfm2.5-audio"


def test_lfm2_config_aliases(pristine: Path, tmp_path: Path) -> None:
    """Original LFM2 keys: `block_ff_dim` with the auto-adjusted SwiGLU width, `full_attn_idxs`
    instead of `layer_types`, `theta`: the same numbers as the explicit form."""
    ckpt = tmp_path / "aliases"
    shutil.copytree(pristine, ckpt)

    def legacy(raw: dict[str, Any]) -> None:
        lfm = raw["lfm"]
        lfm["full_attn_idxs"] = [i for i, t in enumerate(lfm.pop("layer_types")) if t != "conv"]
        lfm["theta"] = lfm.pop("rope_theta")
        lfm.pop("intermediate_size")
        lfm["block_ff_dim"] = 192  # int(2 * 192 / 3) = 128, already a multiple of 128
        lfm["block_auto_adjust_ff_dim"] = True
        lfm["block_multiple_of"] = 128
        lfm["block_dim"] = 64  # a legacy key transformers ignores
        lfm["model_type"] = "lfm2"

    edit_json("config.json", legacy)(ckpt)
    assert read_checkpoint(ckpt).config == tiny()


def test_cli_builds_from_a_checkpoint(pristine: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "satellite",
            "model",
            "build",
            "--from",
            str(pristine),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"OK: {out} verified" in done.stdout
    manifest = read_manifest(out)
    assert manifest.source["weights"] == "checkpoint"
    assert manifest.tokenizer == "tokenizer.json"
    broken = subprocess.run(
        [
            sys.executable,
            "-m",
            "satellite",
            "model",
            "build",
            "--from",
            str(tmp_path),
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert "Traceback" not in broken.stderr
    assert "neither audio_detokenizer/" in broken.stderr
