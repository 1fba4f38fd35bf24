"""The reference implementation: liquid-audio 1.3.0 + transformers 4.57, for the parity tests
and the engine benchmark (`lfm_toolchain.bench_reference`).

liquid-audio is not a dependency of the project and its code is never committed: this helper
fetches the wheel from PyPI on first use (once; it is cached under
`$LFM_SATELLITE_TEST_CACHE` or `~/.cache/lfm-satellite-tests`, checked against a pinned sha256),
unpacks it into a temporary directory, rewrites its four Python-3.12-only lines so that it
imports on 3.11, and imports its modules. Its package `__init__` and `processor.py` import
torchaudio, whose wheels are tied to other torch releases; a placeholder module stands in for it
(it can only resample 16 kHz to 16 kHz). transformers and its lfm2 module are imported before
the placeholder is registered, as transformers' import checks would trip over it.

Other dependencies of liquid-audio that must be installed (the project's test extra):
einops, accelerate, librosa, sentencepiece (plus torch, transformers, safetensors,
huggingface_hub). `tests/reference.py` re-exports this module for the tests.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lfm_toolchain.config import AudioModelConfig

VERSION = "1.3.0"
WHEEL = f"liquid_audio-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "ffa7c2dec3fd908b7ed322c2a68d7efd1ee2d28e7c6f0de0cae0f94bac1820e7"

# (file, pattern, replacement, expected count): the 3.12-only syntax of liquid-audio 1.3.0.
_PATCHES: tuple[tuple[str, str, str, int], ...] = (
    # PEP 695 type alias -> plain assignment (the union evaluates fine on 3.11).
    ("model/transformer.py", r"^type (\w+) = ", r"\1 = ", 1),
    # PEP 695 generic functions -> a module-level TypeVar.
    (
        "model/transformer.py",
        r"^def (\w+)\[T: [^\]]+\]\(",
        "T = __import__('typing').TypeVar('T')\n\ndef \\1(",
        1,
    ),
    (
        "utils.py",
        r"^def (\w+)\[T: \([^)]*\)\]\(",
        "T = __import__('typing').TypeVar('T')\n\ndef \\1(",
        2,
    ),
)


def cache_dir() -> Path:
    explicit = os.environ.get("LFM_SATELLITE_TEST_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lfm-satellite-tests"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wheel_path() -> Path:
    """The liquid-audio wheel, downloaded with pip on first use and verified."""
    directory = cache_dir()
    wheel = directory / WHEEL
    if not wheel.exists():
        directory.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pip", "download", f"liquid-audio=={VERSION}", "--no-deps",
            "--python-version", "3.12", "--only-binary=:all:", "--disable-pip-version-check",
            "-d", str(directory),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not wheel.exists():
            raise RuntimeError(
                f"could not download liquid-audio {VERSION} (needed by the parity tests): "
                f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
            )
    digest = _sha256(wheel)
    if digest != WHEEL_SHA256:
        raise RuntimeError(f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256}; delete it")
    return wheel


def _unpack(wheel: Path) -> Path:
    root = Path(tempfile.mkdtemp(prefix="liquid-audio-"))
    atexit.register(shutil.rmtree, root, True)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(root)
    package = root / "liquid_audio"
    for relative, pattern, replacement, expected in _PATCHES:
        path = package / relative
        text, count = re.subn(pattern, replacement, path.read_text(encoding="utf-8"), flags=re.M)
        if count != expected:
            raise RuntimeError(
                f"liquid_audio/{relative}: {pattern!r} matched {count}x, not {expected}x"
            )
        path.write_text(text, encoding="utf-8")
    return root


def _torchaudio_placeholder() -> types.ModuleType:
    module = types.ModuleType("torchaudio")
    functional = types.ModuleType("torchaudio.functional")

    def resample(waveform: Any, orig_freq: int, new_freq: int, *args: Any, **kwargs: Any) -> Any:
        if orig_freq != new_freq:
            raise NotImplementedError("torchaudio placeholder: feed audio at the target rate")
        return waveform

    functional.resample = resample  # type: ignore[attr-defined]
    module.functional = functional  # type: ignore[attr-defined]
    module.__version__ = "0+placeholder"  # type: ignore[attr-defined]
    return module


@functools.cache
def liquid_audio() -> types.SimpleNamespace:
    """Import liquid-audio's modules; returns them by short name."""
    import transformers
    import transformers.models.lfm2.modeling_lfm2

    if not transformers.__version__.startswith("4.57."):
        raise RuntimeError(
            f"the reference needs transformers 4.57.x, not {transformers.__version__}"
        )
    if "torchaudio" not in sys.modules:
        placeholder = _torchaudio_placeholder()
        sys.modules["torchaudio"] = placeholder
        sys.modules["torchaudio.functional"] = placeholder.functional
    root = _unpack(wheel_path())
    sys.path.insert(0, str(root))
    names = {
        "lfm2_audio": "liquid_audio.model.lfm2_audio",
        "transformer": "liquid_audio.model.transformer",
        "encoder": "liquid_audio.model.conformer.encoder",
        "mlp": "liquid_audio.model.mlp",
        "processor": "liquid_audio.processor",
        "mel": "liquid_audio.model.conformer.processor",
        "detokenizer": "liquid_audio.detokenizer",
        "utils": "liquid_audio.utils",
    }
    return types.SimpleNamespace(**{k: importlib.import_module(v) for k, v in names.items()})


