"""`lfm-satellite transcribe | speak | chat` on the tiny model (issue 4, point 7), and the WAV
reading and writing they rely on.

The tiny model has random weights, so its text is gibberish: the tests check structure (one
line per file, exit codes, messages naming the file and the reason, WAV format and a length that
is exactly 1920 samples per decoded frame at 24 kHz, text and audio streamed as they are made),
never content. They run on the default tiny model (`cached_model("tiny", "q4")`, the demo's:
special rows scaled so that it reaches `<|audio_start|>` and end-of-audio), which must give
output in every command and say that it is random.
"""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lfm_toolchain.build import build_model
from lfm_toolchain.cache import cached_model

from satellite.audio.convert import AudioFormatError
from satellite.audio.wavfile import WavWriter, read_wav, wav_info, write_wav
from satellite.cli import engine as commands
from satellite.cli import main
from satellite.cli.engine import InputLimit, read_speech
from satellite.config import load_config
from satellite.engine.load import ModelNotFoundError, model_directory
from satellite.engine.textstream import printable
from satellite.modeldir.fetch import default_model_dir
from satellite.settings import ModelSettings
from tests.paths import REPO
from tests.satellite_support import tiny_model, unshaped_model

SAMPLES_PER_FRAME = 1920
"""24 kHz samples per 80 ms audio frame (the LFM2.5 detokenizer)."""


RANDOM_NOTICE = (
    "model: lfm2.5-audio-tiny-random has random weights: its words and audio are noise; "
    "the path and the timings are real"
)
"""What each command says first (stderr) on the tiny model."""


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    """The default tiny model: the demo's, the commands' and the daemon tests' (q4)."""
    return tiny_model()


@pytest.fixture(scope="module")
def unshaped_dir() -> Path:
    """The tiny model with its special rows as drawn (`unshaped_model`: seed 0, not shaped):
    its greedy text runs on, never reaching `<|audio_start|>` or `<|im_end|>`. For the tests
    that need a model that never speaks, and transcripts long enough to tell two inputs apart
    (the default model's transcripts end after a few tokens)."""
    return unshaped_model()


@pytest.fixture(scope="module")
def mimi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default tiny model's weights as an LFM2-Audio (v1) model: Mimi decodes its audio."""
    out = tmp_path_factory.mktemp("models") / "mimi"
    build_model(out, size="tiny", variant="q4", family="lfm2-audio")
    return out


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file of its own (quiet log), so no config of the machine is read."""
    monkeypatch.delenv("LFM_SATELLITE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "satellite.yaml"
    path.write_text("logging:\n  level: warning\n")
    return path


def run(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    code = main(["-c", str(config), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tone(seconds: float, rate: int, freq: float = 300.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_std_wav(path: Path, samples: np.ndarray, rate: int, width: int, channels: int) -> Path:
    """An independent writer: the standard library's `wave` (8-bit unsigned, 16-bit signed)."""
    data = np.repeat(samples[:, None], channels, axis=1).reshape(-1)
    if width == 1:
        pcm = np.round(data * 127 + 128).astype(np.uint8).tobytes()
    else:
        pcm = np.round(data * 32767).astype("<i2").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


def header(rate: int, channels: int, bits: int, data_bytes: int, tag: int = 1) -> bytes:
    block = channels * bits // 8
    return b"RIFF" + struct.pack(
        "<I4s4sIHHIIHH4sI",
        min(36 + data_bytes, 0xFFFFFFFF),
        b"WAVE",
        b"fmt ",
        16,
        tag,
        channels,
        rate,
        rate * block,
        block,
        bits,
        b"data",
        data_bytes,
    )


def read_back(path: Path) -> tuple[int, int, int, np.ndarray]:
    """(rate, channels, sample width, samples) through the standard library's reader."""
    with wave.open(str(path), "rb") as w:
        frames = w.readframes(w.getnframes())
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), np.frombuffer(frames, "<i2")


# ---------------------------------------------------------------------------------------------
# WAV files


