"""Lifecycle hooks: a service's ``post_start`` and ``pre_stop`` commands, run in its container.

Each hook is one exec through the Docker seam, as Compose runs them: ``POST
/containers/{id}/exec``, ``POST /exec/{id}/start`` attached until the command ends, then
``GET /exec/{id}/json`` for its exit code. Every output line goes to ``on_output`` (the
executor sends it to the progress display and the log). Hooks run in order; environment
values are never logged.

A ``post_start`` hook that fails raises HookFailed naming the hook and its exit code, so the
operation that started the container fails (Compose fails the start). A ``pre_stop`` hook
that fails is reported through ``on_output`` and the stop goes ahead: a stop gitdock needs
(a recreate, ``down``) is never blocked by a hook. Compose fails the stop there instead. A
container that is no longer running runs no hook (Docker: 404 or 409).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gitdock.runtime.docker import Conflict, DockerClient, DockerError, NotFound
from gitdock.specs.errors import PermanentError
from gitdock.specs.model import ServiceHook

_SETTLE = 10.0  # seconds an ended exec may take to report it is no longer running
_POLL = 0.05

Output = Callable[[str], None]


class HookFailed(PermanentError):
    """A ``post_start`` hook exited with a non-zero code, or could not be run."""


def run_post_start(
    docker: DockerClient, service: str, ident: str, hooks: tuple[ServiceHook, ...], on_output: Output
) -> None:
    """Run each ``post_start`` hook in container ``ident``; raises HookFailed on the first failure."""
    for i, hook in enumerate(hooks):
        name = f"service {service}: post_start[{i}]"
        try:
            code = run_hook(docker, ident, hook, _prefixed(on_output, name))
        except DockerError as exc:
            raise HookFailed(f"{name} hook could not run: {exc}") from exc
        if code != 0:
            raise HookFailed(f"{name} hook exited with code {code}")


def run_pre_stop(
    docker: DockerClient, service: str, ident: str, hooks: tuple[ServiceHook, ...], on_output: Output
) -> None:
    """Run each ``pre_stop`` hook in container ``ident``; a failure is reported, never raised."""
    for i, hook in enumerate(hooks):
        name = f"service {service}: pre_stop[{i}]"
        try:
            code = run_hook(docker, ident, hook, _prefixed(on_output, name))
        except (NotFound, Conflict):
            return  # not running (any more): there is nothing to run a hook in
        except DockerError as exc:
            on_output(f"{name} hook could not run: {exc}; stopping anyway")
            continue
        if code != 0:
            on_output(f"{name} hook exited with code {code}; stopping anyway")


def run_hook(docker: DockerClient, ident: str, hook: ServiceHook, on_output: Output) -> int:
    """Run one hook attached, its output line by line to ``on_output``; returns its exit code."""
    exec_id = docker.create_exec(ident, exec_body(hook))
    docker.start_exec(exec_id, on_output=lambda _stream, line: on_output(line))
    deadline = time.monotonic() + _SETTLE
    while True:
        state = docker.inspect_exec(exec_id)
        if not state.get("Running") or time.monotonic() > deadline:
            code = state.get("ExitCode")
            return int(code) if code is not None else -1
        time.sleep(_POLL)


def _prefixed(on_output: Output, name: str) -> Output:
    def output(line: str) -> None:
        on_output(f"{name}: {line}")

    return output


def exec_body(hook: ServiceHook) -> dict[str, object]:
    """The ``POST /containers/{id}/exec`` body of a hook. Pure."""
    body: dict[str, object] = {
        "Cmd": list(hook.command),
        "AttachStdout": True,
        "AttachStderr": True,
        "Privileged": hook.privileged,
    }
    if hook.user:
        body["User"] = hook.user
    if hook.working_dir:
        body["WorkingDir"] = hook.working_dir
    if hook.environment:
        body["Env"] = [f"{k}={v}" for k, v in hook.environment]
    return body
