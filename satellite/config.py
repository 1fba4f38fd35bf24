"""Load the YAML config file into `satellite.settings.Settings`, checking every value.

Every problem becomes one `Problem` line naming the file, the line and column, the key path,
the bad value and what was expected. Nothing here raises for a user's mistake except
`ConfigError`, which carries the whole list.
"""

from __future__ import annotations

import difflib
import os
import stat
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from satellite.errors import UserError
from satellite.safety.policy import PolicyError, build_policy
from satellite.settings import STOP_WORDS, WAKE_WORDS, Settings

CONFIG_ENV = "LFM_SATELLITE_CONFIG"
"""Environment variable naming the config file."""

DEFAULT_LOCATIONS = (Path("satellite.yaml"), Path("/etc/lfm-satellite/config.yaml"))
"""Where a config file is looked for when neither --config nor $LFM_SATELLITE_CONFIG names one."""

KeyPath = tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) in a config file."""

    source: str
    key: str
    message: str
    line: int | None = None
    column: int | None = None
    warning: bool = False

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}:{self.column}"
        kind = "warning: " if self.warning else ""
        key = f"{self.key}: " if self.key else ""
        return f"{where}: {kind}{key}{self.message}"


class ConfigError(UserError):
    """The config cannot be used; `problems` lists every reason, one line each."""

    exit_code = 1

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class LoadedConfig:
    """Settings together with where they came from and the warnings met on the way."""

    settings: Settings
    source: Path | None
    warnings: list[Problem]


def find_config_file(explicit: str | None = None) -> Path | None:
    """The config file to use: --config, then $LFM_SATELLITE_CONFIG, then ./satellite.yaml,
    then /etc/lfm-satellite/config.yaml. None when no file exists (defaults apply)."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    for candidate in DEFAULT_LOCATIONS:
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | None) -> LoadedConfig:
    """Read and check `path` (defaults when None). Raises ConfigError listing every problem."""
    if path is None:
        return LoadedConfig(Settings(), None, [])
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), "", "config file not found")]) from None
    except IsADirectoryError:
        raise ConfigError([Problem(str(path), "", "is a directory, not a config file")]) from None
    except PermissionError:
        raise ConfigError(
            [Problem(str(path), "", "cannot read config file: permission denied")]
        ) from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            [Problem(str(path), "", f"config file is not UTF-8 text (byte {err.start})")]
        ) from None
    except OSError as err:
        raise ConfigError(
            [Problem(str(path), "", f"cannot read config file: {err.strerror}")]
        ) from None
    settings, problems = parse_config(text, str(path), base_dir=path.parent)
    problems += _permission_problems(path, settings)
    errors = [p for p in problems if not p.warning]
    if errors:
        raise ConfigError(problems)
    return LoadedConfig(
        resolve_paths(settings, path.parent), path, [p for p in problems if p.warning]
    )


PATH_KEYS: tuple[tuple[str, str], ...] = (
    ("satellite", "state_file"),
    ("audio", "input_file"),
    ("audio", "output_file"),
    ("audio", "awake_sound"),
    ("audio", "listen_sound"),
    ("audio", "done_sound"),
    ("audio", "timer_sound"),
    ("model", "directory"),
    ("model", "models_dir"),
    ("mqtt", "ca_file"),
    ("mqtt", "cert_file"),
    ("mqtt", "key_file"),
    ("mqtt", "password_file"),
    ("device_control", "allowlist_file"),
    ("safety", "policy_file"),
    ("logging", "file"),
)
"""The settings that name a file or folder (besides a custom wake-word or stop-word model). A relative one
is read against the config file's folder. `model.backbone_gguf` is not among them: it is read
against the model directory."""


def resolve_paths(settings: Settings, base: Path) -> Settings:
    """`settings` with every path of PATH_KEYS, and a wake or stop word given as a .json file,
    made absolute against `base` (the config file's folder), `~` expanded. The loader does it
    once; the satellite uses the paths as they are."""
    sections: dict[str, dict[str, str]] = {}
    for section, key in PATH_KEYS:
        value = getattr(getattr(settings, section), key)
        if value:
            sections.setdefault(section, {})[key] = str(_absolute(value, base))
    if settings.wake.model not in WAKE_WORDS:
        sections.setdefault("wake", {})["model"] = str(_absolute(settings.wake.model, base))
    if settings.wake.stop_model and settings.wake.stop_model not in STOP_WORDS:
        stop = str(_absolute(settings.wake.stop_model, base))
        sections.setdefault("wake", {})["stop_model"] = stop
    return replace(
        settings,
        **{name: replace(getattr(settings, name), **values) for name, values in sections.items()},
    )


