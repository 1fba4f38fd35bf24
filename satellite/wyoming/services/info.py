"""The `info` the services server answers `describe` with: `asr`, `tts` and `handle` programs
backed by the local model, and no satellite (Home Assistant loads no speech-to-text or
text-to-speech from an endpoint whose info has one)."""

from __future__ import annotations

from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    HandleModel,
    HandleProgram,
    Info,
    TtsProgram,
    TtsVoice,
)

from satellite import __version__
from satellite.engine.template import VOICES
from satellite.wyoming.info import ATTRIBUTION
from satellite.wyoming.speech import LANGUAGES

MODEL_ATTRIBUTION = Attribution(name="Liquid AI", url="https://huggingface.co/LiquidAI")


def voice_description(voice: str) -> str:
    """e.g. `us_female` -> "US English, female"."""
    accent, gender = VOICES[voice]
    return f"{accent} English, {gender}"


def services_info(model_name: str, *, home_control: bool = False) -> Info:
    """Info for the services on `model_name` (the loaded model's manifest name)."""
    languages = list(LANGUAGES)
    return Info(
        asr=[
            AsrProgram(
                name="lfm-satellite-stt",
                attribution=ATTRIBUTION,
                installed=True,
                description="LFM2-Audio speech-to-text (local)",
                version=__version__,
                models=[
                    AsrModel(
                        name=model_name,
                        attribution=MODEL_ATTRIBUTION,
                        installed=True,
                        description=f"{model_name} (ASR)",
                        version=None,
                        languages=languages,
                    )
                ],
                supports_transcript_streaming=True,
            )
        ],
        tts=[
            TtsProgram(
                name="lfm-satellite-tts",
                attribution=ATTRIBUTION,
                installed=True,
                description="LFM2-Audio text-to-speech (local)",
                version=__version__,
                voices=[
                    TtsVoice(
                        name=voice,
                        attribution=MODEL_ATTRIBUTION,
                        installed=True,
                        description=voice_description(voice),
                        version=None,
                        languages=languages,
                    )
                    for voice in VOICES
                ],
                supports_synthesize_streaming=True,
            )
        ],
        handle=[
            HandleProgram(
                name="lfm-satellite-conversation",
                attribution=ATTRIBUTION,
                installed=True,
                description="LFM2-Audio conversation (local)",
                version=__version__,
                models=[
                    HandleModel(
                        name=model_name,
                        attribution=MODEL_ATTRIBUTION,
                        installed=True,
                        description=f"{model_name} (conversation)",
                        version=None,
                        languages=languages,
                    )
                ],
                supports_handled_streaming=False,
                supports_home_control=home_control,
            )
        ],
    )
