"""Audio waits for its text (`SpeechGate`): a frame is released only once the text written
before it has passed every rule; a block drops what waits and everything after; allow-only
topics and external judges hold frames until they pass; and the gate measures what it adds."""

from __future__ import annotations

import asyncio
import time

from satellite.safety.gate import SpeechGate
from satellite.safety.policy import ExternalRule, Policy
from satellite.safety.rules import Finding, TermsRule, TopicsRule


def gate_for(policy: Policy) -> tuple[SpeechGate[str], list[str]]:
    out: list[str] = []
    return SpeechGate(policy, out.append), out


async def test_frames_follow_their_text_and_stop_at_a_block() -> None:
    policy = Policy([TermsRule("words", ["darn"])])
    gate, out = gate_for(policy)
    blocks: list[Finding] = []
    gate.on_block = blocks.append
    gate.audio("before any text")
    gate.text("Well, it is ")
    gate.audio("a1")
    gate.audio("a2")
    assert out == ["before any text", "a1", "a2"]  # built-in rules pass at once
    gate.text("da")  # "da" could still become "darn": the rules judge what is written
    gate.audio("a3")
    gate.text("rn good")
    gate.audio("a4")
    assert out == ["before any text", "a1", "a2", "a3"]
    assert gate.blocked is not None and gate.blocked.rule == "words" and blocks == [gate.blocked]
    assert await gate.finish() is gate.blocked and out[-1] == "a3"
    assert policy.blocks == {"words": 1}


async def test_allow_only_topics_hold_the_audio_until_a_topic() -> None:
    gate, out = gate_for(Policy([TopicsRule("shared", {"lights": ["lamp"]})]))
    gate.audio("f0")
    gate.text("Sure, the ")
    gate.audio("f1")
    assert out == []
    gate.text("lamp is on")
    assert out == ["f0", "f1"]
    gate.audio("f2")
    assert out == ["f0", "f1", "f2"] and await gate.finish() is None

    gate, out = gate_for(Policy([TopicsRule("shared", {"lights": ["lamp"]})]))
    gate.text("Once upon a time")
    gate.audio("story")
    found = await gate.finish()
    assert found is not None and found.verdict == "block" and out == []


class SlowJudge(ExternalRule):
    """Blocks texts with "rude" after `delay` seconds; records what it was asked."""

    def __init__(self, delay: float, timeout: float = 2.0, answer: str | None = None) -> None:
        super().__init__("judge", timeout)
        self.delay = delay
        self.answer = answer
        self.asked: list[tuple[str, bool]] = []

    async def _ask(self, text: str, final: bool) -> str | None:
        self.asked.append((text, final))
        await asyncio.sleep(self.delay)
        if self.answer is not None:
            return self.answer
        return "rude" if "rude" in text else None


async def test_an_external_judge_holds_frames_until_it_passes_their_text() -> None:
    judge = SlowJudge(0.05)
    gate, out = gate_for(Policy([judge]))
    gate.text("Hello ")
    gate.audio("f1")
    assert out == []  # its text is being judged
    gate.text("there, ")
    gate.text("friend")
    gate.audio("f2")
    await asyncio.sleep(0.08)
    assert out == ["f1"]  # "Hello " passed; the newest text is asked next, in one request
    await asyncio.sleep(0.08)
    assert out == ["f1", "f2"]
    assert judge.asked == [("Hello ", False), ("Hello there, friend", False)]
    assert await gate.finish() is None and judge.asked[-1] == ("Hello there, friend", True)


async def test_an_external_block_drops_the_rest_and_a_slow_judge_fails_closed() -> None:
    gate, out = gate_for(Policy([SlowJudge(0.01)]))
    gate.text("You are rude")
    gate.audio("f1")
    found = await gate.finish()
    assert found is not None and found.excerpt == "rude" and out == []

    gate, out = gate_for(Policy([SlowJudge(1.0, timeout=0.05)]))
    gate.text("Hello")
    gate.audio("f1")
    started = time.monotonic()
    found = await gate.finish()
    assert found is not None and "took longer than 0.05 s" in found.excerpt and out == []
    assert time.monotonic() - started < 0.5

    gate, out = gate_for(Policy([SlowJudge(0.0, answer="hold")]))
    gate.text("Hello")
    gate.audio("f1")
    found = await gate.finish()
    assert found is not None and found.excerpt == "held to the end of the reply" and out == []


async def test_a_disabled_policy_passes_everything_and_the_wait_is_measured() -> None:
    gate, out = gate_for(Policy([TermsRule("words", ["darn"])], enabled=False))
    gate.text("darn")
    gate.audio("f1")
    assert out == ["f1"] and await gate.finish() is None

    gate, out = gate_for(Policy([TermsRule("words", ["darn"])]))
    gate.text("Hello there")
    gate.audio("f1")
    assert gate.first_audio_wait is not None and gate.first_audio_wait < 0.001
    assert 0 < gate.judging_before_first_audio < 0.001