def _absolute(name: str, base: Path) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else base / path


def parse_config(
    text: str, source: str = "<config>", base_dir: Path | None = None
) -> tuple[Settings, list[Problem]]:
    """Check config text. Returns the settings (defaults where a value was wrong) and every
    problem found; the settings are only meant to be used when no problem is an error."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        what = err.problem or err.context or "invalid YAML"
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        return Settings(), [Problem(source, "", f"YAML syntax error: {what}", line, col)]
    except yaml.YAMLError as err:
        return Settings(), [Problem(source, "", f"YAML error: {err}")]
    if root is None:
        return Settings(), []
    checker = _Checker(source, base_dir or Path("."))
    settings = checker.build(Settings, root, ())
    checker.check_relations(settings)
    return settings, sorted(checker.problems, key=_by_position)


def _by_position(problem: Problem) -> tuple[bool, int, int]:
    """Problems in file order; those without a position last."""
    return (problem.line is None, problem.line or 0, problem.column or 0)


def _permission_problems(path: Path, settings: Settings) -> list[Problem]:
    """Warn when a secret sits in a file that every user of the machine can read."""
    if settings.mqtt.password is None:
        return []
    try:
        mode = path.stat().st_mode
    except OSError:
        return []
    if mode & stat.S_IROTH:
        return [
            Problem(
                str(path),
                "mqtt.password",
                f"a secret is stored in a world-readable file (mode {stat.S_IMODE(mode):o}); "
                f"run `chmod 600 {path}` or move it to mqtt.password_file",
                warning=True,
            )
        ]
    return []


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        parts = [_type_name(a) for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(parts)
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"a list of {_type_name(item)}s"
    names = {str: "text", int: "an integer", float: "a number", bool: "true or false"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


class _Checker:
    """Walks the YAML node tree against the settings dataclasses, collecting problems."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.problems: list[Problem] = []
        self.marks: dict[KeyPath, yaml.Mark] = {}
        self.bad: set[KeyPath] = set()
        """Keys whose value was rejected: checks that combine keys skip them."""

    def problem(self, path: KeyPath, message: str, node: yaml.Node | None = None) -> None:
        mark = node.start_mark if node is not None else self.marks.get(path)
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        self.problems.append(Problem(self.source, ".".join(path), message, line, col))

    def build(self, cls: type[Any], node: yaml.Node, path: KeyPath) -> Any:
        if not isinstance(node, yaml.MappingNode):
            where = "the config file" if not path else "this section"
            self.problem(
                path, f"{where} must be a mapping of keys to values, got {_node_kind(node)}", node
            )
            return cls()
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            key_path = (*path, str(key))
            if key not in known:
                guess = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                hint = (
                    f"; did you mean '{guess[0]}'?"
                    if guess
                    else f"; known keys: {', '.join(known)}"
                )
                self.problem(key_path, f"unknown key{hint}", key_node)
                continue
            if key in seen:
                self.problem(key_path, "duplicate key (it is set twice)", key_node)
                continue
            seen.add(key)
            self.marks[key_path] = value_node.start_mark
            spec = known[key]
            tp = hints[key]
            if is_dataclass(tp):
                problems_before = len(self.problems)
                values[key] = self.build(typing.cast(type[Any], tp), value_node, key_path)
                if len(self.problems) > problems_before and not isinstance(
                    value_node, yaml.MappingNode
                ):
                    self.bad.add(key_path)
            else:
                value = _construct(value_node)
                checked = self.check_value(key_path, tp, spec, value, value_node)
                if checked is not _INVALID:
                    values[key] = checked
        return cls(**values)

    def check_value(
        self, path: KeyPath, tp: Any, spec: Field[Any], value: Any, node: yaml.Node
    ) -> Any:
        converted = _convert(tp, value)
        if converted is _INVALID:
            self.bad.add(path)
            self.problem(path, _invalid_message(tp, spec, value), node)
            return _INVALID
        low, high = spec.metadata.get("min"), spec.metadata.get("max")
        if _outside(converted, low, high):
            self.bad.add(path)
            self.problem(
                path,
                f"{_describe(value)} is out of range; expected {_type_name(tp)} "
                f"from {_num(low)} to {_num(high)}",
                node,
            )
            return _INVALID
        allowed = spec.metadata.get("each")
        if allowed and isinstance(converted, list):
            for item in converted:
                if item not in allowed:
                    self.bad.add(path)
                    self.problem(
                        path,
                        f"{_describe(item)} is not valid; expected items from "
                        f"{', '.join(allowed)}{_did_you_mean(item, allowed)}",
                        node,
                    )
                    return _INVALID
        return converted

    def ok(self, *keys: str) -> bool:
        """True when none of `keys` (dotted paths) had its value rejected."""
        return not any(tuple(k.split(".")) in self.bad for k in keys)

    def check_relations(self, s: Settings) -> None:
        """Checks that involve more than one key, or the file system. Keys already rejected
        are skipped, so one mistake gives one line."""
        a, m, w = s.audio, s.mqtt, s.wyoming
        if (
            a.backend == "file"
            and not a.input_file
            and self.ok("audio.backend", "audio.input_file")
        ):
            self.problem(
                ("audio", "input_file"),
                "the file backend needs an input WAV file; set audio.input_file",
            )
        if a.barge_in == "voice" and not a.echo_cancellation and self.ok("audio.barge_in"):
            self.problem(
                ("audio", "barge_in"),
                "barge-in by voice hears the user over the satellite's own voice through the "
                "echo canceller; set audio.echo_cancellation: true",
            )
        for key in ("input_file", "awake_sound", "done_sound", "listen_sound", "timer_sound"):
            self.check_readable(("audio", key), getattr(a, key))
        d = s.device_control
        self.check_readable(("device_control", "allowlist_file"), d.allowlist_file)
        if d.enabled and not s.mqtt.enabled and self.ok("device_control.enabled", "mqtt.enabled"):
            self.problem(
                ("device_control", "enabled"),
                "device control publishes through MQTT; set mqtt.enabled: true",
            )
        if d.enabled and d.allowlist_file is None and self.ok("device_control.enabled"):
            self.problem(
                ("device_control", "allowlist_file"),
                "device control needs an allowlist; set device_control.allowlist_file",
            )
        policy_file = s.safety.policy_file
        self.check_readable(("safety", "policy_file"), policy_file)
        if policy_file and self.ok("safety.policy_file"):
            try:
                build_policy([], str(self.resolve(policy_file)))
            except PolicyError as err:
                self.problem(("safety", "policy_file"), str(err))
        if s.wake.model not in WAKE_WORDS and self.ok("wake.model"):
            path = self.resolve(s.wake.model)
            if not (s.wake.model.endswith(".json") and path.is_file()):
                self.problem(
                    ("wake", "model"),
                    f"{_describe(s.wake.model)} is neither a shipped wake word "
                    f"({', '.join(WAKE_WORDS)}) nor an existing .json model file"
                    + _did_you_mean(s.wake.model, WAKE_WORDS),
                )
        stop = s.wake.stop_model
        custom = stop and stop not in STOP_WORDS and self.ok("wake.stop_model")
        if custom and not (stop.endswith(".json") and self.resolve(stop).is_file()):
            self.problem(
                ("wake", "stop_model"),
                f"{_describe(stop)} is neither the shipped stop word "
                f'({", ".join(STOP_WORDS)}), an existing .json model file, nor "" (none)'
                + _did_you_mean(stop, STOP_WORDS),
            )
        if s.model.directory is not None and not self.resolve(s.model.directory).is_dir():
            self.problem(
                ("model", "directory"), f"{_describe(s.model.directory)}: directory not found"
            )
        if len(set(s.model.providers)) != len(s.model.providers):
            self.problem(("model", "providers"), "a provider is listed twice")
        ports = ("wyoming.satellite_port", "wyoming.services_port")
        if w.satellite_port == w.services_port and w.services_enabled and self.ok(*ports):
            self.problem(
                ("wyoming", "services_port"),
                f"{w.services_port} is also the satellite_port; "
                "the satellite and the services need different ports",
            )
        if not s.satellite.name.strip():
            self.problem(("satellite", "name"), "must not be empty")
        if m.password is not None and m.password_file is not None:
            self.problem(
                ("mqtt", "password_file"),
                "set either mqtt.password or mqtt.password_file, not both",
            )
        for key in ("password_file", "ca_file", "cert_file", "key_file"):
            self.check_readable(("mqtt", key), getattr(m, key))
        if (m.cert_file is None) != (m.key_file is None):
            missing = "key_file" if m.key_file is None else "cert_file"
            self.problem(
                ("mqtt", missing),
                "a client certificate needs both mqtt.cert_file and mqtt.key_file",
            )
        if not m.tls and any((m.ca_file, m.cert_file, m.tls_insecure)):
            self.warn(
                ("mqtt", "tls"), "TLS options are set but mqtt.tls is false; they are ignored"
            )
        if s.logging.file is not None and self.ok("logging.file"):
            folder = self.resolve(s.logging.file).parent
            if not folder.is_dir():
                self.problem(
                    ("logging", "file"),
                    f"{_describe(s.logging.file)}: folder {folder} does not exist",
                )
        if m.username is None and (m.password is not None or m.password_file is not None):
            self.warn(
                ("mqtt", "username"), "a password is set without a username; brokers ignore it"
            )

    def warn(self, path: KeyPath, message: str) -> None:
        self.problem(path, message)
        self.problems[-1] = replace(self.problems[-1], warning=True)

    def resolve(self, name: str) -> Path:
        return _absolute(name, self.base_dir)

    def check_readable(self, path: KeyPath, name: str | None) -> None:
        if name is None:
            return
        file = self.resolve(name)
        if not file.exists():
            self.problem(path, f"{_describe(name)}: file not found")
        elif not file.is_file():
            self.problem(path, f"{_describe(name)}: not a regular file")
        elif not os.access(file, os.R_OK):
            self.problem(path, f"{_describe(name)}: cannot read file (permission denied)")


