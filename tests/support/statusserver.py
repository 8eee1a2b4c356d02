"""A real HTTP server on 127.0.0.1 that records requests, for commit statuses and webhooks.

``StatusServer`` runs ``http.server`` in a thread on a random port and records every request
(method, path, headers, raw and JSON body). Answers are 201 with ``{}`` unless a test queues
others per path (``answer``), and ``hang()`` holds every request until ``release()``, for the
receiver that never answers. Nothing here knows what a forge expects: the tests check that.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    headers: Mapping[str, str]  # names lower-cased
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class StatusServer:
    """Records requests; answers 201 unless told otherwise. Use as a context manager."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._answers: dict[str, list[tuple[int, dict[str, str], bytes]]] = {}
        self._lock = threading.Condition()
        self._released = threading.Event()
        self._released.set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> StatusServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str, *answers: int | tuple[int, dict[str, str]]) -> None:
        """Answer the next requests to ``path`` with these statuses (then 201 again)."""
        queue = self._answers.setdefault(path, [])
        for a in answers:
            status, headers = a if isinstance(a, tuple) else (a, {})
            queue.append((status, headers, json.dumps({"message": f"answer {status}"}).encode()))

    def hang(self) -> None:
        """Hold every request (after recording it) until ``release``."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def received(self, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 30.0) -> list[Recorded]:
        """Wait until ``count`` requests (to ``path``) have arrived; fail naming what came."""
        with self._lock:
            done = self._lock.wait_for(lambda: len(self._matching(path)) >= count, timeout)
            got = self._matching(path)
        assert done, f"expected {count} request(s) to {path or 'any path'}, got {[r.path for r in got]}"
        return got

    def _matching(self, path: str | None) -> list[Recorded]:
        return [r for r in self.requests if path is None or r.path == path]

    def _record(self, request: Recorded) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()
            queue = self._answers.get(request.path)
            return queue.pop(0) if queue else (201, {}, b"{}")

    def _handler(self) -> Callable[..., BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, extra, answer = server._record(Recorded("POST", self.path, headers, body))
                server._released.wait(60)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        return Handler
