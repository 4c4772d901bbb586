"""HTTP edge of the vast.ai emulator: stdlib ``ThreadingHTTPServer`` on loopback only.

API paths are answered by ``LabState.handle``. A few lab-only control paths (no auth,
never part of the real API) let tests and the lab steer the emulator:

  POST /_lab/faults     {"status": 429, "count": 2, "retry_after": "1", "path_prefix": "/api/",
                         "after": false}   (after: process the call, then answer the fault)
                         optional "body": the JSON answer (e.g. the 410 ``no_such_ask`` of a
                         create with cancel_unavail on a machine that cannot start)
  POST /_lab/instances  an instance object (seed one more instance)
  GET  /_lab/instances/<id>/env  the container's environment (CONTAINER_ID, CONTAINER_API_KEY,
                         the rental's variables), as vast.ai puts it into PID 1
  GET  /_lab/requests   the (method, path) log
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from vastllm_lab.vastai.state import Fault, LabState

LOOPBACK = "127.0.0.1"


class _Handler(BaseHTTPRequestHandler):
    server_version = "vastai-lab/1"
    protocol_version = "HTTP/1.1"

    @property
    def state(self) -> LabState:
        lab: LabState = self.server.lab_state  # type: ignore[attr-defined]
        return lab

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet by default; never log headers (they hold the API key)."""
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    def _read_body(self) -> tuple[bool, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return True, None
        raw = self.rfile.read(length)
        try:
            return True, json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return False, None

    def _send(self, status: int, headers: dict[str, str], body: Any) -> None:
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        ok, body = self._read_body()
        if not ok:
            self._send(400, {}, {"success": False, "error": "invalid_json", "msg": "bad JSON"})
            return
        if parts.path.startswith("/_lab/"):
            self._control(method, parts.path, body)
            return
        status, headers, payload = self.state.handle(
            method, parts.path, query, body, self.headers.get("Authorization")
        )
        self._send(status, headers, payload)

    def _control(self, method: str, path: str, body: Any) -> None:
        lab = self.state
        try:
            if path == "/_lab/faults" and method == "POST" and isinstance(body, dict):
                lab.add_fault(
                    Fault(
                        status=int(body["status"]),
                        count=int(body.get("count", 1)),
                        path_prefix=str(body.get("path_prefix", "/")),
                        retry_after=body.get("retry_after"),
                        after=bool(body.get("after", False)),
                        body=dict(body.get("body") or {}),
                    )
                )
                self._send(200, {}, {"success": True})
                return
            if path == "/_lab/instances" and method == "POST" and isinstance(body, dict):
                self._send(200, {}, lab.add_instance(body))
                return
            parts = [p for p in path.split("/") if p]
            if (
                len(parts) == 4
                and parts[1] == "instances"
                and parts[3] == "env"
                and method == "GET"
            ):
                try:
                    env = lab.container_env(int(parts[2]))
                except KeyError:
                    self._send(404, {}, {"success": False, "msg": f"no instance {parts[2]}"})
                    return
                self._send(200, {}, env)
                return
            if path == "/_lab/requests" and method == "GET":
                self._send(200, {}, {"requests": [list(r) for r in lab.requests]})
                return
        except (KeyError, TypeError, ValueError) as err:
            self._send(400, {}, {"success": False, "msg": f"bad control request: {err}"})
            return
        self._send(404, {}, {"success": False, "msg": f"no control route {method} {path}"})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


class LabServer:
    """The emulator bound to 127.0.0.1, served from a daemon thread."""

    def __init__(self, state: LabState, port: int = 0, verbose: bool = False) -> None:
        self.state = state
        self.httpd = ThreadingHTTPServer((LOOPBACK, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.lab_state = state  # type: ignore[attr-defined]
        self.httpd.verbose = verbose  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> LabServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
