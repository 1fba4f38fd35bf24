"""The config loader: every default runs, every user mistake is one clear line."""

from __future__ import annotations

import os
import pwd
from dataclasses import fields
from pathlib import Path

import pytest

from satellite.addon import OPTION_SCHEMA
from satellite.cli import main
from satellite.config import (
    CONFIG_ENV,
    PATH_KEYS,
    ConfigError,
    find_config_file,
    iter_fields,
    load_config,
    parse_config,
)
from satellite.config_docs import doc_for, example_yaml
from satellite.engine.template import VOICES
from satellite.settings import VOICE_NAMES, Settings
from tests.paths import REPO

# (config text, expected line:col, expected key, words the message must contain)
MALFORMED = [
    ("satelite:\n  name: x\n", "1:1", "satelite", ["unknown key", "did you mean 'satellite'"]),
    ("mqtt:\n  prot: 1883\n", "2:3", "mqtt.prot", ["unknown key", "did you mean 'port'"]),
    ("mqtt:\n  port: 70000\n", "2:9", "mqtt.port", ["70000", "out of range", "1 to 65535"]),
    ("mqtt:\n  port: -1\n", "2:9", "mqtt.port", ["-1", "out of range"]),
    ("mqtt:\n  port: '1883'\n", "2:9", "mqtt.port", ["'1883'", "integer", "without quotes"]),
    ("mqtt:\n  port: 18.5\n", "2:9", "mqtt.port", ["18.5", "integer"]),
    ("mqtt:\n  tls: maybe\n", "2:8", "mqtt.tls", ["'maybe'", "true or false"]),
    ("mqtt:\n  host: [a, b]\n", "2:9", "mqtt.host", ["expected text", "got a list"]),
    ("mqtt:\n  protocol: 4\n", "2:13", "mqtt.protocol", ["4", "one of 5, 3.1.1"]),
    ("audio:\n  backend: alsa\n", "2:12", "audio.backend", ["'alsa'", "sounddevice, file, null"]),
    ("satellite:\n  mode: lokal\n", "2:9", "satellite.mode", ["'lokal'", "did you mean 'local'"]),
    ("model:\n  variant: q3\n", "2:12", "model.variant", ["'q3'", "q4, q8, fp16, fp32"]),
    ("model:\n  providers: [cuda, gpu]\n", "2:14", "model.providers", ["'gpu'", "did you mean"]),
    ("model:\n  threads: 1000\n", "2:12", "model.threads", ["1000", "0 to 256"]),
    ("wake:\n  sensitivity: 1.5\n", "2:16", "wake.sensitivity", ["1.5", "0 to 1"]),
    (
        "wake:\n  model: okay_nabo\n",
        "2:10",
        "wake.model",
        ["'okay_nabo'", "did you mean 'okay_nabu'"],
    ),
    (
        "wake:\n  stop_model: stopp\n",
        "2:15",
        "wake.stop_model",
        ["'stopp'", "shipped stop word (stop)", 'nor "" (none)', "did you mean 'stop'"],
    ),
    ("wake:\n  stop_sensitivity: -1\n", "2:21", "wake.stop_sensitivity", ["-1", "0 to 1"]),
    ("vad:\n  trailing_silence_ms: 10\n", "2:24", "vad.trailing_silence_ms", ["10", "100 to 5000"]),
    ("logging:\n  level: verbose\n", "2:10", "logging.level", ["'verbose'", "debug, info"]),
    ("logging:\n  level: info\n  level: debug\n", "3:3", "logging.level", ["duplicate key"]),
    ("mqtt: 1883\n", "1:7", "mqtt", ["must be a mapping"]),
    ("- a\n- b\n", "1:1", "", ["the config file must be a mapping", "a list"]),
    ("mqtt:\n  port: 1883\n   host: x\n", "3:8", "", ["YAML syntax error", "mapping values"]),
    ("audio:\n  backend: [file\n", "3:1", "", ["YAML syntax error"]),
    ("satellite:\n  name: ''\n", "2:9", "satellite.name", ["must not be empty"]),
    ("satellite:\n  area: 3\n", "2:9", "satellite.area", ["3", "expected text"]),
    (
        "wyoming:\n  satellite_port: 10700\n  services_port: 10700\n",
        "3:18",
        "wyoming.services_port",
        ["also the satellite_port", "different ports"],
    ),
    (
        "mqtt:\n  password_file: /nonexistent/secret\n",
        "2:18",
        "mqtt.password_file",
        ["file not found"],
    ),
    (
        "mqtt:\n  username: u\n  password: p\n  password_file: /etc/hostname\n",
        "4:18",
        "mqtt.password_file",
        ["either mqtt.password or mqtt.password_file"],
    ),
    ("audio:\n  backend: file\n", None, "audio.input_file", ["needs an input WAV file"]),
    ("mqtt:\n  cert_file: /etc/hostname\n  tls: true\n", None, "mqtt.key_file", ["needs both"]),
    (
        "model:\n  directory: /nonexistent/model\n",
        "2:14",
        "model.directory",
        ["directory not found"],
    ),
    ("logging:\n  file: /nonexistent/dir/x.log\n", "2:9", "logging.file", ["does not exist"]),
    (
        "audio:\n  barge_in: voice\n  echo_cancellation: false\n",
        "2:13",
        "audio.barge_in",
        ["through the echo canceller", "audio.echo_cancellation: true"],
    ),
    ("audio:\n  barge_in: voices\n", "2:13", "audio.barge_in", ["'voices'", "true or false"]),
    ("audio:\n  noise_suppression: 5\n", "2:22", "audio.noise_suppression", ["5"]),
]


