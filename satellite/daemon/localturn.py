"""The local model's side of the satellite: the reply to a user's utterance, generated and
played as it comes (`respond`), what device control says and the answer to its confirmation
question (`act_on`, `hear_answer`), text spoken with the model's voice (`say`), and the turn
reports. The daemon's state machine moves through `step`: `Speak` when something is about to
be said, `Spoken` when it has been, then `ListenAgain` when the satellite should hear more
without the wake word: a confirmation's answer, or a follow-up to a reply that asked something
(`satellite.continue_conversation`; see `satellite.daemon.machine`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from wyoming.snd import Played

from satellite import events
from satellite.audio.backends import AudioBackend
from satellite.audio.convert import pcm_to_float, resample
from satellite.audio.endpoint import UtteranceEnded
from satellite.audio.pacing import Pacer
from satellite.audio.player import Generated, Item, ReplyPlayer, TextProgress
from satellite.audio.sounds import Sound
from satellite.daemon import machine
from satellite.daemon.homeassistant import Send
from satellite.daemon.playback import Playback
from satellite.daemon.report import turn_report
from satellite.devices.control import DeviceController
from satellite.engine import costmodel
from satellite.events import TurnReport
from satellite.logs import ms
from satellite.reply import ReplyAudio, ReplyDone, ReplyText, Responder
from satellite.safety.audio import AudioCheck
from satellite.safety.gate import SpeechGate
from satellite.safety.policy import Policy
from satellite.safety.rules import Finding
from satellite.telemetry.stats import InterarrivalJitter

_LOG = logging.getLogger("satellite.daemon")

SLOW_START_SECONDS = 0.1
"""A reply held longer than this before playing is logged with the engine's rate."""


