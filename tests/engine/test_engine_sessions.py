"""Sessions and model loading: execution-provider choice (`auto` and explicit names), the
configured threads and optimisation level reaching the real onnxruntime sessions, and the
errors for a provider, graph or model directory the engine cannot use."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from engine_support import build_shaped
from lfm_toolchain.cache import cached_model
from modeldir_graphs import INT64, decoder, write_model_dir

from satellite.engine.model import Model, ModelLoadError
from satellite.engine.sessions import (
    ProviderError,
    SessionConfig,
    SessionError,
    open_session,
    resolve_providers,
    session_options,
)
from satellite.engine.tables import EmbeddingTable
from satellite.errors import UserError
from satellite.modeldir.sidefiles import TableInfo

CPU = "CPUExecutionProvider"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shaped(tmp_path_factory.mktemp("tiny"))


def test_auto_picks_cpu_here_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    """On this machine's onnxruntime (no accelerator) auto is the CPU, and says so."""
    assert "CUDAExecutionProvider" not in ort.get_available_providers()
    with caplog.at_level(logging.INFO, logger="satellite.engine.sessions"):
        assert resolve_providers(["auto"]) == [CPU]
    lines = [r.getMessage() for r in caplog.records if r.name == "satellite.engine.sessions"]
    assert len(lines) == 1 and "auto chose cpu (CPUExecutionProvider)" in lines[0], lines


@pytest.mark.parametrize(
    ("available", "chosen"),
    [
        (["CoreMLExecutionProvider", "CUDAExecutionProvider", CPU], "CUDAExecutionProvider"),
        (["OpenVINOExecutionProvider", "CoreMLExecutionProvider", CPU], "CoreMLExecutionProvider"),
        (["OpenVINOExecutionProvider", "QNNExecutionProvider", CPU], "QNNExecutionProvider"),
        (["AzureExecutionProvider", "OpenVINOExecutionProvider", CPU], "OpenVINOExecutionProvider"),
        (["AzureExecutionProvider", CPU], CPU),
    ],
)
def test_auto_order(available: list[str], chosen: str) -> None:
    """auto: CUDA, then CoreML, QNN, OpenVINO, else CPU; the CPU always comes last."""
    expected = [chosen] if chosen == CPU else [chosen, CPU]
    assert resolve_providers(["auto"], available) == expected


def test_explicit_order_is_kept() -> None:
    available = ["CUDAExecutionProvider", "OpenVINOExecutionProvider", CPU]
    assert resolve_providers(["openvino", "cuda"], available) == [
        "OpenVINOExecutionProvider",
        "CUDAExecutionProvider",
        CPU,
    ]
    assert resolve_providers(["cpu", "cuda"], available) == ["CUDAExecutionProvider", CPU]


def test_unavailable_provider_is_named() -> None:
    with pytest.raises(ProviderError) as caught:
        resolve_providers(["cuda"])
    message = str(caught.value)
    assert "'cuda'" in message and "CUDAExecutionProvider" in message
    assert "not available" in message and CPU in message  # what there is instead
    assert isinstance(caught.value, UserError)


def test_unknown_provider_is_named() -> None:
    with pytest.raises(ProviderError, match="'tpu' is not a provider"):
        resolve_providers(["tpu"], [CPU])


def test_sessions_run_on_the_shared_pool(model_dir: Path) -> None:
    """In this process, as in the daemon, onnxruntime has one global pool (conftest): every
    session runs on it. The width of a session's own pool is tested in a child process
    (`test_a_shared_thread_pool_gives_the_same_tokens`)."""
    model = Model.load(model_dir, SessionConfig(threads=1, optimization="basic"))
    model.open(["decoder", "depthformer"])
    for role in ("decoder", "depthformer"):
        options = model.graph(role).session.get_session_options()
        assert not options.use_per_session_threads
        assert options.intra_op_num_threads == 0  # set, onnxruntime would warn it is ignored
        assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        assert model.graph(role).session.get_providers() == [CPU]


def test_session_options() -> None:
    options = session_options(SessionConfig(threads=3, prepack=False, spinning=False))
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.get_session_config_entry("session.disable_prepacking") == "1"
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(ValueError, match="threads"):
        session_options(SessionConfig(threads=-1))
    # spinning is off unless asked for: per-session pools otherwise fight over the cores
    assert (
        session_options(SessionConfig()).get_session_config_entry("session.intra_op.allow_spinning")
        == "0"
    )
    with pytest.raises(RuntimeError, match="allow_spinning"):  # onnxruntime's default: spin
        session_options(SessionConfig(spinning=True)).get_session_config_entry(
            "session.intra_op.allow_spinning"
        )


