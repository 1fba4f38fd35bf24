"""The `info` the satellite answers `describe` with."""

from __future__ import annotations

from dataclasses import dataclass

from wyoming.audio import AudioFormat
from wyoming.info import (
    Attribution,
    Info,
    MicProgram,
    Satellite,
    SndProgram,
    WakeModel,
    WakeProgram,
)

from satellite import __version__

ATTRIBUTION = Attribution(name="LFM Satellite", url="https://github.com/lfm-satellite")
WAKE_ATTRIBUTION = Attribution(
    name="microWakeWord", url="https://github.com/kahrendt/microWakeWord"
)
MIC_FORMAT = AudioFormat(rate=16000, width=2, channels=1)
"""What the satellite streams to Home Assistant."""
SND_FORMAT = AudioFormat(rate=22050, width=2, channels=1)
"""What Home Assistant sends for text-to-speech and announcements (any other rate, width and
channel count is converted too)."""


@dataclass(frozen=True)
class SatelliteDescription:
    name: str
    area: str | None
    wake_model: str
    """The wake-word model's id, e.g. `okay_nabu`."""
    wake_phrase: str
    """Its phrase, e.g. "Okay Nabu"."""
    mode: str


def satellite_info(about: SatelliteDescription) -> Info:
    """A complete `info` for a satellite with one local wake word and a local VAD."""
    return Info(
        satellite=Satellite(
            name=about.name,
            attribution=ATTRIBUTION,
            installed=True,
            description=f"LFM2-Audio voice satellite ({about.mode} mode)",
            version=__version__,
            area=about.area,
            has_vad=True,
            active_wake_words=[about.wake_model],
            max_active_wake_words=1,
            supports_trigger=False,
        ),
        wake=[
            WakeProgram(
                name="microWakeWord",
                attribution=WAKE_ATTRIBUTION,
                installed=True,
                description="Local wake word detection (pymicro-wakeword)",
                version=None,
                models=[
                    WakeModel(
                        name=about.wake_model,
                        attribution=WAKE_ATTRIBUTION,
                        installed=True,
                        description=about.wake_phrase,
                        version=None,
                        languages=["en"],
                        phrase=about.wake_phrase,
                    )
                ],
            )
        ],
        mic=[
            MicProgram(
                name="microphone",
                attribution=ATTRIBUTION,
                installed=True,
                description="Satellite microphone",
                version=__version__,
                mic_format=MIC_FORMAT,
            )
        ],
        snd=[
            SndProgram(
                name="speaker",
                attribution=ATTRIBUTION,
                installed=True,
                description="Satellite speaker",
                version=__version__,
                snd_format=SND_FORMAT,
            )
        ],
    )
