"""`lfm-satellite model fetch`: download one variant of a catalog model from the Hugging Face
hub into a model directory, check every file against the hub's checksums (and the catalog's
knowledge of the pinned commit), write the manifest, correct the published graphs' known
defects (`satellite.modeldir.repair`) and verify the result.

Only the variant's files are fetched: the catalog names the graphs, and each graph's external
weights are whatever the repository lists as `GRAPH.onnx_data`, `GRAPH.onnx_data_1`, ...
Downloads go through `huggingface_hub.hf_hub_download` (progress bars; an interrupted file
resumes from its partial copy, within one run and in the next one). $HF_ENDPOINT is honoured.

With $HF_HUB_OFFLINE set (or `offline=True`) nothing is downloaded: files already in the
directory (copied by hand, or fetched before) are indexed and verified instead.

`fetch_backbone` (`lfm-satellite model fetch-backbone`) adds the backbone's GGUF file, from
Liquid AI's GGUF repository of the same model, to a model directory for `model.backbone:
llamacpp`, checked against the hub's sha256 the same way.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import requests
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from satellite.errors import UserError
from satellite.modeldir.catalog import BACKBONE_FILE, BACKBONE_REPO, CatalogEntry, KnownFile
from satellite.modeldir.depthfold import fold_model
from satellite.modeldir.layout import newer_layout
from satellite.modeldir.make import make_manifest
from satellite.modeldir.manifest import MANIFEST_NAME, FileEntry, Manifest, human_size, sha256_file
from satellite.modeldir.repack import repack_model
from satellite.modeldir.repair import fix_model
from satellite.modeldir.sidefiles import config_from_hub
from satellite.modeldir.verify import Report, verify_manifest

DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_S = 15.0
"""Seconds to wait for the hub to answer a metadata request or send the next bytes."""
ATTEMPTS = 3
"""Tries per file within one run; each resumes where the previous one stopped."""


class FetchError(UserError):
    """The fetch could not be done; the message is one sentence saying why and what to do."""

    exit_code = 1


@dataclass(frozen=True)
class RemoteFile:
    """A file of the repository as the hub lists it."""

    path: str
    size: int | None = None
    sha256: str | None = None
    """LFS files: the sha256 of the content."""
    blob_id: str | None = None
    """Git blob id (sha1 of "blob SIZE\\0" + content); checks small, non-LFS files."""


@dataclass(frozen=True)
class FetchResult:
    directory: Path
    manifest: Manifest
    report: Report
    downloaded: list[str]
    total_bytes: int


def hub_endpoint() -> str:
    """$HF_ENDPOINT (read now, not at import), else the public hub."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_from_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def default_models_dir() -> Path:
    """`$STATE_DIRECTORY/models` under systemd, else `$XDG_DATA_HOME/lfm-satellite/models`
    (default `~/.local/share/lfm-satellite/models`)."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0]) / "models"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "lfm-satellite" / "models"


def default_model_dir(models_dir: Path, name: str, variant: str) -> Path:
    """`<models_dir>/<name>/<variant>`; a hub name's `/` makes an organisation folder."""
    return models_dir.joinpath(*name.split("/"), variant)


def newer_layout_message(where: str, marker: str, entry: CatalogEntry) -> str:
    return (
        f"{where} has the newer onnxruntime-genai layout ({marker}; a decoder with a conv state "
        f"of 2), which this version of lfm-satellite cannot run: fetch the pinned revision "
        f"{entry.revision} (leave out --revision)"
    )


