"""Real-Docker helpers for tests, built on the `docker` CLI and a raw /_ping.

Nothing here imports gitdock: setup checks and cleanup stay independent of the
code under test, so a bug in gitdock cannot hide its own leftovers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

TEST_IMAGE = "gitdock-test/busybox:1"
TEST_IMAGE_2 = "gitdock-test/busybox:2"

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
GITDOCK_PROJECT_LABEL = "io.gitdock.project"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


class DockerCLIError(RuntimeError):
    """A `docker` command exited non-zero; carries its argv, exit status and stderr."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        self.argv = args
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(args)}: exit {returncode}: {stderr.strip()}")


def docker_host() -> str:
    """The daemon address tests talk to: DOCKER_HOST, else the default unix socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def is_truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE_WORDS


def is_docker_required() -> bool:
    """Whether a missing dockerd fails tests instead of skipping them.

    GITDOCK_REQUIRE_DOCKER decides when it is set (1 requires, 0 allows skipping);
    otherwise a true CI variable requires Docker, so a green CI run means Docker ran.
    """
    explicit = os.environ.get("GITDOCK_REQUIRE_DOCKER")
    if explicit is not None and explicit.strip() != "":
        return is_truthy(explicit)
    return is_truthy(os.environ.get("CI"))


def _http_get_ping(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
    response = b""
    while chunk := sock.recv(4096):
        response += chunk
    return response


def ping_docker(host: str | None = None, timeout: float = 3.0) -> str | None:
    """GET /_ping on the daemon; returns None when it answers OK, else the reason it did not."""
    host = host or docker_host()
    try:
        if host.startswith("unix://"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(host.removeprefix("unix://"))
                response = _http_get_ping(sock)
        elif host.startswith("tcp://"):
            address, _, port = host.removeprefix("tcp://").rstrip("/").rpartition(":")
            with socket.create_connection((address, int(port)), timeout=timeout) as sock:
                response = _http_get_ping(sock)
        else:
            return f"unsupported DOCKER_HOST scheme: {host}"
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    head, _, body = response.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    if " 200 " not in f"{status_line} " or body.strip() != b"OK":
        return f"unexpected /_ping answer: {status_line!r} {body[:80]!r}"
    return None


def docker_cli(*args: str, input: str | None = None, timeout: float = 120) -> str:
    """Run `docker ARGS...` and return its stdout; raise DockerCLIError with stderr on failure."""
    argv = ["docker", *args]
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise DockerCLIError(argv, proc.returncode, proc.stderr)
    return proc.stdout


def write_compose(tmp_path: Path, text: str) -> Path:
    """Write dedented `text` to tmp_path/compose.yaml and return that path."""
    path = tmp_path / "compose.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def _to_docker_time(value: float | int | str | datetime) -> str:
    if isinstance(value, datetime):
        return f"{value.timestamp():.9f}"
    if isinstance(value, int | float):
        return f"{float(value):.9f}"
    return value


def docker_events(
    since: float | int | str | datetime,
    until: float | int | str | datetime,
    label: str | None = None,
) -> list[dict[str, object]]:
    """Docker events between since and until (unix time, datetime or docker's own syntax).

    `label` is a docker filter value, `key` or `key=value`. `until` should be in the
    past: docker waits for it before returning.
    """
    args = ["events", "--format", "{{json .}}", "--since", _to_docker_time(since)]
    args += ["--until", _to_docker_time(until)]
    if label is not None:
        args += ["--filter", f"label={label}"]
    return [json.loads(line) for line in docker_cli(*args).splitlines() if line.strip()]


class EventStream:
    """A live `docker events --filter label=LABEL` process, for positive checks on events.

    ``docker_events(since, until)`` replays from dockerd's in-memory ring of the daemon's last
    256 events: on a busy daemon the ones asked for may have rolled off by the time the window
    is read. A stream subscribed before the action sees them all. Use as a context manager.
    """

    def __init__(self, label: str) -> None:
        since = f"{time.time():.9f}"  # what happened between this and the subscription is replayed
        self._proc = subprocess.Popen(
            ["docker", "events", "--format", "{{json .}}", "--since", since, "--filter", f"label={label}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.events: list[dict[str, object]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip():
                with self._cond:
                    self.events.append(json.loads(line))
                    self._cond.notify_all()

    def wait_for(
        self, check: Callable[[list[dict[str, object]]], bool], what: str, timeout: float = 60.0
    ) -> list[dict[str, object]]:
        """Wait until ``check(events so far)`` holds; return the events. AssertionError on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: check(self.events), timeout):
                seen = [e.get("Action") for e in self.events]
                raise AssertionError(f"no {what} in docker events within {timeout}s; saw {seen}")
            return list(self.events)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        self._proc.wait(10)
        self._reader.join(10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def _ids(kind: str, filters: Iterable[str]) -> list[str]:
    found: list[str] = []
    for filter_ in filters:
        if kind == "container":
            out = docker_cli("ps", "--all", "--quiet", "--no-trunc", "--filter", filter_)
        else:
            out = docker_cli(kind, "ls", "--quiet", "--filter", filter_)
        found += [line for line in out.split() if line not in found]
    return found


def _project_filters(project: str) -> list[str]:
    # Labels are what gitdock and compose promise; the name filters catch what a
    # buggy run created without labels (project names are unique per test).
    return [
        f"label={GITDOCK_PROJECT_LABEL}={project}",
        f"label={COMPOSE_PROJECT_LABEL}={project}",
        f"name={project}",
    ]


def list_project_resources(project: str) -> dict[str, list[str]]:
    """IDs (names for volumes) of containers, networks and volumes that belong to `project`."""
    filters = _project_filters(project)
    return {kind: _ids(kind, filters) for kind in ("container", "network", "volume")}


def remove_project(project: str) -> None:
    """Remove every container (forced), then network, then volume of `project`, then the
    images gitdock built for it (labelled with the project: left behind, every run of the
    suite would add dozens, and each image list on this host would grow slower).

    Everything is attempted; a DockerCLIError naming what is left is raised at the end.
    """
    errors: list[str] = []
    for kind in ("container", "network", "volume", "image"):
        try:
            ids = _ids(kind, _project_filters(project)[:1] if kind == "image" else _project_filters(project))
            if not ids:
                continue
            if kind == "container":
                docker_cli("rm", "--force", "--volumes", *ids)
            elif kind == "network":
                docker_cli("network", "rm", *ids)
            elif kind == "volume":
                docker_cli("volume", "rm", "--force", *ids)
            else:
                docker_cli("image", "rm", "--force", *ids)
        except DockerCLIError as exc:
            errors.append(str(exc))
    left = {kind: ids for kind, ids in list_project_resources(project).items() if ids}
    if errors or left:
        raise DockerCLIError(
            ["remove_project", project], 1, f"left behind: {left}; errors: {'; '.join(errors)}"
        )
