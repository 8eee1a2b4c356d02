"""A bounded HTTP/1.1 server: one selector thread reads request heads, a fixed pool runs handlers.

Why not the stdlib's ``ThreadingHTTPServer``: it listens with a backlog of 5 (a burst of
deliveries is reset), starts one thread per connection and never times a read out, so 300
half-sent requests hold 300 threads for ever. Here:

- the listen backlog is ``BACKLOG``; at most ``Limits.max_connections`` are open, and one
  beyond that is answered 503 at once;
- a connection costs no thread until its whole request head (request line and headers) has
  arrived: until then it is a buffer in the selector, which gives it ``Limits.read_timeout``
  to finish the head (408 after) and ``Limits.idle_timeout`` between keep-alive requests
  (closed quietly). A request line over ``MAX_LINE_BYTES`` is answered 414, a head over
  ``MAX_HEAD_BYTES`` 431 (the handler refuses more than 100 header lines with 431 too);
- ``Limits.workers`` daemon threads run the handlers (daemon: a handler waiting on a
  ``?wait=1`` reconcile must not hold the process at exit); the body is read under the same
  read deadline, counted from the moment a worker takes the request;
- a client that goes away (reset, broken pipe, timeout) costs one debug line, no traceback.

The handler is a ``BaseHTTPRequestHandler`` subclass mixed with ``PooledHandler``; it serves
exactly one request per call and says through ``close_connection`` whether to keep the
connection for the next.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Final

__all__ = ["BACKLOG", "MAX_HEAD_BYTES", "MAX_LINE_BYTES", "BoundedHTTPServer", "Limits", "PooledHandler"]

log = logging.getLogger("gitdock.agent.http")

BACKLOG: Final = 128
MAX_LINE_BYTES: Final = 8 * 1024  # request line: method, target, version
MAX_HEAD_BYTES: Final = 64 * 1024  # request line plus every header
WRITE_TIMEOUT: Final = 30.0
_HEAD_END: Final = re.compile(rb"\r?\n\r?\n")
_READY: Final = "ready"


@dataclass(frozen=True)
class Limits:
    """How much one client may hold: time to send a request, idle time, connections, workers."""

    read_timeout: float = 10.0
    idle_timeout: float = 30.0
    max_connections: int = 512
    workers: int = 16


class _Reader:
    """The connection's input: bytes already read (the head, pipelined requests), then the socket.

    Every socket read waits at most until ``deadline`` (``time.monotonic()``); past it,
    TimeoutError. What is left unread stays in ``buffer`` for the next request.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.deadline = float("inf")

    def fill(self) -> bool:
        """Read once from the socket into the buffer; False at end of stream."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("read deadline passed")
        self.sock.settimeout(remaining)
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def readline(self, limit: int = -1) -> bytes:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0 and (limit < 0 or end < limit):
                return self._take(end + 1)
            if 0 <= limit <= len(self.buffer) or not self.fill():
                return self._take(len(self.buffer) if limit < 0 else min(limit, len(self.buffer)))

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self.buffer) < size) and self.fill():
            pass
        return self._take(len(self.buffer) if size < 0 else min(size, len(self.buffer)))

    def _take(self, n: int) -> bytes:
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data


class _Writer:
    """The connection's output, sent on ``flush``: head and body leave in one segment."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = bytearray()

    def write(self, data: bytes) -> int:
        self.pending += data
        return len(data)

    def flush(self) -> None:
        if self.pending:
            self.sock.settimeout(WRITE_TIMEOUT)
            data, self.pending = bytes(self.pending), bytearray()
            self.sock.sendall(data)


class _Conn:
    """One client connection and where it is: waiting for a head (selector) or being handled."""

    def __init__(self, sock: socket.socket, address: Any, deadline: float) -> None:
        self.sock = sock
        self.address = address
        self.reader = _Reader(sock)
        self.writer = _Writer(sock)
        self.deadline = deadline
        self.fresh = True  # no request served yet
        self.scanned = 0  # how much of the buffer was searched for the head's end

    def name(self) -> str:
        return f"{self.address[0]}:{self.address[1]}" if isinstance(self.address, tuple) else "client"


