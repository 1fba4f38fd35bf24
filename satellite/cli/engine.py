"""`lfm-satellite transcribe | speak | chat`: the engine from the command line.

- `transcribe FILE...`: speech to text (sequential mode, system prompt `Perform ASR.`, greedy),
  one line `FILE<TAB>text` per file on stdout. A file that cannot be used gives one line on
  stderr naming it and why, and the batch goes on; the exit status is 1 when any file failed.
  Beyond a few files, progress goes to stderr.
- `speak TEXT -o OUT.wav`: text to speech (sequential mode, `Perform TTS. Use the US female
  voice.` and the like); audio frames go through the streaming detokenizer as they are
  generated and into a 16-bit mono WAV (24 kHz, or `--rate`), written as it grows; time to
  first audio, total time and real-time factor go to stderr.
- `chat IN.wav -o OUT.wav`: one conversational turn (interleaved mode); the reply's text is
  printed as it is generated, its audio written as it comes.

Input audio is a WAV file of any common kind (8-32 bit PCM, float, any rate and channel count:
converted to the model's 16 kHz mono). Its header is read first, so an over-long file is refused
before any sample is read. The longest input accepted is `--max-seconds` (default 60 s: the
encoder attends over the whole utterance, its cost grows with the square of the length) or what
the model's context holds next to the reply's `--max-tokens`, whichever is less; the message
names the limit. Shorter than 0.1 s, empty, silent-length (0 s), not a WAV, or an encoding this
reader does not decode: refused with a message naming the file. A truncated WAV (the header
declares more data than the file holds) is used as far as it goes, with a warning.

Each command takes `--model DIR|NAME` (else the config's model, `satellite.engine.load`),
`--threads` and `--providers` (over the config's `model.threads` / `model.providers`) and
`--seed` (sampled audio). On a model whose manifest says its weights are random (the tiny test
model), each says so in one line on stderr first (`random_notice`).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from satellite.engine.asr import transcribe_one
from satellite.engine.events import FRAMES_PER_SECOND
from satellite.engine.template import VOICES
from satellite.engine.textstream import printable
from satellite.errors import UserError
from satellite.logs import ms

if TYPE_CHECKING:
    from satellite.audio.convert import FloatArray
    from satellite.audio.wavfile import WavInfo
    from satellite.config import LoadedConfig
    from satellite.engine.chat import Chat
    from satellite.engine.detokenize import StreamingDetokenizer
    from satellite.engine.model import Model
    from satellite.engine.template import Tokens
    from satellite.modeldir.manifest import Manifest

_LOG = logging.getLogger("satellite.cli.engine")

DEFAULT_MAX_INPUT_SECONDS = 60.0
"""Longest input audio accepted by default (transcribe, chat)."""
MIN_INPUT_SECONDS = 0.1
"""Shortest input audio accepted: the front end needs two 10 ms hops; less than 0.1 s holds
no word."""
EMBEDDINGS_PER_SECOND = 12.5
"""Audio encoder outputs per second of input (10 ms mel hop, 8x subsampling)."""
DEFAULT_ASR_TOKENS = 512
DEFAULT_CHAT_TOKENS = 1024
DEFAULT_SPEAK_SECONDS = 60.0
PROGRESS_AFTER = 3
"""`transcribe` reports progress on stderr for batches of more files than this."""
MIN_RATE, MAX_RATE = 8000, 192000


class AudioInputError(UserError):
    """An input audio file that cannot be used; the message names the file and why."""

    exit_code = 1


class NoAudioError(UserError):
    """The model's reply has no audio."""

    exit_code = 1


# ---------------------------------------------------------------------------------------------
# argument parsing


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return number


