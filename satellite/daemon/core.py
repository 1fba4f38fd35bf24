"""The satellite daemon: audio, wake word, endpointing, the local model and Home Assistant, on
one asyncio loop.

The turn's state lives in `satellite.daemon.machine` (states, events, the one transition
function); `Daemon._step` is the one place a state changes and `Daemon._perform` the one place
its actions are done. Around it: what plays (`playback`), timers (`timers`), the audio
exchanged with Home Assistant's pipeline (`homeassistant`), the turn's report (`report`) and
the news observers get (`events`).

Every capture chunk goes through `Daemon.on_chunk` (quick and synchronous: the wake-word model
and the VAD take well under a millisecond per 20 ms chunk):

- **idle**: the wake word starts a turn. The `awake` sound plays, Home Assistant (when
  connected) gets `detection`, and the endpointer looks for an utterance from there on.
- **listening** (`local` mode): the endpointer's `UtteranceEnded` hands the utterance (preroll
  included) to the `Responder`; its audio is played block by block as it is generated
  (**responding**). Home Assistant sees `voice-started`, `voice-stopped` and, once the reply
  has been played, `played`.
- **streaming** (`ha` mode): `run-pipeline` (asr -> tts) and the live mic audio go to Home
  Assistant until the local endpointer hears the end of speech (`audio-stop`), or Home
  Assistant says it has heard enough (`voice-stopped`, `transcript`, `error`). Its reply comes
  back as `audio-start/chunk/stop` and is played, then `played` is sent.
- **confirming**: a device action waits for a spoken yes (`satellite.devices.control`); the
  answer is heard without a wake word. A reply that asks something (or every reply, by
  `satellite.continue_conversation`) is followed up the same way, in **listening**: the
  listening tone plays and speech within `satellite.follow_up_seconds` is the next turn of
  the same conversation.
- Announcements (`audio-start/chunk/stop` outside a turn) are played the same way; `timer-*`
  events keep a list of timers, and a finished one rings until the wake word is heard, Home
  Assistant cancels it, or `audio.timer_ring_seconds` pass.

Barge-in: while anything plays, the wake word stops it (and a reply being generated) and starts
a new turn; a ringing timer is only silenced. With `audio.barge_in: false` the wake-word model
gets no audio while the satellite plays (the mic is gated). The stop word (`wake.stop_model`)
hears the mic, gated or not, whenever something can be stopped outside a turn's listening
(a reply on its way or playing, sound playing, a timer ringing): it ends that and starts
nothing.

Without speech `vad.no_speech_seconds` after the wake word, the turn is dropped. In `ha` mode a
wake word while Home Assistant is not connected, or has paused the satellite, is logged and
ignored. A `file` audio source that ends stops the daemon once the turn in progress is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import resource
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from wyoming.asr import Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Info
from wyoming.satellite import PauseSatellite, RunSatellite
from wyoming.tts import Synthesize
from wyoming.vad import VoiceStarted, VoiceStopped
from wyoming.wake import Detection

from satellite import events
from satellite.audio.backends import AudioBackend, Int16Array, open_backend
from satellite.audio.bargein import VoiceBargeIn
from satellite.audio.convert import StreamResampler, float_to_pcm16
from satellite.audio.echo import EchoCanceller
from satellite.audio.endpoint import (
    Endpointer,
    PauseEnded,
    PauseStarted,
    SpeechStarted,
    UtteranceEnded,
)
from satellite.audio.noise import NoiseGain
from satellite.audio.ownvoice import STOP_SETTLE_SECONDS, OwnWakeWord
from satellite.audio.pacing import Pacer
from satellite.audio.sounds import chime, listen_tone, load_sound
from satellite.audio.wake import Detection as WakeDetection
from satellite.audio.wake import WakeWordDetector
from satellite.controls import Controls, ControlStore, default_state_file
from satellite.daemon import machine
from satellite.daemon.homeassistant import IncomingPlayer, PipelineStream
from satellite.daemon.localturn import LocalTurns
from satellite.daemon.machine import Action, State
from satellite.daemon.playback import Playback
from satellite.daemon.timers import Timer, TimerBell
from satellite.devices.control import DeviceController, Entity, load_allowlist, tool_list
from satellite.engine import costmodel
from satellite.engine.framebatch import BATCH_FRAMES
from satellite.engine.template import INTERLEAVED_PROMPT
from satellite.events import Observer, TurnReport
from satellite.mqtt.bridge import MqttBridge
from satellite.reply import Responder
from satellite.safety.audio import AudioCheck
from satellite.safety.policy import build_policy
from satellite.settings import Settings, WakeSettings
from satellite.telemetry.stats import InterarrivalJitter
from satellite.wyoming.announce import Announcer
from satellite.wyoming.info import MIC_FORMAT, SatelliteDescription, satellite_info
from satellite.wyoming.satellite_server import SatelliteServer
from satellite.wyoming.services.server import ServicesServer, start_services

_LOG = logging.getLogger("satellite.daemon")

CAPTURE_STALL_SECONDS = 3.0
"""No capture chunk for this long: the audio loop is unhealthy."""
ENGINE_STALL_SECONDS = 120.0
"""One turn in the engine's worker for longer than this: the engine is unhealthy."""
CAPTURE_GAP_SECONDS = 0.2
"""A gap between capture chunks longer than this (they come every 20-60 ms) means the capture
stalled or was reopened: the barge-in-by-voice detector learns the echo's residue anew."""
VOICE_LEVEL_UTTERANCES = 10
"""Utterances over which the health report's speech level is taken."""


