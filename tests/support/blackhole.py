"""A black-hole collector: a TCP server on 127.0.0.1 that reads HTTP requests and never answers.

    with BlackHole() as hole:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": hole.endpoint}
        ...
        first = hole.wait_for_request("/v1/traces", timeout=60)
        assert hole.is_held(first)

Unlike a port nobody listens on (refused at once, so a client never waits), a black hole makes
its client wait for as long as the client is willing to. It records every request it read
(method, path, body size) and which connections the client still holds open: a connection
closes only from the client's side (it gave up, or its process exited) until ``close``.
Thread-safe.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

__all__ = ["BlackHole", "HeldRequest"]


@dataclass(frozen=True)
class HeldRequest:
    """One request read in full and never answered; ``connection`` numbers its connection."""

    method: str
    path: str
    body_size: int
    connection: int


class BlackHole:
    """Accepts connections on a random loopback port, reads each request, answers nothing."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._changed = threading.Condition()
        self._requests: list[HeldRequest] = []
        self._open: dict[int, socket.socket] = {}
        self._threads: list[threading.Thread] = []
        self._closing = False

    # -- what a test asserts on --

    @property
    def requests(self) -> list[HeldRequest]:
        with self._changed:
            return list(self._requests)

    @property
    def open_connections(self) -> int:
        """Connections the client has opened and not closed."""
        with self._changed:
            return len(self._open)

    def is_held(self, request: HeldRequest) -> bool:
        """True while the client still waits on ``request`` (its connection is open)."""
        with self._changed:
            return request.connection in self._open

    def wait_for_request(self, path: str, timeout: float) -> HeldRequest:
        """The first request for ``path``, waiting up to ``timeout`` (a hang guard) for it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((r for r in self._requests if r.path == path), None)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    break
                self._changed.wait(left)
        if found is None:
            raise AssertionError(f"no request for {path} within {timeout}s; got {self.requests!r}")
        return found

    # -- lifecycle --

    def __enter__(self) -> BlackHole:
        self._spawn(self._accept_loop)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting and drop every connection still open."""
        with self._changed:
            self._closing = True
            held = list(self._open.values())
        # shutdown() (unlike close()) wakes a thread blocked in accept() or recv() on Linux.
        for sock in (self._listener, *held):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        number = 0
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # the listener was closed
                return
            number += 1
            with self._changed:
                if self._closing:
                    conn.close()
                    return
                self._open[number] = conn
                self._changed.notify_all()
            self._spawn(self._read_loop, conn, number)

    def _read_loop(self, conn: socket.socket, number: int) -> None:
        buffer = b""
        try:
            while True:
                request, buffer = _read_request(conn, buffer)
                if request is None:
                    return  # the client closed its side
                method, path, size = request
                with self._changed:
                    self._requests.append(HeldRequest(method, path, size, number))
                    self._changed.notify_all()
        except OSError:
            return  # reset by the client, or closed by close()
        finally:
            with self._changed:
                self._open.pop(number, None)
                self._changed.notify_all()
            conn.close()


def _read_request(conn: socket.socket, buffer: bytes) -> tuple[tuple[str, str, int] | None, bytes]:
    """One HTTP/1.1 request (method, path, body size) from ``conn``, and the bytes after it.

    None when the client closes before a whole request arrived.
    """
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None, buffer
        buffer += chunk
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, *_ = lines[0].split(" ")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    size = int(headers.get("content-length", "0"))
    while len(buffer) < size:
        chunk = conn.recv(65536)
        if not chunk:
            return None, buffer
        buffer += chunk
    return (method, path, size), buffer[size:]
