"""A local HTTP server that answers like the Home Assistant Supervisor's REST API where the
add-on calls it (`GET /services/mqtt`, `POST /discovery`; result/data envelopes, a bearer
token), recording every call. The real Supervisor runs only on Home Assistant OS."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "test-supervisor-token"


@dataclass
class FakeSupervisor:
    """What the fake Supervisor answers and what it was asked."""

    mqtt: dict[str, Any] | None
    """The `/services/mqtt` data (None: the service is not enabled)."""
    url: str = ""
    calls: list[tuple[str, str, str | None, Any]] = field(default_factory=list)
    """(method, path, Authorization header, JSON body) of each call, in order."""

    def discovered(self) -> list[str]:
        """The URIs announced through `POST /discovery` so far."""
        return [c[3]["config"]["uri"] for c in list(self.calls) if c[:2] == ("POST", "/discovery")]


@contextlib.contextmanager
def serve_supervisor(mqtt: dict[str, Any] | None, token: str = TOKEN) -> Iterator[FakeSupervisor]:
    """A FakeSupervisor on a free 127.0.0.1 port for the duration of the block."""
    fake = FakeSupervisor(mqtt)

    class Handler(BaseHTTPRequestHandler):
        def reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def handle_call(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            auth = self.headers.get("Authorization")
            fake.calls.append((method, self.path, auth, body))
            if auth != f"Bearer {token}":
                self.reply(401, {"result": "error", "message": "Unauthorized"})
            elif method == "GET" and self.path == "/services/mqtt":
                if fake.mqtt is None:
                    self.reply(400, {"result": "error", "message": "Service not enabled"})
                else:
                    self.reply(200, {"result": "ok", "data": fake.mqtt})
            elif method == "POST" and self.path == "/discovery":
                number = sum(1 for c in fake.calls if c[1] == "/discovery")
                self.reply(200, {"result": "ok", "data": {"uuid": f"uuid-{number}"}})
            else:
                self.reply(404, {"result": "error", "message": "Not found"})

        def do_GET(self) -> None:
            self.handle_call("GET")

        def do_POST(self) -> None:
            self.handle_call("POST")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
