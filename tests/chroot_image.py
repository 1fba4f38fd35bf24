"""A Dockerfile's steps run in a Debian bookworm root made by `debootstrap`, where no container
engine runs and no base image can be pulled (FINDINGS §4): the instructions are read from the
Dockerfile itself (ARG, ENV, RUN, COPY, WORKDIR, CMD, ENTRYPOINT, LABEL, EXPOSE, VOLUME), RUN
runs in the root with `chroot` and the environment Docker would give it, COPY copies from the
build context, and what the image would start (ENTRYPOINT + CMD) can then be run the same way.

What differs from `docker build`, and why it does not matter for what is checked: the root
shares the host's network (as `docker build`'s default bridge reaches the same registries), the
host's /proc, /sys and /dev are bind-mounted in (a container gets its own), and there are no
layers or cache. The base is named by FROM but made here: `debian:bookworm-slim` is debootstrap's
minbase; Home Assistant's `base-debian:bookworm` adds bash, ca-certificates, curl, jq and
tzdata (made with `--include`), and s6-overlay, whose `with-contenv` (the add-on's run script's
interpreter) is stood in for by a script that runs its arguments: the container's environment
is the process's environment here already."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
HA_BASE_PACKAGES = ("bash", "ca-certificates", "curl", "jq", "tzdata")
"""What Home Assistant's base-debian image has beyond minbase that the add-on may use."""
WITH_CONTENV = (
    '#!/bin/sh\n# stand-in for s6-overlay\'s with-contenv (tests/chroot_image.py)\nexec "$@"\n'
)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""Docker's default PATH for a Linux image."""


class DockerfileError(Exception):
    """An instruction this runner cannot run, named with its line."""


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """The instructions, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        joined = " ".join(part for part in pending if part)
        pending = []
        keyword, _, argument = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), argument.strip(), start))
    if pending:
        raise DockerfileError(f"line {start}: the file ends inside a continued instruction")
    return instructions


_VARIABLE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::(?P<op>[-+])(?P<word>[^}]*))?\}|(?P<plain>\w+))")


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """Docker's variable substitution: $NAME, ${NAME}, ${NAME:-word}, ${NAME:+word}."""

    def one(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        value = variables.get(name, "")
        if match.group("op") == "-":
            return value or match.group("word")
        if match.group("op") == "+":
            return match.group("word") if value else ""
        return value

    return _VARIABLE.sub(one, text)


def _assignments(argument: str, variables: Mapping[str, str]) -> dict[str, str]:
    """`KEY=value KEY2="v 2"` (or the old `KEY value` form) after substitution."""
    words = shlex.split(argument)
    if words and "=" not in words[0]:
        return {words[0]: substitute(" ".join(words[1:]), variables)}
    pairs = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise DockerfileError(f"expected KEY=value, got {word!r}")
        pairs[key] = substitute(value, variables)
    return pairs


def _command(argument: str) -> list[str]:
    """An exec-form (JSON array) or shell-form command as the argv Docker would run."""
    if argument.startswith("["):
        value = json.loads(argument)
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise DockerfileError(f"not a JSON array of strings: {argument}")
        return value
    return ["/bin/sh", "-c", argument]


@dataclass
class Image:
    """What the steps left: the root and the configuration a container would start with."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    base: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    """Seconds each RUN took, by its line number."""

    def argv(self) -> list[str]:
        return [*self.entrypoint, *self.cmd]


@contextlib.contextmanager
def mounted(root: Path, binds: Mapping[str, Path] | None = None) -> Iterator[None]:
    """/proc, /sys, /dev, /dev/pts and /dev/shm of the host (and `binds`: path in root ->
    host folder) mounted into `root`, and the host's resolver, for the duration of the block."""
    targets = {"proc": Path("/proc"), "sys": Path("/sys"), "dev": Path("/dev"),
               "dev/pts": Path("/dev/pts"), "dev/shm": Path("/dev/shm")}  # fmt: skip
    targets.update({k.lstrip("/"): v for k, v in (binds or {}).items()})
    done: list[Path] = []
    try:
        for inside, host in targets.items():
            target = root / inside
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--bind", str(host), str(target)], check=True)
            done.append(target)
        resolv = root / "etc" / "resolv.conf"
        resolv.unlink(missing_ok=True)
        shutil.copyfile("/etc/resolv.conf", resolv)
        yield
    finally:
        for target in reversed(done):
            if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(target)], capture_output=True)