def test_wav_writer_streams_and_patches_the_header(tmp_path: Path) -> None:
    """Written in pieces, read back by `wave` with the right sizes; nothing under the final
    name until it is complete; an exception leaves nothing behind."""
    out = tmp_path / "out.wav"
    signal = tone(0.5, 24000)
    with WavWriter(out, 24000) as writer:
        for start in range(0, signal.size, 1000):
            writer.write(signal[start : start + 1000])
            assert not out.exists()
        assert writer.writes == 12 and writer.frames == signal.size
    rate, channels, width, samples = read_back(out)
    assert (rate, channels, width, samples.size) == (24000, 1, 2, signal.size)
    assert np.abs(samples / 32768.0 - signal).max() <= 1 / 32768  # 16-bit rounding
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]

    failed = tmp_path / "failed.wav"
    with pytest.raises(RuntimeError), WavWriter(failed, 24000) as writer:
        writer.write(signal)
        raise RuntimeError("generation failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_wav_info_reads_the_header_only(tmp_path: Path) -> None:
    """An hour-long file (sparse: no bytes written) is described from its header; a header
    declaring more data than the file holds is truncated; 0xFFFFFFFF means to the end."""
    hour = tmp_path / "hour.wav"
    size = 3600 * 16000 * 2
    with hour.open("wb") as f:
        f.write(header(16000, 1, 16, size))
        f.truncate(44 + size)
    info = wav_info(hour)
    assert info.seconds == 3600.0 and not info.truncated
    assert info.describe() == "16000 Hz, 1 channel, 16-bit PCM"

    cut = tmp_path / "cut.wav"
    cut.write_bytes(header(16000, 2, 16, 64000) + b"\x01\x00" * 8001)  # odd byte count
    info = wav_info(cut)
    assert info.truncated and info.frames == 4000 and info.declared_seconds == 1.0
    audio = read_wav(cut)
    assert audio.truncated and audio.samples.size == 4000

    unknown = tmp_path / "unknown.wav"
    unknown.write_bytes(header(8000, 1, 16, 0xFFFFFFFF) + b"\x00\x10" * 800)
    info = wav_info(unknown)
    assert info.frames == 800 and not info.truncated and info.declared_bytes is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file (0 bytes)"),
        (b"hello, not audio\n", "not a WAV file (no RIFF/WAVE header)"),
        (b"ID3\x04\x00" + bytes(40), "an MP3 file, not a WAV file; convert it"),
        (b"fLaC" + bytes(40), "a FLAC file"),
        (b"RIFF\x10\x00\x00\x00AVI LIST", "a RIFF file of type 'AVI ', not a WAV file"),
        (b"RIFF\x10\x00", "ends inside the RIFF header"),
        (header(16000, 1, 16, 100)[:30], "truncated WAV file: the fmt chunk is too short"),
        (header(16000, 1, 16, 100)[:36], "no audio data chunk"),
        (header(16000, 1, 12, 100), "12-bit PCM samples are not supported"),
        (header(16000, 1, 8, 100, tag=7), "WAV encoding mu-law is not supported"),
        (header(16000, 0, 16, 100), "invalid header (0 channels at 16000 Hz)"),
    ],
)
def test_unusable_files_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "input.wav"
    path.write_bytes(content)
    with pytest.raises(AudioFormatError) as caught:
        wav_info(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_read_speech_converts_to_16k_mono(tmp_path: Path) -> None:
    """48 kHz stereo and 8 kHz 8-bit files come out as the same tone at 16 kHz mono (soxr;
    bound 5e-3 for 16-bit input, 2e-2 for 8-bit's quantisation); float32 WAV too."""
    limit = InputLimit(60.0, "--max-seconds")
    want = tone(1.0, 16000)
    stereo = write_std_wav(tmp_path / "s.wav", tone(1.0, 48000), 48000, 2, 2)
    eight = write_std_wav(tmp_path / "e.wav", tone(1.0, 8000), 8000, 1, 1)
    floats = tmp_path / "f.wav"
    floats.write_bytes(header(16000, 1, 32, 64000, tag=3) + want.astype("<f4").tobytes())
    for path, bound in ((stereo, 5e-3), (eight, 2e-2), (floats, 1e-7)):
        speech = read_speech(path, 16000, limit)
        got = speech.samples
        assert abs(got.size - want.size) <= 1, path
        n = min(got.size, want.size) - 200
        assert np.abs(got[200:n] - want[200:n]).max() < bound, path
        assert speech.warnings == ()


def test_printable_text() -> None:
    assert printable("a\tb\n c\x1cd", one_line=True) == "a b c d"
    assert printable("esc\x1b[2Jx\nnext", one_line=False) == "esc\ufffd[2Jx\nnext"


# ---------------------------------------------------------------------------------------------
# model resolution


def test_model_directory_by_path_name_and_config(tmp_path: Path, tiny_dir: Path) -> None:
    models = tmp_path / "models"
    settings = ModelSettings(name="tiny", variant="fp32", models_dir=str(models))
    assert model_directory(str(tiny_dir), settings).directory == tiny_dir
    with pytest.raises(ModelNotFoundError, match=r"tiny \(fp32\) is not on this machine"):
        model_directory(None, settings)
    place = default_model_dir(models, "tiny", "fp32")
    place.parent.mkdir(parents=True)
    place.symlink_to(tiny_dir)
    chosen = model_directory("tiny", settings)
    assert (chosen.directory, chosen.origin) == (place, "--model")
    assert model_directory(None, settings).origin == "model.name"
    (tmp_path / "m").mkdir()
    (tmp_path / "etc").mkdir()
    config = tmp_path / "etc" / "satellite.yaml"
    config.write_text("model:\n  directory: ../m\n")
    relative = load_config(config).settings.model  # read against the config file's folder
    assert model_directory(None, relative).directory == tmp_path / "etc/../m"
    gone = tmp_path / "etc" / "gone" / "../m"
    with pytest.raises(ModelNotFoundError, match=rf"model.directory {gone}: directory not found"):
        model_directory(None, ModelSettings(directory=str(gone)))

    official = ModelSettings(models_dir=str(models))
    with pytest.raises(ModelNotFoundError) as caught:
        model_directory(None, official)
    assert (
        "model.name LiquidAI/LFM2.5-Audio-1.5B-ONNX (q4) is not on this machine "
        f"(looked in {models}/LiquidAI/LFM2.5-Audio-1.5B-ONNX/q4); fetch it with "
        "`lfm-satellite model fetch LiquidAI/LFM2.5-Audio-1.5B-ONNX --variant q4 "
        f"--models-dir {models}`" in str(caught.value)
    )
    with pytest.raises(ModelNotFoundError, match="'nonsense' is not in the model catalog"):
        model_directory("nonsense", settings)
    with pytest.raises(ModelNotFoundError, match=r"--model \./gone: model directory not found"):
        model_directory("./gone", settings)
    with pytest.raises(ModelNotFoundError, match="is a file"):
        model_directory(str(tiny_dir / "manifest.json"), settings)


def test_model_errors_through_the_cli(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    wav = write_wav_file(tmp_path / "a.wav", 1.0)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run(capsys, config, "transcribe", "--model", str(empty), str(wav))
    assert code == 2 and out == "" and f"{empty}/manifest.json: no manifest" in err
    code, _, err = run(capsys, config, "transcribe", "--model", "./nowhere", str(wav))
    assert code == 1 and "error: --model ./nowhere: model directory not found" in err


def write_wav_file(path: Path, seconds: float, rate: int = 16000, freq: float = 300.0) -> Path:
    write_wav(path, tone(seconds, rate, freq), rate)
    return path


# ---------------------------------------------------------------------------------------------
# transcribe


def test_transcribe_batch(
    capsys: pytest.CaptureFixture[str],
    config: Path,
    tmp_path: Path,
    tiny_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Good files (16 kHz, 48 kHz stereo, 8-bit, a truncated one) give one line each, in
    order; every bad file gives one error line naming it and why, and the batch goes on;
    progress for the batch; exit 1. The hour-long file is refused from its header: its
    samples are never read."""
    files = {
        "plain.wav": write_wav_file(tmp_path / "plain.wav", 1.2),
        "stereo48k.wav": write_std_wav(tmp_path / "stereo48k.wav", tone(1.0, 48000), 48000, 2, 2),
        "eight.wav": write_std_wav(tmp_path / "eight.wav", tone(0.8, 8000), 8000, 1, 1),
    }
    cut = tmp_path / "cut.wav"
    cut.write_bytes(
        header(16000, 1, 16, 64000) + (tone(0.5, 16000) * 32767).astype("<i2").tobytes()
    )
    files["cut.wav"] = cut
    bad = {
        "empty.wav": (b"", "empty file (0 bytes)"),
        "notes.wav": (b"just some text\n", "not a WAV file"),
        "zero.wav": (header(16000, 1, 16, 0), "no audio (0 s)"),
        "short.wav": (header(16000, 1, 16, 1000) + bytes(1000), "0.031 s of audio is too short"),
        "headeronly.wav": (
            header(16000, 1, 16, 3600 * 32000),
            "truncated WAV file: the header declares 3600.00 s of audio, the file holds none",
        ),
    }
    for name, (content, _) in bad.items():
        (tmp_path / name).write_bytes(content)
    hour = tmp_path / "hour.wav"
    with hour.open("wb") as f:
        f.write(header(16000, 1, 16, 3600 * 32000))
        f.truncate(44 + 3600 * 32000)
    read: list[Path] = []
    original = commands_read_samples()

    def spy(info: Any) -> Any:
        read.append(info.path)
        return original(info)

    monkeypatch.setattr("satellite.audio.wavfile.read_samples", spy)
    order = ["plain.wav", "empty.wav", "stereo48k.wav", "hour.wav", "notes.wav", "eight.wav"]
    order += ["zero.wav", "short.wav", "headeronly.wav", "cut.wav"]
    args = [str(tmp_path / name) for name in order]
    code, out, err = run(
        capsys, config, "transcribe", "--model", str(tiny_dir), "--threads", "1",
        "--max-tokens", "12", *args,
    )  # fmt: skip
    assert code == 1
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(files[n]) for n in order if n in files]
    assert all(line.count("\t") == 1 for line in lines)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad) + 1
    for name, (_, reason) in bad.items():
        assert any(e.startswith(f"error: {tmp_path / name}: ") and reason in e for e in errors), (
            name,
            err,
        )
    assert f"error: {hour}: 3600.0 s of audio is longer than the 60 s limit (--max-seconds)" in err
    assert hour not in read and cut in read
    assert f"warning: {cut}: truncated WAV file: the header declares 2.00 s, the file holds " in err
    progress = [line for line in err.splitlines() if line.startswith("[")]
    assert len(progress) == len(files)
    assert re.fullmatch(r"\[1/10\] plain\.wav 1\.2 s audio, \d+\.\d\d s", progress[0]), progress
    assert "transcribed 4 of 10 files (6 failed)" in err


def commands_read_samples() -> Any:
    import satellite.audio.wavfile as wavfile

    return wavfile.read_samples


def test_transcribe_is_greedy_and_quiet_for_few_files(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path, unshaped_dir: Path
) -> None:
    """The same audio gives the same line (greedy), another audio another; no progress for
    two files; exit 0. On the unshaped model: its 16 tokens show the input; the default
    model's transcript ends after its first few tokens, the same for any input."""
    a = write_wav_file(tmp_path / "a.wav", 1.0, freq=300)
    b = write_wav_file(tmp_path / "b.wav", 1.0, freq=1200)
    code, out, err = run(
        capsys, config, "transcribe", "--model", str(unshaped_dir), "--threads", "1",
        "--max-tokens", "16", "--seed", "3", str(a), str(b), str(a),
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    texts = [line.split("\t", 1)[1] for line in lines]
    assert texts[0] == texts[2] != texts[1]
    assert not any(line.startswith("[") for line in err.splitlines())


def test_transcribe_limits(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path, tiny_dir: Path
) -> None:
    """The limit is --max-seconds, or what the context (4096 positions on the tiny model)
    holds next to --max-tokens, whichever is less; the message names which."""
    wav = write_wav_file(tmp_path / "long.wav", 12.0)
    code, out, err = run(
        capsys, config, "transcribe", "--model", str(tiny_dir), "--max-seconds", "10", str(wav)
    )
    assert code == 1 and out == ""
    assert f"{wav}: 12.0 s of audio is longer than the 10 s limit (--max-seconds)" in err
    code, out, err = run(
        capsys, config, "transcribe", "--model", str(tiny_dir), "--max-tokens", "3990", str(wav)
    )
    assert code == 1 and out == ""
    found = re.search(r"longer than the ([\d.]+) s limit \(what the model's context of 4096", err)
    assert found and 5.0 < float(found.group(1)) < 8.5, err  # (4096 - 3990 - prompt) / 12.5
    code, _, err = run(
        capsys, config, "transcribe", "--model", str(tiny_dir), "--max-tokens", "4090", str(wav)
    )
    assert code == 2 and "--max-tokens 4090 leaves no room for audio" in err


def test_options_reach_the_sessions(
    capsys: pytest.CaptureFixture[str],
    config: Path,
    tmp_path: Path,
    tiny_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--threads and --providers override the config's model section; a provider that does
    not exist is a message."""
    from satellite.engine.model import Model

    seen = []
    load = Model.load

    def spy(directory: Path, session: Any = None) -> Model:
        seen.append(session)
        return load(directory, session)

    monkeypatch.setattr(Model, "load", spy)
    config.write_text("logging:\n  level: warning\nmodel:\n  threads: 3\n")
    wav = write_wav_file(tmp_path / "a.wav", 0.5)
    base = ["transcribe", "--model", str(tiny_dir), "--max-tokens", "2", str(wav)]
    assert run(capsys, config, *base)[0] == 0
    assert run(capsys, config, *base, "--threads", "1", "--providers", "cpu")[0] == 0
    assert [(s.threads, s.providers) for s in seen] == [(3, ("auto",)), (1, ("cpu",))]
    code, _, err = run(capsys, config, *base, "--providers", "warp")
    assert code == 2 and "model.providers: 'warp' is not a provider" in err


def test_transcribe_in_a_subprocess(tmp_path: Path, tiny_dir: Path) -> None:
    """The console entry point: a line per file on stdout, nothing but it there."""
    write_wav_file(tmp_path / "a.wav", 1.0)
    write_std_wav(tmp_path / "b.wav", tone(0.7, 44100), 44100, 2, 2)
    (tmp_path / "satellite.yaml").write_text("logging:\n  level: warning\n")
    result = subprocess.run(
        [sys.executable, "-m", "satellite", "transcribe", "--model", str(tiny_dir),
         "--threads", "1", "--max-tokens", "8", "a.wav", "b.wav"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["a.wav", "b.wav"]
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------
# speak


class Recorder:
    """Records pushes into the detokenizer and writes into the WAV file, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from satellite.engine.detokenize import StreamingDetokenizer

        self.log: list[tuple[str, int]] = []
        push, write = StreamingDetokenizer.push, WavWriter.write

        def record_push(detok: Any, codes: Any) -> Any:
            self.log.append(("push", 1))
            return push(detok, codes)

        def record_write(writer: Any, samples: Any) -> None:
            self.log.append(("write", int(np.asarray(samples).size)))
            write(writer, samples)

        monkeypatch.setattr(StreamingDetokenizer, "push", record_push)
        monkeypatch.setattr(WavWriter, "write", record_write)

    def index(self, kind: str) -> Iterator[int]:
        return (i for i, (k, _) in enumerate(self.log) if k == kind)


def frames_reported(err: str, out: Path) -> int:
    found = re.search(rf"{re.escape(str(out))}: [\d.]+ s of audio \((\d+) frames", err)
    assert found, err
    return int(found.group(1))


@pytest.mark.parametrize("family", ["lfm2.5-audio", "lfm2-audio"])
def test_speak_streams_a_24k_wav(
    capsys: pytest.CaptureFixture[str],
    config: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    family: str,
) -> None:
    """Audio frames are decoded and written while the model generates (the first write comes
    before the last frame is decoded); the WAV is 24 kHz 16-bit mono of exactly 1920 samples
    per decoded frame; timings on stderr. LFM2.5 decodes with its LFM2 detokenizer, LFM2-Audio
    with Mimi (both 80 ms per frame)."""
    model = request.getfixturevalue("tiny_dir" if family == "lfm2.5-audio" else "mimi_dir")
    assert json.loads((model / "manifest.json").read_text())["family"] == family
    recorder = Recorder(monkeypatch)
    out = tmp_path / "hello.wav"
    code, stdout, err = run(
        capsys, config, "speak", "--model", str(model), "--threads", "1", "--seed", "1",
        "--max-seconds", "1", "Hello there, how are you?", "-o", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert stdout == ""
    frames = frames_reported(err, out)
    rate, channels, width, samples = read_back(out)
    assert (rate, channels, width) == (24000, 1, 2)
    # 1 s is 13 frames: cut there (the model's own end of audio comes later with this seed)
    assert samples.size == frames * SAMPLES_PER_FRAME and frames == 13
    assert np.abs(samples).max() > 0
    pushes = list(recorder.index("push"))
    assert len(pushes) == frames
    assert next(recorder.index("write")) < pushes[-1], recorder.log
    assert re.search(r"first audio after \d+ ms, total [\d.]+ s, real-time factor [\d.]+", err)
    assert "voice us-female" in err and "audio cut at 1 s (--max-seconds)" in err


def test_speak_resamples_and_ends_at_end_of_audio(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path, tiny_dir: Path
) -> None:
    """--rate 16000 gives 1280 samples per frame (the resampler flushed at the end); a voice
    from the config; the speech ends at the model's end-of-audio frame, before the limit."""
    config.write_text("logging:\n  level: warning\nmodel:\n  voice: uk_female\n")
    out = tmp_path / "low.wav"
    code, _, err = run(
        capsys, config, "speak", "--model", str(tiny_dir), "--threads", "1", "--seed", "1",
        "--rate", "16000", "Hello there, how are you?", "-o", str(out),
    )  # fmt: skip
    assert code == 0, err
    frames = frames_reported(err, out)
    rate, _, _, samples = read_back(out)
    assert rate == 16000 and abs(samples.size - frames * 1280) <= 2, (samples.size, frames)
    assert "voice uk-female" in err and "cut" not in err and 1 < frames < 60 * 12.5


def test_speak_refusals(
    capsys: pytest.CaptureFixture[str],
    config: Path,
    tmp_path: Path,
    tiny_dir: Path,
    unshaped_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No text, a bad voice, an output folder that does not exist; and a model that never
    starts audio (the unshaped one): exit 1 and no file (not even a partial one)."""
    out = tmp_path / "x.wav"
    code, _, err = run(capsys, config, "speak", "--model", str(tiny_dir), "  ", "-o", str(out))
    assert code == 2 and "nothing to say: TEXT is empty" in err
    with pytest.raises(SystemExit) as exited:
        main(["-c", str(config), "speak", "hi", "-o", str(out), "--voice", "robot"])
    assert exited.value.code == 2 and "'robot' is not a voice" in capsys.readouterr().err
    code, _, err = run(capsys, config, "speak", "hi<|im_end|>", "-o", str(out))
    assert code == 2 and "TEXT holds the model's control token <|im_end|>" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO(" \n\n"))
    code, _, err = run(capsys, config, "speak", "--model", str(tiny_dir), "-", "-o", str(out))
    assert code == 2 and "nothing to say: TEXT is empty" in err
    missing = tmp_path / "no" / "x.wav"
    code, _, err = run(capsys, config, "speak", "--model", str(tiny_dir), "hi", "-o", str(missing))
    assert code == 2 and f"{missing}: folder {missing.parent} does not exist" in err
    before = set(tmp_path.iterdir())
    code, _, err = run(
        capsys, config, "speak", "--model", str(unshaped_dir), "--threads", "1", "hello",
        "-o", str(out),
    )  # fmt: skip
    assert code == 1 and f"{out}: not written: the model gave no audio" in err
    assert "no <|audio_start|> in its first 64 tokens" in err
    assert set(tmp_path.iterdir()) == before


# ---------------------------------------------------------------------------------------------
# chat


class RecordingStdout:
    """sys.stdout stand-in that logs each write into the recorder's log."""

    def __init__(self, log: list[tuple[str, int]]) -> None:
        self.log = log
        self.parts: list[str] = []
        self.flushes = 0

    def write(self, text: str) -> int:
        self.log.append(("text", len(text)))
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        self.flushes += 1


def test_chat_streams_text_and_audio(
    capsys: pytest.CaptureFixture[str],
    config: Path,
    tmp_path: Path,
    tiny_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One interleaved turn: text printed (and flushed) as it comes, audio written as it
    comes, the two interleaved; the WAV holds 1920 samples per decoded frame; timings."""
    source = write_wav_file(tmp_path / "question.wav", 1.5)
    out = tmp_path / "reply.wav"
    recorder = Recorder(monkeypatch)
    stdout = RecordingStdout(recorder.log)
    monkeypatch.setattr(sys, "stdout", stdout)
    code = main(
        ["-c", str(config), "chat", "--model", str(tiny_dir), "--threads", "1", "--seed", "2",
         "--max-tokens", "60", str(source), "-o", str(out)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    kinds = [k for k, _ in recorder.log]
    first_write, first_text = kinds.index("write"), kinds.index("text")
    assert first_text < first_write, "text comes first in interleaved mode"
    assert "text" in kinds[first_write:], f"more text after audio was written: {kinds}"
    assert stdout.flushes >= kinds.count("text")
    assert "".join(stdout.parts).endswith("\n") and len("".join(stdout.parts).strip()) > 0
    frames = frames_reported(err, out)
    rate, channels, width, samples = read_back(out)
    assert (rate, channels, width) == (24000, 1, 2)
    assert samples.size == frames * SAMPLES_PER_FRAME and frames == kinds.count("push") > 0
    assert re.search(r"first text after \d+ ms, first audio after \d+ ms", err), err
    assert "the reply was cut (max_new_tokens; --max-tokens 60)" in err


def test_chat_refuses_bad_input_before_loading_the_model(
    capsys: pytest.CaptureFixture[str],
    config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_model(args: Any) -> Any:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(commands, "open_engine", no_model)
    notes = tmp_path / "notes.wav"
    notes.write_text("not audio")
    code, _, err = run(capsys, config, "chat", str(notes), "-o", str(tmp_path / "r.wav"))
    assert code == 1 and f"error: {notes}: not a WAV file" in err
    wav = write_wav_file(tmp_path / "q.wav", 1.0)
    code, _, err = run(capsys, config, "chat", str(wav), "-o", str(wav))
    assert code == 2 and "is the input file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.wav", "q.wav", "satellite.yaml"]


# ---------------------------------------------------------------------------------------------
# the default tiny model gives output in every command, and says it is random


@pytest.mark.parametrize("voice", ["us-female", "us-male", "uk-female", "uk-male"])
def test_the_default_tiny_model_speaks(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path, voice: str
) -> None:
    """`speak "hello there" -o out.wav` on the default tiny model (`cached_model("tiny", "q4")`:
    the demo's, and what the tests' `tiny_model()` is) writes speech in every voice, ending at
    the model's end-of-audio (or the --max-seconds cut), never "the model gave no audio"
    (issue 18 point 5); the first line on stderr says the weights are random."""
    model = cached_model("tiny", "q4")
    assert model == tiny_model()
    out = tmp_path / "out.wav"
    code, stdout, err = run(
        capsys, config, "speak", "--model", str(model), "--threads", "1", "--seed", "1",
        "--voice", voice, "hello there", "-o", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert stdout == "" and err.splitlines()[0] == RANDOM_NOTICE
    frames = frames_reported(err, out)
    rate, _, _, samples = read_back(out)
    assert frames > 0 and samples.size == frames * SAMPLES_PER_FRAME and rate == 24000
    assert np.abs(samples).max() > 0
    assert "did not end by itself" not in err, err


def test_the_default_tiny_model_transcribes_and_chats(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path, tiny_dir: Path
) -> None:
    """On the default tiny model `transcribe` prints a transcript, `chat` the reply's text and
    a WAV of its audio; each says first, on stderr, that the weights are random, and stdout
    holds only the data."""
    question = write_wav_file(tmp_path / "question.wav", 1.5)
    code, out, err = run(
        capsys, config, "transcribe", "--model", str(tiny_dir), "--threads", "1", str(question)
    )
    assert code == 0, err
    [line] = out.splitlines()
    name, text = line.split("\t")
    assert name == str(question) and text.strip(), line
    assert err.splitlines()[0] == RANDOM_NOTICE
    reply = tmp_path / "reply.wav"
    code, out, err = run(
        capsys, config, "chat", "--model", str(tiny_dir), "--threads", "1", "--seed", "1",
        str(question), "-o", str(reply),
    )  # fmt: skip
    assert code == 0, err
    assert out.strip() and "random weights" not in out
    assert err.splitlines()[0] == RANDOM_NOTICE
    frames = frames_reported(err, reply)
    assert frames > 0 and read_back(reply)[3].size == frames * SAMPLES_PER_FRAME


def test_only_random_weights_get_the_notice(tiny_dir: Path) -> None:
    """The line is for a model whose manifest says its weights are random, not a trained one."""
    import dataclasses

    from satellite.modeldir.manifest import read_manifest

    manifest = read_manifest(tiny_dir)
    assert manifest.source["weights"] == "random" and manifest.source["shaped"] is True
    assert commands.random_notice(manifest) == RANDOM_NOTICE
    trained = dataclasses.replace(manifest, name="LiquidAI/LFM2.5-Audio-1.5B-ONNX", source={})
    assert commands.random_notice(trained) is None
    converted = dataclasses.replace(manifest, source={"weights": "checkpoint"})
    assert commands.random_notice(converted) is None
