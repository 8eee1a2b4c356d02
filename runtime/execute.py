"""Execute: walk a Plan's DAG against Docker. It carries no decision logic.

Every operation carries what it needs (create bodies, the live object's id, the image and tag
to pull, the containers to wait for); a container created by an earlier operation is named by
that operation's id, and its id is read from that operation's result, as compose's executor
does. Operations whose dependencies have finished run in parallel on a bounded thread pool.
When an operation fails, everything that depends on it is skipped (never half-applied on top
of a failure) and independent branches still finish. A recreate sees the new container running
before the old one is removed, or puts the old one back, so a bad config never leaves a service
with nothing running (stop-first by default, start-first where the plan says so:
``Executor._recreate_container`` gives both sequences).
Every handler is idempotent: what is already gone, stopped or started is its goal met, and a
removal Docker already has in progress is waited for.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gitdock.runtime import hooks
from gitdock.runtime.build import BuildError, context_tar, refuse_classic_build, tar_digest
from gitdock.runtime.desired import DesiredContainer
from gitdock.runtime.docker import Conflict, DockerClient, DockerError, NotFound
from gitdock.runtime.observe import ObservedState
from gitdock.runtime.plan import ContainerRef, Operation, OpKind, Plan
from gitdock.specs.errors import GitdockError, PermanentError, TransientError
from gitdock.specs.model import ServiceFile

DEFAULT_CONCURRENCY = 8
DEFAULT_WAIT_TIMEOUT = 120.0
_POLL = 0.2
NETWORK_RELEASE_WAIT = 5.0  # seconds

log = logging.getLogger("gitdock.runtime.execute")


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
    container_id: str | None = None  # the container a done create/recreate made


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


class TransientStepFailed(StepFailed, TransientError):
    """A step failed for a reason retrying may fix (Docker unreachable during a rollback)."""


class HealthcheckMissing(StepFailed, PermanentError):
    """service_healthy on a service that neither the Compose file nor its image gives a healthcheck."""


Gate = Callable[[str, float | None], None]


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
        on_output: Callable[[Operation, str], None] | None = None,
        gate: Gate | None = None,
    ) -> None:
        """``on_output`` receives each line a BuildImage's builder or a lifecycle hook prints
        (progress, trace).

        ``gate(container id, monitor seconds or None)`` is the health gate a start-first
        replacement must pass before the old container stops (``runtime.health`` through
        ``runtime.converge``); it raises GitdockError when the container fails. Without one,
        a replacement only has to be seen running.
        """
        self.docker = docker
        self.gate = gate
        self.on_output = on_output
        self.concurrency = max(1, concurrency)
        self.wait_timeout = wait_timeout
        self.on_event = on_event
        self.should_stop = should_stop or (lambda: False)
        self._results: dict[int, OpResult] = {}  # by operation id, for the plan being run
        self._observed: ObservedState | None = None  # the snapshot of the plan being run
        self._lock = threading.Lock()

    def execute(self, plan: Plan, observed: ObservedState | None = None) -> ExecutionReport:
        """Run every operation of ``plan``; never raises for a failed operation (see the report).

        The plan carries every id it needs. ``observed``, the snapshot the plan was made from,
        only saves inspects: a recreate reads the old container's mounts from it (without it,
        or for a container it lacks, they are inspected).
        """
        started = time.monotonic()
        with self._lock:
            self._results = {}
            self._observed = observed
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="gitdock-exec") as pool:
            self._walk(plan, pool)
        with self._lock:
            results = [self._results[op.id] for op in plan.operations if op.id in self._results]
        return ExecutionReport(plan, results, time.monotonic() - started)

    # -- walking the DAG ------------------------------------------------------------------

    def _walk(self, plan: Plan, pool: ThreadPoolExecutor) -> None:
        """Submit each operation once its dependencies are done, until none is left."""
        pending = {op.id: op for op in plan.operations}
        running: dict[Future[OpResult], Operation] = {}
        while pending or running:
            self._submit_ready(pending, running, pool)
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                del running[fut]
                self._record(fut.result())

    def _submit_ready(
        self,
        pending: dict[int, Operation],
        running: dict[Future[OpResult], Operation],
        pool: ThreadPoolExecutor,
    ) -> None:
        """Start what is ready and skip what cannot run, until a pass changes nothing.

        Skips are recorded at once, so a failure skips the whole chain below it in one call.
        """
        progressed = True
        while progressed:
            progressed = False
            for op_id, op in sorted(pending.items()):
                with self._lock:
                    dep_results = [self._results.get(d) for d in op.deps]
                if any(
                    r is not None and r.status is not OpStatus.DONE and r.op.id not in op.after
                    for r in dep_results
                ):
                    self._record(self._finish(op, OpStatus.SKIPPED, 0.0, "a dependency failed"))
                elif self.should_stop():
                    self._record(self._finish(op, OpStatus.SKIPPED, 0.0, "shutting down"))
                elif all(r is not None for r in dep_results):
                    self._emit(ExecEvent(op, "start"))
                    running[pool.submit(self._run, op)] = op
                else:
                    continue
                del pending[op_id]
                progressed = True

    def _record(self, result: OpResult) -> None:
        with self._lock:
            self._results[result.op.id] = result

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
        return OpResult(op, status, seconds, error, transient, container_id)

    def _run(self, op: Operation) -> OpResult:
        started = time.monotonic()
        try:
            container_id = _HANDLERS[op.kind](self, op)
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

    def _container_id(self, ref: ContainerRef) -> str | None:
        """A live container's id, or the id the operation ``ref.op`` created (a dependency)."""
        if ref.op is None:
            return ref.id
        with self._lock:
            result = self._results.get(ref.op)
        return result.container_id if result is not None else None

    # -- one handler per operation kind; each returns the id of a container it created ----

    def _create_network(self, op: Operation) -> None:
        assert op.network is not None
        self.docker.create_network(op.network.create_body)

    def _remove_network(self, op: Operation) -> None:
        """Remove a network; dockerd releases a removed container's endpoint a moment after the
        container is gone, so "has active endpoints" is retried briefly before it is an error."""
        assert op.target is not None
        deadline = time.monotonic() + NETWORK_RELEASE_WAIT
        while True:
            try:
                self.docker.remove_network(op.target)
                return
            except NotFound:
                return  # already gone: the goal is met
            except DockerError as exc:
                if "active endpoints" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(_POLL)

    def _create_volume(self, op: Operation) -> None:
        assert op.volume is not None
        self.docker.create_volume(op.volume.create_body)

    def _remove_volume(self, op: Operation) -> None:
        assert op.target is not None
        with contextlib.suppress(NotFound):
            self.docker.remove_volume(op.target)

    def _pull_image(self, op: Operation) -> None:
        assert op.pull is not None
        image, tag = op.pull
        self.docker.pull_image(image, tag)

    def _build_image(self, op: Operation) -> None:
        """Send the context tar to the classic builder; the tar must still be what was planned."""
        assert op.build is not None
        build = op.build.build
        refuse_classic_build(build)
        tar = context_tar(build)  # empty for a remote context: the Engine fetches it
        if tar_digest(build, tar) != build.digest:
            raise BuildError(f"service {op.build.service}: the build context changed since the plan was made")

        def output(line: str) -> None:
            log.info("build %s: %s", op.build.service if op.build else "", line)
            if self.on_output is not None:
                self.on_output(op, line)

        self.docker.build_image(tar, op.build.params, on_output=output)

    def _create_container(self, op: Operation) -> str:
        dc = op.container
        assert dc is not None
        ident = self.docker.create_container(dc.name, self._body(op, dc), platform=dc.platform)
        self._attach_and_start(dc, ident)
        try:
            self._post_start(op, ident)
        except GitdockError:
            self._discard(ident)  # so the next reconcile creates it, and runs the hook, again
            raise
        return ident

    def _recreate_container(self, op: Operation) -> str:
        """Replace ``op.target`` by a container of ``op.container``; returns the new one's id.

        Stop-first (``op.stop_first``, the default, as in Compose):

        1. the replacement is created under ``op.temp_name``, mounting the old container's
           anonymous volumes by name unless ``op.renew_volumes``; its files are copied in and
           its other networks connected (or ``op.replacement``, left by an interrupted run
           and already started, is adopted instead);
        2. the old one is stopped;
        3. the replacement is started (and, with ``op.gate``, must pass the health gate); when
           Docker refuses the start (a bad config, a port in use) or the gate fails, it is
           removed, the old one is started again (``op.restore_old``: unless it is a finished
           one-shot job), and the operation fails with Docker's reason. No inspect follows
           a plain start: a process that exits later is the health gate's to judge;
        4. the old one, already stopped, is removed (a removal already in progress is waited
           for), or, when ``op.retire_name`` is set, renamed to it and kept for a rollback;
        5. the replacement is renamed to the service's container name.

        Start-first (``deploy.update_config.order: start-first`` where two can run): 1; the
        replacement is started and seen running (one inspect) or, with ``op.gate``, passes
        the health gate, else it is removed and the old one was never stopped; then 4 and 5. Either way a
        failure first puts back the replicas ``op.undo`` names (``failure_action: rollback``).

        A run killed between any two steps leaves what the next plan settles: a replacement
        that is running with the desired config is adopted (or, the old one being gone, just
        renamed), any other replacement removed first, and a stopped old one started again.
        """
        dc = op.container
        assert dc is not None and op.target is not None and op.temp_name is not None
        self._pause(op.delay)
        new = op.replacement or self._build_replacement(op, dc)
        if op.stop_first:
            self._pre_stop(op, op.target)
            self._stop(op.target, dc.stop_timeout)
        try:
            self.docker.start_container(new)
            self._post_start(op, new)  # a failing hook fails the start: the old one comes back
            if op.gate and self.gate is not None:
                self.gate(new, op.monitor)  # it inspects for itself
            elif not op.stop_first:  # the old one still runs: stop it only for a live one
                self._check_started(dc.service, new)
        except GitdockError as exc:
            self._discard(new)
            if op.stop_first and op.restore_old:
                self._restore(op.target, exc)
            raise self._after_failure(op, exc) from exc
        if not op.stop_first:
            self._pre_stop(op, op.target)
            self._stop(op.target, dc.stop_timeout)
        if op.retire_name is not None:
            self.docker.rename_container(op.target, op.retire_name)
        else:
            self._discard(op.target)  # stopped: the remove is all that is left
        self.docker.rename_container(new, dc.name)
        return new

    def _pause(self, seconds: float) -> None:
        """``update_config.delay`` between batches; cut short when shutting down."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.should_stop():
            time.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))

    def _after_failure(self, op: Operation, cause: GitdockError) -> GitdockError:
        """The error a failed recreate raises, once the replicas ``op.undo`` names are back."""
        if op.failure_action is None:
            return cause
        text = f"{cause} (failure_action {op.failure_action}"
        if op.undo:
            try:
                text += f": {self._roll_back(op.undo)} replica(s) rolled back to the old config"
            except GitdockError as exc:
                text += f": the rollback failed: {exc}"
        elif op.failure_action == "pause":
            text += ": later replicas not updated"
        kind = StepFailed if not isinstance(cause, TransientError) else TransientStepFailed
        return kind(text + ")")

    def _roll_back(self, op_ids: tuple[int, ...]) -> int:
        """Put each done recreate of ``op_ids`` back: its old container (kept stopped under its
        retire name) is started, its replacement removed, and the old one renamed back."""
        count = 0
        for op_id in op_ids:
            with self._lock:
                result = self._results.get(op_id)
            if result is None or result.status is not OpStatus.DONE or result.container_id is None:
                continue
            done, new = result.op, result.container_id
            assert done.container is not None and done.target is not None
            if done.stop_first:
                self._stop(new, done.container.stop_timeout)
            self.docker.start_container(done.target)
            self._check_started(done.container.service, done.target)
            self._stop_and_remove(new, timeout=done.container.stop_timeout)
            self.docker.rename_container(done.target, done.container.name)
            count += 1
        return count

    def _restore(self, old: str, cause: GitdockError) -> None:
        """Start the old container again after its replacement failed to start."""
        try:
            self.docker.start_container(old)
        except GitdockError as exc:
            raise StepFailed(f"{cause}; and the old container did not start again: {exc}") from cause

    def _build_replacement(self, op: Operation, dc: DesiredContainer) -> str:
        """Create the replacement under its temporary name, ready to start (not started)."""
        assert op.target is not None and op.temp_name is not None
        body = self._body(op, dc)
        if not op.renew_volumes:
            old = self._mounts_of(op.target)
            # The image's VOLUMEs matter only at a path the old one had a volume at and the
            # new body mounts nothing at: else no inspect of the image.
            image_volumes = self._image_volumes(body) if uncovered_volume_paths(body, old) else []
            body = carry_anonymous_volumes(body, old, image_volumes)
        new = self.docker.create_container(op.temp_name, body, platform=dc.platform)
        try:
            self._attach(dc, new)
        except GitdockError:
            self._discard(new)
            raise
        return new

    def _rename_container(self, op: Operation) -> None:
        """Finish an interrupted recreate: give its replacement the service's container name."""
        assert op.container is not None and op.target is not None
        self.docker.rename_container(op.target, op.container.name)

    def _mounts_of(self, ident: str) -> list[dict[str, Any]]:
        """The container's mounts: from the plan's snapshot (a container's mounts never change),
        else inspected."""
        live = self._observed.container_with_id(ident) if self._observed is not None else None
        if live is not None:
            return [dict(m) for m in live.mounts]
        try:
            return list(self.docker.inspect_container(ident).get("Mounts") or [])
        except NotFound:
            return []

    def _image_volumes(self, body: dict[str, Any]) -> list[str]:
        """The paths the image declares as ``VOLUME``."""
        try:
            config = self.docker.inspect_image(str(body.get("Image", ""))).get("Config") or {}
        except NotFound:
            return []
        return sorted(config.get("Volumes") or {})

    def _check_started(self, service: str, ident: str) -> None:
        """Raise StepFailed unless the container is running (or already done, exit 0)."""
        state = self.docker.inspect_container(ident).get("State") or {}
        status, code = state.get("Status"), state.get("ExitCode")
        if status == "running" or (status == "exited" and code == 0):
            return
        error = f": {state['Error']}" if state.get("Error") else ""
        raise StepFailed(
            f"service {service}: the new container is {status} (exit code {code}) after start{error}"
        )

    def _start_container(self, op: Operation) -> None:
        assert op.target is not None
        self.docker.start_container(op.target)
        self._post_start(op, op.target)

    def _restart_container(self, op: Operation) -> None:
        """Restart (``depends_on.restart``); post_start hooks run after, as in Compose."""
        assert op.target is not None and op.container is not None
        self.docker.restart_container(op.target, op.container.stop_timeout)
        self._post_start(op, op.target)

    def _remove_container(self, op: Operation) -> None:
        assert op.target is not None
        self._pre_stop(op, op.target)
        self._stop(op.target)
        self._discard(op.target, volumes=op.remove_volumes)

    def _wait_healthy(self, op: Operation) -> None:
        self._wait(op, healthy=True)

    def _wait_completed(self, op: Operation) -> None:
        self._wait(op, healthy=False)

    def _check_healthcheck(self, op: Operation) -> None:
        """Refuse (``op.refusal``) when ``op.image`` declares no HEALTHCHECK to wait for."""
        assert op.image is not None
        config = self.docker.inspect_image(op.image).get("Config") or {}
        if not has_healthcheck(config):
            raise HealthcheckMissing(op.refusal or f"image {op.image} declares no healthcheck")

    # -- the steps handlers share ---------------------------------------------------------

    def _body(self, op: Operation, dc: DesiredContainer) -> dict[str, Any]:
        """The create body, joined to the network of the container the plan names, if any."""
        if dc.network_mode_service is None:
            return dc.create_body
        target = self._container_id(op.network_container) if op.network_container else None
        if target is None:
            raise StepFailed(f"network_mode service:{dc.network_mode_service}: that service has no container")
        body = dict(dc.create_body)
        body["HostConfig"] = {**body["HostConfig"], "NetworkMode": f"container:{target}"}
        return body

    def _post_start(self, op: Operation, ident: str) -> None:
        """The service's post_start hooks (``runtime.hooks``); raises HookFailed."""
        if op.container is not None and op.container.post_start:
            hooks.run_post_start(
                self.docker, op.container.service, ident, op.container.post_start, self._hook_output(op)
            )

    def _pre_stop(self, op: Operation, ident: str) -> None:
        """The service's pre_stop hooks; a failure is reported, and the stop goes ahead."""
        if op.container is not None and op.container.pre_stop:
            hooks.run_pre_stop(
                self.docker, op.container.service, ident, op.container.pre_stop, self._hook_output(op)
            )

    def _hook_output(self, op: Operation) -> Callable[[str], None]:
        def output(line: str) -> None:
            log.info("%s", line)
            if self.on_output is not None:
                self.on_output(op, line)

        return output

    def _attach_and_start(self, dc: DesiredContainer, ident: str) -> None:
        self._attach(dc, ident)
        self.docker.start_container(ident)

    def _attach(self, dc: DesiredContainer, ident: str) -> None:
        """Copy the configs and secrets in and connect the networks after the first."""
        if dc.files:
            self.docker.put_archive(ident, "/", tar_files(dc.files))
        for network, _aliases in dc.networks[1:]:
            self.docker.connect_network(network, ident, dc.endpoint_config(network))

    def _stop(self, ident: str, timeout: int | None = None) -> None:
        """Stop (by default after the container's own StopTimeout); gone or going is fine."""
        with contextlib.suppress(NotFound, Conflict):
            self.docker.stop_container(ident, timeout)

    def _stop_and_remove(self, ident: str, timeout: int | None = None) -> None:
        """Stop and remove; a removal Docker already has in progress is waited for."""
        self._stop(ident, timeout)
        self._discard(ident)

    def _discard(self, ident: str, *, volumes: bool = False) -> None:
        """Force-remove (its anonymous volumes too only with ``volumes``); returns once it is gone."""
        try:
            self.docker.remove_container(ident, force=True, volumes=volumes)
        except NotFound:
            return
        except Conflict as exc:
            if "already in progress" not in str(exc):
                raise
            self._wait_gone(ident)

    def _wait_gone(self, ident: str) -> None:
        """Poll until a container that Docker is removing no longer exists."""
        deadline = time.monotonic() + self.wait_timeout
        while time.monotonic() <= deadline:
            try:
                self.docker.inspect_container(ident)
            except NotFound:
                return
            time.sleep(_POLL)
        raise StepFailed(f"container {ident[:12]} was still being removed after {self.wait_timeout:g}s")

    def _wait(self, op: Operation, *, healthy: bool) -> None:
        """Wait until every container of ``op.wait_for`` is healthy (or completed, exit 0)."""
        assert op.service is not None
        idents = [i for i in (self._container_id(ref) for ref in op.wait_for) if i is not None]
        if not idents:
            raise StepFailed(f"service {op.service} has no container to wait for")
        deadline = time.monotonic() + self.wait_timeout
        for ident in idents:
            while not self._is_there(op.service, ident, healthy=healthy):
                if time.monotonic() > deadline:
                    what = "become healthy" if healthy else "complete"
                    raise StepFailed(f"service {op.service} did not {what} within {self.wait_timeout:g}s")
                time.sleep(_POLL)

    def _is_there(self, service: str, ident: str, *, healthy: bool) -> bool:
        """Whether the container reached the condition; raises StepFailed when it never will."""
        state = self.docker.inspect_container(ident).get("State") or {}
        return _is_healthy(service, state) if healthy else _is_completed(service, state)