def select_variant(
    entry: CatalogEntry, variant: str, available: dict[str, RemoteFile], where: str
) -> list[RemoteFile]:
    """The files of `variant` among `available` (the repository's listing): the catalog's
    common files, the variant's graphs and their data files, and optional files present.

    Raises FetchError naming what is missing; for a missing variant, lists the variants
    `where` does have; for the newer onnxruntime-genai layout, says so."""
    marker = newer_layout(available)
    if marker is not None:
        raise FetchError(newer_layout_message(where, marker, entry))
    graphs = entry.variants[variant]
    lacking = [f for f in graphs.values() if f not in available]
    if lacking:
        have = [
            v for v, g in entry.variants.items() if g and all(f in available for f in g.values())
        ]
        has = f"it has {', '.join(have)}" if have else "it has none of the catalog's variants"
        raise FetchError(
            f"{where} has no {variant} variant of {entry.name} (no {lacking[0]}); {has}"
        )
    missing = [f for f in entry.files if f not in available]
    if missing:
        raise FetchError(
            f"{where} lacks {', '.join(missing)}, which every variant of {entry.name} needs"
        )
    chosen: list[str] = list(entry.files)
    chosen += [f for f in entry.optional_files if f in available]
    for graph in graphs.values():
        chosen.append(graph)
        data = re.compile(re.escape(graph) + r"_data(_\d+)?")
        chosen += sorted((p for p in available if data.fullmatch(p)), key=_natural)
    unique = list(dict.fromkeys(chosen))
    return [available[p] for p in unique]


def _natural(name: str) -> tuple[str, int]:
    found = re.search(r"_(\d+)$", name)
    return (name[: found.start()], int(found.group(1))) if found else (name, -1)


def list_repo(repo: str, revision: str, endpoint: str) -> tuple[str, dict[str, RemoteFile]]:
    """The commit `revision` resolves to and the repository's files with sizes and hashes."""

    api = HfApi(endpoint=endpoint)
    try:
        info = api.model_info(repo, revision=revision, files_metadata=True, timeout=TIMEOUT_S)
    except OfflineModeIsEnabled:
        raise FetchError(_offline_message(endpoint, "HF_HUB_OFFLINE is set", repo)) from None
    except GatedRepoError:
        raise FetchError(
            f"{repo} is gated on {endpoint}: accept its terms on the model page, then log in "
            "(`hf auth login`) or set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise FetchError(
            f"{repo}: repository not found on {endpoint} (if it is private, log in with "
            "`hf auth login` or set HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise FetchError(f"{repo}: revision {revision!r} not found on {endpoint}") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "an error"
        raise FetchError(
            f"{endpoint} answered HTTP {status} when listing {repo}; try again later"
        ) from None
    except (requests.ConnectionError, requests.Timeout) as err:
        raise FetchError(_offline_message(endpoint, _reason(err), repo)) from None
    if not info.sha or info.siblings is None:
        raise FetchError(f"{endpoint} did not list the files of {repo} at {revision!r}")
    files = {
        s.rfilename: RemoteFile(
            path=s.rfilename,
            size=s.lfs.size if s.lfs is not None else s.size,
            sha256=s.lfs.sha256 if s.lfs is not None else None,
            blob_id=s.blob_id if s.lfs is None else None,
        )
        for s in info.siblings
    }
    return info.sha, files


def with_known(f: RemoteFile, known: KnownFile | None, repo: str, commit: str) -> RemoteFile:
    """`f` as the hub lists it, checked against what the catalog knows of it at the pinned
    commit; the catalog's sha256 fills in one the hub does not list. Raises FetchError, before
    anything is downloaded, when the two disagree."""
    if known is None:
        return f
    where = f"{repo} at {commit[:12]}: {f.path}"
    if known.size is not None and f.size is not None and known.size != f.size:
        raise FetchError(
            f"{where}: the hub lists {f.size} bytes, the catalog knows the pinned file as "
            f"{known.size}; nothing was downloaded (is HF_ENDPOINT a mirror of another "
            "repository?)"
        )
    if known.sha256 is not None and f.sha256 is not None and known.sha256 != f.sha256.lower():
        raise FetchError(
            f"{where}: the hub lists sha256 {f.sha256[:16]}…, the catalog knows the pinned file "
            f"as {known.sha256[:16]}…; nothing was downloaded"
        )
    return RemoteFile(
        path=f.path,
        size=f.size if f.size is not None else known.size,
        sha256=f.sha256 or known.sha256,
        blob_id=f.blob_id,
    )


def _offline_message(endpoint: str, reason: str, name: str) -> str:
    return (
        f"cannot reach the Hugging Face hub at {endpoint} ({reason}); check the network and "
        "HF_ENDPOINT, or, if the files are already in a directory, index them without the "
        f"network: HF_HUB_OFFLINE=1 lfm-satellite model fetch {name} --dir DIR"
    )


def _reason(err: BaseException) -> str:
    text = str(err)
    if "IncompleteRead" in text or type(err).__name__ == "ChunkedEncodingError":
        return "the connection closed in the middle of the file"
    for needle, short in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host name not found"),
        ("Temporary failure in name resolution", "host name not found"),
        ("timed out", "timed out"),
        ("Network is unreachable", "network unreachable"),
    ):
        if needle in text:
            return short
    return type(err).__name__