def reference_config(config: AudioModelConfig) -> Any:
    """liquid-audio's `LFM2AudioConfig` holding `config`'s numbers."""
    from transformers import Lfm2Config

    la = liquid_audio()
    raw = config.reference_config_json()
    return la.lfm2_audio.LFM2AudioConfig(
        architectures=raw["architectures"],
        codebooks=raw["codebooks"],
        tie_audio_embeddings=raw["tie_audio_embeddings"],
        semantic_codebook_factor=raw["semantic_codebook_factor"],
        codebook_weight=raw["codebook_weight"],
        interleaved_n_text=raw["interleaved_n_text"],
        interleaved_n_audio=raw["interleaved_n_audio"],
        preprocessor=la.processor.PreprocessorConfig(**raw["preprocessor"]),
        encoder=la.encoder.ConformerEncoderConfig(**raw["encoder"]),
        lfm=Lfm2Config(**raw["lfm"]),
        depthformer=la.lfm2_audio.DepthformerConfig(**raw["depthformer"]),
    )


def load_weights(module: Any, weights: Mapping[str, npt.NDArray[Any]], prefix: str = "") -> None:
    """Copy `weights` (checkpoint names, minus `prefix`) into `module`.

    Every parameter of `module` must be given, with its exact shape; buffers the weights do not
    name (fixed tables such as `codebook_offsets`) keep the module's own values. Tensors are
    read from `weights` one at a time, so a lazy mapping (`lfm_toolchain.weights.RandomWeights`, a
    checkpoint) never holds more than one tensor besides the module.
    """
    import torch

    state = module.state_dict()
    params = {name for name, _ in module.named_parameters()}
    given = {k[len(prefix) :]: k for k in weights if k.startswith(prefix)}
    missing = sorted(params - given.keys())
    unknown = sorted(given.keys() - state.keys())
    if missing or unknown:
        raise KeyError(f"weights do not fit the reference: missing {missing}, unknown {unknown}")
    with torch.no_grad():
        for name, key in given.items():
            value = weights[key]
            target = state[name]  # shares storage with the module (tied weights included)
            if tuple(target.shape) != value.shape:
                raise ValueError(f"{key}: shape {value.shape}, reference {tuple(target.shape)}")
            target.copy_(torch.from_numpy(np.asarray(value, order="C")))


def build_reference_model(config: AudioModelConfig, weights: Mapping[str, npt.NDArray[Any]]) -> Any:
    """The reference `LFM2AudioModel` in fp32, eval mode, sdpa attention, holding `weights`.

    `weights` uses the checkpoint's parameter names (`lfm_toolchain.weights`). Built directly from the
    config: `from_pretrained` would insist on cuda and bf16.
    """
    import torch

    la = liquid_audio()
    torch.manual_seed(0)  # the constructor's own random init is overwritten, but keep it quiet
    model = la.lfm2_audio.LFM2AudioModel(reference_config(config))
    model.lfm.set_attn_implementation("sdpa")
    load_weights(model, weights)
    return model.float().eval()


TINY_SEED = 1234
"""The seed of the parity tests' tiny model (`build_model(size="tiny", seed=TINY_SEED)` and the
reference hold the same weights). The demo's and the commands' tiny model has the default seed
(`lfm_toolchain.weights.default_seed`); both are shaped."""


@functools.cache
def tiny_reference(
    seed: int = TINY_SEED, shaped: bool = True
) -> tuple[AudioModelConfig, dict[str, npt.NDArray[Any]], Any]:
    """The tiny config, the weights a tiny build with `seed` holds (checkpoint names: seeded
    random, special rows scaled unless `shaped` is False, `lfm_toolchain.weights.model_weights`)
    and the reference model holding them; built once per test session."""
    from lfm_toolchain.config import tiny
    from lfm_toolchain.weights import model_weights

    config = tiny()
    weights = dict(model_weights(config, seed, shaped=shaped))
    return config, weights, build_reference_model(config, weights)
