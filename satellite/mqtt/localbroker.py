"""A mosquitto broker of our own on a loopback port: for the demo (`script/run`) and the soak
benchmark, which kills it and starts it again on the same port, as a broker that crashes and
comes back (nothing persisted, as after a real crash of a broker without persistence)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

START_SECONDS = 10.0


def mosquitto_program() -> str | None:
    """The mosquitto executable (Debian installs it in /usr/sbin), or None."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).is_file()), None
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalBroker:
    """mosquitto on 127.0.0.1:`port`, anonymous, no persistence; its config in `folder`."""

    def __init__(self, program: str, folder: Path, port: int | None = None) -> None:
        self.program = program
        self.folder = folder
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> bool:
        """Start it and wait until it listens (at most START_SECONDS); False if it did not."""
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot read folder
        config = self.folder / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen([self.program, "-c", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and self.process.poll() is None:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return True
            time.sleep(0.05)
        self.stop()
        return False

    def kill(self) -> None:
        """SIGKILL: gone without a word to its clients."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None
