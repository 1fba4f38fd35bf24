"""`Responder.speculate`: while the user pauses, the speech is read into the conversation and
the reply is begun and held at its first audio; `reply(..., speculated=True)` hands it over.

On the tiny q4 model with the responder's own sampling (seeded, sampled audio), a speculated
turn must say exactly what the same turn says without speculation (every text piece, every
audio sample), and a speculation that is abandoned (the user spoke on) must leave no trace:
the next turn is the one a fresh responder gives (conversation, sampler state and detokenizer
put back).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from satellite.engine.model import Model
from satellite.engine.sessions import SessionConfig
from satellite.engine.template import Tokens
from satellite.reply import Reply, ReplyAudio, ReplyDone, ReplyText, Responder
from tests.satellite_support import spoken, tiny_model


def responder() -> Responder:
    directory = tiny_model()
    model = Model.load(directory, SessionConfig(threads=1))
    tokens = Tokens(model.tokenizer(), str(directory / str(model.manifest.tokenizer)))
    return Responder(model, tokens, max_reply_seconds=2.0, seed=0)


async def said(reply: Reply) -> tuple[str, np.ndarray, ReplyDone]:
    text, audio = [], []
    async for event in reply:
        if isinstance(event, ReplyText):
            text.append(event.text)
        elif isinstance(event, ReplyAudio):
            audio.append(event.samples)
    assert reply.done is not None
    return "".join(text), np.concatenate(audio) if audio else np.zeros(0), reply.done


async def test_a_speculated_turn_says_what_the_plain_turn_says() -> None:
    question = spoken("turn on the kitchen lights")
    plain = responder()
    want_text, want_audio, want = await said(plain.reply(question))
    assert want.reason != "error" and want.frames > 0 and want_audio.size > 0

    ahead = responder()
    ahead.speculate(question)
    got_text, got_audio, got = await said(ahead.reply(question, speculated=True))
    assert ahead.speculations == 1 and ahead.speculated_turns == 1
    assert ahead.held_audio_turns == 1, "the first audio was not ready before the turn"
    assert (got_text, got.frames, got.skipped, got.reason) == (
        want_text,
        want.frames,
        want.skipped,
        want.reason,
    )
    np.testing.assert_array_equal(got_audio, want_audio)
    for r in (plain, ahead):
        r.close()


async def test_abandoned_speculation_leaves_no_trace() -> None:
    question = spoken("turn on the kitchen lights")
    plain = responder()
    want = await said(plain.reply(question))

    for speculated in (True, False):
        r = responder()
        r.speculate(spoken("turn on the"))  # the user paused, then spoke on
        if speculated:
            r.abandon()
            r.speculate(question)  # the final pause
            got = await said(r.reply(question, speculated=True))
        else:  # the daemon did not take the speculation (e.g. the turn hit max length)
            got = await said(r.reply(question))
        assert r.speculations == 1 + speculated
        assert (got[0], got[2].frames, got[2].skipped) == (want[0], want[2].frames, want[2].skipped)
        np.testing.assert_array_equal(got[1], want[1])
        r.close()
    plain.close()


async def test_a_speculation_that_fails_is_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reply's start fails inside the speculation (here: the detokenizer, once): the begun
    turn is closed and everything put back, and the turn, started afresh, is the plain one."""
    from satellite.engine.detokenize import StreamingDetokenizer

    question = spoken("turn on the kitchen lights")
    plain = responder()
    want = await said(plain.reply(question))
    plain.close()

    original = StreamingDetokenizer.push
    failures: list[int] = []

    def fails_once(self: StreamingDetokenizer, codes: Any) -> Any:
        if not failures:
            failures.append(1)
            raise RuntimeError("injected")
        return original(self, codes)

    monkeypatch.setattr(StreamingDetokenizer, "push", fails_once)
    r = responder()
    r.speculate(question)
    got = await said(r.reply(question, speculated=True))
    assert failures == [1] and r.speculated_turns == 0, "the failed speculation was used"
    assert (got[0], got[2].frames, got[2].reason) == (want[0], want[2].frames, want[2].reason)
    np.testing.assert_array_equal(got[1], want[1])
    r.close()
