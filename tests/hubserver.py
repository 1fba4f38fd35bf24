"""A Hugging Face hub on 127.0.0.1 for fetch tests: serves repositories from local folders
through the endpoints `huggingface_hub` uses to list and download files.

- `GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}`: model info with
  `sha` and `siblings` (size, git blob id, and `lfs` {sha256, size} for weight files).
- `HEAD|GET /{repo}/resolve/{rev}/{path}`: the file, with `ETag` (sha256 for LFS files, the
  git blob id otherwise), `X-Repo-Commit`, `Content-Length`, `Accept-Ranges`, and
  `Range: bytes=N-` answered with 206.
- Unknown repositories, revisions and files get 404 with the hub's `X-Error-Code`.

Revisions: each repository is served at `commit` (default COMMIT) and as `main`, unless
`main` names another (commit, folder) for the repository: a hub whose `main` has moved on from
a pinned commit.

Fault injection: `cut[path] = n` cuts the next n GETs of `path` after half their bytes (the
connection closes mid-body); `corrupt[path] = bytes` serves other content than the listing
describes. `requests` records (method, path, Range header) of every request.

`write_test_catalog` writes the shipped catalog with a test repository's sizes and sha256 as
its known files, so a fetch from this hub passes the catalog's size checks.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

from satellite.modeldir.catalog import catalog_path
from satellite.modeldir.manifest import sha256_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".onnx", ".bin", ".gguf")


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES) or ".onnx_data" in path


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class Hub:
    repos: dict[str, Path]
    commit: str = COMMIT
    main: dict[str, tuple[str, Path]] = field(default_factory=dict)
    """Repository -> (commit, folder) served as `main` instead of `repos`' folder."""
    cut: dict[str, int] = field(default_factory=dict)
    corrupt: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def at(self, repo: str, revision: str) -> tuple[str, Path] | None:
        """(commit, folder) that `revision` of `repo` resolves to, or None."""
        if revision in ("", "main") and repo in self.main:
            return self.main[repo]
        if revision in ("", "main", self.commit):
            return self.commit, self.repos[repo]
        moved = self.main.get(repo)
        return moved if moved is not None and revision == moved[0] else None

    @staticmethod
    def files(root: Path) -> dict[str, Path]:
        return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}

    def gets(self, path_part: str = "") -> list[tuple[str, str | None]]:
        """(path, Range) of the file GETs whose path contains `path_part`."""
        return [
            (p, r)
            for m, p, r in self.requests
            if m == "GET" and "/resolve/" in p and path_part in p
        ]


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self.serve(head=True)

        def do_GET(self) -> None:
            self.serve(head=False)

        def fail(self, status: int, code: str, head: bool) -> None:
            body = json.dumps({"error": code}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def serve(self, head: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            with hub.lock:
                hub.requests.append((self.command, path, self.headers.get("Range")))
            if path.startswith("/api/models/"):
                self.model_info(path.removeprefix("/api/models/"), head)
                return
            for repo in hub.repos:
                prefix = f"/{repo}/resolve/"
                if path.startswith(prefix):
                    revision, _, rel = path.removeprefix(prefix).partition("/")
                    self.resolve(repo, revision, rel, head)
                    return
            self.fail(404, "RepoNotFound", head)

        def model_info(self, rest: str, head: bool) -> None:
            repo, _, revision = rest.partition("/revision/")
            if repo not in hub.repos:
                self.fail(404, "RepoNotFound", head)
                return
            found = hub.at(repo, revision)
            if found is None:
                self.fail(404, "RevisionNotFound", head)
                return
            commit, root = found
            siblings = []
            for rel, file in hub.files(root).items():
                data = file.read_bytes()
                sibling = {"rfilename": rel, "size": len(data), "blobId": blob_id(data)}
                if is_lfs(rel):
                    sibling["lfs"] = {
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "size": len(data),
                        "pointerSize": 134,
                    }
                siblings.append(sibling)
            body = json.dumps({"id": repo, "modelId": repo, "sha": commit, "siblings": siblings})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body.encode())

        def resolve(self, repo: str, revision: str, rel: str, head: bool) -> None:
            found = hub.at(repo, revision)
            if found is None:
                self.fail(404, "RevisionNotFound", head)
                return
            commit, root = found
            file = hub.files(root).get(rel)
            if file is None:
                self.fail(404, "EntryNotFound", head)
                return
            data = file.read_bytes()
            etag = hashlib.sha256(data).hexdigest() if is_lfs(rel) else blob_id(data)
            data = hub.corrupt.get(rel, data)
            start = 0
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes=") and not head:
                start = int(wanted.removeprefix("bytes=").split("-")[0])
            body = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("X-Repo-Commit", commit)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            if head:
                self.end_headers()
                return
            with hub.lock:
                cut = hub.cut.get(rel, 0) > 0
                if cut:
                    hub.cut[rel] -= 1
            if cut:
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def serve_hub(
    repos: dict[str, Path],
    commit: str = COMMIT,
    main: dict[str, tuple[str, Path]] | None = None,
) -> Iterator[Hub]:
    """Run a hub for `repos` (repo id -> folder, served at `commit` and as `main` unless
    `main` moves it) on 127.0.0.1 on a free port."""
    hub = Hub(repos=repos, commit=commit, main=main or {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_test_catalog(name: str, repo_dir: Path, path: Path) -> Path:
    """The shipped catalog, with the known files of entry `name` (the real q4 files' sizes)
    replaced by `repo_dir`'s sizes and sha256, as a catalog for the same pin would state them;
    written to `path`."""
    raw = yaml.safe_load(catalog_path().read_text(encoding="utf-8"))
    entry = next(m for m in raw["models"] if m["name"] == name)
    entry["known_files"] = {
        rel: {"size": (repo_dir / rel).stat().st_size, "sha256": sha256_file(repo_dir / rel)}
        for rel in sorted(entry["known_files"])
        if (repo_dir / rel).is_file()  # the test graphs keep some weights inline
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path