def _threads(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 0 <= number <= 256:
        raise argparse.ArgumentTypeError(f"{value} must lie in 0..256 (0: every core)")
    return number


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not number > 0 or not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{value} must be a positive number of seconds")
    return number


def _rate(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a sample rate in Hz") from None
    if not MIN_RATE <= number <= MAX_RATE:
        raise argparse.ArgumentTypeError(f"{value} Hz: choose {MIN_RATE}..{MAX_RATE}")
    return number


def _providers(value: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in value.split(",") if p.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one provider, e.g. cpu or cuda,cpu")
    return names


def voice_name(value: str) -> str:
    """`us-female`, `US_Female`, ... -> `us_female`; argparse's error for anything else."""
    key = value.strip().lower().replace("-", "_")
    if key not in VOICES:
        choices = ", ".join(v.replace("_", "-") for v in VOICES)
        raise argparse.ArgumentTypeError(f"{value!r} is not a voice; choose {choices}")
    return key


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        metavar="DIR|NAME",
        help="model directory, or a catalog name looked for in the models folder "
        "(default: the config's model.directory or model.name)",
    )
    parser.add_argument(
        "--threads", type=_threads, metavar="N", help="ONNX Runtime threads (default: config)"
    )
    parser.add_argument(
        "--providers",
        type=_providers,
        metavar="LIST",
        help="execution providers in order, e.g. cuda,cpu (default: config)",
    )
    parser.add_argument("--seed", type=int, help="seed of sampled audio (default: random)")


def add_engine_commands(commands: Any) -> None:
    """Add `transcribe`, `speak` and `chat` to the CLI's subparsers."""
    transcribe = commands.add_parser(
        "transcribe",
        help="speech to text: one line per WAV file",
        description="Transcribe WAV files with the model (ASR). Prints `FILE<TAB>text` per file; "
        "a file that cannot be used gets a line on stderr and the others go on (exit 1 if any "
        "failed). Any WAV rate, width and channel count is converted.",
    )
    transcribe.add_argument("files", nargs="+", type=Path, metavar="FILE", help="WAV files")
    _engine_options(transcribe)
    transcribe.add_argument(
        "--max-seconds",
        type=_seconds,
        metavar="S",
        default=DEFAULT_MAX_INPUT_SECONDS,
        help=f"refuse longer files (default {DEFAULT_MAX_INPUT_SECONDS:g})",
    )
    transcribe.add_argument(
        "--max-tokens",
        type=_positive_int,
        metavar="N",
        default=DEFAULT_ASR_TOKENS,
        help=f"longest transcript in tokens (default {DEFAULT_ASR_TOKENS})",
    )
    transcribe.set_defaults(handler=cmd_transcribe)

    speak = commands.add_parser(
        "speak",
        help="text to speech into a WAV file",
        description="Speak TEXT with the model (TTS) into a 16-bit mono WAV file, written as "
        "the audio is generated. Prints time to first audio, total time and real-time factor "
        "on stderr. TEXT `-` reads the text from stdin.",
    )
    speak.add_argument("text", nargs="+", metavar="TEXT", help="what to say")
    speak.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT.wav", help="WAV file to write"
    )
    speak.add_argument(
        "--voice",
        type=voice_name,
        metavar="VOICE",
        help="us-female, us-male, uk-female or uk-male (default: config model.voice)",
    )
    speak.add_argument(
        "--rate", type=_rate, metavar="HZ", help="resample the output (default: the model's)"
    )
    speak.add_argument(
        "--max-seconds",
        type=_seconds,
        metavar="S",
        default=DEFAULT_SPEAK_SECONDS,
        help=f"stop the audio after this long (default {DEFAULT_SPEAK_SECONDS:g})",
    )
    _engine_options(speak)
    speak.set_defaults(handler=cmd_speak)

    chat = commands.add_parser(
        "chat",
        help="one spoken turn: WAV in, text and WAV reply out",
        description="Answer the speech in IN.wav (interleaved text and audio). The reply's text "
        "is printed as it is generated; its audio is written to OUT.wav as it comes. Prints "
        "time to first text and first audio on stderr.",
    )
    chat.add_argument("input", type=Path, metavar="IN.wav")
    chat.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUT.wav",
        help="WAV file to write the spoken reply to",
    )
    chat.add_argument(
        "--rate", type=_rate, metavar="HZ", help="resample the output (default: the model's)"
    )
    chat.add_argument(
        "--max-seconds",
        type=_seconds,
        metavar="S",
        default=DEFAULT_MAX_INPUT_SECONDS,
        help=f"refuse longer input (default {DEFAULT_MAX_INPUT_SECONDS:g})",
    )
    chat.add_argument(
        "--max-tokens",
        type=_positive_int,
        metavar="N",
        default=DEFAULT_CHAT_TOKENS,
        help=f"longest reply in steps: text tokens plus audio frames (default "
        f"{DEFAULT_CHAT_TOKENS})",
    )
    _engine_options(chat)
    chat.set_defaults(handler=cmd_chat)