class Daemon:
    """See the module docstring. `run()` until `stop()`; or `start()` / `close()` around your
    own use (tests, the demo)."""

    def __init__(
        self,
        settings: Settings,
        *,
        backend: AudioBackend | None = None,
        responder: Responder | None = None,
        model: str | None = None,
    ) -> None:
        """`model`: a model directory or catalog name over the settings' `model` section."""
        self.settings = settings
        self.model_spec = model
        state_file = settings.satellite.state_file
        self.store = ControlStore(
            Path(state_file).expanduser() if state_file else default_state_file()
        )
        self.controls = self.store.load(Controls.from_settings(settings))
        self.mode = self.controls.mode
        self.backend = backend or open_backend(settings.audio)
        self.backend.volume = self.controls.volume
        self.echo: EchoCanceller | None = None
        """The echo canceller on the capture (`audio.echo_cancellation`; made at `start`,
        once the backend knows its latencies)."""
        audio = settings.audio
        self.noise = (
            NoiseGain(audio.noise_suppression, audio.auto_gain)
            if audio.noise_suppression or audio.auto_gain
            else None
        )
        """Noise suppression and automatic gain on the capture, after the echo canceller
        (`audio.noise_suppression`, `audio.auto_gain`; None when both are off)."""
        self.wake_noise = (
            NoiseGain(audio.noise_suppression, audio.auto_gain)
            if self.noise is not None and audio.echo_cancellation
            else None
        )
        """The same on the echo canceller's linear output, which the wake word hears."""
        self.own_wake: OwnWakeWord | None = None
        """Hears the wake word in what the satellite plays (with the echo canceller)."""
        self.own_wake_words = 0
        """Wake and stop words heard in the capture and taken for the satellite's own voice."""
        self.voice_levels: deque[float] = deque(maxlen=VOICE_LEVEL_UTTERANCES)
        """The voice levels (dBFS) of the latest utterances the satellite took as the user's
        (in a listening state): the health report's speech level is their median."""
        self.voice_barge_in = VoiceBargeIn() if audio.barge_in == "voice" else None
        """Listens for the user's voice over what plays (`audio.barge_in: voice`)."""
        self._voice_hearing = False
        self.wake = WakeWordDetector(self._wake_settings(self.controls))
        wake = settings.wake
        stop = dataclasses.replace(wake, model=wake.stop_model, sensitivity=wake.stop_sensitivity)
        self.stop_word = WakeWordDetector(stop, "wake.stop_model") if wake.stop_model else None
        """The stop word's detector (None: `wake.stop_model` is ""), on AEC3's output."""
        self.stop_word_linear = (
            WakeWordDetector(stop, "wake.stop_model")
            if wake.stop_model and audio.echo_cancellation
            else None
        )
        """The same on the linear canceller's output: each hears "stop" over the satellite's
        voice in rooms where the other misses it (`lfm-satellite bench echo`)."""
        self.own_stop: OwnWakeWord | None = None
        """Hears the stop word in what the satellite plays (with the echo canceller)."""
        self._stop_hearing = False
        """The stop-word detector had the last chunk (it starts afresh on each busy spell)."""
        self.endpointer = Endpointer(settings.vad)
        self.server = SatelliteServer(
            settings.wyoming.satellite_host,
            settings.wyoming.satellite_port,
            self.info,
            self,
        )
        self.announcer: Announcer | None = None
        self.mqtt: MqttBridge | None = None
        self.services: ServicesServer | None = None
        """Wyoming STT/TTS/conversation on the same model (`wyoming.services_enabled`)."""
        audio = settings.audio
        control = settings.device_control
        self.allowlist: dict[str, Entity] | None = None
        if control.enabled and control.allowlist_file:
            self.allowlist = load_allowlist(Path(control.allowlist_file).expanduser())
        safety = settings.safety
        self.policy = build_policy(safety.blocked_terms, safety.policy_file, safety.text_filter)
        """The rules replies and spoken texts must pass (`satellite.safety.policy`)."""
        self.audio_check = AudioCheck(24_000, safety.audio_integrity, safety.audio_action)
        self.awake_sound = load_sound(audio.awake_sound, "audio.awake_sound")
        self.done_sound = load_sound(audio.done_sound, "audio.done_sound")
        self.listen_sound = load_sound(audio.listen_sound, "audio.listen_sound") or listen_tone()
        self.timer_sound = load_sound(audio.timer_sound, "audio.timer_sound") or chime()
        self.state: State = "idle"
        """Set only by `_step` (see `satellite.daemon.machine`)."""
        self.playback = Playback(self.backend)
        self.bell = TimerBell(
            self.playback, self.timer_sound, audio.timer_ring_seconds, self._notify
        )
        self.incoming = IncomingPlayer(self.playback, self.server.send, self._notify)
        """What Home Assistant streams to be played."""
        self.pipeline = PipelineStream(self.server.send)
        """The microphone streamed to Home Assistant's pipeline (`ha` mode)."""
        self._observers: list[Observer] = []
        self._stop = asyncio.Event()
        self._input_ended = False
        self._capture: asyncio.Task[None] | None = None
        self._turn_audio = 0
        """Capture samples since the wake word (the no-speech timeout counts audio time)."""
        self._speech_started = False
        self._wait = (settings.vad.no_speech_seconds, "wake word")
        """How long the turn being listened to waits for speech to start, and after what."""
        self._speculate_on = settings.vad.speculative
        self.last_chunk = 0.0
        """`time.monotonic()` of the last capture chunk."""
        self.chunks = 0
        self.started = time.monotonic()
        self.input_jitter = InterarrivalJitter(self.backend.input_rate)
        """RFC 3550 jitter of capture chunks: their sample clock against their arrival."""
        self.playback_jitter = InterarrivalJitter(24_000)
        """RFC 3550 jitter of reply audio reaching the speaker, early blocks counted as on
        time (only lateness, the cause of gaps, counts)."""
        self.pacer = Pacer()
        """When replies start playing (it learns the engine's rate over the turns)."""
        self.local = LocalTurns(
            self.playback,
            self.pacer,
            step=self._step,
            notify=self._notify,
            send=self.server.send,
            voice=lambda: self.controls.voice,
            audio_check=self.audio_check,
            policy=self.policy,
            done_sound=self.done_sound,
            max_reply_seconds=settings.safety.max_reply_seconds,
            playback_jitter=self.playback_jitter,
            continue_conversation=settings.satellite.continue_conversation,
            refusal=safety.refusal,
        )
        """The local model's turns (replies, device control's speech, confirmations)."""
        self.local.responder = responder
        self.expected_rtf: float | None = None
        """The real-time factor this machine is expected to reach (`engine.costmodel`)."""
        rate = self.backend.input_rate
        self._mic_resampler = (
            None if rate == MIC_FORMAT.rate else StreamResampler(rate, MIC_FORMAT.rate)
        )

    # -- the state machine ------------------------------------------------------------------

    def _step(self, event: machine.Event, cause: Any = None) -> None:
        """The one place the state changes: the machine's step for `event`, its actions done
        in order (`cause`: what the actions need, e.g. the wake-word detection)."""
        step = machine.transition(self.state, event)
        if step is None:
            return
        for action in step.leaving:
            self._perform(action, cause)
        if step.state != self.state:
            _LOG.debug("state %s -> %s on %s", self.state, step.state, type(event).__name__)
        self.state = step.state
        for action in step.entering:
            self._perform(action, cause)

    def _perform(self, action: Action, cause: Any) -> None:
        if action is Action.INTERRUPT:
            self._interrupt()
        elif action is Action.BARGE_IN:
            _LOG.info("wake word: barge-in, stopping the %s", self._busy_with())
            self._interrupt()
        elif action is Action.BARGE_IN_BY_VOICE:
            stopped = self._busy_with()
            margin = self.voice_barge_in.margin_db if self.voice_barge_in else 0.0
            _LOG.info("the user spoke over the %s (%.0f dB over what is left of its echo): "
                      "barge-in", stopped, margin)  # fmt: skip
            self._wait = (self.settings.vad.no_speech_seconds, "barge-in by voice")
            self._notify(events.VoiceBargedIn(stopped=stopped))
            self._interrupt()
        elif action is Action.SILENCE_TIMER:
            _LOG.info("silencing the timer")
            self.bell.silence()
        elif action is Action.STOP:
            _LOG.info("stop word: stopping the %s", self._busy_with())
            self._interrupt()
        elif action is Action.IGNORE_WAKE:
            _LOG.warning(
                "wake word heard, but Home Assistant is not connected; nothing to stream to "
                "(satellite.mode: local answers with the local model)"
            )
        elif action is Action.GREET:
            self._greet(cause)
        elif action is Action.OPEN_TURN:
            self._turn_audio = 0
            self._speech_started = False
            # after the wake word, what came before it is dropped; after the user's voice
            # over a reply, what they have said so far is their question's start
            self.endpointer.restart(keep_recent=isinstance(cause, machine.VoiceOver))
        elif action is Action.RUN_PIPELINE:
            self.pipeline.start(self.local.wake_word)
            if isinstance(cause, machine.VoiceOver):
                # the user's first words came before the barge-in fired (OPEN_TURN kept them)
                self.pipeline.chunk(self.endpointer.recent_audio())
        elif action is Action.STOP_STREAM:
            self.pipeline.stop()
        elif action is Action.VOICE_STOPPED:
            self.server.send(VoiceStopped().event())
        elif action is Action.RESPOND:
            ended, decided = cause
            self.local.respond(ended, decided)
        elif action is Action.INVITE_ANSWER:
            self._invite("confirmation", self.settings.device_control.confirm_seconds)
        elif action is Action.INVITE_FOLLOW_UP:
            self._invite("follow_up", self.settings.satellite.follow_up_seconds)
        elif action is Action.HEAR_ANSWER:
            self.local.hear_answer(cause[0] if cause is not None else None)

    def _interrupt(self) -> None:
        """Stop the reply being generated, the turn's task and whatever plays."""
        self.local.interrupt()
        self.playback.stop()

    def _invite(self, purpose: str, seconds: float) -> None:
        """Listen again without the wake word, `seconds` for speech to start."""
        self._wait = (seconds, "question" if purpose == "confirmation" else "reply")
        _LOG.info("listening %.0f s without the wake word (%s)", seconds, purpose)
        self._notify(events.ListeningAgain(purpose=purpose, seconds=seconds))
        self.playback.play_sound(self.listen_sound)

    def _greet(self, detection: WakeDetection) -> None:
        self._wait = (self.settings.vad.no_speech_seconds, "wake word")
        self.local.wake_word = detection.model
        _LOG.info("wake word %r (p=%.2f)", detection.wake_word, detection.probability)
        self._notify(events.WakeWordHeard(detection.model, detection.probability))
        millis = int(detection.seconds * 1000)
        self.server.send(Detection(name=detection.model, timestamp=millis).event())
        if self.awake_sound is not None:
            self.playback.play_sound(self.awake_sound)

    # -- live controls ----------------------------------------------------------------------

    def _wake_settings(self, controls: Controls) -> WakeSettings:
        return dataclasses.replace(
            self.settings.wake, model=controls.wake_word, sensitivity=controls.sensitivity
        )

    def set_control(self, name: str, value: Any, source: str = "mqtt") -> Controls:
        """Change one live control (ControlError for a bad value), apply it now, save it.
        `source` says who muted or unmuted (see `Controls.muted_by`)."""
        old = self.controls
        new = old.set(name, value)
        if name == "muted" and new.muted != old.muted:
            new = new.set("muted_by", source if new.muted else "")
        if new == old:
            return new
        if new.wake_word != old.wake_word:
            detector = WakeWordDetector(self._wake_settings(new))
            self.wake.close()
            self.wake = detector
            if self.own_wake is not None:
                self.own_wake.close()
                self.own_wake = OwnWakeWord(self._wake_settings(new))
        elif new.sensitivity != old.sensitivity:
            self.wake.set_sensitivity(new.sensitivity)
        if new.mode != old.mode or (new.muted and not old.muted):
            self._step(machine.ChangeCourse(playing=self.playing))
        self.mode = new.mode
        self.backend.volume = new.volume
        self.controls = new
        self.store.save(new)
        _LOG.info("%s set to %r", name, getattr(new, name))
        self._notify(events.ControlChanged(name=name, value=getattr(new, name)))
        return new

    def restart_pipeline(self) -> None:
        """Start listening afresh: stop any turn, playback and ringing; forget the
        conversation and the detectors' state."""
        _LOG.info("restarting the pipeline")
        self._step(machine.ChangeCourse(playing=self.playing, force=True))
        self.bell.silence()
        self.wake.reset()
        for stop_word in (self.stop_word, self.stop_word_linear):
            if stop_word is not None:
                stop_word.reset()
        self.endpointer.reset()
        if self.responder is not None:
            self.responder.reset()
        self._notify(events.PipelineRestarted())

    # -- observers --------------------------------------------------------------------------

    def observe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def _notify(self, event: events.DaemonEvent) -> None:
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                _LOG.exception("observer failed on %s", event.kind)

    # -- life cycle -------------------------------------------------------------------------

    @property
    def system_prompt(self) -> str | None:
        """The conversation's system prompt: the interleaved one, plus the tools when the
        model may control devices."""
        if not self.allowlist:
            return None
        return f"{INTERLEAVED_PROMPT}\n{tool_list(self.allowlist)}"

    @property
    def model_name(self) -> str:
        """`name (variant)` of the loaded model, or `not loaded`."""
        if self.responder is None:
            return "not loaded"
        manifest = self.responder.model.manifest
        return f"{manifest.name} ({manifest.variant})"

    @property
    def responder(self) -> Responder | None:
        """The local model (None until `start` has loaded it, unless one was given)."""
        return self.local.responder

    @property
    def devices(self) -> DeviceController | None:
        """Device control from the model's replies (with an allowlist; commands go out over
        MQTT, which the config requires with it)."""
        return self.local.devices

    @property
    def turns(self) -> list[TurnReport]:
        """Local turns that finished (interrupted ones are counted in `interrupted`)."""
        return self.local.turns

    @property
    def interrupted(self) -> int:
        return self.local.interrupted

    @property
    def timers(self) -> dict[str, Timer]:
        """The timers Home Assistant keeps on this satellite, by id."""
        return self.bell.timers

    @property
    def most_queued_seconds(self) -> float:
        """The most audio a stream from Home Assistant held at once."""
        return self.incoming.most_queued_seconds

    def info(self) -> Info:
        s = self.settings
        return satellite_info(
            SatelliteDescription(
                name=s.satellite.name,
                area=s.satellite.area,
                wake_model=self.wake.model_id,
                wake_phrase=self.wake.wake_word,
                mode=self.mode,
            )
        )

    def health(self) -> str | None:
        """None while the audio and engine loops are healthy, else what is wrong (for the
        service watchdog and the health report)."""
        now = time.monotonic()
        if self._capture is None:
            return "audio capture has not started"
        if self._capture.done() and not self._input_ended:
            return "audio capture stopped"
        if not self._input_ended and now - self.last_chunk > CAPTURE_STALL_SECONDS:
            return f"no audio from the microphone for {now - self.last_chunk:.0f} s"
        silent = self.backend.output_silent_seconds
        if silent:
            return f"the audio output has taken nothing for {silent:.0f} s (reopening it)"
        busy = None if self.responder is None else self.responder.busy_since
        if busy is not None and now - busy > ENGINE_STALL_SECONDS:
            return f"the engine has been on one turn for {now - busy:.0f} s"
        return None

    def counters(self) -> dict[str, Any]:
        """Audio and connection counters for the health report."""
        stats = self.backend.stats()
        return {
            "mode": self.mode,
            "muted": self.controls.muted,
            "state": self.state,
            "chunks": stats.chunks,
            "overflows": stats.overflows,
            "underruns": stats.underruns,
            "output_lost_s": round(stats.lost / self.backend.output_rate, 3),
            "audio_restarts": stats.restarts,
            "playback_queued_s": round(self.backend.queued / self.backend.output_rate, 3),
            "audio_fixed": {
                "invalid_samples": self.audio_check.total.invalid,
                "clipped_samples": self.audio_check.total.clipped,
                "silence_runs": self.audio_check.total.silence_runs,
                "integrity_failures": sum(self.audio_check.counts().values()),
                "integrity_failures_by_detector": self.audio_check.counts(),
                "silenced_s": round(self.audio_check.total.silenced / self.audio_check.rate, 2),
                "voice_distance_db": _rounded(self.audio_check.voices.last_distance),
                "voice_drifts": self.audio_check.voices.drifts,
            },
            "replies_blocked": sum(self.policy.blocks.values()),
            "replies_blocked_by_rule": dict(sorted(self.policy.blocks.items())),
            "interrupted_turns": self.interrupted,
            "echo_return_loss_db": _rounded(
                None if self.echo is None else self.echo.meter.return_loss_db
            ),
            "echo_return_loss_enhancement_db": _rounded(
                None if self.echo is None else self.echo.meter.enhancement_db
            ),
            "noise_level_dbfs": _rounded(self.endpointer.noise_dbfs),
            "speech_level_dbfs": _rounded(
                float(np.median(self.voice_levels)) if self.voice_levels else None
            ),
            "own_wake_words": self.own_wake_words,
            "expected_rtf": None if self.expected_rtf is None else round(self.expected_rtf, 2),
            "home_assistant_connected": self.server.connected,
            "wyoming_connections": self.server.connections,
        }

    @property
    def playing(self) -> bool:
        return self.playback.playing

    async def start(self) -> None:
        """Load the model, open the audio, listen for Home Assistant, announce; then capture."""
        raise_open_files_limit()
        # measured before the model is in memory: the probe's buffer adds nothing to the peak
        bandwidth = await asyncio.to_thread(costmodel.read_bandwidth)
        loaded = time.monotonic()
        if self.local.responder is None:
            self.local.responder = await asyncio.to_thread(
                Responder.load, self.settings, self.model_spec, self.system_prompt
            )
        responder = self.local.responder
        await responder.prepare()
        _LOG.info("model ready in %.1f s", time.monotonic() - loaded)
        self.expected_rtf = self._expected_speed(bandwidth)
        if self.expected_rtf is not None and self.expected_rtf > 1.0:
            # a slow machine's first reply: held for the rate the cost model foresees (not
            # started on its fast first frames) and decoded in batches, like those after it
            self.pacer.last_rtf = self.pacer.last_rtf or self.expected_rtf
            responder.batch = BATCH_FRAMES
        await self.backend.start()
        if self.settings.audio.echo_cancellation:
            self.echo = EchoCanceller(self.backend.output_rate, self.backend.echo_delay_ms)
            self.backend.on_played = self.echo.played
            self.own_wake = OwnWakeWord(self._wake_settings(self.controls))
            if self.stop_word is not None:
                self.own_stop = OwnWakeWord(self.stop_word.settings, STOP_SETTLE_SECONDS)
        await self.server.start()
        if self.settings.wyoming.zeroconf:
            wyoming = self.settings.wyoming
            self.announcer = Announcer(
                wyoming.zeroconf_name or self.settings.satellite.name,
                self.server.bound_port,
                wyoming.satellite_host,
            )
            await self.announcer.start()
        self.services = await start_services(
            self.settings, responder.model, responder.tokens, home_control=bool(self.allowlist),
            policy=self.policy,
        )  # fmt: skip
        if self.settings.mqtt.enabled:
            self.mqtt = bridge = MqttBridge(self)
            if self.allowlist is not None:
                self.local.devices = DeviceController(
                    self.allowlist,
                    publish=bridge.publish_command,
                    event=bridge.event,
                    confirm_seconds=self.settings.device_control.confirm_seconds,
                )
            await bridge.start()
        self.last_chunk = time.monotonic()
        self._capture = asyncio.create_task(self._capture_loop())
        _LOG.info(
            "satellite %r ready in %s mode; say %r",
            self.settings.satellite.name,
            self.mode,
            self.wake.wake_word,
        )
        self._notify(events.Ready(port=self.server.bound_port))  # READY=1 (sdnotify.py)

    def _expected_speed(self, bandwidth: float) -> float | None:
        """This machine's expected real-time factor with the model, its memory reading
        `bandwidth` GB/s (`engine.costmodel`); logged, with what to do when it cannot speak in
        real time."""
        model = getattr(self.responder, "model", None)
        if model is None:
            return None
        per_frame = costmodel.frame_bytes(model.manifest, model.directory)
        rtf = costmodel.expected_rtf(per_frame, bandwidth)
        _LOG.info("memory reads %.1f GB/s here and a frame of speech reads %.0f MB: expected "
                  "real-time factor %.2f", bandwidth, per_frame / 1e6, rtf)  # fmt: skip
        advice = costmodel.advice(rtf, model.manifest.variant)
        if advice is not None:
            _LOG.warning("%s", advice)
        return rtf

    async def run(self) -> None:
        """`start`, then run until `stop()` (or the end of a file source), then `close`."""
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.close()

    def stop(self) -> None:
        """Ask `run` to return (signal handlers call this)."""
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def close(self) -> None:
        """Stop everything in order: capture, turns, playback, servers, zeroconf, model."""
        self._stop.set()
        self.local.cancel_reply()
        tasks = [t for t in (self._capture, self.local.task, self.bell.task) if t is not None]
        for task in tasks:
            if not task.done():
                task.cancel()
        tasks += self.playback.cancel_all()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.mqtt is not None:
            await self.mqtt.stop()
        if self.announcer is not None:
            with contextlib.suppress(Exception):
                await self.announcer.stop()
        if self.services is not None:
            await self.services.stop()
        await self.server.stop()
        await self.backend.close()
        if self.responder is not None:
            await asyncio.to_thread(self.responder.close)
        self.wake.close()
        if self.stop_word is not None:
            self.stop_word.close()
        for detector in (self.own_wake, self.own_stop, self.stop_word_linear):
            if detector is not None:
                detector.close()
        _LOG.info("satellite stopped")

    async def _capture_loop(self) -> None:
        try:
            async for chunk in self.backend.chunks():
                self.on_chunk(chunk)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            _LOG.error("audio capture failed: %s", err)
            self._notify(events.Failure(where="audio", message=str(err)))
        self._input_ended = True
        if self._stop.is_set():
            return
        _LOG.info("audio input ended; stopping after the turn in progress")
        await self.wait_idle()
        self._stop.set()

    async def wait_idle(self, timeout: float = 600.0) -> None:
        """Until no turn, stream or playback is in progress (bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = [t for t in (self.local.task, self.playback.task, self.bell.task)
                    if t and not t.done()]  # fmt: skip
            if self.state in ("listening", "streaming") and not self._input_ended:
                await asyncio.sleep(0.02)
                continue
            if not busy:
                return
            await asyncio.wait(busy, timeout=max(0.0, deadline - time.monotonic()))

    # -- audio in ---------------------------------------------------------------------------

    def on_chunk(self, chunk: Int16Array) -> None:
        """One capture chunk (16-bit mono at `audio.input_rate`)."""
        now = time.monotonic()
        gap = now - self.last_chunk
        self.last_chunk = now
        self.chunks += 1
        self.input_jitter.add(chunk.shape[0], now)
        raw = self._to_16k(chunk)
        linear: bytes | None = None
        if self.echo is None:
            pcm = heard = _denoise(self.noise, raw)
        else:
            # the endpointer, the stop word and barge-in by voice hear AEC3's output; the
            # wake word the linear canceller's, which keeps the user's voice whole
            cancelled = self.echo.process(raw)
            raw = cancelled.captured  # the frames that came out (some may wait a little)
            for own in (self.own_wake, self.own_stop):
                if own is not None:
                    own.hear(cancelled.reference)
            pcm = _denoise(self.noise, cancelled.cleaned)
            heard = linear = _denoise(self.wake_noise, cancelled.linear)
        route = machine.routing(
            muted=self.controls.muted,
            playing=self.playing,
            barge_in=self.settings.audio.barge_in,
            state=self.state,
            ringing=self.bell.ringing,
        )
        if route.wake_word:
            for detection in self.wake.process(heard):
                self._on_wake(detection)
        self._hear_stop_word(pcm, linear, route.stop_word)
        self._hear_voice_over(pcm, raw, route.voice, gap)
        if not route.endpointer:
            return
        found = self.endpointer.process(pcm)
        if self.state not in machine.LISTENING_STATES:
            return
        self._turn_audio += len(pcm) // 2
        if self.state == "streaming":
            self.pipeline.chunk(pcm)
        for event in found:
            if isinstance(event, SpeechStarted):
                self._speech_started = True
                self._notify(events.SpeechStarted())
                if self.mode == "local":
                    self.server.send(VoiceStarted().event())
            elif isinstance(event, PauseStarted):
                if self.state == "listening" and self._speculate_on:
                    self.local.speculate(event.audio)
            elif isinstance(event, PauseEnded):
                self.local.drop_speculation()
            elif isinstance(event, UtteranceEnded):
                self._on_utterance(event)
                return
        wait, after = self._wait
        if not self._speech_started and self._turn_audio > 16000 * wait:
            _LOG.info("no speech %.0f s after the %s; listening for the wake word again",
                      wait, after)  # fmt: skip
            self._step(machine.NoSpeech())

    def _to_16k(self, chunk: Int16Array) -> bytes:
        if self._mic_resampler is None:
            return chunk.astype("<i2", copy=False).tobytes()
        audio = chunk.astype(np.float32) / 32768.0
        return float_to_pcm16(self._mic_resampler.process(audio))

    def _on_wake(self, detection: WakeDetection) -> None:
        if self.own_wake is not None and self.own_wake.covers():
            self.own_wake_words += 1
            _LOG.info("wake word %r (p=%.2f) in the satellite's own voice: ignored",
                      detection.wake_word, detection.probability)  # fmt: skip
            return
        wake = machine.WakeWord(
            mode=self.mode,
            ha_connected=self.server.connected,
            ringing=self.bell.ringing,
            playing=self.playing,
        )
        self._step(wake, detection)

    def _hear_stop_word(self, pcm: bytes, linear: bytes | None, listen: bool) -> None:
        """`pcm`: the capture through AEC3 (or as it came), `linear`: through the linear
        canceller (None: no canceller)."""
        if self.stop_word is None:
            return
        heard = [(self.stop_word, pcm)]
        if self.stop_word_linear is not None and linear is not None:
            heard.append((self.stop_word_linear, linear))
        if not listen:
            self._stop_hearing = False
            return
        if not self._stop_hearing:  # a new busy spell: nothing from before it counts
            for detector, _ in heard:
                detector.reset()
            self._stop_hearing = True
        for detector, audio in heard:
            for detection in detector.process(audio):
                if self._own_stop_word(detection):
                    continue
                ringing, playing = self.bell.ringing, self.playing
                busy = playing or self.state == "responding"
                stopped = self._busy_with() if busy else "timer"
                _LOG.info("stop word %r (p=%.2f)", detection.wake_word, detection.probability)
                self._notify(
                    events.StopWordHeard(stopped=stopped, probability=detection.probability)
                )
                self._step(machine.StopWord(ringing=ringing, playing=playing), detection)
                for other, _ in heard:  # the same "stop" in the other stream is not another
                    other.reset()
                return

    def _own_stop_word(self, detection: WakeDetection) -> bool:
        """Whether a stop word heard is the satellite's own: said in what it plays, or in the
        first `STOP_SETTLE_SECONDS` of playing, while the cancellers still find the echo."""
        own = self.own_stop
        if own is None:
            return False
        if own.covers():
            self.own_wake_words += 1
            _LOG.info("stop word (p=%.2f) in the satellite's own voice, %.1f s into playing: "
                      "ignored", detection.probability, own.sounding_seconds)  # fmt: skip
            return True
        return False

    def _hear_voice_over(self, pcm: bytes, raw: bytes, listen: bool, gap: float) -> None:
        """`pcm`: the capture cleaned, `raw`: as the microphone gave it; `gap`: seconds since
        the chunk before this one."""
        if self.voice_barge_in is None:
            return
        if not listen:
            self._voice_hearing = False
            return
        if not self._voice_hearing or gap > CAPTURE_GAP_SECONDS:
            # a new spell of playing, or the capture stalled (the echo's delay may have
            # changed under the canceller): what is left of the echo is learnt anew
            self.voice_barge_in.restart()
            self._voice_hearing = True
        if self.voice_barge_in.process(pcm, raw):
            voice = machine.VoiceOver(mode=self.mode, ha_connected=self.server.connected)
            self._step(voice, voice)

    def _busy_with(self) -> str:
        if self.state == "responding" or self.playback.kind == "reply":
            return "reply"
        if self.state == "streaming":
            return "stream to Home Assistant"
        return self.playback.kind or "turn"

    def _on_utterance(self, ended: UtteranceEnded) -> None:
        decided = time.monotonic()
        seconds = len(ended.audio) / 2 / MIC_FORMAT.rate
        _LOG.info("utterance: %.2f s (%s)", seconds, ended.reason)
        if ended.voice_dbfs is not None:
            self.voice_levels.append(ended.voice_dbfs)
        self._notify(events.UtteranceHeard(seconds=seconds, reason=ended.reason))
        self._step(machine.UtteranceEnd(), (ended, decided))

    # -- local turn -------------------------------------------------------------------------

    async def answer(
        self, samples: np.ndarray, reason: str = "silence", pause: float | None = None
    ) -> TurnReport:
        """Run one local turn on 16 kHz float32 speech (see `LocalTurns.answer`)."""
        return await self.local.answer(samples, reason, pause)

    async def act_on(self, text: str) -> None:
        """The tool calls in a reply's text (see `LocalTurns.act_on`)."""
        await self.local.act_on(text)

    # -- Home Assistant ---------------------------------------------------------------------

    def on_connected(self) -> None:
        self._unmute_from_home_assistant()
        self._notify(events.HomeAssistantConnected())

    def _unmute_from_home_assistant(self) -> None:
        """`run-satellite`: Home Assistant's Mute switch is off (it connects only then). A
        mute of its own ends; one set over MQTT stays until MQTT ends it."""
        if self.controls.muted and self.controls.muted_by == "home_assistant":
            _LOG.info("Home Assistant unmuted the satellite")
            self.set_control("muted", False, source="home_assistant")

    def on_disconnected(self, reason: str) -> None:
        if self.state == "streaming":
            _LOG.warning("Home Assistant went away while audio was streaming to it")
        self._step(machine.PipelineEnd())
        self.incoming.end("disconnected")
        self._notify(events.HomeAssistantDisconnected(reason=reason))

    async def room(self) -> None:
        """Return once the stream Home Assistant is sending can take more (the server does
        not read the connection meanwhile: backpressure, `satellite.wyoming.incoming`)."""
        await self.incoming.room()

    def on_event(self, event: Event) -> None:
        kind = event.type
        if RunSatellite.is_type(kind):
            self._unmute_from_home_assistant()
        elif PauseSatellite.is_type(kind):
            if not self.controls.muted:
                _LOG.info("Home Assistant paused the satellite (its Mute switch, or Home "
                          "Assistant stopping): muted, in every mode, until it runs the "
                          "satellite again or MQTT unmutes it")  # fmt: skip
                self.set_control("muted", True, source="home_assistant")
        elif AudioStart.is_type(kind):
            self.incoming.start(
                AudioStart.from_event(event), "tts" if self.mode == "ha" else "announcement"
            )
        elif AudioChunk.is_type(kind):
            self.incoming.chunk(AudioChunk.from_event(event))
        elif AudioStop.is_type(kind):
            self.incoming.end("complete")
        elif VoiceStopped.is_type(kind) or Transcript.is_type(kind) or Error.is_type(kind):
            if Transcript.is_type(kind):
                text = Transcript.from_event(event).text
                _LOG.info("Home Assistant heard: %r", text)
                self._notify(events.HomeAssistantTranscript(text=text))
            elif Error.is_type(kind):
                error = Error.from_event(event)
                _LOG.warning("Home Assistant pipeline error: %s (%s)", error.text, error.code)
                self._notify(events.Failure(where="home_assistant", message=error.text))
            self._step(machine.PipelineEnd())
        elif Synthesize.is_type(kind):
            text = Synthesize.from_event(event).text
            _LOG.info("Home Assistant replies: %r", text)
            self._notify(events.HomeAssistantReply(text=text))
        elif kind.startswith("timer-"):
            self.bell.on_event(event)
        else:
            _LOG.debug("from Home Assistant: %s", kind)


OPEN_FILES = 4096
"""The open-file limit the daemon asks for (the systemd unit sets it too: LimitNOFILE)."""


def raise_open_files_limit(want: int = OPEN_FILES) -> int:
    """Raise the soft limit on open files to `want` (at most the hard limit): the common
    default of 1024 is less than the connection caps and the model's files need. Returns the
    soft limit in effect; where it may not be raised (systemd's @resources filter) it stays."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (OSError, ValueError) as err:
            _LOG.debug("open-file limit stays at %d: %s", soft, err)
    return soft


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _denoise(gain: NoiseGain | None, pcm: bytes) -> bytes:
    return pcm if gain is None else gain.process(pcm)