def test_unreadable_graph_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "decoder.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(SessionError, match=str(bad)):
        open_session(bad, SessionConfig(), [CPU])
    with pytest.raises(SessionError, match="not found"):
        open_session(tmp_path / "missing.onnx", SessionConfig(), [CPU])


def test_decoder_without_embeddings_input_is_refused(tmp_path: Path) -> None:
    """A decoder taking token ids cannot be fed audio frames: refused, naming the file."""
    write_model_dir(
        tmp_path, graphs={"decoder": decoder(embeds_name="input_ids", embeds_type=INT64)}
    )
    model = Model.load(tmp_path)
    with pytest.raises(ModelLoadError, match=r"onnx/decoder\.onnx: the decoder takes token ids"):
        model.graph("decoder")


def test_graph_that_misses_the_contract_is_named(tmp_path: Path) -> None:
    """A graph whose names do not fit its role: the file and the missing input are named."""
    from modeldir_graphs import audio_encoder

    write_model_dir(tmp_path, graphs={"audio_encoder": audio_encoder(mel_name="features")})
    model = Model.load(tmp_path)
    with pytest.raises(ModelLoadError) as caught:
        model.graph("audio_encoder")
    message = str(caught.value)
    assert "onnx/audio_encoder.onnx" in message and "mel_spectrogram is missing" in message


def test_official_layout_side_tables_are_used(tmp_path: Path) -> None:
    """The official layout: text and audio embeddings come from the .bin tables."""
    write_model_dir(tmp_path)
    model = Model.load(tmp_path)
    table = model.table("embed_tokens")
    assert table is not None
    rows = np.fromfile(tmp_path / "onnx" / "embed_tokens.bin", dtype="<f4").reshape(32, 16)
    np.testing.assert_array_equal(model.embeddings.text([3, 0, 31]), rows[[3, 0, 31]])
    audio = np.fromfile(tmp_path / "onnx" / "audio_embedding.bin", dtype="<f4").reshape(10, 16)
    # codebooks 2, codebook_size 5: frame (4, 1) -> rows 4 and 5 + 1
    np.testing.assert_allclose(model.embeddings.frames([[4, 1]])[0], audio[4] + audio[6], rtol=1e-6)
    with pytest.raises(ValueError, match=r"0\.\.4"):
        model.embeddings.frames([[5, 0]])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_tables(tmp_path: Path, dtype: str) -> None:
    values = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    if dtype == "float16":
        raw = values.astype("<f2").tobytes()
        want = values.astype(np.float16).astype(np.float32)
    else:
        bits = values.view(np.uint32) >> 16  # truncation to bfloat16
        raw = bits.astype("<u2").tobytes()
        want = (bits << 16).astype(np.uint32).view(np.float32)
    (tmp_path / "t.bin").write_bytes(raw)
    info = TableInfo(tmp_path / "t.json", tmp_path / "t.bin", 6, 4, dtype)
    got = EmbeddingTable(info)([5, 0, 2])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want[[5, 0, 2]])
    with pytest.raises(IndexError, match=r"outside 0\.\.5"):
        EmbeddingTable(info)([6])


def test_config_from_settings() -> None:
    from satellite.settings import ModelSettings

    config = SessionConfig.from_settings(ModelSettings(providers=["cpu"], threads=3))
    assert (config.providers, config.threads, config.optimization) == (("cpu",), 3, "all")
    assert SessionConfig.from_settings(ModelSettings(), prepack=False).prepack is False


def test_quantized_model_with_optional_decoder_inputs(tmp_path: Path) -> None:
    """A q4 build: its decoder takes the optional `num_logits_to_keep`, which the engine feeds
    (one position of logits per call), and a conversation runs on it."""
    from lfm_toolchain.build import build_model

    from satellite.engine.chat import Chat
    from satellite.engine.decoder import Decoder
    from satellite.engine.events import AudioFrame, TextToken, TurnEnd

    build_model(tmp_path, size="tiny", variant="q4", seed=1)
    model = Model.load(tmp_path, SessionConfig(threads=1))
    assert model.graph("decoder").has_input("num_logits_to_keep")
    decoder = Decoder(model.graph("decoder"), model.manifest.config, context_length=64)
    decoder.push(model.embeddings.text([1, 6, 20, 10, 7]))
    out = decoder.step()
    assert out.logits.shape == (512,) and out.hidden.shape == (64,)
    assert decoder.length == 5
    chat = Chat(model, prefix=[[1, 6, 20, 10, 7, 10]], seed=0)
    events = list(
        chat.turn(
            [[6, 21, 10, 7, 10, 6, 22, 10]],
            chat.generation_config("interleaved", max_new_tokens=20),
        )
    )
    end = events[-1]
    assert isinstance(end, TurnEnd)
    produced = sum(isinstance(e, TextToken | AudioFrame) for e in events)
    assert end.steps == produced + (end.reason == "end_of_turn") >= 1


