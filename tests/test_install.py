"""script/install in a fresh directory tree (`--root`), never the running system: the dry run
of the README's commands prints every step and changes nothing; a real run creates the user,
the venv with the package, the config (kept on upgrade), fetches the model from a hub on
127.0.0.1 and enables the unit in the tree; `--uninstall` keeps config and models unless
`--purge`. Before any step, a board with too little memory for the chosen model variant is
told so (the memory read from a stand-in for /proc/meminfo)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import modeldir_graphs as g
import pytest
from hubserver import serve_hub, write_test_catalog

from satellite.modeldir.catalog import catalog_path, find_entry, load_catalog
from tests.paths import REPO

INSTALL = REPO / "script" / "install"
NAME = "LiquidAI/LFM2.5-Audio-1.5B-ONNX"
VENV = "opt/lfm-satellite/venv"
CONFIG = "etc/lfm-satellite/config.yaml"
MODEL = f"var/lib/lfm-satellite/models/{NAME}/q4"
UNIT = "etc/systemd/system/lfm-satellite.service"
WANTS = "etc/systemd/system/multi-user.target.wants/lfm-satellite.service"


def meminfo(path: Path, kib: int) -> Path:
    """A /proc/meminfo stand-in saying MemTotal is `kib` kB (the kernel's kB are KiB)."""
    path.write_text(f"MemTotal:       {kib} kB\nMemFree:        {kib // 2} kB\n")
    return path


@pytest.fixture(autouse=True)
def plenty_of_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The installer's memory check reads a board with 16 GB, not the test machine."""
    monkeypatch.setenv("LFM_SATELLITE_MEMINFO", str(meminfo(tmp_path / "meminfo-16g", 16 << 20)))


def install(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ if env is None else env)
    env.pop("PYTHONPATH", None)  # the installed package must be the one found
    return subprocess.run(
        [sys.executable, str(INSTALL), *map(str, args)],
        capture_output=True, text=True, timeout=300, env=env, cwd=INSTALL.parent.parent.parent,
    )  # fmt: skip


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def readme_install_commands() -> list[list[str]]:
    """The `script/install` lines of the README's install section (sudo dropped)."""
    text = (REPO / "README.md").read_text()
    commands = [
        shlex.split(line.strip().removeprefix("sudo "))
        for line in re.findall(r"^\s*sudo script/install[^\n#]*", text, re.M)
    ]
    assert commands, "the README has no `sudo script/install` line"
    return commands


def real_system_untouched() -> None:
    assert not Path("/opt/lfm-satellite").exists()
    assert not Path("/etc/systemd/system/lfm-satellite.service").exists()
    assert not Path("/etc/lfm-satellite").exists()
    assert "lfm-satellite:" not in Path("/etc/passwd").read_text()


def test_readme_install_path_as_a_dry_run(tmp_path: Path) -> None:
    for n, command in enumerate(readme_install_commands()):
        root = tmp_path / f"root{n}"
        root.mkdir()
        assert command[0] == "script/install"
        done = install(*command[1:], "--dry-run", "--root", root)
        assert done.returncode == 0, done.stderr
        assert tree(root) == set(), f"the dry run changed {tree(root)}"
        out = done.stdout
        assert "(dry run: nothing was changed)" in out
        if "--uninstall" in command:
            continue
        variant = command[command.index("--variant") + 1] if "--variant" in command else "q4"
        steps = [
            "skipped (not the running system): apt-get install libportaudio2 libspeexdsp1 python3-venv",
            f"+ systemd-sysusers --root={root} lfm-satellite.conf",
            f"-m venv {root / VENV}",
            f"+ {root / VENV}/bin/python -m pip install --upgrade {REPO}",
            f"write {root / CONFIG} (mode 640",
            f"check-config {root / CONFIG}",
            f"model fetch {NAME} --variant {variant} --models-dir {root}/var/lib/lfm-satellite/models",
            f"chown -R lfm-satellite:lfm-satellite {root}/var/lib/lfm-satellite",
            f"write {root / UNIT} (mode 644",
            f"+ systemctl --root={root} enable lfm-satellite.service",
        ]
        if "--no-start" not in command:  # the same plan starts the service on a real system
            assert "not started: not the running system" in out
        at = [out.find(step) for step in steps]
        assert all(i >= 0 for i in at), [s for s, i in zip(steps, at, strict=True) if i < 0]
        assert at == sorted(at), "steps out of order"
    real_system_untouched()


def test_uninstall_dry_run_lists_what_goes_and_what_stays(tmp_path: Path) -> None:
    for rel in (UNIT, CONFIG, f"{MODEL}/manifest.json", f"{VENV}/bin/python"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    before = tree(tmp_path)
    done = install("--uninstall", "--dry-run", "--root", tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"rm {tmp_path / UNIT}" in done.stdout
    assert f"rm -r {tmp_path}/opt/lfm-satellite" in done.stdout
    assert f"keep {tmp_path}/etc/lfm-satellite" in done.stdout
    assert f"keep {tmp_path}/var/lib/lfm-satellite" in done.stdout
    purge = install("--uninstall", "--purge", "--dry-run", "--root", tmp_path)
    assert f"rm -r {tmp_path}/var/lib/lfm-satellite" in purge.stdout
    assert tree(tmp_path) == before


def test_refuses_bad_arguments(tmp_path: Path) -> None:
    assert install("--purge", "--root", tmp_path).returncode == 2
    gone = install("--dry-run", "--root", tmp_path / "missing")
    assert gone.returncode == 2 and "no such directory" in gone.stderr


def test_too_little_memory_stops_before_anything(tmp_path: Path) -> None:
    """A 2 GB board (MemTotal 1.94 GB): the q4 model does not fit. The installer says so
    before any step: nothing is written into the tree, pip and the hub are never asked."""
    root = tmp_path / "root"
    root.mkdir()
    prepared_venv(root)
    before = tree(root)
    small = meminfo(tmp_path / "meminfo-2g", 1_897_988)
    with serve_hub({NAME: tmp_path / "empty-repo"}) as hub:
        env = {**os.environ, "LFM_SATELLITE_MEMINFO": str(small), "HF_ENDPOINT": hub.url}
        env.pop("HF_HUB_OFFLINE", None)
        done = install("--root", root, "--pip-arg=--no-index", "--source", tmp_path / "nothing",
                       env=env)  # fmt: skip
        assert hub.requests == []
    assert done.returncode == 1, done.stdout + done.stderr
    err = done.stderr
    assert f"this machine has 1.94 GB (MemTotal in {small})" in err
    assert f"the q4 variant of {NAME} needs about 2.12 GB" in err
    assert "peaks at about 1.62 GB, measured" in err
    assert "Nothing was installed or downloaded" in err
    assert "q4, the smallest variant" in err and "--ignore-memory" in err
    assert "satellite.mode: ha" in err  # why that alone does not help
    assert "[1]" not in done.stdout and "+ " not in done.stdout  # no step ran
    assert tree(root) == before
    # the same in a dry run; with --ignore-memory it goes on, saying so
    assert install("--dry-run", "--root", root, env=env).returncode == 1
    anyway = install("--dry-run", "--root", root, "--ignore-memory", env=env)
    assert anyway.returncode == 0, anyway.stderr
    assert "installing anyway (--ignore-memory)" in anyway.stdout
    assert f"model fetch {NAME} --variant q4" in anyway.stdout
    # no model, nothing to check
    assert install("--dry-run", "--root", root, "--model", "none", env=env).returncode == 0
    real_system_untouched()


def test_memory_check_per_variant(tmp_path: Path) -> None:
    """A 4 GB board (MemTotal 3.98 GB) fits q4 and goes on to fetch it; fp32 does not fit,
    and the message names the variant that does."""
    env = {**os.environ, "LFM_SATELLITE_MEMINFO": str(meminfo(tmp_path / "m4", 3_884_752))}
    ok = install("--dry-run", "--root", tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "memory: 3.98 GB here; the q4 variant needs about 2.12 GB" in ok.stdout
    assert ok.stdout.index("memory:") < ok.stdout.index("[1] system packages")
    assert f"model fetch {NAME} --variant q4" in ok.stdout
    fp32 = install("--dry-run", "--root", tmp_path, "--variant", "fp32", env=env)
    assert fp32.returncode == 1
    assert "the fp32 variant" in fp32.stderr and "estimated" in fp32.stderr
    assert "a smaller variant: --variant q4 (needs about 2.12 GB)" in fp32.stderr
    env["LFM_SATELLITE_MEMINFO"] = str(meminfo(tmp_path / "m6", 6 << 20))
    fp32 = install("--dry-run", "--root", tmp_path, "--variant", "fp32", env=env)
    assert "--variant fp16 (needs about 4.10 GB) or --variant q4" in fp32.stderr
    # unreadable: said, not checked
    env["LFM_SATELLITE_MEMINFO"] = str(tmp_path / "no-such-file")
    unknown = install("--dry-run", "--root", tmp_path, env=env)
    assert unknown.returncode == 0 and "cannot read MemTotal" in unknown.stdout
    assert tree(tmp_path) == {"m4", "m6", "meminfo-16g"}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A copy of what pip builds the package from (pip writes build files into it)."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for part in ("satellite", "models"):
        shutil.copytree(REPO / part, src / part, ignore=ignore)
    for part in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / part, src / part)
    return src


def prepared_venv(root: Path) -> Path:
    """The venv as the installer finds it on an upgrade. No network here, so instead of pip
    downloading the dependencies, the venv sees this interpreter's installed ones (a .pth
    file); the installer then installs the package itself into it with pip."""
    venv = root / VENV
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    # links to this interpreter's packages, except this project's own (editable) install, so
    # pip in the new venv never sees, let alone touches, the developer's environment
    deps = root.parent / "host-packages"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if "lfm_satellite" not in entry.name and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    (purelib / "host-packages.pth").write_text(f"{deps}\n")
    return venv


def test_install_upgrade_uninstall_in_a_root_prefix(tmp_path: Path, source: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    venv = prepared_venv(root)
    repo = tmp_path / "hub" / "repo"
    g.write_hub_repo(repo, {**g.CONFIG, "codebook_size": 2049}, ("q4",))
    offline = ["--pip-arg=--no-index", "--pip-arg=--no-build-isolation", "--source", source]
    pin = find_entry(load_catalog(catalog_path()), NAME).revision
    with serve_hub({NAME: repo}, commit=pin) as hub:
        catalog = write_test_catalog(NAME, repo, tmp_path / "catalog.yaml")
        env = {**os.environ, "HF_ENDPOINT": hub.url, "LFM_SATELLITE_CATALOG": str(catalog)}
        env.pop("HF_HUB_OFFLINE", None)
        done = install("--root", root, *offline, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "+ systemd-sysusers" in done.stdout and f"{root}/var/lib" in done.stdout

        # the user, in the tree's passwd
        passwd = (root / "etc/passwd").read_text()
        uid = int(re.search(r"^lfm-satellite:x:(\d+):", passwd, re.M).group(1))  # type: ignore[union-attr]
        gid = int(
            re.search(r"^lfm-satellite:x:(\d+):", (root / "etc/group").read_text(), re.M).group(1)
        )  # type: ignore[union-attr]
        # the package, installed by pip into the venv
        exe = venv / "bin" / "lfm-satellite"
        assert exe.is_file()
        assert subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.startswith(
            "lfm-satellite "
        )
        installed = subprocess.run(
            [venv / "bin/python", "-c", "import satellite; print(satellite.__file__)"],
            capture_output=True, text=True, check=True, cwd=tmp_path, env={"PATH": os.environ["PATH"]},
        ).stdout  # fmt: skip
        assert installed.startswith(str(venv)), installed
        # the config: private to root and the service's group; valid; the example beside it
        config = root / CONFIG
        mode = config.stat()
        assert stat.S_IMODE(mode.st_mode) == 0o640 and mode.st_gid == gid
        assert "variant: q4" in config.read_text() and f"name: {NAME}" in config.read_text()
        assert "mqtt:" in (root / "etc/lfm-satellite/config.example.yaml").read_text()
        # the model, fetched through huggingface_hub from the local hub, owned by the user
        manifest = root / MODEL / "manifest.json"
        assert manifest.is_file() and manifest.stat().st_uid == uid
        assert any("/resolve/" in p for p, _ in hub.gets())
        # the unit, enabled in the tree, and silent under systemd-analyze verify
        assert (root / UNIT).read_text() == (REPO / "systemd/lfm-satellite.service").read_text()
        assert (root / WANTS).is_symlink()
        units = root / "usr/lib/systemd/system"
        units.mkdir(parents=True)
        for unit in Path("/usr/lib/systemd/system").iterdir():
            if unit.is_file() and not unit.is_symlink():
                shutil.copy2(unit, units / unit.name)
        verify = subprocess.run(
            ["systemd-analyze", "verify", f"--root={root}", "lfm-satellite.service"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert verify.stderr == "" and verify.returncode == 0, verify.stderr

        # upgrade: the user's config stays, the model is not downloaded again
        edited = config.read_text().replace("mode: local", "mode: ha")
        config.write_text(edited)
        hub.requests.clear()
        again = install("--root", root, *offline, env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"keep {config} (it is never overwritten)" in again.stdout
        assert config.read_text() == edited
        assert hub.gets() == []

        # an upgrade with a broken config stops before touching the service
        config.write_text(edited + "vad:\n  threshold: 7\n")
        broken = install("--root", root, *offline, env=env)
        assert broken.returncode == 1
        assert "vad.threshold" in broken.stderr and "was not restarted" in broken.stderr

    # uninstall: package and unit go, config and models stay; --purge takes the rest
    gone = install("--uninstall", "--root", root)
    assert gone.returncode == 0, gone.stderr
    assert not (root / "opt/lfm-satellite").exists()
    assert not (root / UNIT).exists() and not (root / WANTS).is_symlink()
    assert config.is_file() and manifest.is_file()
    purged = install("--uninstall", "--purge", "--root", root)
    assert purged.returncode == 0, purged.stderr
    assert not (root / "etc/lfm-satellite").exists()
    assert not (root / "var/lib/lfm-satellite").exists()
    real_system_untouched()