_HANDLERS: dict[OpKind, Callable[[Executor, Operation], str | None]] = {
    OpKind.CREATE_NETWORK: Executor._create_network,
    OpKind.REMOVE_NETWORK: Executor._remove_network,
    OpKind.CREATE_VOLUME: Executor._create_volume,
    OpKind.REMOVE_VOLUME: Executor._remove_volume,
    OpKind.PULL_IMAGE: Executor._pull_image,
    OpKind.BUILD_IMAGE: Executor._build_image,
    OpKind.CREATE_CONTAINER: Executor._create_container,
    OpKind.RECREATE_CONTAINER: Executor._recreate_container,
    OpKind.RENAME_CONTAINER: Executor._rename_container,
    OpKind.START_CONTAINER: Executor._start_container,
    OpKind.RESTART_CONTAINER: Executor._restart_container,
    OpKind.REMOVE_CONTAINER: Executor._remove_container,
    OpKind.WAIT_HEALTHY: Executor._wait_healthy,
    OpKind.WAIT_COMPLETED: Executor._wait_completed,
    OpKind.CHECK_HEALTHCHECK: Executor._check_healthcheck,
}


def has_healthcheck(config: dict[str, Any]) -> bool:
    """Whether an image's ``Config`` (from an inspect) declares a healthcheck test. Pure."""
    test = (config.get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


def _is_healthy(service: str, state: dict[str, Any]) -> bool:
    """From an inspect's State: healthy yet? Raises StepFailed for unhealthy, exited or dead."""
    health = state.get("Health")
    if not health:
        raise StepFailed(f"service {service} has no healthcheck, so it can never be healthy")
    status = health.get("Status")
    if status == "healthy":
        return True
    if status == "unhealthy" or state.get("Status") in ("exited", "dead"):
        log = (health.get("Log") or [{}])[-1].get("Output", "").strip()
        detail = f": {log[:200]}" if log else ""
        raise StepFailed(f"service {service} is {status or state.get('Status')}{detail}")
    return False


def _is_completed(service: str, state: dict[str, Any]) -> bool:
    """From an inspect's State: exited 0 yet? Raises StepFailed for another exit code."""
    if state.get("Status") not in ("exited", "dead"):
        return False
    code = state.get("ExitCode")
    if code == 0:
        return True
    raise StepFailed(f"service {service} did not complete successfully: exit code {code}")


def carry_anonymous_volumes(
    body: dict[str, Any], old_mounts: list[dict[str, Any]], image_volumes: list[str]
) -> dict[str, Any]:
    """The create body with the old container's anonymous volumes mounted by name. Pure.

    Compose's rule on recreate: at each path the new container declares as an anonymous
    volume (a short-syntax ``- /path`` entry, or an image ``VOLUME`` that nothing else is
    mounted at) it gets the volume the old container had there.
    """
    host = dict(body.get("HostConfig") or {})
    old = _old_volumes(old_mounts)
    mounts = [dict(m) for m in host.get("Mounts") or []]
    taken = _taken_paths(host)
    for mount in mounts:
        target = posixpath.normpath(str(mount.get("Target", "")))
        if mount.get("Type") == "volume" and not mount.get("Source") and target in old:
            mount["Source"] = old[target]["Name"]
    for path in image_volumes:
        target = posixpath.normpath(path)
        if target in old and target not in taken:
            ro = not old[target].get("RW", True)
            mounts.append({"Type": "volume", "Source": old[target]["Name"], "Target": target, "ReadOnly": ro})
    if mounts:
        host["Mounts"] = mounts
    return {**body, "HostConfig": host}


def uncovered_volume_paths(body: dict[str, Any], old_mounts: list[dict[str, Any]]) -> set[str]:
    """The paths the old container had a volume at that the new body mounts nothing at. Pure.

    Only at these can an image ``VOLUME`` take an old volume (``carry_anonymous_volumes``).
    """
    return set(_old_volumes(old_mounts)) - _taken_paths(dict(body.get("HostConfig") or {}))


def _old_volumes(old_mounts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        posixpath.normpath(str(m.get("Destination", ""))): m
        for m in old_mounts
        if m.get("Type") == "volume" and m.get("Name")
    }


def _taken_paths(host: dict[str, Any]) -> set[str]:
    """Every path a HostConfig mounts something at (Mounts, Binds, Tmpfs)."""
    taken = {posixpath.normpath(str(m.get("Target", ""))) for m in host.get("Mounts") or []}
    taken |= {posixpath.normpath(b.split(":")[1]) for b in host.get("Binds") or [] if ":" in b}
    return taken | {posixpath.normpath(t) for t in host.get("Tmpfs") or {}}


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