def git_blob_id(path: Path) -> str:
    """The git object id of a file's content (what the hub lists for non-LFS files)."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fetch(
    entry: CatalogEntry,
    *,
    variant: str | None = None,
    directory: Path | None = None,
    models_dir: Path | None = None,
    revision: str | None = None,
    offline: bool | None = None,
    attempts: int = ATTEMPTS,
    out: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
    repack: bool = True,
) -> FetchResult:
    """Fetch `variant` of `entry` into `directory` (default
    `<models_dir>/<name>/<variant>`), write its manifest and verify it.

    The published graphs' defects are corrected (`satellite.modeldir.repair`) and, unless
    `repack` is False, a float32 lm-head is repacked (`satellite.modeldir.repack`).

    Raises FetchError (one sentence) when it cannot: not an ONNX entry, unknown variant,
    hub unreachable, repository or variant missing, checksum mismatch, disk full."""
    out = out or sys.stdout
    if entry.kind != "onnx":
        what = "a PyTorch checkpoint" if entry.kind == "checkpoint" else "built locally"
        raise FetchError(
            f"{entry.name} is {what}, not a published ONNX model: make it with `{entry.build}`"
        )
    assert entry.repo is not None
    variant = variant or entry.default_variant
    if variant not in entry.variants:
        raise FetchError(
            f"{entry.name} has no variant {variant!r} in the catalog; "
            f"its variants are {', '.join(entry.variants)}"
        )
    target = directory or default_model_dir(models_dir or default_models_dir(), entry.name, variant)
    offline = offline_from_env() if offline is None else offline
    if target.exists() and not target.is_dir():
        raise FetchError(f"{target}: exists and is not a directory")
    endpoint = hub_endpoint()
    requested = revision or entry.revision
    if offline:
        commit = None
        files = _index_local(entry, variant, target)
        downloaded: list[str] = []
        print(f"offline: indexing {len(files)} files in {target}", file=out)
    else:
        commit, remote = list_repo(entry.repo, requested, endpoint)
        files = select_variant(entry, variant, remote, f"{entry.repo} at {requested}")
        if commit == entry.revision:
            files = [
                with_known(f, entry.known_files.get(f.path), entry.repo, commit) for f in files
            ]
        total = sum(f.size or 0 for f in files)
        print(
            f"fetching {entry.name} {variant} ({commit[:12]}) into {target}: "
            f"{len(files)} files, {human_size(total)}",
            file=out,
        )
        _check_space(target, files)
        downloaded = _download_all(entry.repo, commit, files, target, endpoint, attempts, sleep)
    checksums = _check_files(files, target)
    present = set(checksums)
    config_json = target / entry.side_files.get("config", "config.json")
    mel = entry.side_files.get("mel_config")
    config = config_from_hub(
        config_json,
        target / mel if mel is not None and mel in present else None,
        entry.config,
    )
    graphs = entry.variants[variant]
    tokenizer = entry.tokenizer if entry.tokenizer in present else None
    side = {k: v for k, v in entry.side_files.items() if v in present}
    source: dict[str, Any] = {
        "catalog": entry.name,
        "repo": entry.repo,
        "revision": commit,
        "requested_revision": requested,
        "endpoint": endpoint,
    }
    if offline:
        source = {"catalog": entry.name, "repo": entry.repo, "indexed_offline": True}
    graph_files = set(graphs.values())
    manifest = make_manifest(
        target,
        name=entry.name,
        family=entry.family,
        variant=variant,
        config=config,
        graphs=graphs,
        options=entry.options,
        tokenizer=tokenizer,
        side_files=side,
        extra_files=[f.path for f in files if f.path not in graph_files],
        source=source,
        checksums=checksums,
    )
    manifest.write(target)
    print(f"wrote {target / MANIFEST_NAME}", file=out)
    try:
        manifest, repairs = fix_model(target, manifest)
        for repair in repairs:
            print(
                f"fixed {repair.original}: {'; '.join(repair.problems)} -> {repair.fixed}",
                file=out,
            )
        if repack:
            manifest, done = repack_model(target, manifest)
            for line in done:
                print(f"repacked {line}", file=out)
            manifest, folded = fold_model(target, manifest)
            for line in folded:
                print(f"folded {line}", file=out)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise FetchError(
            f"the disk filled up after the download, while correcting or repacking {target} "
            f"({human_size(shutil.disk_usage(target).free)} free); the downloaded files are "
            f"complete and nothing half-written was kept: free about 100 MB, then run "
            f"`lfm-satellite model optimize {target}`"
        ) from None
    report = verify_manifest(target, manifest, checksums=False)
    return FetchResult(
        directory=target,
        manifest=manifest,
        report=report,
        downloaded=downloaded,
        total_bytes=sum(e.size for e in manifest.files.values()),
    )


def fetch_backbone(
    directory: Path,
    *,
    repo: str = BACKBONE_REPO,
    filename: str = BACKBONE_FILE,
    revision: str = "main",
    attempts: int = ATTEMPTS,
    out: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download `filename` of `repo` into the model directory `directory` (resumable, checked
    against the hub's sha256) and return its path. Raises FetchError (one sentence) when the
    directory is not a model directory, the file is not in the repository, or the download
    fails."""
    out = out or sys.stdout
    if not (directory / MANIFEST_NAME).is_file():
        raise FetchError(
            f"{directory}: not a model directory (no {MANIFEST_NAME}); fetch the model first "
            "(`lfm-satellite model fetch`), then its backbone into the same directory"
        )
    if not filename.endswith(".gguf") or "/" in filename:
        raise FetchError(f"--file {filename!r}: name a .gguf file at the top of {repo}")
    endpoint = hub_endpoint()
    commit, remote = list_repo(repo, revision, endpoint)
    wanted = remote.get(filename)
    if wanted is None:
        offered = sorted(p for p in remote if p.endswith(".gguf") and "/" not in p)
        raise FetchError(
            f"{repo} at {revision} has no {filename}; its GGUF files are: "
            f"{', '.join(offered) or 'none'}"
        )
    print(
        f"fetching {repo}/{filename} ({commit[:12]}, {human_size(wanted.size or 0)}) into "
        f"{directory}",
        file=out,
    )
    _check_space(directory, [wanted])
    _download_all(repo, commit, [wanted], directory, endpoint, attempts, sleep)
    _check_files([wanted], directory)
    return directory / filename