@pytest.mark.parametrize(("text", "position", "key", "words"), MALFORMED)
def test_malformed_config_gives_one_clear_line(
    tmp_path: Path, text: str, position: str | None, key: str, words: list[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = [p for p in caught.value.problems if not p.warning]
    assert len(problems) == 1, f"expected exactly one problem, got: {problems}"
    line = str(problems[0])
    assert "\n" not in line
    where = f"{path}:{position}: " if position else f"{path}: "
    assert line.startswith(where), line
    if key:
        assert f": {key}: " in line, line
    for word in words:
        assert word in line, f"{word!r} missing from: {line}"


def test_malformed_configs_are_distinct() -> None:
    assert len({text for text, *_ in MALFORMED}) == len(MALFORMED) >= 15


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = "satelite: {}\nmqtt:\n  port: 0\n  tls: 2\naudio:\n  backend: alsa\n"
    _, problems = parse_config(text, "many.yaml")
    keys = [p.key for p in problems]
    assert keys == ["satelite", "mqtt.port", "mqtt.tls", "audio.backend"]


def test_every_default_runs() -> None:
    settings, problems = parse_config("")
    assert problems == []
    assert settings == Settings()
    assert load_config(None).settings == Settings()


def test_values_are_applied(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        "satellite: {name: Kitchen, area: kitchen, mode: ha}\n"
        "mqtt: {port: 8883, protocol: 3.1.1, tls: true}\n"
        "model: {providers: [cuda, cpu], threads: 2}\n"
        "audio: {input_device: 3, output_device: USB, barge_in: voice, "
        "echo_cancellation: true, auto_gain: 12}\n"
        "vad: {voice_gate_db: 0}\n"
    )
    s = load_config(path).settings
    assert (s.satellite.name, s.satellite.mode, s.mqtt.port, s.mqtt.protocol) == (
        "Kitchen",
        "ha",
        8883,
        "3.1.1",
    )
    assert s.model.providers == ["cuda", "cpu"]
    assert (s.audio.input_device, s.audio.output_device) == (3, "USB")
    assert (s.audio.barge_in, s.audio.auto_gain, s.vad.voice_gate_db) == ("voice", 12, 0.0)


def test_missing_unreadable_and_binary_files(tmp_path: Path) -> None:
    for path, words in [
        (tmp_path / "absent.yaml", "config file not found"),
        (tmp_path, "is a directory, not a config file"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert str(caught.value) == f"{path}: {words}"
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match=r"bin.yaml: config file is not UTF-8 text"):
        load_config(binary)


def test_secret_in_world_readable_file_is_warned(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("mqtt:\n  username: ha\n  password: hunter2\n")
    path.chmod(0o644)
    warnings = load_config(path).warnings
    assert len(warnings) == 1
    assert "world-readable" in str(warnings[0]) and "mqtt.password" in str(warnings[0])
    path.chmod(0o600)
    assert load_config(path).warnings == []


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    cwd_file = tmp_path / "satellite.yaml"
    cwd_file.write_text("{}\n")
    env_file = tmp_path / "env.yaml"
    env_file.write_text("{}\n")
    assert find_config_file(None) == Path("satellite.yaml")
    monkeypatch.setenv(CONFIG_ENV, str(env_file))
    assert find_config_file(None) == env_file
    assert find_config_file("explicit.yaml") == Path("explicit.yaml")


def test_every_setting_is_documented() -> None:
    undocumented = [".".join(p) for p, _ in iter_fields() if len(doc_for(p)) < 10]
    assert undocumented == []
    assert all(doc_for((f.name,)) for f in fields(Settings))


def test_example_config_is_current_and_valid() -> None:
    example = REPO / "satellite.example.yaml"
    assert example.read_text() == example_yaml(), (
        "satellite.example.yaml is stale: run `lfm-satellite check-config --example > satellite.example.yaml`"
    )
    settings, problems = parse_config(example.read_text(), str(example))
    assert problems == [] and settings == Settings()
    for path, _ in iter_fields():
        assert f"  {path[-1]}:" in example.read_text(), path


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("mqtt:\n  username: ha\n  password: hunter2\n")
    good.chmod(0o600)
    assert main(["check-config", str(good)]) == 0
    out = capsys.readouterr().out
    assert f"from {good}" in out and "password: '***'" in out and "hunter2" not in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt:\n  port: high\n")
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:9: mqtt.port: 'high' is not valid" in err
    assert "Traceback" not in err
    assert os.path.exists(good)


def test_unreadable_config_file(tmp_path: Path) -> None:
    """A file the daemon's user cannot read is named with 'permission denied'. Root reads
    everything, so as root the check runs in a forked child that became `nobody`."""
    config = tmp_path / "private.yaml"
    config.write_text("mqtt: {port: 1883}\n")
    config.chmod(0o000)
    tmp_path.chmod(0o755)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, load, report the message through the pipe
        os.close(read_end)
        try:
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            try:
                load_config(config)
                message = "loaded without error"
            except ConfigError as err:
                message = str(err)
            os.write(write_end, message.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    assert message == f"{config}: cannot read config file: permission denied"


def test_bare_null_is_the_null_backend(tmp_path: Path) -> None:
    """YAML reads `backend: null` as nothing; for a choice named `null` it means that choice."""
    path = tmp_path / "satellite.yaml"
    path.write_text("audio:\n  backend: null\nmodel:\n  directory:\n")
    settings = load_config(path).settings
    assert settings.audio.backend == "null" and settings.model.directory is None


def test_the_voices_are_named_once() -> None:
    """`model.voice`'s names (settings), the engine's prompts for them, the live control's and
    the add-on's choices are the same list."""
    assert tuple(VOICES) == VOICE_NAMES == ("us_female", "us_male", "uk_female", "uk_male")
    assert OPTION_SCHEMA["voice"] == "list(us_female|us_male|uk_female|uk_male)"


def test_paths_are_read_against_the_config_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every setting naming a file or folder: relative -> against the config file's folder,
    `~` expanded, absolute kept; a shipped wake word stays a name. The satellite then uses
    the paths as they are, from whatever folder it runs in."""
    folder = tmp_path / "etc"
    (folder / "sounds").mkdir(parents=True)
    (folder / "models").mkdir()
    for name in ("mic.wav", "sounds/awake.wav", "allow.yaml", "pw", "ww.json"):
        (folder / name).write_text("x")
    home = tmp_path / "home"
    (home / "m").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    config = folder / "satellite.yaml"
    config.write_text(
        "satellite: {state_file: state.json}\n"
        "audio: {backend: file, input_file: mic.wav, output_file: /abs/out.wav, "
        "awake_sound: sounds/awake.wav}\n"
        "wake: {model: ww.json, stop_model: ww.json}\n"
        "model: {directory: ~/m, models_dir: models}\n"
        "mqtt: {enabled: true, username: u, password_file: pw}\n"
        "device_control: {enabled: true, allowlist_file: allow.yaml}\n"
    )
    config.chmod(0o600)
    s = load_config(config).settings
    assert s.satellite.state_file == str(folder / "state.json")
    assert s.audio.input_file == str(folder / "mic.wav")
    assert s.audio.output_file == "/abs/out.wav"
    assert s.audio.awake_sound == str(folder / "sounds/awake.wav")
    assert s.audio.done_sound is None
    assert s.wake.model == s.wake.stop_model == str(folder / "ww.json")
    assert s.model.directory == str(home / "m")
    assert s.model.models_dir == str(folder / "models")
    assert s.mqtt.password_file == str(folder / "pw")
    assert s.device_control.allowlist_file == str(folder / "allow.yaml")
    config.write_text("wake: {model: hey_jarvis}\n")
    assert load_config(config).settings.wake.model == "hey_jarvis"
    assert load_config(config).settings.wake.stop_model == "stop"
    config.write_text("wake: {stop_model: ''}\n")
    assert load_config(config).settings.wake.stop_model == ""
    assert {key for _, key in PATH_KEYS} >= {"state_file", "input_file", "allowlist_file"}
