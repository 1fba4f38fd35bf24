"""Conversation state on the tiny model: reset, the context limit, turns closed early, one turn
at a time, seeded sampling, the prompt helpers against the chat template, streamed text."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

import pytest
from engine_support import TURN_END, build_shaped, waveform
from lfm_toolchain.cache import cached_model
from lfm_toolchain.tokenizer import build_tokenizer

from satellite.engine.chat import Chat, ContextReset, Speech, system_prefix, user_turn
from satellite.engine.decoder import ContextFullError
from satellite.engine.events import AudioFrame, TextToken, TurnEnd
from satellite.engine.model import Model
from satellite.engine.sampling import Sampling
from satellite.engine.sessions import SessionConfig
from satellite.engine.template import (
    ASR_PROMPT,
    AudioIn,
    Modality,
    Tokens,
    Turn,
    audio_embeddings,
    render,
)
from satellite.engine.textstream import TextStream

SYSTEM = [1, 6, 20, 10, 413, 400, 443, 195, 7, 10]
PROMPT = [6, 21, 10, 60, 61, 62, 63, 7, 10, 6, 22, 10]
GREEDY_AUDIO = Sampling(1.0, 1)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    directory = build_shaped(tmp_path_factory.mktemp("tiny"))
    return Model.load(directory, SessionConfig(threads=1))


def reply(events: Iterable[object]) -> list[object]:
    return [
        e.token if isinstance(e, TextToken) else e.codes
        for e in events
        if isinstance(e, TextToken | AudioFrame)
    ]


def last(events: list[object]) -> TurnEnd:
    end = events[-1]
    assert isinstance(end, TurnEnd)
    return end


def test_reset_keeps_the_prefix_and_forgets_the_rest(model: Model) -> None:
    chat = Chat(model, prefix=[SYSTEM], turn_end=TURN_END)
    config = chat.generation_config("interleaved", max_new_tokens=40, audio=GREEDY_AUDIO)
    assert chat.prefix_length == len(SYSTEM) == chat.decoder.length
    first = reply(chat.turn([PROMPT], config))
    assert chat.context_used > len(SYSTEM) + len(PROMPT)
    again = reply(chat.turn([PROMPT], config))
    assert again != first  # the history changes the answer
    chat.reset()
    assert chat.decoder.length == len(SYSTEM) and chat.decoder.pending_length == 0
    assert chat.turns == 0
    assert reply(chat.turn([PROMPT], config)) == first


def test_context_limit_ends_the_turn_and_drops_the_history(
    model: Model, caplog: pytest.LogCaptureFixture
) -> None:
    """A reply that fills the context ends with reason context_full (logged); the next turn
    drops the history (ContextReset, the prefix kept) and runs."""
    chat = Chat(model, prefix=[SYSTEM], turn_end=TURN_END, context_length=64, reserve=16)
    config = chat.generation_config("interleaved", max_new_tokens=500, audio=GREEDY_AUDIO)
    with caplog.at_level(logging.WARNING, logger="satellite.engine"):
        events = list(chat.turn([PROMPT], config))
    end = last(events)
    assert end.reason == "context_full"
    assert end.steps < 500 and chat.decoder.length <= 64
    assert any(
        "context full: 65 positions needed, the limit is 64" in r.getMessage()
        for r in caplog.records
    )
    used = chat.context_used
    events = list(chat.turn([PROMPT], config))
    assert isinstance(events[0], ContextReset)
    assert events[0].dropped == used - len(SYSTEM)
    assert any("dropping the conversation history" in r.getMessage() for r in caplog.records)
    assert any(isinstance(e, TextToken | AudioFrame) for e in events)


def test_input_longer_than_the_context_raises(model: Model) -> None:
    chat = Chat(model, prefix=[SYSTEM], turn_end=TURN_END, context_length=32)
    config = chat.generation_config("sequential", max_new_tokens=5)
    with pytest.raises(ContextFullError, match="33 positions needed, the limit is 32"):
        list(chat.turn([list(range(40, 63))], config))
    assert chat.decoder.length == len(SYSTEM) and chat.context_used == len(SYSTEM)
    with pytest.raises(ValueError, match="exceeds the model's 4096"):
        Chat(model, turn_end=TURN_END, context_length=5000)


def test_a_turn_closed_early_leaves_a_consistent_state(model: Model) -> None:
    """Closing the generator ends the turn: what was yielded but not run, and the closing
    tokens, are queued for the next turn; `flush` runs them."""
    chat = Chat(model, prefix=[SYSTEM], turn_end=TURN_END)
    config = chat.generation_config("interleaved", max_new_tokens=100, audio=GREEDY_AUDIO)
    turn = chat.turn([PROMPT], config)
    taken = [next(turn) for _ in range(9)]
    turn.close()
    assert all(isinstance(e, TextToken | AudioFrame) for e in taken)
    run = len(SYSTEM) + len(PROMPT) + len(taken) - 1
    assert chat.decoder.length == run
    assert chat.decoder.pending_length == 1 + len(TURN_END)
    chat.flush()
    assert chat.decoder.pending_length == 0 and chat.decoder.length == run + 1 + len(TURN_END)
    assert last(list(chat.turn([PROMPT], config))).steps >= 1


def test_one_turn_at_a_time(model: Model) -> None:
    chat = Chat(model, prefix=[SYSTEM], turn_end=TURN_END)
    config = chat.generation_config("sequential", max_new_tokens=10)
    first = chat.turn([PROMPT], config)
    next(first)
    with pytest.raises(RuntimeError, match="still being generated"):
        next(chat.turn([PROMPT], config))
    with pytest.raises(RuntimeError, match="reset"):
        chat.reset()
    first.close()
    chat.reset()


def test_sampled_audio_is_seeded(model: Model) -> None:
    """Default conversation sampling (audio temperature 1, top-k 4): the same seed gives the
    same reply, another seed another."""

    def run(seed: int) -> list[object]:
        chat = Chat(model, prefix=[SYSTEM], turn_end=TURN_END, seed=seed)
        config = chat.generation_config("interleaved", max_new_tokens=30)
        assert config.audio == Sampling(1.0, 4)
        return reply(chat.turn([PROMPT, Speech(waveform(0.5, seed=4))], config))

    first = run(5)
    assert any(isinstance(x, tuple) for x in first)
    assert run(5) == first
    assert run(6) != first


def test_tokenizer_gives_turn_end_and_text(model: Model) -> None:
    """With the directory's tokenizer, the closing ids are `<|im_end|>\\n` and every text
    token carries its text; without one, turn_end must be given."""
    tokenizer = model.tokenizer()
    assert tokenizer is not None
    chat = Chat(model, prefix=[SYSTEM])
    assert chat.turn_end == Tokens(tokenizer).encode("<|im_end|>\n") and chat.turn_end[0] == 7
    config = chat.generation_config("sequential", max_new_tokens=30, audio=GREEDY_AUDIO)
    texts = [e for e in chat.turn([PROMPT], config) if isinstance(e, TextToken)]
    ids = [e.token for e in texts]
    assert "".join(e.text for e in texts) == tokenizer.decode(ids, skip_special_tokens=True)
    bare = Model(model.directory, dataclasses.replace(model.manifest, tokenizer=None))
    assert bare.tokenizer() is None
    with pytest.raises(ValueError, match="turn_end is needed"):
        Chat(bare)


def test_prompt_helpers_follow_the_template() -> None:
    """system_prefix + user_turn give the ids and audio positions `template.render` gives."""
    tokens = Tokens(build_tokenizer(512))
    speech = waveform(1.0, seed=1)
    frames = 1 + speech.size // 160
    parts = [*system_prefix(tokens, ASR_PROMPT), *user_turn(tokens, "hello", Speech(speech))]
    flat: list[int | None] = []
    for part in parts:
        if isinstance(part, Speech):
            flat += [None] * audio_embeddings(frames)
        else:
            flat += list(part)  # type: ignore[arg-type]
    prompt = render(
        tokens,
        [
            Turn("system", (ASR_PROMPT,)),
            Turn("user", ("hello", AudioIn(audio_embeddings(frames)))),
        ],
    )
    ids = iter(prompt.text_ids)
    want = [None if m == Modality.AUDIO_IN else next(ids) for m in prompt.modality]
    assert flat == want


def test_text_stream_pieces_make_the_text() -> None:
    """Pieces joined are the decoded text; a character split over tokens waits for its last
    byte; special tokens give nothing."""
    tokenizer = build_tokenizer(512)
    text = "hello wörld ✓ 日本語 done"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    stream = TextStream(tokenizer)
    pieces = [stream.push(i) for i in [*ids, 130, 7]]
    assert "".join(pieces) == text == stream.text()
    assert all("\ufffd" not in p for p in pieces)
    assert pieces[-2:] == ["", ""]
    assert pieces.count("") > 2, "multi-byte characters span several byte tokens"
    assert TextStream(None).push(5) == ""


def test_turn_events_count(model: Model) -> None:
    chat = Chat(model, prefix=[SYSTEM], turn_end=TURN_END)
    config = chat.generation_config("interleaved", max_new_tokens=25, audio=GREEDY_AUDIO)
    events = list(chat.turn([PROMPT], config))
    end = last(events)
    texts = sum(isinstance(e, TextToken) for e in events)
    frames = sum(isinstance(e, AudioFrame) for e in events)
    assert (end.text_tokens, end.audio_frames) == (texts, frames)
    assert end.steps == 25 == texts + frames  # max_new_tokens counts decoder runs
    assert end.context_used == len(SYSTEM) + len(PROMPT) + 25


def test_rollback_to_a_checkpoint(model: Model) -> None:
    """Work done after a checkpoint (e.g. a speculative turn) is undone by rolling back."""
    chat = Chat(model, prefix=[SYSTEM], turn_end=TURN_END)
    config = chat.generation_config("interleaved", max_new_tokens=20, audio=GREEDY_AUDIO)
    first = reply(chat.turn([PROMPT], config))
    saved = chat.checkpoint()
    used = chat.context_used
    second = reply(chat.turn([PROMPT], config))
    assert chat.context_used > used
    chat.rollback(saved)
    assert chat.context_used == used
    assert reply(chat.turn([PROMPT], config)) == second != first


def test_audio_steps_skip_the_text_head_without_changing_the_reply() -> None:
    """On a q4 build (whose decoder takes `num_logits_to_keep`: the default tiny model, whose
    reply here reaches audio) audio steps ask for no text logits; the hidden states, and so
    every token and code, are the same as when every step computes the head."""
    directory = cached_model("tiny", "q4")
    replies = []
    skipped = []
    for force_head in (False, True):
        model = Model.load(directory, SessionConfig(threads=1))
        chat = Chat(model, prefix=[SYSTEM], turn_end=TURN_END)
        decoder_step = chat.decoder.step
        asked: list[bool] = []

        def step(logits: bool = True, _step=decoder_step, _asked=asked, _force=force_head):  # type: ignore[no-untyped-def]
            out = _step(logits=logits or _force)
            _asked.append(out.logits is not None)  # what was computed, not what was asked
            return out

        chat.decoder.step = step  # type: ignore[method-assign]
        config = chat.generation_config("interleaved", max_new_tokens=60, audio=GREEDY_AUDIO)
        replies.append(reply(chat.turn([PROMPT], config)))
        skipped.append(asked.count(False))  # steps that ran without the text head
    assert replies[0] == replies[1]
    frames = sum(isinstance(r, tuple) for r in replies[0])
    assert frames > 0 and skipped == [frames, 0], (frames, skipped)


def test_speculative_prefill_gives_the_same_reply(model: Model) -> None:
    """A user turn whose speech is read speculatively (`speculate`), then finished with the
    rest of the turn, gives every token and code of the turn given at once (greedy text,
    top-1 audio); a speculation rolled back leaves the conversation as it was."""
    speech = Speech(waveform(1.5, seed=3))
    parts = [[6, 21, 10], speech, [7, 10], [6, 22, 10]]
    plain = Chat(model, prefix=[SYSTEM], turn_end=TURN_END)
    config = plain.generation_config("interleaved", max_new_tokens=50, audio=GREEDY_AUDIO)
    expected = reply(plain.turn(parts, config))

    chat = Chat(model, prefix=[SYSTEM], turn_end=TURN_END)
    before = chat.context_used
    state = chat.speculate(parts[:2])
    assert chat.context_used > before + 10, "the speech was read into the cache"
    assert chat.decoder.pending_length == 0
    got = reply(chat.turn(parts[2:], config))
    assert got == expected

    again = Chat(model, prefix=[SYSTEM], turn_end=TURN_END)
    state = again.speculate([[6, 21, 10], Speech(waveform(1.0, seed=4))])
    again.rollback(state)
    assert again.context_used == before
    assert reply(again.turn(parts, config)) == expected
