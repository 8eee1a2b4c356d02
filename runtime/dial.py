"""HTTP to a remote engine over ssh, the way the Docker CLI does it: ``docker system dial-stdio``.

Each connection the pool opens is one ``ssh ... -- docker system dial-stdio`` process whose
stdin/stdout carry the HTTP bytes to the remote's Docker socket. Host keys are checked
strictly (``StrictHostKeyChecking=yes``) against the configured ``known_hosts`` only, and ssh
never prompts (``BatchMode=yes``): an unknown or changed host key ends the connection, and the
error carries ssh's own last line (``Host key verification failed.``).

This is an httpcore network backend, used by the Docker seam (runtime.docker) alone; its
failures are raised as httpcore's errors, which httpx and then the seam translate.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from collections.abc import Iterable, Sequence

import httpcore

from gitdock.runtime.contexts import HostAddress, SshOptions

__all__ = ["DialStdioBackend", "open_pool", "ssh_command"]

_EXIT_WAIT = 2.0  # seconds a finished ssh gets to exit, so its last stderr line can be reported


def ssh_command(address: HostAddress, options: SshOptions | None, connect_timeout: float) -> list[str]:
    """The ssh argv that runs ``docker system dial-stdio`` on ``address``. Pure."""
    argv = ["ssh", "-T", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    argv += ["-o", f"ConnectTimeout={max(1, round(connect_timeout))}"]
    if options is not None and options.known_hosts is not None:
        argv += ["-o", f"UserKnownHostsFile={options.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
    if options is not None and options.identity is not None:
        argv += ["-i", str(options.identity), "-o", "IdentitiesOnly=yes"]
    if address.port is not None:
        argv += ["-p", str(address.port)]
    if address.user:
        argv += ["-l", address.user]
    return [*argv, "--", address.hostname, "docker", "system", "dial-stdio"]


class DialStdioStream(httpcore.NetworkStream):
    """One ssh process: writes go to its stdin, reads come from its stdout."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        self._process = process
        self._stdin, self._stdout, self._stderr = process.stdin, process.stdout, process.stderr

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        ready, _, _ = select.select([self._stdout], [], [], timeout)
        if not ready:
            raise httpcore.ReadTimeout("no answer from the remote engine over ssh in time")
        data = os.read(self._stdout.fileno(), max_bytes)
        if not data and self._failed():
            raise httpcore.ConnectError(self._why())
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            self._stdin.write(buffer)
            self._stdin.flush()
        except (BrokenPipeError, ValueError):
            raise httpcore.WriteError(self._why()) from None

    def close(self) -> None:
        for pipe in (self._stdin, self._stdout, self._stderr):
            with contextlib.suppress(OSError):  # the far end is gone already
                pipe.close()
        if self._process.poll() is None:
            self._process.terminate()
        try:
            self._process.wait(_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def start_tls(
        self, ssl_context: object, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("TLS over an ssh dial-stdio connection is not supported")

    def get_extra_info(self, info: str) -> object:
        if info == "is_readable":  # an idle keep-alive connection that is readable has closed
            return bool(select.select([self._stdout], [], [], 0)[0])
        return None

    def _failed(self) -> bool:
        try:
            return self._process.wait(_EXIT_WAIT) != 0
        except subprocess.TimeoutExpired:
            return False

    def _why(self) -> str:
        """ssh's last stderr line (the reason it gave up), or its exit status."""
        self._failed()
        try:
            ready = select.select([self._stderr], [], [], 0)[0]
            text = os.read(self._stderr.fileno(), 65536).decode("utf-8", "replace") if ready else ""
        except (OSError, ValueError):
            text = ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return f"ssh: {lines[-1]}" if lines else f"ssh exited with status {self._process.returncode}"


class DialStdioBackend(httpcore.NetworkBackend):
    """Connects by starting ``command``; the host and port httpcore asks for are ignored."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)

    def _spawn(self) -> httpcore.NetworkStream:
        try:
            process = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # a ^C to gitdock is not a ^C to ssh mid-request
            )
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot run {self.command[0]}: {exc.strerror or exc}") from None
        return DialStdioStream(process)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[object] | None = None,
    ) -> httpcore.NetworkStream:
        return self._spawn()

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[object] | None = None
    ) -> httpcore.NetworkStream:
        return self._spawn()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def open_pool(command: Sequence[str]) -> httpcore.ConnectionPool:
    """A connection pool whose every connection is one run of ``command``."""
    return httpcore.ConnectionPool(network_backend=DialStdioBackend(command), max_connections=10)