_INVALID: Any = object()


def _did_you_mean(value: Any, options: Sequence[Any]) -> str:
    guess = difflib.get_close_matches(str(value), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean '{guess[0]}'?" if guess else ""


def _invalid_message(tp: Any, spec: Field[Any], value: Any) -> str:
    """Why `value` does not fit type `tp`, with the expectation and a hint where one helps."""
    expected = _type_name(tp)
    if isinstance(value, Mapping | list):
        message = f"expected {expected}, got {_describe(value)}"
    elif value is None:
        message = f"an empty value is not allowed here; expected {expected}"
    else:
        message = f"{_describe(value)} is not valid; expected {expected}"
    if typing.get_origin(tp) is Literal:
        message += _did_you_mean(value, typing.get_args(tp))
    elif isinstance(value, str) and _convert(tp, _unquoted(value)) is not _INVALID:
        message += " (write it without quotes)"
    default = _field_default(spec)
    if default is not None and not message.endswith("?"):
        message += f" (default: {_describe(default)})"
    return message


def _unquoted(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _outside(value: Any, low: float | None, high: float | None) -> bool:
    """True when `value` is a number outside the inclusive range [low, high]."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return (low is not None and value < low) or (high is not None and value > high)


def _num(x: float | None) -> str:
    if x is None:
        return "any"
    return str(int(x)) if float(x).is_integer() else str(x)


def _field_default(spec: Field[Any]) -> Any:
    if spec.default is not MISSING:
        return spec.default
    if spec.default_factory is not MISSING:
        return spec.default_factory()
    return None


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.ScalarNode):
        return f"the value {node.value!r}" if node.value else "an empty value"
    return "something else"


def _construct(node: yaml.Node) -> Any:
    """The Python value of a composed YAML node (safe types only)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _convert(tp: Any, value: Any) -> Any:
    """`value` as type `tp`, or _INVALID. Strict: no silent string-to-number guessing."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            converted = _convert(arg, value)
            if converted is not _INVALID:
                return converted
        return _INVALID
    if origin is Literal:
        options = typing.get_args(tp)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if value is None and "null" in options:
            value = "null"  # YAML reads a bare `null` (the choice's name) as nothing
        return value if value in options else _INVALID
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            return _INVALID
        items = [_convert(item_tp, v) for v in value]
        return _INVALID if any(i is _INVALID for i in items) else items
    if tp is bool:
        return value if isinstance(value, bool) else _INVALID
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return _INVALID
    if tp is str:
        return value if isinstance(value, str) else _INVALID
    return _INVALID


def iter_fields(
    cls: type[Any] = Settings, prefix: KeyPath = ()
) -> Iterator[tuple[KeyPath, Field[Any]]]:
    """Every leaf setting as (key path, dataclass field), in declaration order."""
    hints = typing.get_type_hints(cls)
    for spec in fields(cls):
        tp = hints[spec.name]
        if is_dataclass(tp):
            yield from iter_fields(typing.cast(type[Any], tp), (*prefix, spec.name))
        else:
            yield (*prefix, spec.name), spec


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as plain data, secrets replaced by '***', for printing."""
    out: dict[str, Any] = {}
    for path, spec in iter_fields():
        value: Any = settings
        for part in path:
            value = getattr(value, part)
        if spec.metadata.get("secret") and value is not None:
            value = "***"
        out.setdefault(path[0], {})[path[1]] = value
    return out