class LocalTurns:
    """See the module docstring. `responder` is set once the model has loaded."""

    def __init__(
        self,
        playback: Playback,
        pacer: Pacer,
        *,
        step: Callable[[machine.Event], None],
        notify: Callable[[events.DaemonEvent], None],
        send: Send,
        voice: Callable[[], str],
        audio_check: AudioCheck,
        policy: Policy,
        done_sound: Sound | None,
        max_reply_seconds: float,
        playback_jitter: InterarrivalJitter,
        continue_conversation: str = "question",
        refusal: str = "",
    ) -> None:
        self.playback = playback
        self.backend: AudioBackend = playback.backend
        self.pacer = pacer
        self.step = step
        self.notify = notify
        self.send = send
        self.voice = voice
        """The current voice (a live control)."""
        self.audio_check = audio_check
        self.policy = policy
        """The safety rules a reply's text must pass before its audio plays."""
        self.refusal = refusal
        """Said instead of a reply a rule stopped (empty: nothing)."""
        self.done_sound = done_sound
        self.max_reply_seconds = max_reply_seconds
        self.playback_jitter = playback_jitter
        self.continue_conversation = continue_conversation
        """`question`, `always` or `never`: when a reply is followed up without the wake word."""
        self.responder: Responder | None = None
        self.devices: DeviceController | None = None
        """Device control from the replies (with an allowlist and MQTT)."""
        self.turns: list[TurnReport] = []
        """Local turns that finished (interrupted ones are counted in `interrupted`)."""
        self.interrupted = 0
        self.task: asyncio.Task[None] | None = None
        """The turn in progress (a reply, or the answer to a confirmation)."""
        self.wake_word = ""
        """The wake word that opened the turn (for its report)."""
        self._reply_cancel: Callable[[], None] | None = None
        self._speculating = False
        """Speculative work on the utterance (a pause) is in the engine's worker."""
        self._slow_told = False

    # -- from the daemon ------------------------------------------------------------------

    def speculate(self, pcm: bytes) -> None:
        """The user paused: start the model's work on the utterance so far."""
        if self.responder is not None:
            self.responder.speculate(pcm_to_float(pcm, 2, 1))
            self._speculating = True

    def respond(self, ended: UtteranceEnded, decided: float) -> None:
        """Start the reply to the utterance whose end was decided at `decided`."""
        speculated = self._speculating and ended.reason == "silence"
        if not speculated:
            self.drop_speculation()
        self._speculating = False
        self.task = asyncio.create_task(self._respond(ended, decided, speculated))

    def hear_answer(self, ended: UtteranceEnded | None) -> None:
        """Act on the answer to a confirmation question (None: none came in time)."""
        self.task = asyncio.create_task(self._answered(ended))

    def interrupt(self) -> None:
        """Stop the reply being generated and the turn's task; drop speculation."""
        self.drop_speculation()
        self.cancel_reply()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def cancel_reply(self) -> None:
        if self._reply_cancel is not None:
            self._reply_cancel()

    async def answer(
        self, samples: np.ndarray, reason: str = "silence", pause: float | None = None
    ) -> TurnReport:
        """Run one local turn on 16 kHz float32 speech, as if the endpointer had just closed
        it (benchmarks drive the reply path through this). With `pause`, as if the user had
        paused that many seconds before the end was decided: speculative work starts on
        `samples` first, as `vad.speculative` does."""
        pcm = np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()
        ended = UtteranceEnded(reason, 0.0, 0.0, len(pcm) / 2 / 16000, pcm)  # type: ignore[arg-type]
        self.wake_word = self.wake_word or "api"
        speculated = pause is not None and self.responder is not None
        if speculated:
            assert self.responder is not None and pause is not None
            self.responder.speculate(pcm_to_float(pcm, 2, 1))
            await asyncio.sleep(pause)
        self.step(machine.Speak())
        self.task = asyncio.create_task(self._respond(ended, time.monotonic(), speculated))
        await self.task
        return self.turns[-1]

    def drop_speculation(self) -> None:
        if self._speculating and self.responder is not None:
            self.responder.abandon()
        self._speculating = False

    async def _respond(
        self, ended: UtteranceEnded, decided: float, speculated: bool = False
    ) -> None:
        assert self.responder is not None
        samples = pcm_to_float(ended.audio, 2, 1)
        reply = self.responder.reply(samples, speculated=speculated)
        self._reply_cancel = reply.cancel
        done: ReplyDone | None = None
        queue: asyncio.Queue[Item] = asyncio.Queue()
        if self.done_sound is not None:
            queue.put_nowait(self._sound_at_output(self.done_sound))
        playback = self._start_player("reply", queue, reply.chunk_seconds)
        self.audio_check.start_reply(self.voice())  # fingerprinted against the voice's history
        self.policy.reload_if_changed()
        gate: SpeechGate[np.ndarray] = SpeechGate(
            self.policy, lambda audio: queue.put_nowait(Generated(self.audio_check.inspect(audio)))
        )

        def stopped(found: Finding) -> None:
            reply.cancel()
            self.playback.stop()
            self._blocked(found, "reply")

        gate.on_block = stopped
        said = ""
        try:
            async for event in reply:
                if isinstance(event, ReplyAudio):
                    gate.audio(event.samples)
                elif isinstance(event, ReplyText):
                    if gate.blocked is not None:
                        continue  # what the worker wrote before the cancel reached it
                    said += event.text
                    queue.put_nowait(TextProgress(len(said), event.complete))
                    gate.text(event.text, event.complete)
                    if event.text and gate.blocked is None:
                        self.notify(events.ReplyText(text=event.text))
                elif isinstance(event, ReplyDone):
                    done = event
            blocked = await gate.finish()
            queue.put_nowait(None)
            await asyncio.wait([playback])  # an announcement may have replaced it
        except asyncio.CancelledError:
            reply.cancel()
            gate.cancel()
            self.interrupted += 1
            self.notify(events.TurnInterrupted())
            raise
        finally:
            self._reply_cancel = None
            self.step(machine.Spoken())
        assert done is not None
        wait = None if gate.first_audio_wait is None else (
            gate.first_audio_wait + gate.judging_before_first_audio
        )  # fmt: skip
        self._finish_turn(ended, decided, playback, done, blocked, said if blocked else None, wait)
        if blocked is not None:
            await self._refuse()
        elif done.error is None:
            listening = await self.act_on(done.text)
            if not listening and self.follows_up(done.text):
                self.step(machine.ListenAgain("follow_up"))

    def _blocked(self, found: Finding, what: str) -> None:
        _LOG.warning("safety: the %s was stopped by rule %r: %r", what, found.rule, found.excerpt)
        self.notify(events.ReplyBlocked(rule=found.rule, excerpt=found.excerpt, what=what))

    async def _refuse(self) -> None:
        """The refusal, said in the satellite's voice after a stopped reply."""
        if not self.refusal:
            return
        self.step(machine.Speak())
        try:
            await self.say(self.refusal, screened=False)
        finally:
            self.step(machine.Spoken())

    def follows_up(self, reply: str) -> bool:
        """Whether the reply `reply` is followed up without the wake word."""
        if self.continue_conversation == "always":
            return True
        return self.continue_conversation == "question" and reply.rstrip().endswith("?")

    # -- device control -----------------------------------------------------------------

    async def act_on(self, text: str) -> bool:
        """The tool calls in a reply's text: each is sent, refused or held for a spoken yes
        (see `satellite.devices.control`), and the outcome is said. With one held, the satellite
        listens for the answer without a wake word (then True)."""
        devices = self.devices
        if devices is None:
            return False
        self.step(machine.Speak())
        try:
            for outcome in devices.handle(text):
                _LOG.info("device control: %s (%s)", outcome.kind, outcome.reason or outcome.say)
                await self.say(outcome.say)
        finally:
            self.step(machine.Spoken())
        if not devices.waiting:
            return False
        self.step(machine.ListenAgain("confirmation"))
        return True

    async def _answered(self, ended: UtteranceEnded | None) -> None:
        """The user's answer to a confirmation question (None: none came in time)."""
        assert self.responder is not None and self.devices is not None
        text = ""
        if ended is not None:
            heard = self.responder.transcribe(pcm_to_float(ended.audio, 2, 1))
            async for _ in heard:
                pass
            text = heard.done.text if heard.done is not None else ""
        _LOG.info("confirmation answer: %r", text)
        self.notify(events.ConfirmationHeard(transcript=text))
        self.step(machine.Speak())
        try:
            for outcome in self.devices.confirm(text):
                await self.say(outcome.say)
        finally:
            self.step(machine.Spoken())

    async def say(self, text: str, screened: bool = True) -> None:
        """Speak `text` with the model's text to speech (the current voice), streamed; with
        `screened`, only if it passes the safety rules (the owner's refusal is not judged)."""
        if not text or self.responder is None:
            return
        self.policy.reload_if_changed()
        found = await self.policy.check(text) if screened and self.policy.enabled else None
        if found is not None:
            self.policy.count(found)
            self._blocked(found, "speech")
            return
        _LOG.info("saying: %r", text)
        self.notify(events.Said(text=text))
        reply = self.responder.speak(text, self.voice())
        self._reply_cancel = reply.cancel
        queue: asyncio.Queue[Item] = asyncio.Queue()
        queue.put_nowait(TextProgress(len(text), complete=True))
        playback = self._start_player("speech", queue)
        self.audio_check.start_reply()  # its own audio: nothing the reply before muted
        try:
            async for event in reply:
                if isinstance(event, ReplyAudio):
                    queue.put_nowait(Generated(self.audio_check.inspect(event.samples)))
            queue.put_nowait(None)
            await asyncio.wait([playback])
        except asyncio.CancelledError:
            reply.cancel()
            raise
        finally:
            self._reply_cancel = None

    def _finish_turn(
        self,
        ended: UtteranceEnded,
        decided: float,
        playback: asyncio.Task[Any],
        done: ReplyDone,
        blocked: Finding | None = None,
        said: str | None = None,
        safety_wait: float | None = None,
    ) -> None:
        verdict = self.audio_check.finish_reply()
        problems = tuple(self.audio_check.reply_problems())
        if problems:
            _LOG.warning("generated audio fixed before playback: %s", "; ".join(problems))
        played = _result(playback)
        report = turn_report(
            self.wake_word,
            ended,
            decided,
            time.monotonic(),
            played,
            done,
            blocked,
            problems,
            said,
            safety_wait,
            None if verdict is None else verdict.distance,
        )
        self.turns.append(report)
        if done.error:
            _LOG.error("the local model failed on this turn: %s", done.error)
            self.notify(events.Failure(where="engine", message=done.error))
        _LOG.info(
            "reply: %r (%s); %.2f s of audio, first audio after %s (engine %s)",
            report.reply_text,
            report.reply_reason,
            done.audio_seconds,
            ms(report.time_to_first_audio),
            ms(report.engine_first_audio),
        )
        if report.underruns:
            _LOG.warning(
                "the reply broke up %d time(s) while playing (underruns)", report.underruns
            )
        delay, rtf = report.start_delay, report.generation_rtf
        if delay and delay > SLOW_START_SECONDS and rtf is not None:
            _LOG.info("the reply waited %s before playing: the model made its audio at %.2fx "
                      "real time on this machine", ms(delay), rtf)  # fmt: skip
        if rtf is not None and rtf > 1.0 and not self._slow_told:
            self._slow_told = True
            variant = self.responder.model.manifest.variant if self.responder else None
            _LOG.warning("measured: %s", costmodel.advice(rtf, variant, measured=True))
        self.send(Played().event())
        self.notify(events.TurnFinished(report=report))

    def _sound_at_output(self, sound: Sound) -> np.ndarray:
        rate = self.responder.sample_rate if self.responder is not None else sound.rate
        return resample(sound.samples, sound.rate, rate)

    def _start_player(
        self, kind: str, queue: asyncio.Queue[Item], chunk: float = 0.0
    ) -> asyncio.Task[Any]:
        """Play generated audio from `queue`, which comes in chunks of up to `chunk` seconds
        (see `satellite.audio.player`)."""
        assert self.responder is not None
        player = ReplyPlayer(
            self.backend,
            self.responder.sample_rate,
            self.pacer,
            at_most=self.max_reply_seconds,
            chunk=chunk,
            jitter=self.playback_jitter,
        )
        return self.playback.start(kind, player.run(queue))


def _result(task: asyncio.Task[Any]) -> Any:
    """What a finished task returned (None: it was cancelled or failed)."""
    if not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()
