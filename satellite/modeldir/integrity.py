"""At load: the model's files are the ones its manifest describes.

`model verify` checks everything, but the daemon only loads: a truncated data file was refused
with onnxruntime's own 800-character message naming the wrong file, and one with flipped bytes
was served, its answers made from damaged weights. So every load checks:

- each file the manifest lists is there, at its recorded size (a `stat` each: cheap);
- its sha256 is the recorded one, computed only when the file changed since it was last
  verified: what was verified is remembered in the directory's `VERIFIED_NAME` by path, size
  and modification time, so a normal start hashes nothing and the first start after a
  download, a copy or a repair hashes the files once (a few seconds for the full model; a
  minute from a slow SD card).

A file that fails either check is named with what is wrong and how to repair it. Where the
record cannot be written (a read-only directory) every start hashes, and says so once.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satellite.errors import UserError
from satellite.modeldir.manifest import MANIFEST_NAME, Manifest, human_size, sha256_file

_LOG = logging.getLogger("satellite.modeldir")

VERIFIED_NAME = ".verified.json"
"""The record of verified files, in the model directory."""


class DamagedModelError(UserError):
    """A model file is missing, of the wrong size or the wrong content; names it and the
    repair."""

    exit_code = 1


@dataclass(frozen=True)
class Integrity:
    """What a check did."""

    files: int
    hashed: int
    """Files whose checksum was computed (changed since last verified, or never verified)."""
    hashed_bytes: int
    remembered: bool
    """The record was written (False: a read-only directory)."""


def repair_hint(directory: Path, manifest: Manifest) -> str:
    """How to get good files again, for this directory."""
    repo = manifest.source.get("repo")
    listing = f"`lfm-satellite model verify {directory}` lists every damaged file"
    if isinstance(repo, str) and repo:
        return (f"{listing}; `lfm-satellite model fetch {repo} --variant {manifest.variant} "
                f"--dir {directory}` checks the files and downloads a damaged one again (run it "
                "twice if it says so)")  # fmt: skip
    return f"{listing}; build or copy the model again"


def check_integrity(directory: Path, manifest: Manifest) -> Integrity:
    """See the module docstring; raises DamagedModelError for the first damaged file."""
    record_path = directory / VERIFIED_NAME
    record = _read_record(record_path)
    verified: dict[str, list[Any]] = {}
    hashed = hashed_bytes = 0
    for name, entry in manifest.files.items():
        path = directory / name
        try:
            stat = path.stat()
        except OSError:
            raise DamagedModelError(
                f"{path}: missing ({MANIFEST_NAME} lists it); {repair_hint(directory, manifest)}"
            ) from None
        if stat.st_size != entry.size:
            raise DamagedModelError(
                f"{path}: {human_size(stat.st_size)} ({stat.st_size} bytes) where "
                f"{MANIFEST_NAME} records {entry.size} bytes: the file is truncated or "
                f"replaced; {repair_hint(directory, manifest)}"
            )
        key = [stat.st_size, stat.st_mtime_ns, entry.sha256.lower()]
        if record.get(name) == key:
            verified[name] = key
            continue
        if hashed == 0:
            _LOG.info("checking the model's files once (remembered until they change)")
        try:
            digest = sha256_file(path)
        except OSError as err:
            raise DamagedModelError(f"{path}: cannot be read ({err.strerror or err})") from None
        hashed += 1
        hashed_bytes += stat.st_size
        if digest != entry.sha256.lower():
            raise DamagedModelError(
                f"{path}: its content is not what {MANIFEST_NAME} records (sha256 "
                f"{digest[:16]}…, expected {entry.sha256[:16]}…): the file is damaged; "
                f"{repair_hint(directory, manifest)}"
            )
        verified[name] = key
    remembered = record == verified or _write_record(record_path, verified)
    if hashed:
        _LOG.info("model files verified: %d checked (%s)", hashed, human_size(hashed_bytes))
    return Integrity(len(manifest.files), hashed, hashed_bytes, remembered)


def _read_record(path: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_record(path: Path, verified: dict[str, list[Any]]) -> bool:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".verified-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(verified, out)
        os.replace(tmp, path)
        return True
    except OSError as err:
        _LOG.info("%s: cannot remember the verified files (%s); every start checks them",
                  path, err.strerror or err)  # fmt: skip
        return False