def chroot_argv(
    root: Path, argv: list[str], env: Mapping[str, str], workdir: str = "/"
) -> list[str]:
    """The command line that runs `argv` in `root` with exactly `env`, from `workdir`."""
    inner = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]
    script = f"cd {shlex.quote(workdir)} && exec " + shlex.join(inner)
    return ["chroot", str(root), "/bin/sh", "-c", script]


def run_steps(
    dockerfile: Path,
    context: Path,
    root: Path,
    build_args: Mapping[str, str],
    *,
    extra_env: Mapping[str, str] | None = None,
    log: Callable[[str], None] = print,
) -> Image:
    """Run `dockerfile`'s instructions in `root` (already holding the base), as `docker build
    --build-arg ...` would with `context` as the build context. `extra_env` is added to every
    RUN's environment without being part of the image (e.g. the host's CA bundle for pip).
    A RUN that fails raises DockerfileError with its line and output's tail."""
    image = Image(root, env={"PATH": PATH})  # what Docker gives every Linux image
    args: dict[str, str] = {}
    before_from: dict[str, str] = {}
    seen_from = False
    for ins in parse_dockerfile(dockerfile.read_text()):
        where = f"{dockerfile.name}:{ins.line}"
        scope = {**args, **image.env}
        if ins.keyword == "ARG":
            name, sep, default = ins.argument.partition("=")
            outer = before_from if seen_from else {}
            value = build_args.get(name)
            if value is None:
                value = substitute(default, {**outer, **scope}) if sep else outer.get(name, "")
            (args if seen_from else before_from)[name] = value
        elif ins.keyword == "FROM":
            image.base = substitute(ins.argument, {**before_from, **build_args})
            seen_from = True
        elif ins.keyword == "ENV":
            image.env.update(_assignments(ins.argument, scope))
        elif ins.keyword == "LABEL":
            image.labels.update(_assignments(ins.argument, scope))
        elif ins.keyword == "WORKDIR":
            image.workdir = os.path.join(image.workdir, substitute(ins.argument, scope))
            (root / image.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY":
            _copy(ins.argument, context, root, image.workdir, scope, where)
        elif ins.keyword == "RUN":
            env = {"HOME": "/root", **args, **image.env, **(extra_env or {})}
            argv = _command(ins.argument)
            log(f"{where}: RUN {ins.argument[:100]}{' ...' if len(ins.argument) > 100 else ''}")
            started = time.monotonic()
            done = subprocess.run(chroot_argv(root, argv, env, image.workdir),
                                  capture_output=True, text=True, timeout=1800)  # fmt: skip
            image.seconds[str(ins.line)] = time.monotonic() - started
            if done.returncode != 0:
                tail = (done.stdout + done.stderr)[-3000:]
                raise DockerfileError(f"{where}: RUN exited {done.returncode}:\n{tail}")
        elif ins.keyword == "CMD":
            image.cmd = _command(ins.argument)
        elif ins.keyword == "ENTRYPOINT":
            image.entrypoint = _command(ins.argument)
        elif ins.keyword in ("EXPOSE", "VOLUME"):
            pass  # runtime settings: the check maps nothing
        else:
            raise DockerfileError(f"{where}: {ins.keyword} is not something this runner does")
    return image


def _copy(
    argument: str, context: Path, root: Path, workdir: str, scope: Mapping[str, str], where: str
) -> None:
    words = shlex.split(substitute(argument, scope))
    mode = None
    while words and words[0].startswith("--"):
        flag = words.pop(0)
        if flag.startswith("--chmod="):
            mode = int(flag.split("=", 1)[1], 8)
        else:
            raise DockerfileError(f"{where}: COPY {flag} is not something this runner does")
    if len(words) < 2:
        raise DockerfileError(f"{where}: COPY needs a source and a destination")
    *sources, dest = words
    target = root / os.path.join(workdir, dest).lstrip("/")
    for source in sources:
        path = (context / source).resolve()
        if not path.is_relative_to(context.resolve()) or not path.exists():
            raise DockerfileError(f"{where}: COPY {source}: not in the build context {context}")
        into = target / path.name if dest.endswith("/") and path.is_file() else target
        if path.is_dir():
            shutil.copytree(path, into, dirs_exist_ok=True, ignore=_ignored(context))
        else:
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, into)
        if mode is not None:
            into.chmod(mode)


