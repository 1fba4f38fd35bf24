"""Text to speech over Wyoming passes the safety rules before any audio is made: the model is
asked to speak the refusal instead of a blocked text (in the same voice), or, with no refusal
configured, the client gets an `error` naming the rule; the block is counted. Driven by the
real `wyoming` client on the tiny model."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from wyoming.audio import AudioChunk, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
)

from satellite.engine.model import Model
from satellite.engine.sessions import SessionConfig
from satellite.engine.template import Tokens
from satellite.safety.policy import Policy
from satellite.safety.rules import TermsRule
from satellite.wyoming.services.common import ServicesConfig
from satellite.wyoming.services.server import ServicesServer
from satellite.wyoming.speech import Limits, ServiceEngine
from tests.satellite_support import tiny_model

LIMITS = Limits(asr_tokens=24, speech_seconds=2.0, reply_tokens=80, seed=1)
REFUSAL = "Sorry, not that."


@contextlib.asynccontextmanager
async def serving(policy: Policy, refusal: str) -> AsyncIterator[int]:
    directory = tiny_model()
    model = Model.load(directory, SessionConfig(threads=1))
    tokens = Tokens(model.tokenizer(), str(directory))
    config = ServicesConfig(host="127.0.0.1", port=0, limits=LIMITS, policy=policy,
                            refusal=refusal)  # fmt: skip
    server = ServicesServer(model, tokens, config)
    await server.start()
    try:
        yield server.bound_port
    finally:
        await server.stop()


async def ask(port: int, *requests: Event, until: str = AudioStop().event().type) -> list[Event]:
    """A new connection, as Home Assistant makes one per request; the events until `until`."""
    out: list[Event] = []
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for request in requests:
            await client.write_event(request)
        for _ in range(2000):
            event = await asyncio.wait_for(client.read_event(), 60)
            assert event is not None, [e.type for e in out]
            out.append(event)
            if event.type == until or Error.is_type(event.type):
                return out
    raise AssertionError("too many events")


def audio_of(events: list[Event]) -> bytes:
    return b"".join(AudioChunk.from_event(e).audio for e in events if AudioChunk.is_type(e.type))


async def test_a_blocked_text_is_answered_with_the_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spoken: list[list[str]] = []
    speak = ServiceEngine.speak

    def recording(self: ServiceEngine, texts: list[str], *args: Any) -> Any:
        spoken.append(list(texts))
        return speak(self, texts, *args)

    monkeypatch.setattr(ServiceEngine, "speak", recording)
    policy = Policy([TermsRule("words", ["darn"])])
    async with serving(policy, REFUSAL) as port:
        refused = await ask(port, Synthesize(text="Well, darn it all.").event())
        allowed = await ask(port, Synthesize(text="Well, it is all fine.").event())
        streamed = await ask(
            port, SynthesizeStart().event(), SynthesizeChunk(text="It is fine. Darn it. ").event(),
            SynthesizeStop().event(), until=SynthesizeStopped().event().type,
        )  # fmt: skip
    assert audio_of(refused) and audio_of(allowed) and audio_of(streamed)
    assert [" ".join(t) for t in spoken] == [
        REFUSAL,
        "Well, it is all fine.",
        "It is fine.",
        REFUSAL,
    ]
    assert policy.blocks == {"words": 2}


async def test_without_a_refusal_the_block_is_an_error() -> None:
    policy = Policy([TermsRule("words", ["darn"])])
    async with serving(policy, "") as port:
        events = await ask(port, Synthesize(text="Well, darn it all.").event())
    error = Error.from_event(events[-1])
    assert error.code == "blocked" and "'words'" in error.text
    assert not audio_of(events) and policy.blocks == {"words": 1}
