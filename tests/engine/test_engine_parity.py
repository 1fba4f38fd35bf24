"""Token-exact parity of the engine with the reference on the tiny model (issue 4, point 6).

The model directory is built by `lfm_toolchain.build.build_model` and the reference
(liquid-audio's `LFM2AudioModel`) from the same weights, shaped so that every branch of the
state machine is reached (see `engine_support`). With greedy text and audio at temperature 1 /
top-k 1 (greedy by the top-k rule), the engine's reply, every text id and all 8 codes of every
frame, must equal what `generate_sequential` / `generate_interleaved` yield for the same inputs:
an ASR turn, a TTS turn, and a two-turn interleaved conversation whose second turn runs on the
engine's kept decoder cache while the reference re-reads the whole history. Error bound: none,
the token sequences are compared for equality. Each test runs twice: with the backbone on
onnxruntime (the decoder graph) and on llama.cpp (the same weights as a float32 GGUF, issue 14
point 4), the rest of the engine the same.

Each test also checks that its turn reaches the branches it is there for (so a change of weights
that avoids them fails rather than passing trivially). Prompts use stand-in ids for the
template's pieces (1 `<|startoftext|>`, 6 `<|im_start|>`, 7 `<|im_end|>`, 10 a newline, 20-22
role names, the rest system and user text).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from engine_support import (
    ASR_SYSTEM,
    AUDIO,
    CHAT_SYSTEM,
    CLOSE_AND_ASSISTANT,
    TTS_SYSTEM,
    TURN_END,
    USER,
    ReferenceChat,
    build_shaped,
    reply_of,
    shaped_reference,
    to_official_layout,
    waveform,
)
from lfm_toolchain.gguf_export import write_backbone_gguf
from lfm_toolchain.weights import backbone_specs

from satellite.engine.chat import Chat, Speech
from satellite.engine.events import AudioFrame, TextToken, TurnEnd
from satellite.engine.mel import LogMel
from satellite.engine.model import Model
from satellite.engine.sessions import SessionConfig

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module", params=["onnxruntime", "llamacpp"])
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Model:
    """The shaped tiny model on each backbone runner: the decoder graph on onnxruntime, and
    the same backbone weights as a float32 GGUF on llama.cpp (`model.backbone: llamacpp`)."""
    config, weights, _ = shaped_reference()
    directory = build_shaped(tmp_path_factory.mktemp("shaped"))
    if request.param == "llamacpp":
        request.getfixturevalue("llama_library")
        specs = backbone_specs(config.backbone)
        write_backbone_gguf(
            config.backbone, weights, specs, directory / "backbone.gguf", float32=True
        )
    return Model.load(directory, SessionConfig(threads=1, backbone=request.param))


def runs(reply: Sequence[int | tuple[int, ...]]) -> list[tuple[str, int]]:
    """The reply as runs: ("text", n), ("audio", n) and ("eoa", 1) for end-of-audio frames."""

    def kind(item: int | tuple[int, ...]) -> str:
        if not isinstance(item, tuple):
            return "text"
        return "eoa" if item[0] == 2048 else "audio"

    return [(k, len(list(g))) for k, g in itertools.groupby(reply, key=kind)]


def test_asr_turn(model: Model) -> None:
    """Sequential: text, then `<|im_end|>` yielded and the turn stops."""
    _, _, reference = shaped_reference()
    speech = waveform(1.0, seed=1)
    chat = Chat(model, prefix=[ASR_SYSTEM], turn_end=TURN_END)
    config = chat.generation_config("sequential", max_new_tokens=120, audio=AUDIO)
    got, end = reply_of(chat.turn([USER, Speech(speech), CLOSE_AND_ASSISTANT], config))

    ref = ReferenceChat()
    ref.add_ids(ASR_SYSTEM + USER)
    ref.add_mel(LogMel()(speech))
    ref.add_ids(CLOSE_AND_ASSISTANT)
    want = ref.generate(reference, "sequential", 120)

    assert got == want, f"engine {got}\nreference {want}"
    assert end.reason == "end_of_turn" and got[-1] == 7
    assert len(got) >= 3 and all(isinstance(t, int) for t in got), "text only, several tokens"
    assert end.text_tokens == len(got) and end.audio_frames == 0


def test_tts_turn(model: Model) -> None:
    """Sequential: text until `<|audio_start|>`, audio until end-of-audio (yielded as eight
    2048s), text again, `<|im_end|>` yielded last."""
    _, _, reference = shaped_reference()
    text = list(range(60, 72))
    prompt = [*USER, *text, *CLOSE_AND_ASSISTANT]
    chat = Chat(model, prefix=[TTS_SYSTEM], turn_end=TURN_END)
    config = chat.generation_config("sequential", max_new_tokens=200, audio=AUDIO)
    got, end = reply_of(chat.turn([prompt], config))

    ref = ReferenceChat()
    ref.add_ids(TTS_SYSTEM + prompt)
    want = ref.generate(reference, "sequential", 200)

    assert got == want, f"engine {got}\nreference {want}"
    assert end.reason == "end_of_turn" and got[-1] == 7
    shape = runs(got)
    start = got.index(128)
    assert isinstance(got[start + 1], tuple), "audio follows <|audio_start|>"
    eoa = [i for i, item in enumerate(got) if isinstance(item, tuple) and item[0] == 2048]
    assert eoa, f"no end-of-audio frame: {shape}"
    assert got[eoa[0]] == (2048,) * 8, "the end-of-audio frame is all 2048"
    assert isinstance(got[eoa[0] + 1], int), "text follows end-of-audio"
    assert max(n for k, n in shape if k == "audio") > 1, f"an audio run: {shape}"


def test_two_turn_interleaved_conversation(model: Model) -> None:
    """Interleaved: 6 text / 12 audio runs, an end-of-audio frame before `<|text_end|>` switching
    to text with the leftover budget, audio to the end after `<|text_end|>`; the first turn
    ends on the step budget, the second (on the kept cache) at `<|im_end|>`, not yielded."""
    _, _, reference = shaped_reference()
    first, second = waveform(1.0, seed=2), waveform(1.5, seed=3)
    steps = 150
    chat = Chat(model, prefix=[CHAT_SYSTEM], turn_end=TURN_END)
    config = chat.generation_config("interleaved", max_new_tokens=steps, audio=AUDIO)
    got1, end1 = reply_of(chat.turn([USER, Speech(first), CLOSE_AND_ASSISTANT], config))
    length_after_first = chat.decoder.length
    got2, end2 = reply_of(chat.turn([USER, Speech(second), CLOSE_AND_ASSISTANT], config))

    ref = ReferenceChat()
    ref.add_ids(CHAT_SYSTEM + USER)
    ref.add_mel(LogMel()(first))
    ref.add_ids(CLOSE_AND_ASSISTANT)
    want1 = ref.generate(reference, "interleaved", steps)
    assert got1 == want1, f"turn 1: engine {got1}\nreference {want1}"
    ref.add_reply(want1)
    ref.add_ids([*TURN_END, *USER])
    ref.add_mel(LogMel()(second))
    ref.add_ids(CLOSE_AND_ASSISTANT)
    want2 = ref.generate(reference, "interleaved", steps)
    assert got2 == want2, f"turn 2: engine {got2}\nreference {want2}"

    # the cache holds the history once: turn 1 left its last frame queued (not run), turn 2
    # (ended by <|im_end|>, not yielded) ran everything it yielded
    embeds = [-(-LogMel()(w).shape[0] // 8) for w in (first, second)]
    prompt1 = len(CHAT_SYSTEM) + len(USER) + embeds[0] + len(CLOSE_AND_ASSISTANT)
    assert length_after_first == prompt1 + len(got1) - 1
    assert chat.decoder.length == len(ref.flags) + len(got2)
    assert 7 not in got1 + got2, "interleaved mode does not yield <|im_end|>"
    assert end1.reason == "max_new_tokens" and end1.steps == steps
    assert end2.reason == "end_of_turn"
    shape = runs(got1)
    assert shape[0] == ("text", 6) and shape[1][0] == "audio", f"6 text then audio: {shape}"
    assert any(a == ("audio", 12) and b[0] == "text" for a, b in itertools.pairwise(shape)), (
        f"12 audio then text: {shape}"
    )
    done = got1.index(130)
    before, after = runs(got1[:done]), runs(got1[done + 1 :])
    assert any(
        a[0] == "eoa" and b[0] == "text" and b[1] != 6 for a, b in itertools.pairwise(before)
    ), f"end-of-audio before <|text_end|> switches to a text run of the leftover budget: {before}"
    assert all(n == 1 for k, n in after if k != "audio"), f"after <|text_end|>: {after}"
    assert any(k == "eoa" for k, _ in after), f"an end-of-audio after <|text_end|>: {after}"


def test_events_are_stamped_in_order(model: Model) -> None:
    """Every event carries the monotonic time it was made, in order."""
    chat = Chat(model, prefix=[TTS_SYSTEM], turn_end=TURN_END)
    config = chat.generation_config("sequential", max_new_tokens=40, audio=AUDIO)
    events = list(chat.turn([[*USER, *range(60, 72), *CLOSE_AND_ASSISTANT]], config))
    times = [e.time for e in events if isinstance(e, TextToken | AudioFrame | TurnEnd)]
    assert len(times) == len(events) >= 3
    assert np.all(np.diff(times) >= 0), times


def test_official_layout_gives_the_same_tokens(model: Model, tmp_path: Path) -> None:
    """The same weights laid out as LiquidAI/LFM2.5-Audio-1.5B-ONNX (graphs under onnx/,
    `vocoder_depthformer.onnx`, text and audio embeddings as .bin tables, no embed_tokens
    graph) give the same reply."""
    _, weights, _ = shaped_reference()
    official = Model.load(to_official_layout(model.directory, tmp_path / "official", weights))
    assert (
        official.table("embed_tokens") is not None
        and "embed_tokens" not in official.manifest.graphs
    )
    replies = []
    for m in (model, official):
        chat = Chat(m, prefix=[TTS_SYSTEM], turn_end=TURN_END)
        config = chat.generation_config("sequential", max_new_tokens=120, audio=AUDIO)
        replies.append(
            reply_of(chat.turn([[*USER, *range(60, 72), *CLOSE_AND_ASSISTANT]], config))[0]
        )
    assert replies[0] == replies[1]
    assert any(isinstance(x, tuple) for x in replies[0])