def _ignored(context: Path) -> Callable[[str, list[str]], set[str]]:
    """`.dockerignore`'s top-level name patterns (the forms this project's file uses)."""
    patterns: list[str] = []
    ignore_file = context / ".dockerignore"
    if ignore_file.is_file():
        for line in ignore_file.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line.strip("/").removeprefix("**/"))

    def ignore(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).resolve().relative_to(context.resolve())
        out = set()
        for name in names:
            path = (rel / name).as_posix()
            if any(Path(path).match(p) or Path(name).match(p) for p in patterns):
                out.add(name)
        return out

    return ignore


# -- the base root ------------------------------------------------------------------------------


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lfm-satellite" / "debootstrap"


def base_tarball(flavour: str, log: Callable[[str], None] = print) -> Path:
    """A tarball of a bookworm amd64 root for `flavour` (`debian-slim`: minbase;
    `ha-base-debian`: minbase with HA_BASE_PACKAGES), made with debootstrap on first use and
    kept in the user's cache."""
    include = {"debian-slim": (), "ha-base-debian": HA_BASE_PACKAGES}[flavour]
    folder = cache_folder()
    tarball = folder / f"{SUITE}-amd64-{flavour}.tar"
    if tarball.is_file():
        return tarball
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise DockerfileError("debootstrap is not installed (apt-get install debootstrap)")
    folder.mkdir(parents=True, exist_ok=True)
    scratch = folder / f".{flavour}-root"
    shutil.rmtree(scratch, ignore_errors=True)
    log(f"debootstrap: making a {SUITE} root ({flavour}) from {MIRROR} ...")
    started = time.monotonic()
    command = [debootstrap, "--variant=minbase", "--arch=amd64"]
    if include:
        command.append("--include=" + ",".join(include))
    done = subprocess.run([*command, SUITE, str(scratch), MIRROR], capture_output=True, text=True,
                          timeout=1800)  # fmt: skip
    if done.returncode != 0:
        raise DockerfileError(f"debootstrap failed:\n{(done.stdout + done.stderr)[-3000:]}")
    (scratch / "var/cache/apt/archives").mkdir(parents=True, exist_ok=True)
    for deb in (scratch / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    if flavour == "ha-base-debian":
        contenv = scratch / "usr/bin/with-contenv"
        contenv.write_text(WITH_CONTENV)
        contenv.chmod(0o755)
    partial = tarball.with_suffix(".partial")
    with tarfile.open(partial, "w") as tar:
        tar.add(scratch, arcname=".")
    partial.rename(tarball)
    shutil.rmtree(scratch, ignore_errors=True)
    log(f"debootstrap: done in {time.monotonic() - started:.0f} s ({tarball})")
    return tarball


def fresh_root(flavour: str, into: Path, log: Callable[[str], None] = print) -> Path:
    """A new root at `into`, unpacked from the cached base."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(base_tarball(flavour, log)) as tar:
        tar.extractall(into, filter="fully_trusted")
    return into


def base_flavour(base: str) -> str:
    """The flavour that stands for an image named by FROM (`ARG BUILD_FROM` resolved)."""
    if re.search(r"home-assistant/\w+-base-debian:bookworm$", base):
        return "ha-base-debian"
    if base in ("debian:bookworm-slim", "debian:12-slim"):
        return "debian-slim"
    raise DockerfileError(f"FROM {base}: no debootstrap flavour stands for it")