# ---------------------------------------------------------------------------------------------
# shared pieces


@dataclass(frozen=True)
class Engine:
    model: Model
    tokens: Tokens
    loaded: LoadedConfig
    started: float
    """`time.monotonic()` when loading began: setup time (sessions, system prompt) counts
    from here."""


def open_engine(args: argparse.Namespace) -> Engine:
    """The config, the model chosen by `--model` (or the config) with the session options,
    and its tokenizer."""
    from satellite.cli.loading import load_for_command
    from satellite.engine.load import model_directory
    from satellite.engine.model import Model
    from satellite.engine.sessions import SessionConfig

    started = time.monotonic()
    loaded = load_for_command(args)
    settings = loaded.settings.model
    choice = model_directory(args.model, settings)
    overrides: dict[str, Any] = {}
    if args.threads is not None:
        overrides["threads"] = args.threads
    if args.providers is not None:
        overrides["providers"] = args.providers
    model = Model.load(choice.directory, SessionConfig.from_settings(settings, **overrides))
    tokens = model.tokens("the commands need one to read and write text")
    _LOG.info("model: %s (%s) from %s", model.manifest.name, model.manifest.variant, choice.origin)
    notice = random_notice(model.manifest)
    if notice is not None:
        _err(notice)
    return Engine(model, tokens, loaded, started)


def random_notice(manifest: Manifest) -> str | None:
    """One line saying that the model's weights are random, so what it says is noise (None for
    a trained model): the commands and the demo print it before they run it."""
    if not manifest.random_weights:
        return None
    return (
        f"model: {manifest.name} has random weights: its words and audio are noise; "
        "the path and the timings are real"
    )


@dataclass(frozen=True)
class InputLimit:
    seconds: float
    reason: str
    """How the limit was set, e.g. `--max-seconds`."""


def input_limit(chat: Chat, overhead: int, reply_tokens: int, max_seconds: float) -> InputLimit:
    """The longest input audio a turn takes: `max_seconds`, or what fits the context next to
    the prefix, `overhead` template positions and `reply_tokens` for the reply."""
    free = chat.context_length - chat.prefix_length - overhead - reply_tokens
    fits = math.floor(max(free - 1, 0) / EMBEDDINGS_PER_SECOND * 10) / 10
    if fits < max_seconds:
        return InputLimit(
            fits,
            f"what the model's context of {chat.context_length} positions holds next to a "
            f"reply of up to {reply_tokens} tokens (--max-tokens)",
        )
    return InputLimit(max_seconds, "--max-seconds")


@dataclass(frozen=True)
class SpeechInput:
    samples: FloatArray
    """Mono float32 at the model's input rate."""
    info: WavInfo
    warnings: tuple[str, ...] = ()


def check_speech(path: Path, limit: InputLimit) -> WavInfo:
    """The header of the WAV file `path`, checked before any sample is read. Raises
    AudioInputError naming the file: not usable, no audio, too long, too short."""
    from satellite.audio.convert import AudioFormatError
    from satellite.audio.wavfile import wav_info

    try:
        info = wav_info(path)
    except AudioFormatError as err:
        raise AudioInputError(str(err)) from None
    if info.frames == 0:
        if info.truncated:
            raise AudioInputError(
                f"{path}: truncated WAV file: the header declares {info.declared_seconds:.2f} s "
                "of audio, the file holds none"
            )
        raise AudioInputError(f"{path}: no audio (0 s)")
    if info.seconds > limit.seconds:
        raise AudioInputError(
            f"{path}: {info.seconds:.1f} s of audio is longer than the {limit.seconds:g} s "
            f"limit ({limit.reason}); cut it into shorter pieces"
        )
    if info.seconds < MIN_INPUT_SECONDS:
        raise AudioInputError(
            f"{path}: {info.seconds:.3f} s of audio is too short; at least "
            f"{MIN_INPUT_SECONDS:g} s is needed"
        )
    return info


