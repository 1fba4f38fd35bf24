"""Live controls: what Home Assistant can change while the satellite runs, kept across restarts.

`Controls` holds the current values (mute, volume, wake word, wake sensitivity, voice, mode);
they start from the config, then the state file (values changed earlier win). `Controls.set`
checks a new value (a `ControlError` names the control and says what is accepted), and
`ControlStore.save` writes the file atomically, so a crash mid-write never loses the old one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from satellite.errors import UserError
from satellite.settings import VOICE_NAMES, WAKE_WORDS, Settings

_LOG = logging.getLogger("satellite.controls")

MODES = ("local", "ha")
MUTE_SOURCES = ("", "home_assistant", "mqtt")
"""Who muted the satellite ("" when it is not muted)."""
STATE_NAME = "state.json"
MAX_STATE_BYTES = 64 * 1024
"""A state file larger than this is damaged (a real one is a few hundred bytes)."""


class ControlError(UserError):
    """A value a control does not accept; the message names the control."""


@dataclass(frozen=True)
class Controls:
    muted: bool = False
    volume: float = 1.0
    """0.0 to 1.0."""
    wake_word: str = "okay_nabu"
    sensitivity: float = 0.5
    voice: str = "us_female"
    mode: str = "local"
    muted_by: str = ""
    """Who muted it: "home_assistant" (its Wyoming Mute switch sends `pause-satellite`, and
    its `run-satellite` unmutes), "mqtt" (only an MQTT command unmutes), "" when unmuted."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Controls:
        return cls(
            muted=False,
            volume=settings.audio.volume,
            wake_word=settings.wake.model,
            sensitivity=settings.wake.sensitivity,
            voice=settings.model.voice,
            mode=settings.satellite.mode,
        )

    def set(self, name: str, value: Any) -> Controls:
        """These controls with `name` set to `value` (checked)."""
        return replace(self, **{name: check(name, value)})


def check(name: str, value: Any) -> Any:
    """`value` as control `name` accepts it, or ControlError."""
    if name == "muted":
        if isinstance(value, bool):
            return value
        raise ControlError(f"muted: expected true or false, got {value!r}")
    if name in ("volume", "sensitivity"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ControlError(f"{name}: expected a number from 0 to 1, got {value!r}")
        if not 0.0 <= float(value) <= 1.0:
            raise ControlError(f"{name}: {value} is out of range; expected 0 to 1")
        return float(value)
    choices = {"wake_word": WAKE_WORDS, "voice": VOICE_NAMES, "mode": MODES,
               "muted_by": MUTE_SOURCES}.get(name)  # fmt: skip
    if choices is None:
        raise ControlError(f"{name}: no such control")
    if value not in choices:
        raise ControlError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return value


def default_state_file() -> Path:
    """`$STATE_DIRECTORY/state.json` (systemd), else `~/.local/state/lfm-satellite/...`."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0]) / STATE_NAME
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lfm-satellite" / STATE_NAME


class ControlStore:
    """The state file: load at start, save after each change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, start: Controls) -> Controls:
        """`start` with the saved values over it; a damaged file or value is logged and
        skipped (the config's value stands), never fatal."""
        try:
            with self.path.open("rb") as f:
                data = f.read(MAX_STATE_BYTES + 1)
            if len(data) > MAX_STATE_BYTES:
                raise ValueError(f"larger than {MAX_STATE_BYTES // 1024} kB")
            saved = json.loads(data.decode("utf-8"))
        except FileNotFoundError:
            return start
        except (OSError, ValueError, RecursionError) as err:  # RecursionError: deep nesting
            why = "nested too deeply" if isinstance(err, RecursionError) else str(err)
            _LOG.warning(
                "%s: cannot read the saved controls (%s); using the config, and the file is "
                "replaced at the next change", self.path, why,
            )  # fmt: skip
            return start
        if not isinstance(saved, dict):
            _LOG.warning("%s: not a JSON object; using the config", self.path)
            return start
        controls = start
        for name, value in saved.items():
            try:
                controls = controls.set(name, value)
            except (ControlError, TypeError) as err:
                _LOG.warning("%s: %s; keeping %s from the config", self.path, err, name)
        return controls

    def save(self, controls: Controls) -> None:
        """Write atomically (temporary file, then rename); errors are logged, not raised:
        a read-only state directory must not stop the satellite."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(asdict(controls), out, indent=2)
                out.write("\n")
            os.replace(tmp, self.path)
        except OSError as err:
            _LOG.error("%s: cannot save the controls: %s", self.path, err)
