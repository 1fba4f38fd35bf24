"""What the services' parts share: their config (`ServicesConfig`), the model's side
(`Engine`: the worker pool and the audio rates), the refusal of a request (`BadRequest`), and
the `Link` a request talks back to its client through."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from wyoming.event import Event

from satellite.engine.mel import LogMel
from satellite.engine.template import control_token_in
from satellite.safety.policy import Policy, build_policy
from satellite.settings import Settings
from satellite.wyoming.speech import Limits, ServiceEngine
from satellite.wyoming.workers import Job, WorkerPool


class Gone(Exception):
    """The client cannot be written to any more."""


class BadRequest(Exception):
    """A request refused: the client gets an `error` with this text and `code`."""

    def __init__(self, text: str, code: str = "bad-request", *, close: bool = False) -> None:
        super().__init__(text)
        self.code = code
        self.close = close
        """Close the connection after the error (the client has stalled)."""


_DEFAULTS = Settings()
"""The defaults of `ServicesConfig` are the config's own (`wyoming.services_*` and the rest),
read from the settings' dataclasses, never written out again here."""


@dataclass(frozen=True)
class ServicesConfig:
    """What the services server runs with: the `wyoming.services_*` settings and the few
    others it needs (`from_settings`), with the config's defaults."""

    host: str = _DEFAULTS.wyoming.services_host
    """Address listened on (`wyoming.services_host`)."""
    port: int = _DEFAULTS.wyoming.services_port
    """Port listened on; 0: any free one (`wyoming.services_port`)."""
    workers: int = _DEFAULTS.wyoming.services_workers
    """Requests run at once, each in its own engine thread (`wyoming.services_workers`)."""
    queue: int = _DEFAULTS.wyoming.services_queue
    """Requests waiting for a worker before the next is refused (`wyoming.services_queue`)."""
    request_timeout: float = _DEFAULTS.wyoming.services_request_timeout_seconds
    """Seconds a request may take, waiting included."""
    client_timeout: float = _DEFAULTS.wyoming.services_client_timeout_seconds
    """Seconds a client may send nothing (outside a request) or not read what is written."""
    max_text: int = _DEFAULTS.wyoming.services_max_text
    """Longest text to speak or answer, in characters."""
    max_audio_seconds: float = _DEFAULTS.wyoming.services_max_audio_seconds
    """Longest audio to transcribe."""
    voice: str = _DEFAULTS.model.voice
    """Voice of a `synthesize` that names none (`model.voice`)."""
    conversation_timeout: float = _DEFAULTS.satellite.conversation_timeout_seconds
    """A conversation idle this long is forgotten."""
    home_control: bool = False
    """Device control is configured (`supports_home_control`)."""
    zeroconf_name: str | None = None
    """Announce with this zeroconf instance name; None: no announcement."""
    limits: Limits = field(default_factory=Limits)
    """What the model may make of one request (`speech.Limits`)."""
    policy: Policy = field(default_factory=Policy, compare=False)
    """The safety rules a text to speak must pass first (the daemon's, shared)."""
    refusal: str = _DEFAULTS.safety.refusal
    """Spoken instead of a text a rule blocked (`safety.refusal`; empty: an error)."""

    @classmethod
    def from_settings(
        cls, settings: Settings, home_control: bool = False, policy: Policy | None = None
    ) -> ServicesConfig:
        w = settings.wyoming
        name = None
        if w.zeroconf:
            name = (
                w.services_zeroconf_name or f"{w.zeroconf_name or settings.satellite.name} Services"
            )
        return cls(
            host=w.services_host,
            port=w.services_port,
            workers=w.services_workers,
            queue=w.services_queue,
            request_timeout=w.services_request_timeout_seconds,
            client_timeout=w.services_client_timeout_seconds,
            max_text=w.services_max_text,
            max_audio_seconds=w.services_max_audio_seconds,
            voice=settings.model.voice,
            conversation_timeout=settings.satellite.conversation_timeout_seconds,
            home_control=home_control,
            zeroconf_name=name,
            limits=Limits(speech_seconds=settings.safety.max_reply_seconds),
            policy=policy or build_policy(
                settings.safety.blocked_terms, settings.safety.policy_file,
                settings.safety.text_filter,
            ),
            refusal=settings.safety.refusal,
        )  # fmt: skip


@dataclass
class Engine:
    """The model's side, shared by every connection."""

    config: ServicesConfig
    pool: WorkerPool[ServiceEngine]
    sample_rate: int = 24000
    """Of the generated audio (the detokenizer's)."""
    mel: LogMel = field(default_factory=LogMel)
    """The model's audio front end (its input rate and mel bands)."""

    @contextlib.asynccontextmanager
    async def deadline(self, job: Job) -> AsyncIterator[None]:
        """`request_timeout` for the work inside; on expiry `job` is cancelled and the
        request refused (`timeout`)."""
        timeout = self.config.request_timeout
        try:
            async with asyncio.timeout(timeout):
                yield
        except TimeoutError:
            job.cancel()
            raise BadRequest(
                f"the request took longer than {timeout:g} s "
                "(services_request_timeout_seconds) and was stopped",
                "timeout",
            ) from None


class Link(Protocol):
    """What a request needs of its connection."""

    @property
    def busy(self) -> bool:
        """A request runs on the connection."""
        ...

    async def send(self, event: Event) -> None:
        """Write `event` to the client (Gone when it does not take it)."""
        ...

    def start(self, request: Coroutine[Any, Any, None], what: str) -> None:
        """Run `request` as the connection's request (BadRequest `busy` if one runs)."""
        ...


def check_text(text: Any, what: str, max_text: int) -> str:
    """Text to speak or answer: a non-empty string within `max_text` characters holding no
    control token; BadRequest saying which it is not."""
    if not isinstance(text, str):
        raise BadRequest(f"{what}: text must be a string")
    if not text.strip():
        raise BadRequest(f"{what}: the text is empty", "empty-text")
    if len(text) > max_text:
        raise BadRequest(
            f"{what}: the text is {len(text)} characters long; the limit is "
            f"{max_text} (services_max_text)",
            "too-long",
        )
    special = control_token_in(text)
    if special is not None:
        raise BadRequest(f"{what}: the text holds the model's control token {special}")
    return text.strip()