def read_speech(path: Path, rate: int, limit: InputLimit) -> SpeechInput:
    """The WAV file `path` as mono float32 at `rate` Hz (`check_speech` first). A truncated
    file gives what it holds and a warning. Raises AudioInputError naming the file."""
    import numpy as np

    from satellite.audio.convert import AudioFormatError, resample
    from satellite.audio.wavfile import read_samples

    info = check_speech(path, limit)
    try:
        audio = read_samples(info)
    except AudioFormatError as err:
        raise AudioInputError(str(err)) from None
    if not np.all(np.isfinite(audio.samples)):
        raise AudioInputError(f"{path}: the samples hold NaN or infinite values")
    warnings = []
    if audio.truncated:
        warnings.append(
            f"{path}: truncated WAV file: the header declares {info.declared_seconds:.2f} s, "
            f"the file holds {info.seconds:.2f} s; using what is there"
        )
    samples = np.clip(audio.samples, -1.0, 1.0)
    return SpeechInput(resample(samples, info.rate, rate), info, tuple(warnings))


def _check_output(path: Path, *inputs: Path) -> None:
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give a file name for the WAV output")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"{path}: folder {folder} does not exist")
    for source in inputs:
        if source.exists() and path.exists() and path.samefile(source):
            raise UserError(f"{path}: is the input file; write the reply elsewhere")


def _template_length(parts: list[Any]) -> int:
    from satellite.engine.chat import Embeds, Speech

    return sum(len(p) for p in parts if not isinstance(p, Speech | Embeds))


def _close(events: Iterator[Any]) -> None:
    """End a turn early (closing its generator)."""
    close = getattr(events, "close", None)
    if close is not None:
        close()


