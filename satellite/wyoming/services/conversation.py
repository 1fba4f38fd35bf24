"""Conversation (`handle`): `transcript{text, context}` -> `handled{text, context}` (or
`not-handled`); `context.conversation_id` keeps a multi-turn conversation with the model. The
server keeps at most MAX_CONVERSATIONS (`Conversations`), dropping idle ones after
`conversation_timeout`."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import Any

from wyoming.asr import Transcript
from wyoming.handle import Handled, NotHandled

from satellite.wyoming.services.common import BadRequest, Engine, Link, check_text
from satellite.wyoming.speech import LANGUAGES, Conversation, Finished, language_ok
from satellite.wyoming.workers import JobFailed, PoolFull

MAX_CONVERSATIONS = 8
"""Conversations kept at once (each holds its decoder cache: about 25 kB per position at
full size); the least recently used idle one is dropped for a new one."""


class Conversations:
    """The conversations the server keeps, by id, least recently used first."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._kept: OrderedDict[str, Conversation] = OrderedDict()

    def by_id(self) -> dict[str, Conversation]:
        """The conversations kept now."""
        return dict(self._kept)

    def get(self, key: str) -> Conversation:
        """The conversation `key`, new if it was not kept; idle ones past the timeout are
        forgotten, and the least recently used idle one when MAX_CONVERSATIONS are kept."""
        now = time.monotonic()
        for old in list(self._kept.values()):
            if not old.busy and now - old.last_used > self.timeout:
                del self._kept[old.key]
        conversation = self._kept.get(key)
        if conversation is None:
            idle = [c for c in self._kept.values() if not c.busy]
            while len(self._kept) >= MAX_CONVERSATIONS and idle:
                del self._kept[idle.pop(0).key]
            conversation = Conversation(key)
            self._kept[key] = conversation
        self._kept.move_to_end(key)
        conversation.last_used = now
        return conversation


class Conversing:
    """One connection's conversation requests (see the module docstring)."""

    def __init__(self, link: Link, engine: Engine, conversations: Conversations) -> None:
        self.link = link
        self.engine = engine
        self.conversations = conversations

    def on_transcript(self, request: Transcript) -> None:
        text = check_text(request.text, "transcript", self.engine.config.max_text)
        if not language_ok(request.language):
            raise BadRequest(
                f"transcript: language {request.language!r} is not supported; the model "
                f"speaks {', '.join(LANGUAGES)}",
                "unsupported-language",
            )
        context = request.context if isinstance(request.context, dict) else {}
        key = context.get("conversation_id")
        key = str(key) if key not in (None, "") else uuid.uuid4().hex
        conversation = self.conversations.get(key)
        if conversation.busy:
            raise BadRequest(f"conversation {key!r} is busy with another request", "busy")
        reply_context = {**context, "conversation_id": key}
        self.link.start(self._handle(conversation, text, reply_context), "transcript")

    async def _handle(self, conversation: Conversation, text: str, context: dict[str, Any]) -> None:
        def done() -> None:
            conversation.busy = False
            conversation.last_used = time.monotonic()

        conversation.busy = True
        try:
            job = self.engine.pool.submit(
                lambda engine, job: engine.converse(conversation, text, job), on_end=done
            )
        except PoolFull:
            conversation.busy = False
            raise
        reply = ""
        try:
            async with self.engine.deadline(job):
                async for item in job:
                    if isinstance(item, Finished):
                        reply = item.text
                    elif isinstance(item, JobFailed):
                        raise BadRequest(f"the conversation failed: {item.error}", "failed")
        finally:
            job.cancel()
        if reply:
            await self.link.send(Handled(text=reply, context=context).event())
        else:
            await self.link.send(
                NotHandled(text="The model gave no answer.", context=context).event()
            )
