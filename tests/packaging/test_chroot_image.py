"""The Dockerfile reader behind script/check-addon (tests/chroot_image.py), on the project's two
Dockerfiles and on small ones: continued lines, comments, variable substitution and build
arguments as Docker reads them, COPY from the build context, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chroot_image import (
    DockerfileError,
    base_flavour,
    parse_dockerfile,
    run_steps,
    substitute,
)
from tests.paths import REPO


def test_continued_lines_and_comments() -> None:
    text = "# top\nFROM x\nRUN a \\\n    # inside\n    && b\n\nENV A=1 \\\n  B=2\n"
    assert [(i.keyword, i.argument, i.line) for i in parse_dockerfile(text)] == [
        ("FROM", "x", 2), ("RUN", "a && b", 3), ("ENV", "A=1 B=2", 7),
    ]  # fmt: skip
    with pytest.raises(DockerfileError, match="line 1"):
        parse_dockerfile("RUN a \\\n")


def test_substitution() -> None:
    values = {"A": "1", "EMPTY": ""}
    assert substitute("$A-${A}-${B:-two}-${A:+set}-${EMPTY:+no}-$B", values) == "1-1-two-set--"


def test_the_project_dockerfiles_read_as_docker_reads_them() -> None:
    addon = parse_dockerfile((REPO / "integration/lfm_satellite/Dockerfile").read_text())
    keywords = {i.keyword for i in addon}
    assert keywords <= {"ARG", "FROM", "RUN", "ENV", "COPY", "CMD", "LABEL"}, keywords
    container = parse_dockerfile((REPO / "integration/docker/Dockerfile").read_text())
    assert container[0].keyword == "FROM" and container[0].argument == "debian:bookworm-slim"
    assert base_flavour("ghcr.io/home-assistant/aarch64-base-debian:bookworm") == "ha-base-debian"
    assert base_flavour("debian:bookworm-slim") == "debian-slim"
    with pytest.raises(DockerfileError, match="alpine"):
        base_flavour("alpine:3.20")


def test_arguments_env_copy_and_the_start_command(tmp_path: Path) -> None:
    """Everything but RUN, which needs root and a Debian root: check-addon runs those."""
    context = tmp_path / "context"
    (context / "sub").mkdir(parents=True)
    (context / "sub" / "a.txt").write_text("a")
    (context / "run.sh").write_text("#!/bin/sh\n")
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(
        "ARG BUILD_FROM\nFROM ${BUILD_FROM}\nARG VERSION\nARG SOURCE=https://h/v${VERSION}.tgz\n"
        'ENV PATH=/opt/bin:$PATH HOME_DIR=/data\nLABEL version="${VERSION}"\n'
        "WORKDIR /app\nCOPY sub /app/sub\nCOPY --chmod=755 run.sh /run.sh\n"
        'ENTRYPOINT ["/run.sh"]\nCMD ["serve", "--fast"]\n'
    )
    root = tmp_path / "root"
    root.mkdir()
    image = run_steps(dockerfile, context, root, {"BUILD_FROM": "debian:bookworm-slim",
                                                  "VERSION": "1.2"}, log=lambda _: None)  # fmt: skip
    assert image.base == "debian:bookworm-slim"
    assert (
        image.env["PATH"].startswith("/opt/bin:/usr/local/sbin:")
        and image.env["HOME_DIR"] == "/data"
    )
    assert image.labels == {"version": "1.2"}
    assert image.workdir == "/app"
    assert (root / "app/sub/a.txt").read_text() == "a"
    assert (root / "run.sh").stat().st_mode & 0o777 == 0o755
    assert image.argv() == ["/run.sh", "serve", "--fast"]

    dockerfile.write_text("FROM x\nCOPY ../secret /s\n")
    with pytest.raises(DockerfileError, match="not in the build context"):
        run_steps(dockerfile, context, root, {}, log=lambda _: None)
    dockerfile.write_text("FROM x\nADD https://h/x /x\n")
    with pytest.raises(DockerfileError, match="Dockerfile:2: ADD"):
        run_steps(dockerfile, context, root, {}, log=lambda _: None)