def _err(message: str, stream: TextIO | None = None) -> None:
    print(message, file=stream or sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# transcribe


def cmd_transcribe(args: argparse.Namespace) -> int:
    from satellite.engine.chat import Chat, system_prefix, user_turn
    from satellite.engine.template import ASR_PROMPT

    engine = open_engine(args)
    model, tokens = engine.model, engine.tokens
    chat = Chat(model, prefix=system_prefix(tokens, ASR_PROMPT), seed=args.seed)
    _ = chat.encoder  # open the encoder's session now, not inside the first file's timing
    rate = chat.encoder.sample_rate
    overhead = _template_length(user_turn(tokens))
    limit = input_limit(chat, overhead, args.max_tokens, args.max_seconds)
    if limit.seconds < MIN_INPUT_SECONDS:
        raise UserError(
            f"--max-tokens {args.max_tokens} leaves no room for audio in the model's context "
            f"of {chat.context_length} positions"
        )
    files: list[Path] = args.files
    progress = len(files) > PROGRESS_AFTER
    failed = 0
    audio_seconds = 0.0
    started = time.monotonic()
    for index, path in enumerate(files, 1):
        began = time.monotonic()
        try:
            speech = read_speech(path, rate, limit)
            for warning in speech.warnings:
                _err(f"warning: {warning}")
            result = transcribe_one(chat, tokens, speech.samples, args.max_tokens)
        except UserError as err:
            failed += 1
            text = str(err)
            _err(f"error: {text if text.startswith(str(path)) else f'{path}: {text}'}")
            continue
        if result.reason == "max_new_tokens":
            _err(f"warning: {path}: transcript cut at {args.max_tokens} tokens (--max-tokens)")
        elif result.reason == "context_full":
            _err(f"warning: {path}: transcript cut where the model's context is full")
        elif result.reason == "audio":
            _LOG.debug("%s: the model began to speak; the transcript ends there", path)
        print(f"{path}\t{result.text}", flush=True)
        audio_seconds += speech.info.seconds
        if progress:
            took = time.monotonic() - began
            _err(
                f"[{index}/{len(files)}] {path.name} {speech.info.seconds:.1f} s audio, "
                f"{took:.2f} s"
            )
    if progress or failed:
        took = time.monotonic() - started
        done = len(files) - failed
        rtf = f", real-time factor {took / audio_seconds:.2f}" if audio_seconds else ""
        _err(
            f"transcribed {done} of {len(files)} files"
            + (f" ({failed} failed)" if failed else "")
            + f": {audio_seconds:.1f} s of audio in {took:.1f} s{rtf}"
        )
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------
# speak and chat


class AudioOut:
    """Generated audio -> (resampler) -> WAV file, as it comes; remembers when the first
    samples were written. `push` takes a frame's codes through the streaming detokenizer
    first (`chat`); `write` takes audio already decoded (`speak`, from a `SpeechStream`).

    A frame holding the end-of-audio code (2048) in a codebook other than the first is not
    audio the detokenizer can decode (the reference refuses it too; a trained model does not
    make one, a random one does): it is skipped and counted, never clamped."""

    def __init__(self, detokenizer: StreamingDetokenizer, path: Path, rate: int | None) -> None:
        from satellite.audio.convert import StreamResampler
        from satellite.audio.wavfile import WavWriter

        self.detokenizer = detokenizer
        self.rate = rate or detokenizer.sample_rate
        self.resampler = StreamResampler(detokenizer.sample_rate, self.rate)
        self.writer = WavWriter(path, self.rate)
        self.frames = 0
        """Frames decoded."""
        self.skipped = 0
        """Frames skipped: a code outside the detokenizer's range."""
        self.first_audio: float | None = None

    def push(self, codes: tuple[int, ...]) -> None:
        samples = self.detokenizer.push_generated(codes)
        if samples is None:
            self.skipped += 1
            return
        self.frames += 1
        self.write(samples)

    def write(self, samples: FloatArray) -> None:
        """Decoded audio at the detokenizer's rate."""
        samples = self.resampler.process(samples)
        if samples.size:
            if self.first_audio is None:
                self.first_audio = time.monotonic()
            self.writer.write(samples)

    def finish(self) -> None:
        """The detokenizer's tail, then the file closed."""
        self.write(self.detokenizer.finish())
        self.close()

    def close(self) -> None:
        """The resampler's tail, then the file closed."""
        tail = self.resampler.process(np.zeros(0, np.float32), last=True)
        if tail.size:
            self.writer.write(tail)
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()

    def describe(self, frames: int, skipped: int) -> str:
        """e.g. `1.20 s of audio (15 frames, 24000 Hz)`, with the skipped frames."""
        lost = (
            f", {skipped} skipped: a code {self.detokenizer.end_of_audio} outside codebook 0"
            if skipped
            else ""
        )
        return f"{self.writer.seconds:.2f} s of audio ({frames} frames{lost}, {self.rate} Hz)"


def cmd_speak(args: argparse.Namespace) -> int:
    from satellite.engine.chat import Chat, system_prefix, user_turn
    from satellite.engine.detokenizers import from_model
    from satellite.engine.template import control_token_in, tts_prompt
    from satellite.engine.tts import SpeechStream

    text = " ".join(args.text)
    if text.strip() == "-":
        text = sys.stdin.read()
    text = text.strip()
    if not text:
        raise UserError("nothing to say: TEXT is empty")
    special = control_token_in(text)
    if special is not None:
        raise UserError(f"TEXT holds the model's control token {special}; leave it out")
    output: Path = args.output
    _check_output(output)
    engine = open_engine(args)
    model, tokens = engine.model, engine.tokens
    voice = args.voice or voice_name(engine.loaded.settings.model.voice)
    accent, gender = VOICES[voice]
    chat = Chat(model, prefix=system_prefix(tokens, tts_prompt(accent, gender)), seed=args.seed)
    size = _template_length(user_turn(tokens, text))
    if chat.context_length - chat.prefix_length - size < 2:
        raise UserError(
            f"TEXT is too long: {size} tokens with the template; the model's context holds "
            f"{chat.context_length - chat.prefix_length} after the system prompt"
        )
    max_frames = max(1, math.ceil(args.max_seconds * FRAMES_PER_SECOND))
    out = AudioOut(from_model(model), output, args.rate)
    stream = SpeechStream(chat, tokens, out.detokenizer, text, max_frames=max_frames)
    started = time.monotonic()
    try:
        for samples in stream:
            out.write(samples)
        if not stream.frames:
            why = {
                "no_audio_start": f"no <|audio_start|> in its first {stream.texts} tokens",
                "end_of_turn": f"the turn ended after {stream.texts} text tokens",
                "context_full": "the context filled up",
            }.get(stream.reason, f"{stream.texts} text tokens, then it stopped ({stream.reason})")
            if stream.skipped:
                why = f"{stream.skipped} frames with code 2048 outside codebook 0, skipped"
            raise NoAudioError(f"{output}: not written: the model gave no audio ({why})")
        out.close()
    except BaseException:
        out.abort()
        raise
    total = time.monotonic() - started
    if stream.reason == "max_seconds":
        _err(f"warning: {output}: audio cut at {args.max_seconds:g} s (--max-seconds)")
    elif stream.reason in ("max_new_tokens", "context_full"):
        _err(f"warning: {output}: the audio did not end by itself ({stream.reason})")
    seconds = out.writer.seconds
    first = None if out.first_audio is None else out.first_audio - started
    _err(
        f"{output}: {out.describe(stream.frames, stream.skipped)}, voice {voice.replace('_', '-')}; first audio after "
        f"{ms(first)}, total {total:.2f} s, "
        f"real-time factor {total / seconds:.2f} (setup {started - engine.started:.2f} s: "
        "model, system prompt)"
    )
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from satellite.engine.chat import Chat, Speech, system_prefix, user_turn
    from satellite.engine.detokenizers import from_model
    from satellite.engine.events import AudioFrame, TextToken, TurnEnd
    from satellite.engine.template import INTERLEAVED_PROMPT

    source: Path = args.input
    output: Path = args.output
    _check_output(output, source)
    check_speech(source, InputLimit(args.max_seconds, "--max-seconds"))  # before the model loads
    engine = open_engine(args)
    model, tokens = engine.model, engine.tokens
    chat = Chat(model, prefix=system_prefix(tokens, INTERLEAVED_PROMPT), seed=args.seed)
    rate = chat.encoder.sample_rate
    overhead = _template_length(user_turn(tokens))
    limit = input_limit(chat, overhead, args.max_tokens, args.max_seconds)
    speech = read_speech(source, rate, limit)
    for warning in speech.warnings:
        _err(f"warning: {warning}")
    config = chat.generation_config("interleaved", max_new_tokens=args.max_tokens)
    out = AudioOut(from_model(model), output, args.rate)
    first_text: float | None = None
    reason = "max_new_tokens"
    wrote_text = False
    started = time.monotonic()
    turn = chat.turn(user_turn(tokens, Speech(speech.samples)), config)
    try:
        for event in turn:
            if isinstance(event, TextToken):
                piece = printable(event.text, one_line=False)
                if piece:
                    if first_text is None:
                        first_text = time.monotonic()
                    sys.stdout.write(piece)
                    sys.stdout.flush()
                    wrote_text = True
            elif isinstance(event, AudioFrame):
                if not event.end_of_audio:
                    out.push(event.codes)
            elif isinstance(event, TurnEnd):
                reason = event.reason
        out.finish()
    except BaseException:
        _close(turn)
        out.abort()
        raise
    total = time.monotonic() - started
    if wrote_text:
        sys.stdout.write("\n")
        sys.stdout.flush()
    if reason != "end_of_turn":
        _err(f"warning: the reply was cut ({reason}; --max-tokens {args.max_tokens})")
    if not out.frames:
        _err(f"warning: {output}: the reply has no audio; the file holds 0 s")
    first_audio = None if out.first_audio is None else out.first_audio - started
    first_piece = None if first_text is None else first_text - started
    _err(
        f"{output}: {out.describe(out.frames, out.skipped)}; first text after {ms(first_piece)}, "
        f"first audio after {ms(first_audio)}, total {total:.2f} s "
        f"(input {speech.info.seconds:.2f} s; setup {started - engine.started:.2f} s: model, "
        "system prompt)"
    )
    return 0