def test_without_the_arena_the_same_tokens_come_out() -> None:
    """`SessionConfig(arena=False)`: sessions run without onnxruntime's memory arena, glibc's
    mmap threshold is pinned (so large buffers go back to the system), and a greedy turn on the
    tiny q4 model yields exactly the tokens it yields with the arena."""
    from satellite.engine import malloc
    from satellite.engine.chat import Chat
    from satellite.engine.events import AudioFrame, TextToken

    options = session_options(SessionConfig(arena=False))
    assert options.enable_cpu_mem_arena is False
    assert malloc.fix_mmap_threshold() is True  # glibc on the test machines
    assert session_options(SessionConfig()).enable_cpu_mem_arena is True

    def tokens(arena: bool) -> list[object]:
        model = Model.load(cached_model("tiny", "q4"), SessionConfig(threads=1, arena=arena))
        chat = Chat(model, prefix=[[1, 6, 20, 10, 7, 10]], seed=0)
        config = chat.generation_config("interleaved", max_new_tokens=24)
        out: list[object] = []
        for event in chat.turn([[6, 21, 10, 7, 10, 6, 22, 10]], config):
            if isinstance(event, TextToken):
                out.append(event.token)
            elif isinstance(event, AudioFrame):
                out.append(tuple(int(c) for c in event.codes))
        return out

    with_arena = tokens(True)
    assert len(with_arena) > 4
    assert tokens(False) == with_arena


SHARED_POOL_CHILD = """
import json, sys
from lfm_toolchain.cache import cached_model
from satellite.engine.chat import Chat
from satellite.engine.events import AudioFrame, TextToken
from satellite.engine.model import Model
from satellite.engine.sessions import SessionConfig

def tokens(config):
    model = Model.load(cached_model("tiny", "q4"), config)
    chat = Chat(model, prefix=[[1, 6, 20, 10, 7, 10]], seed=0)
    turn = chat.generation_config("interleaved", max_new_tokens=24)
    out = []
    for event in chat.turn([[6, 21, 10, 7, 10, 6, 22, 10]], turn):
        if isinstance(event, TextToken):
            out.append(event.token)
        elif isinstance(event, AudioFrame):
            out.append([int(c) for c in event.codes])
    options = [model.graph(r).session.get_session_options() for r in ("decoder", "depthformer")]
    return out, [o.use_per_session_threads for o in options], [o.intra_op_num_threads for o in options]

shared = sys.argv[1] == "shared"
first = tokens(SessionConfig(threads=2, shared_pool=shared))
later = tokens(SessionConfig(threads=2, shared_pool=False))  # after a shared pool: runs on it
print(json.dumps({"first": first, "later": later}))
"""


def test_a_shared_thread_pool_gives_the_same_tokens() -> None:
    """`SessionConfig(shared_pool=True)` (the default): every session of the process, later
    ones opened without it too, runs on onnxruntime's one global pool, and a greedy turn on the tiny q4
    model yields exactly the tokens it yields with a pool per session. In child processes:
    the global pool is the process's for good."""
    cached_model("tiny", "q4")  # built here, not in both children at once
    runs, runs_stderr = {}, {}
    for mode in ("shared", "own"):
        child = subprocess.run(
            [sys.executable, "-c", SHARED_POOL_CHILD, mode],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert child.returncode == 0, child.stderr[-2000:]
        runs[mode] = json.loads(child.stdout.strip().splitlines()[-1])
        runs_stderr[mode] = child.stderr
    shared, own = runs["shared"], runs["own"]
    assert shared["first"][1] == [False, False] and shared["later"][1] == [False, False]
    assert shared["first"][2] == [0, 0]  # the pool's width is the process's, not the session's
    assert own["first"][1] == [True, True] and own["later"][1] == [True, True]
    assert own["first"][2] == [2, 2]
    assert "ignored when using a global thread pool" not in runs_stderr["shared"]
    assert len(own["first"][0]) > 4
    assert shared["first"][0] == own["first"][0] == shared["later"][0]
