"""Which model directory a command runs: `--model DIR|NAME`, else the config's `model` section.

- A path to a directory is used as it is (its manifest is read by `Model.load`).
- Anything else is a catalog name (`lfm-satellite model list`), looked for where
  `lfm-satellite model fetch NAME` puts it: `<models_dir>/<name>/<variant>`, with the config's
  `model.models_dir` (default: `satellite.modeldir.fetch.default_models_dir`) and
  `model.variant`. When it is not there, the message says how to get it.
- Without `--model`: `model.directory` (relative to the config file's folder) when set, else
  `model.name` as above.

Only the manifest is needed to decide; no graph is opened here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from satellite.errors import UserError
from satellite.modeldir.catalog import CatalogError, catalog_path, find_entry, load_catalog
from satellite.modeldir.fetch import default_model_dir, default_models_dir
from satellite.modeldir.manifest import MANIFEST_NAME
from satellite.settings import ModelSettings


class ModelNotFoundError(UserError):
    """The model asked for is not on this machine; the message says how to get it."""

    exit_code = 1


@dataclass(frozen=True)
class ModelChoice:
    directory: Path
    origin: str
    """How it was chosen, for messages: `--model`, `model.directory`, `model.name`."""


def _looks_like_path(spec: str) -> bool:
    """A spec no catalog name can be: absolute, `~`, `./`, `../`, or ending in a separator."""
    return (
        spec.startswith(("/", "~", "./", "../", ".\\", "..\\"))
        or spec in (".", "..")
        or spec.endswith(("/", os.sep))
    )


def model_directory(spec: str | None, settings: ModelSettings) -> ModelChoice:
    """The model directory for `--model spec` (None: from `settings`, whose relative paths
    the config loader has read against the config file's folder).

    Raises ModelNotFoundError naming the path or the catalog name and what to run."""
    models_dir = (
        Path(settings.models_dir).expanduser() if settings.models_dir else default_models_dir()
    )
    if spec is not None:
        path = Path(spec).expanduser()
        if path.is_dir():
            return ModelChoice(path, "--model")
        if path.exists():
            raise ModelNotFoundError(
                f"--model {spec}: is a file; give a model directory (one with {MANIFEST_NAME}) "
                "or a catalog name"
            )
        if _looks_like_path(spec):
            raise ModelNotFoundError(f"--model {spec}: model directory not found")
        return ModelChoice(_by_name(spec, settings.variant, models_dir, "--model"), "--model")
    if settings.directory:
        path = Path(settings.directory).expanduser()
        if not path.is_dir():
            raise ModelNotFoundError(f"model.directory {path}: directory not found")
        return ModelChoice(path, "model.directory")
    return ModelChoice(
        _by_name(settings.name, settings.variant, models_dir, "model.name"), "model.name"
    )


def _by_name(name: str, variant: str, models_dir: Path, origin: str) -> Path:
    try:
        entry = find_entry(load_catalog(catalog_path()), name)
    except CatalogError as err:
        raise ModelNotFoundError(
            f"{origin} {name}: not a model directory, and {str(err)[0].lower()}{str(err)[1:]}"
        ) from None
    target = default_model_dir(models_dir, entry.name, variant)
    if (target / MANIFEST_NAME).is_file():
        return target
    if variant not in entry.variants:
        have = ", ".join(entry.variants)
        raise ModelNotFoundError(
            f"{origin} {entry.name}: the catalog has no {variant} variant of it (it has {have}); "
            "set model.variant or give --model DIR"
        )
    if entry.kind == "onnx":
        how = f"fetch it with `lfm-satellite model fetch {entry.name} --variant {variant}"
        if models_dir != default_models_dir():
            how += f" --models-dir {models_dir}"
        how += "`"
    else:
        recipe = entry.build or "lfm-satellite model build"
        how = f"make it with `{recipe}` (--variant {variant} --out {target})"
    raise ModelNotFoundError(
        f"{origin} {entry.name} ({variant}) is not on this machine (looked in {target}); "
        f"{how}, or give --model DIR"
    )
