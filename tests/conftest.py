"""Shared test set-up: built models are cached per test run (models/lfm_toolchain/cache.py), so modules that
only read a tiny model share one build instead of each writing its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from lfm_toolchain import llamacpp
from lfm_toolchain.cache import CACHE_ENV

from satellite.audio.backends import load_sounddevice
from satellite.engine.sampling import Sampler
from satellite.engine.sessions import use_shared_pool
from tests.broker import Broker
from tests.satellite_support import tiny_model


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the model cache at this run's temporary folder: runs start clean and leave
    nothing in the user's cache."""
    root = tmp_path_factory.mktemp("model-cache")
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(root)
    yield root
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


@pytest.fixture(scope="session", autouse=True)
def shared_thread_pool() -> None:
    """onnxruntime's one global thread pool, as the daemon has it by default, set before any
    test opens a session: once a process has it, every session must run on it, so tests that
    open graphs themselves use `plain_session_options()` and pass whatever order they run in."""
    assert use_shared_pool(0), "onnxruntime refused a global thread pool"


@pytest.fixture(scope="session")
def llama_library() -> Path:
    """llama.cpp's shared library for llama-cpp-python's binding (the llama.cpp backbone):
    built from source with the project's AMX fix (`lfm_toolchain.llamacpp`, minutes the first time,
    cached in the user's cache folder as `bench peers` keeps it) and named to the binding with
    its own `LLAMA_CPP_LIB_PATH` before anything imports it. script/setup installs the binding
    without a library of its own."""
    folder = llamacpp.build_tools().library_dir
    os.environ["LLAMA_CPP_LIB_PATH"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def model() -> Path:
    """The tiny q4 model directory (built once a run, `lfm_toolchain.cache`), for tests that run
    the satellite on a model; a module that needs another model defines its own `model`."""
    return tiny_model()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto on a free loopback port, for one test."""
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def greedy_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reply alike: greedy sampling instead of a draw from fresh entropy (the daemon
    seeds nothing, so otherwise a reply's length, and where it ends, changes run to run and
    CPU to CPU)."""
    monkeypatch.setattr(Sampler, "__call__", lambda self, logits, sampling: int(np.argmax(logits)))


class PulseServer:
    """A private PulseAudio server with a null sink (its monitor is the microphone), on a unix
    socket of its own (`PULSE_SERVER`); `kill` and `start` again play an audio server that
    crashes and is restarted (FINDINGS §3)."""

    def __init__(self, home: Path) -> None:
        binary = shutil.which("pulseaudio")
        assert binary, "pulseaudio is not installed: script/setup installs it"
        self.binary = binary
        self.home = home
        self.socket = home / "native"
        self.address = f"unix:{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
             "--disable-shm=yes", "-L", f"module-native-protocol-unix socket={self.socket} "
             "auth-anonymous=1", "-L", "module-null-sink sink_name=satsink",
             "-L", "module-always-sink"],
            env={**os.environ, "HOME": str(self.home), "XDG_RUNTIME_DIR": str(self.home)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            assert self.process.poll() is None, "pulseaudio exited at start"
            assert time.monotonic() < deadline, "pulseaudio did not start in 10 s"
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the server is gone without a word to its clients."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def pulseaudio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseServer]:
    """A PulseServer, started. PortAudio is initialised before the server starts, as where the
    daemon starts before the user's audio server: the backend must find the server's device
    all the same."""
    load_sounddevice()
    home = tmp_path / "pulse"
    home.mkdir()
    server = PulseServer(home)
    monkeypatch.setenv("PULSE_SERVER", server.address)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on a real mosquitto (the `broker` fixture) carries the `broker` marker."""
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)
