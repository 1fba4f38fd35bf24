"""Wake-word detection with microWakeWord models (pymicro-wakeword).

`WakeWordDetector` takes 16 kHz 16-bit mono PCM in chunks of any length and reports each
detection with the audio time (seconds since the start or the last `reset`) at which the
model's smoothed probability crossed its cutoff.

Sensitivity -> probability cutoff. Every microWakeWord model ships its own tuned cutoff `c`
(okay_nabu 0.85, alexa 0.90, hey_mycroft 0.95, hey_jarvis 0.97). The setting moves the cutoff
piecewise-linearly around it, so 0.5 always means "as the model's author tuned it":

    sensitivity 0.0 -> cutoff STRICTEST_CUTOFF (0.99; only a very clear phrase)
    sensitivity 0.5 -> cutoff c
    sensitivity 1.0 -> cutoff c / 2 (fires readily, more false wakes)

A detection needs the probability above the cutoff; after one, the model must fall back to or
below the cutoff before it can fire again (one detection per utterance of the phrase), and
detections within `refractory_seconds` of the previous one are dropped.

The same detector hears the stop word (`wake.stop_model`): the satellite ships a "stop" model
(`wakewords/`, Apache-2.0, see its README), which pymicro-wakeword does not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pymicro_wakeword
from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model

from satellite.errors import UserError
from satellite.settings import WakeSettings

SAMPLE_RATE = 16000
STEP_SECONDS = 0.01
"""The feature frontend's hop: one feature vector per 10 ms of audio."""
WINDOW_STEPS = 3
"""The first feature vector needs 30 ms of audio (its window), then one per hop."""
STRICTEST_CUTOFF = 0.99
"""Cutoff at sensitivity 0 (the models' quantised output tops out just under 1.0)."""

BUILTIN_MODELS: tuple[str, ...] = tuple(model.value for model in Model)
"""Wake-word models shipped with pymicro-wakeword."""
SHIPPED_DIR = Path(__file__).parent / "wakewords"
"""Models shipped with the satellite (the stop word), each a .json beside its .tflite; their
source and licence are in its README.md."""
SHIPPED_MODELS: tuple[str, ...] = ("stop",)


class WakeModelError(UserError):
    """A wake-word model that cannot be found or loaded; the message names it."""


@dataclass(frozen=True)
class Detection:
    """One wake-word detection."""

    wake_word: str
    """The model's phrase, e.g. "Okay Nabu"."""
    model: str
    """The model's id (e.g. `okay_nabu`, or a custom model's file stem)."""
    seconds: float
    """Audio time of the detection: the end of the feature window that fired, in seconds
    since the detector started or was reset."""
    probability: float
    """The smoothed probability that crossed the cutoff."""


def cutoff_for(sensitivity: float, model_cutoff: float) -> float:
    """The probability cutoff for `sensitivity` in [0, 1] (see the module docstring)."""
    if not 0.0 <= sensitivity <= 1.0:
        raise ValueError(f"sensitivity {sensitivity} is not in [0, 1]")
    strict = max(STRICTEST_CUTOFF, model_cutoff)
    if sensitivity <= 0.5:
        return strict + (model_cutoff - strict) * (sensitivity / 0.5)
    return model_cutoff * (1.0 - (sensitivity - 0.5))


def _config_path(model: str, key: str) -> Path:
    if model in BUILTIN_MODELS:
        return Path(pymicro_wakeword.__file__).parent / "models" / f"{model}.json"
    if model in SHIPPED_MODELS:
        return SHIPPED_DIR / f"{model}.json"
    path = Path(model).expanduser()
    if path.suffix.lower() != ".json":
        shipped = ", ".join(BUILTIN_MODELS + SHIPPED_MODELS)
        raise WakeModelError(
            f"{key} {model!r}: not a shipped model ({shipped}) nor the path of a "
            "microWakeWord .json file"
        )
    if not path.is_file():
        raise WakeModelError(f"{key} {model!r}: no such file")
    return path