class PooledHandler(BaseHTTPRequestHandler):
    """Serves one request of a ``_Conn`` (mix in before the request handler's own class)."""

    request: _Conn

    def setup(self) -> None:
        self.connection = self.request.sock
        self.rfile = self.request.reader  # type: ignore[assignment]  # readline/read is all it uses
        self.wfile = self.request.writer  # type: ignore[assignment]  # write/flush is all it uses

    def handle(self) -> None:
        self.close_connection = True
        try:
            self.handle_one_request()
        finally:
            self.wfile.flush()  # also what send_error wrote for a request that did not parse

    def handle_expect_100(self) -> bool:
        answer = super().handle_expect_100()
        self.wfile.flush()  # the client waits for this before it sends the body
        return answer

    def finish(self) -> None:
        pass  # the server decides whether the connection stays open


_Verdict = str | tuple[int, str, str]  # _READY, or (status, reason, message) to refuse with
HandlerFactory = Callable[..., PooledHandler]  # called (conn, address, server), like socketserver's


def _canned(status: int, reason: str, message: str) -> bytes:
    body = (json.dumps({"error": message}) + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class BoundedHTTPServer:
    """Serve ``handler`` on ``address`` within ``limits`` (see the module docstring).

    ``serve_forever`` runs the selector in the calling thread; ``shutdown`` (from another
    thread) makes it return, ``server_close`` closes every socket. A handler class is called
    as ``handler(conn, address, server)``, like socketserver's.
    """

    def __init__(
        self, address: tuple[str, int], handler: HandlerFactory, limits: Limits | None = None
    ) -> None:
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=BACKLOG)
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self.handler = handler
        self.limits = limits or Limits()
        self._selector = selectors.DefaultSelector()
        self._waiting: set[_Conn] = set()  # the selector thread's alone
        self._returned: queue.SimpleQueue[_Conn] = queue.SimpleQueue()  # kept alive by a worker
        self._jobs: queue.SimpleQueue[_Conn | None] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._open = 0
        self._open_lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._serving = False

    @property
    def open_connections(self) -> int:
        with self._open_lock:
            return self._open

    # -- the selector thread --

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._serving = True
        for i in range(self.limits.workers):
            threading.Thread(target=self._work, name=f"http-worker-{i}", daemon=True).start()
        self._selector.register(self.socket, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(poll_interval):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._take_returned()
                    else:
                        self._read_head(key.data)
                self._expire(time.monotonic())
        finally:
            self._stopped.set()

    def _accept(self) -> None:
        for _ in range(64):  # drain a burst, then look at the other sockets again
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: the backlog waits a moment
                log.warning("accepting a connection: %s", exc.strerror or exc)
                time.sleep(0.1)  # the socket stays readable: do not spin on it
                return
            with self._open_lock:
                full = self._open >= self.limits.max_connections
                self._open += 0 if full else 1
            if full:
                log.debug("%s: %d connections open; answered 503", address, self.limits.max_connections)
                _send_and_close(
                    sock, _canned(503, "Service Unavailable", "too many connections; retry later")
                )
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # answers are written whole
            self._wait(_Conn(sock, address, time.monotonic() + self.limits.read_timeout))

    def _wait(self, conn: _Conn) -> None:
        """Wait in the selector for the rest of `conn`'s next request head (unless it is here)."""
        conn.scanned = 0
        verdict = self._verdict(conn)
        if verdict is not None:
            self._act(conn, verdict)
            return
        conn.sock.setblocking(False)
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        self._waiting.add(conn)

    def _read_head(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # closed by the client, or reset
            self._forget(conn)
            self._close(conn)
            return
        if not conn.reader.buffer and not conn.fresh:  # a kept-alive connection starts its next request
            conn.deadline = time.monotonic() + self.limits.read_timeout
        conn.reader.buffer += data
        verdict = self._verdict(conn)
        if verdict is not None:
            self._forget(conn)  # before a worker may touch the socket
            self._act(conn, verdict)

    @staticmethod
    def _verdict(conn: _Conn) -> _Verdict | None:
        """What the bytes so far call for: run them (a whole head), refuse them, or None: wait."""
        buffer = conn.reader.buffer
        if buffer.find(b"\n", 0, MAX_LINE_BYTES + 1) < 0 and len(buffer) > MAX_LINE_BYTES:
            return 414, "URI Too Long", f"request line over {MAX_LINE_BYTES} bytes"
        end = _HEAD_END.search(buffer, max(0, conn.scanned - 3))  # only the new bytes (and a seam)
        conn.scanned = len(buffer)
        if end is not None and end.end() <= MAX_HEAD_BYTES:
            return _READY
        if len(buffer) > MAX_HEAD_BYTES:
            return 431, "Request Header Fields Too Large", f"request head over {MAX_HEAD_BYTES} bytes"
        return None

    def _act(self, conn: _Conn, verdict: _Verdict) -> None:
        if verdict == _READY:
            self._jobs.put(conn)
        else:
            self._refuse(conn, *verdict)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._waiting if c.deadline <= now]:
            self._forget(conn)
            if conn.reader.buffer:
                log.debug("%s: request not complete in time; answered 408", conn.name())
                self._refuse(conn, 408, "Request Timeout", "the request did not arrive in time")
            else:
                log.debug("%s: idle; closed", conn.name())
                self._close(conn)

    def _take_returned(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:  # BlockingIOError: drained
            pass
        while True:
            try:
                conn = self._returned.get_nowait()
            except queue.Empty:
                return
            self._wait(conn)

    def _forget(self, conn: _Conn) -> None:
        self._waiting.discard(conn)
        with contextlib.suppress(KeyError, ValueError):  # not registered (a pipelined head)
            self._selector.unregister(conn.sock)

    def _refuse(self, conn: _Conn, status: int, reason: str, message: str) -> None:
        _send_and_close(conn.sock, _canned(status, reason, message))
        self._count_closed()

    def _close(self, conn: _Conn) -> None:
        _send_and_close(conn.sock, b"")
        self._count_closed()

    def _count_closed(self) -> None:
        with self._open_lock:
            self._open -= 1

    # -- the workers --

    def _work(self) -> None:
        while (conn := self._jobs.get()) is not None:
            if self._serve(conn) and not self._stop.is_set():
                conn.fresh = False
                conn.deadline = time.monotonic() + self.limits.idle_timeout
                self._returned.put(conn)
                with contextlib.suppress(OSError):  # the pipe is full: a wake-up is pending anyway
                    self._wake_w.send(b"\0")
            else:
                self._close(conn)

    def _serve(self, conn: _Conn) -> bool:
        """Run the handler on one request. Returns whether to keep the connection."""
        conn.reader.deadline = time.monotonic() + self.limits.read_timeout
        try:
            handler = self.handler(conn, conn.address, self)
        except OSError as exc:  # reset, broken pipe, read or write timeout: the client's doing
            log.debug("%s: connection lost (%s)", conn.name(), type(exc).__name__)
            return False
        except Exception:  # a bug in a handler: keep serving the others
            log.exception("%s: request failed", conn.name())
            return False
        return not handler.close_connection

    # -- stopping --

    def shutdown(self) -> None:
        """Make ``serve_forever`` return; waits for it (like socketserver's)."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._serving:
            self._stopped.wait()

    def server_close(self) -> None:
        """Close the listening socket and every waiting connection; let the workers go."""
        self._stop.set()
        for conn in list(self._waiting):
            self._forget(conn)
            self._close(conn)
        for _ in range(self.limits.workers):
            self._jobs.put(None)
        self._selector.close()
        for sock in (self.socket, self._wake_r, self._wake_w):
            sock.close()


def _send_and_close(sock: socket.socket, data: bytes) -> None:
    """Best effort: a short answer into an empty send buffer, then close (errors mean gone)."""
    try:
        if data:
            sock.setblocking(False)
            sock.send(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.close()