def _index_local(entry: CatalogEntry, variant: str, target: Path) -> list[RemoteFile]:
    if not target.is_dir():
        raise FetchError(
            f"HF_HUB_OFFLINE is set and {target} does not exist: put the files there (laid out "
            "as in the hub repository) or unset HF_HUB_OFFLINE to download them"
        )
    local: dict[str, RemoteFile] = {}
    for path in sorted(target.rglob("*")):
        rel = path.relative_to(target)
        if path.is_file() and rel.parts[0] != ".cache" and rel.name != MANIFEST_NAME:
            local[rel.as_posix()] = RemoteFile(rel.as_posix(), path.stat().st_size)
    return select_variant(entry, variant, local, str(target))


def _check_space(target: Path, files: list[RemoteFile]) -> None:
    need = 0
    for f in files:
        have = target / f.path
        if not (f.size is not None and have.is_file() and have.stat().st_size == f.size):
            need += f.size or 0
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise FetchError(
            f"not enough disk space for {target}: the files need {human_size(need)}, "
            f"{human_size(free)} is free"
        )


def _download_all(
    repo: str,
    commit: str,
    files: list[RemoteFile],
    target: Path,
    endpoint: str,
    attempts: int,
    sleep: Callable[[float], None],
) -> list[str]:
    done: list[str] = []
    network = (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        LocalEntryNotFoundError,
    )
    target.mkdir(parents=True, exist_ok=True)
    for f in sorted(files, key=lambda f: (f.size or 0, f.path)):
        for attempt in range(1, max(1, attempts) + 1):
            try:
                hf_hub_download(
                    repo,
                    f.path,
                    revision=commit,
                    local_dir=target,
                    endpoint=endpoint,
                    etag_timeout=TIMEOUT_S,
                )
                done.append(f.path)
                break
            except network as err:
                cause = err.__context__ if isinstance(err, LocalEntryNotFoundError) else err
                reason = _reason(cause or err)
                if attempt >= attempts:
                    tries = f"{attempts} tries" if attempts > 1 else "1 try"
                    raise FetchError(
                        f"{f.path}: the download from {endpoint} broke off ({reason}) after "
                        f"{tries}; run the same command again to resume where it stopped"
                    ) from None
                print(
                    f"{f.path}: connection lost ({reason}); resuming, attempt {attempt + 1} of "
                    f"{attempts}",
                    file=sys.stderr,
                )
                sleep(min(0.2 * attempt, 2.0))
            except EntryNotFoundError:
                raise FetchError(f"{repo}: {f.path} not found at revision {commit}") from None
            except HfHubHTTPError as err:
                status = err.response.status_code if err.response is not None else "an error"
                raise FetchError(
                    f"{endpoint} answered HTTP {status} for {f.path}; run the same command "
                    "again later to resume"
                ) from None
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    raise FetchError(
                        f"disk full while writing {target / f.path}: free some space, then run "
                        "the same command again to resume"
                    ) from None
                if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise FetchError(
                        f"{target / f.path}: cannot write: {err.strerror or err}"
                    ) from None
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise FetchError(
                    f"{f.path}: the download from {endpoint} failed ({first}); run the same "
                    "command again to resume"
                ) from None
    return done


def _check_files(files: list[RemoteFile], target: Path) -> dict[str, FileEntry]:
    """Size and checksum of each file, compared with the hub's; a file that does not match is
    deleted (so the next run downloads it again) and reported."""
    entries: dict[str, FileEntry] = {}
    for f in files:
        path = target / f.path
        size = path.stat().st_size
        digest = sha256_file(path)
        bad = None
        if f.size is not None and size != f.size:
            bad = f"is {size} bytes, the hub lists {f.size}"
        elif f.sha256 is not None and digest != f.sha256.lower():
            bad = f"sha256 {digest[:16]}… does not match the expected {f.sha256[:16]}…"
        elif f.sha256 is None and f.blob_id is not None and git_blob_id(path) != f.blob_id:
            bad = f"git blob id does not match the hub's {f.blob_id[:12]}…"
        if bad is not None:
            path.unlink(missing_ok=True)
            raise FetchError(
                f"{path}: {bad}; the file was deleted, run the same command again to fetch it anew"
            )
        entries[f.path] = FileEntry(sha256=digest, size=size)
    return entries