def _check_config(model: str, path: Path, key: str) -> None:
    """Check the .json and its .tflite before the native loader sees them (it does not report
    a bad file, it crashes)."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise WakeModelError(f"{key} {model!r}: cannot read {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise WakeModelError(f"{key} {model!r}: {path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise WakeModelError(f"{key} {model!r}: {path} is not a JSON object")
    micro = config.get("micro")
    for name, value in (("model", config.get("model")), ("wake_word", config.get("wake_word"))):
        if not isinstance(value, str) or not value:
            raise WakeModelError(f"{key} {model!r}: {path} has no string key {name!r}")
    if not isinstance(micro, dict):
        raise WakeModelError(f"{key} {model!r}: {path} has no 'micro' section")
    cutoff = micro.get("probability_cutoff")
    window = micro.get("sliding_window_size")
    if not isinstance(cutoff, int | float) or not 0.0 < cutoff < 1.0:
        raise WakeModelError(
            f"{key} {model!r}: {path}: micro.probability_cutoff {cutoff!r} is not in (0, 1)"
        )
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise WakeModelError(
            f"{key} {model!r}: {path}: micro.sliding_window_size {window!r} is not a "
            "positive integer"
        )
    tflite = path.parent / config["model"]
    try:
        with tflite.open("rb") as f:
            head = f.read(8)
    except OSError as err:
        raise WakeModelError(
            f"{key} {model!r}: cannot read its TFLite file {tflite}: {err.strerror}"
        ) from None
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise WakeModelError(f"{key} {model!r}: {tflite} is not a TFLite model")


def load_model(model: str, key: str = "wake.model") -> MicroWakeWord:
    """The microWakeWord model `model`: a shipped name or a .json path. Raises WakeModelError
    naming the setting `key` and the model when it cannot be loaded."""
    path = _config_path(model, key)
    _check_config(model, path, key)
    try:
        return MicroWakeWord.from_config(path)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise WakeModelError(f"{key} {model!r}: cannot load {path}: {err}") from None


class WakeWordDetector:
    """Streams 16 kHz 16-bit mono PCM through a microWakeWord model (see the module docs)."""

    def __init__(self, settings: WakeSettings, key: str = "wake.model") -> None:
        """`key`: the setting that named the model, for error messages."""
        self.settings = settings
        self._model = load_model(settings.model, key)
        self._features = MicroWakeWordFeatures()
        self.cutoff = cutoff_for(settings.sensitivity, float(self._model.probability_cutoff))
        """The probability a detection must exceed."""
        self._steps = 0
        self._armed = True
        self._last: float | None = None
        self._odd = b""

    def set_sensitivity(self, sensitivity: float) -> None:
        """A new sensitivity for the same model, at once (no reload)."""
        self.cutoff = cutoff_for(sensitivity, float(self._model.probability_cutoff))
        self.settings = replace(self.settings, sensitivity=sensitivity)

    @property
    def wake_word(self) -> str:
        """The model's phrase, e.g. "Okay Nabu"."""
        return str(self._model.wake_word)

    @property
    def model_id(self) -> str:
        return str(self._model.id)

    @property
    def seconds(self) -> float:
        """Audio fed so far that the frontend has turned into features, in seconds."""
        return 0.0 if self._steps == 0 else (self._steps + WINDOW_STEPS - 1) * STEP_SECONDS

    def process(self, chunk: bytes) -> list[Detection]:
        """Feed PCM (any length; an odd trailing byte waits for the next chunk) and return the
        detections it completes, oldest first."""
        data = self._odd + chunk
        cut = len(data) - len(data) % 2
        data, self._odd = data[:cut], data[cut:]
        found: list[Detection] = []
        for features in self._features.process_streaming(data):
            self._steps += 1
            probability = self._model.process_streaming_prob(features)
            if self._steps % self._model.stride:
                continue  # the model buffers `stride` feature vectors per inference
            if probability is None or probability <= self.cutoff:
                self._armed = True
                continue
            if not self._armed:
                continue
            self._armed = False
            now = self.seconds
            if self._last is not None and now - self._last < self.settings.refractory_seconds:
                continue
            self._last = now
            found.append(Detection(self.wake_word, self.model_id, now, float(probability)))
        return found

    def reset(self) -> None:
        """Forget all audio: the model's state, the refractory period and the audio clock."""
        self._model.reset()
        self._features.reset()
        self._steps = 0
        self._armed = True
        self._last = None
        self._odd = b""

    def close(self) -> None:
        """Free the native model."""
        self._model.close()
