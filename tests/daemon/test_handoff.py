"""The worker-to-loop handoff (`satellite.handoff`) that the satellite's reply and the Wyoming
services' jobs share: items in order from a real thread, the end of the stream, cancel, and a
worker that outlives its event loop."""

from __future__ import annotations

import asyncio
import threading

from satellite.handoff import Handoff
from satellite.reply import Reply, ReplyDone, ReplyText


async def test_items_from_a_thread_arrive_in_order_until_finish() -> None:
    handoff: Handoff[int] = Handoff()

    def work() -> None:
        for i in range(100):
            if handoff.cancelled:
                return
            handoff.post(i)
        handoff.finish()

    thread = threading.Thread(target=work)
    thread.start()
    got = [i async for i in handoff]
    thread.join(5)
    assert got == list(range(100)) and handoff.finished
    assert [i async for i in handoff] == [], "a finished stream stays finished"


async def test_cancel_stops_the_worker_before_its_next_step() -> None:
    handoff: Handoff[int] = Handoff()
    steps = 0
    go_on = threading.Event()

    def work() -> None:
        nonlocal steps
        while not handoff.cancelled and steps < 1000:
            steps += 1
            handoff.post(steps)
            go_on.wait(1)
        handoff.finish()

    thread = threading.Thread(target=work)
    thread.start()
    async for item in handoff:
        assert item == 1
        handoff.cancel()
        go_on.set()
    thread.join(5)
    assert steps == 1 and handoff.cancelled and not thread.is_alive()


def test_a_worker_that_outlives_its_loop_is_cancelled_not_crashed() -> None:
    """The daemon stopping while a reply is still being generated: its loop is closed, the
    worker's next post cancels the work instead of raising in the thread."""
    loop = asyncio.new_event_loop()
    reply = loop.run_until_complete(_reply())
    loop.close()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            reply.post(ReplyText("late", 0.0))
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(5)
    assert errors == [] and reply.cancelled


async def _reply() -> Reply:
    return Reply(0.0)


async def test_a_reply_ends_at_its_done_event() -> None:
    reply = Reply(0.0)
    done = ReplyDone(reason="end_of_turn", text="hi", frames=0, skipped=0, audio_seconds=0.0,
                     requested=0.0, engine_start=0.0, engine_first_audio=None,
                     engine_seconds=0.0)  # fmt: skip
    reply.post(ReplyText("hi", 0.0))
    reply.post(done)
    reply.post(ReplyText("after the end", 0.0))
    got = [event async for event in reply]
    assert got == [ReplyText("hi", 0.0), done] and reply.done is done
    assert [event async for event in reply] == []
