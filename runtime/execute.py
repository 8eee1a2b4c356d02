"""Execute: walk a Plan's DAG against Docker. It carries no decision logic.

Operations whose dependencies have finished run in parallel on a bounded thread pool. When
an operation fails, everything that depends on it is skipped (never half-applied on top of a
failure) and independent branches still finish. A recreate builds the new container before
the old one is stopped, so a bad config never leaves a service with nothing running.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gitdock.runtime.desired import DesiredContainer
from gitdock.runtime.docker import DockerClient, DockerError, NotFound
from gitdock.runtime.observe import ObservedState
from gitdock.runtime.plan import Operation, OpKind, Plan
from gitdock.specs.errors import GitdockError, TransientError
from gitdock.specs.model import ServiceFile

DEFAULT_CONCURRENCY = 8
DEFAULT_WAIT_TIMEOUT = 120.0
_POLL = 0.2
NETWORK_RELEASE_WAIT = 5.0  # seconds


class OpStatus(str, Enum):
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class OpResult:
    op: Operation
    status: OpStatus
    seconds: float = 0.0
    error: str | None = None
    transient: bool = False


@dataclass(frozen=True)
class ExecEvent:
    """A progress notification: ``phase`` is ``start`` or the final OpStatus value."""

    op: Operation
    phase: str
    seconds: float = 0.0
    error: str | None = None
    error_type: str | None = None  # the exception's class name, for telemetry
    container_id: str | None = None  # the container a done create/recreate made


@dataclass
class ExecutionReport:
    plan: Plan
    results: list[OpResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.status is OpStatus.DONE for r in self.results)

    @property
    def failed(self) -> list[OpResult]:
        return [r for r in self.results if r.status is OpStatus.FAILED]

    @property
    def transient(self) -> bool:
        """True when every failure was one that retrying may fix."""
        return bool(self.failed) and all(r.transient for r in self.failed)


class ExecutionFailed(GitdockError):
    """Some operations failed; ``report`` says which, and which were skipped because of them."""

    def __init__(self, report: ExecutionReport) -> None:
        self.report = report
        lines = [f"{r.op.resource}: {r.op.kind.value} failed: {r.error}" for r in report.failed]
        skipped = sum(1 for r in report.results if r.status is OpStatus.SKIPPED)
        if skipped:
            lines.append(f"{skipped} dependent operation(s) skipped")
        super().__init__("; ".join(lines))


class StepFailed(GitdockError):
    """An operation could not complete, for a reason that is not a Docker API error."""


class Executor:
    """Runs plans against one Docker client. Safe to reuse; not for concurrent plans."""

    def __init__(
        self,
        docker: DockerClient,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        on_event: Callable[[ExecEvent], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.docker = docker
        self.concurrency = max(1, concurrency)
        self.wait_timeout = wait_timeout
        self.on_event = on_event
        self.should_stop = should_stop or (lambda: False)
        self._ids: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()

    def execute(self, plan: Plan, observed: ObservedState) -> ExecutionReport:
        """Run every operation of ``plan``; never raises for a failed operation (see the report)."""
        started = time.monotonic()
        self._ids = {
            (c.service or "", c.number): c.id
            for c in sorted(observed.project_containers(plan.project), key=lambda c: -c.created)
        }
        for c in observed.project_containers(plan.project):
            # Prefer the canonically named container when a slot holds leftovers.
            if c.name == f"{plan.project}-{c.service}-{c.number}":
                self._ids[(c.service or "", c.number)] = c.id
        results: dict[int, OpResult] = {}
        pending = {op.id: op for op in plan.operations}
        running: dict[Future[OpResult], Operation] = {}
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="gitdock-exec") as pool:
            while pending or running:
                progressed = True
                while progressed:
                    progressed = False
                    for op_id, op in sorted(pending.items()):
                        dep_results = [results.get(d) for d in op.deps]
                        if any(r is not None and r.status is not OpStatus.DONE for r in dep_results):
                            results[op_id] = self._finish(op, OpStatus.SKIPPED, 0.0, "a dependency failed")
                        elif self.should_stop():
                            results[op_id] = self._finish(op, OpStatus.SKIPPED, 0.0, "shutting down")
                        elif all(r is not None for r in dep_results):
                            self._emit(ExecEvent(op, "start"))
                            running[pool.submit(self._run, op)] = op
                        else:
                            continue
                        del pending[op_id]
                        progressed = True
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    op = running.pop(fut)
                    results[op.id] = fut.result()
        report = ExecutionReport(plan, [results[op.id] for op in plan.operations if op.id in results])
        report.seconds = time.monotonic() - started
        return report

    # -- plumbing -------------------------------------------------------------------------

    def _emit(self, event: ExecEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _finish(
        self,
        op: Operation,
        status: OpStatus,
        seconds: float,
        error: str | None,
        *,
        transient: bool = False,
        error_type: str | None = None,
        container_id: str | None = None,
    ) -> OpResult:
        self._emit(ExecEvent(op, status.value, seconds, error, error_type, container_id))
        return OpResult(op, status, seconds, error, transient)

    def _run(self, op: Operation) -> OpResult:
        started = time.monotonic()
        try:
            container_id = self._dispatch(op)
        except GitdockError as exc:
            return self._finish(
                op,
                OpStatus.FAILED,
                time.monotonic() - started,
                str(exc),
                transient=isinstance(exc, TransientError),
                error_type=type(exc).__name__,
            )
        return self._finish(op, OpStatus.DONE, time.monotonic() - started, None, container_id=container_id)

    def _dispatch(self, op: Operation) -> str | None:
        """Run one operation; returns the id of a container it created, if any."""
        d = self.docker
        match op.kind:
            case OpKind.CREATE_NETWORK:
                assert op.network is not None
                d.create_network(op.network.create_body)
            case OpKind.REMOVE_NETWORK:
                assert op.target is not None
                self._remove_network(op.target)
            case OpKind.CREATE_VOLUME:
                assert op.volume is not None
                d.create_volume(op.volume.create_body)
            case OpKind.REMOVE_VOLUME:
                assert op.target is not None
                with contextlib.suppress(NotFound):
                    d.remove_volume(op.target)
            case OpKind.PULL_IMAGE:
                assert op.image is not None
                self._pull(op.image)
            case OpKind.CREATE_CONTAINER:
                assert op.container is not None
                return self._create_and_start(op.container, op.container.name)
            case OpKind.RECREATE_CONTAINER:
                assert op.container is not None and op.target is not None
                return self._recreate(op.container, op.target)
            case OpKind.START_CONTAINER:
                assert op.target is not None
                d.start_container(op.target)
            case OpKind.REMOVE_CONTAINER:
                assert op.target is not None
                self._remove_container(op.target)
            case OpKind.WAIT_HEALTHY:
                assert op.service is not None
                self._wait(op.service, healthy=True)
            case OpKind.WAIT_COMPLETED:
                assert op.service is not None
                self._wait(op.service, healthy=False)
        return None

    def _pull(self, ref: str) -> None:
        name, at, digest = ref.partition("@")
        if at:
            self.docker.pull_image(name, digest)
            return
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            repo, _, tag = name.rpartition(":")
        else:
            repo, tag = name, "latest"
        self.docker.pull_image(repo, tag)

    def _body(self, dc: DesiredContainer) -> dict[str, Any]:
        if dc.network_mode_service is None:
            return dc.create_body
        with self._lock:
            target = self._ids.get((dc.network_mode_service, 1))
        if target is None:
            raise StepFailed(f"network_mode service:{dc.network_mode_service}: that service has no container")
        body = dict(dc.create_body)
        host = dict(body["HostConfig"])
        host["NetworkMode"] = f"container:{target}"
        body["HostConfig"] = host
        return body

    def _create_and_start(self, dc: DesiredContainer, name: str) -> str:
        ident = self.docker.create_container(name, self._body(dc), platform=dc.platform)
        self._attach_and_start(dc, ident)
        return ident

    def _attach_and_start(self, dc: DesiredContainer, ident: str) -> None:
        if dc.files:
            self.docker.put_archive(ident, "/", tar_files(dc.files))
        for network, aliases in dc.networks[1:]:
            self.docker.connect_network(network, ident, {"Aliases": list(aliases)})
        with self._lock:
            self._ids[(dc.service, dc.number)] = ident
        self.docker.start_container(ident)

    def _recreate(self, dc: DesiredContainer, old: str) -> str:
        # Build the replacement first: if Docker refuses the new config, the old one keeps running.
        temp_name = f"{dc.config_hash[:12]}_{dc.name}"
        with contextlib.suppress(NotFound):  # a leftover from an interrupted run
            self.docker.remove_container(temp_name, force=True)
        new = self.docker.create_container(temp_name, self._body(dc), platform=dc.platform)
        self._remove_container(old, timeout=dc.stop_timeout)
        self.docker.rename_container(new, dc.name)
        self._attach_and_start(dc, new)
        return new

    def _remove_network(self, ident: str) -> None:
        """Remove a network; dockerd releases a removed container's endpoint a moment after the
        container is gone, so "has active endpoints" is retried briefly before it is an error."""
        deadline = time.monotonic() + NETWORK_RELEASE_WAIT
        while True:
            try:
                self.docker.remove_network(ident)
                return
            except NotFound:
                return  # already gone: the goal is met
            except DockerError as exc:
                if "active endpoints" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(_POLL)

    def _remove_container(self, ident: str, timeout: int | None = None) -> None:
        """Stop (by default after the container's own StopTimeout) and remove."""
        try:
            self.docker.stop_container(ident, timeout)
            self.docker.remove_container(ident, force=True)
        except NotFound:
            pass

    def _wait(self, service: str, *, healthy: bool) -> None:
        with self._lock:
            idents = [ident for (svc, _), ident in sorted(self._ids.items()) if svc == service]
        if not idents:
            raise StepFailed(f"service {service} has no container to wait for")
        deadline = time.monotonic() + self.wait_timeout
        for ident in idents:
            while True:
                state = self.docker.inspect_container(ident).get("State") or {}
                if healthy:
                    health = state.get("Health")
                    if not health:
                        raise StepFailed(f"service {service} has no healthcheck, so it can never be healthy")
                    status = health.get("Status")
                    if status == "healthy":
                        break
                    if status == "unhealthy" or state.get("Status") in ("exited", "dead"):
                        log = (health.get("Log") or [{}])[-1].get("Output", "").strip()
                        detail = f": {log[:200]}" if log else ""
                        raise StepFailed(f"service {service} is {status or state.get('Status')}{detail}")
                elif state.get("Status") in ("exited", "dead"):
                    code = state.get("ExitCode")
                    if code == 0:
                        break
                    raise StepFailed(f"service {service} did not complete successfully: exit code {code}")
                if time.monotonic() > deadline:
                    what = "become healthy" if healthy else "complete"
                    raise StepFailed(f"service {service} did not {what} within {self.wait_timeout:g}s")
                time.sleep(_POLL)


def tar_files(files: tuple[ServiceFile, ...]) -> bytes:
    """An in-memory tar of configs and secrets, rooted at ``/``; Docker creates missing parents."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for file in files:
            content = file.content or b""
            info = tarfile.TarInfo(file.target.lstrip("/"))
            info.size = len(content)
            info.mode = file.mode
            info.uid, info.gid = int(file.uid), int(file.gid)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()
