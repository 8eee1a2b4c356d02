"""Run a Swarm plan: one API call per operation, then follow each rollout to its end.

No decisions are made here: the plan says what, this says how. A service is changed with
``POST /services/{id}/update`` and the version index the observe step read, so a concurrent
change fails the update instead of being overwritten, and Swarm rolls the tasks by the
service's update_config. The executor then follows each rollout with one list call per poll
for all services at once: an update that replaces tasks ends when its ``UpdateStatus`` (a new
one, not the last update's) reaches ``completed`` (done), ``rollback_completed`` (``rolled
back``, with the failing task's error from one tasks call), or ``paused`` / ``rollback_paused``
(``paused``); a create, or an update that only changes the service (replicas, labels), ends
when as many tasks run as are desired. A service that is not done fails the operations that
depend on it (removing an old config version while a rolled-back service still uses it).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gitdock.runtime.docker import DockerClient, DockerError
from gitdock.runtime.plan.model import Operation, OpKind, Plan
from gitdock.runtime.swarm.desired import LABEL_TASK_HASH, DesiredService, DesiredStack
from gitdock.runtime.swarm.observe import ObservedService, ObservedStack, observe_services
from gitdock.specs.errors import GitdockError, TransientError

__all__ = ["SwarmEvent", "SwarmReport", "SwarmResult", "SwarmStatus", "execute_stack"]


class SwarmStatus(str, Enum):
    DONE = "done"
    FAILED = "failed"
    ROLLED_BACK = "rolled back"
    PAUSED = "paused"
    TIMED_OUT = "timed out"
    SKIPPED = "skipped"


@dataclass
class SwarmResult:
    op: Operation
    status: SwarmStatus
    error: str | None = None
    seconds: float = 0.0
    transient: bool = False

    def render(self) -> str:
        text = f"{self.op.resource}: {self.op.kind.value} {self.status.value}"
        return f"{text}: {self.error}" if self.error else text


@dataclass
class SwarmReport:
    plan: Plan
    results: list[SwarmResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.status is SwarmStatus.DONE for r in self.results)

    def with_status(self, status: SwarmStatus) -> list[SwarmResult]:
        return [r for r in self.results if r.status is status]

    @property
    def transient(self) -> bool:
        bad = [
            r
            for r in self.results
            if r.status is not SwarmStatus.DONE and r.status is not SwarmStatus.SKIPPED
        ]
        return bool(bad) and all(r.transient for r in bad)


@dataclass(frozen=True)
class SwarmEvent:
    """``phase`` is ``start``, ``submitted`` (the call returned; a rollout may follow) or a status."""

    op: Operation
    phase: str
    error: str | None = None


@dataclass
class _Rollout:
    op: Operation
    service_id: str
    started: float
    previous_update: str | None  # UpdateStatus.StartedAt before the update: a new one differs
    replaces_tasks: bool


class _Run:
    """One execution's state: ids of objects as they are created, rollouts being followed."""

    def __init__(
        self,
        docker: DockerClient,
        desired: DesiredStack,
        observed: ObservedStack,
        timeout: float,
        poll: float,
        on_event: Callable[[SwarmEvent], None] | None,
    ) -> None:
        self.docker, self.desired, self.observed = docker, desired, observed
        self.timeout, self.poll, self.on_event = timeout, poll, on_event
        # "<kind>:<name>" -> id: a config and a secret may share a name.
        self.ids = {
            f"{o.kind}:{o.name}": o.id for o in (*observed.configs.values(), *observed.secrets.values())
        }
        self.results: dict[int, SwarmResult] = {}
        self.pending: dict[int, _Rollout] = {}
        self.external_looked_up = False

    def emit(self, op: Operation, phase: str, error: str | None = None) -> None:
        if self.on_event is not None:
            self.on_event(SwarmEvent(op, phase, error))


def execute_stack(
    plan: Plan,
    desired: DesiredStack,
    observed: ObservedStack,
    docker: DockerClient,
    *,
    timeout: float = 300.0,
    poll: float = 0.5,
    on_event: Callable[[SwarmEvent], None] | None = None,
) -> SwarmReport:
    """Run ``plan`` in order; each rollout is followed for at most ``timeout`` seconds."""
    began = time.monotonic()
    run = _Run(docker, desired, observed, timeout, poll, on_event)
    for op in plan.operations:
        if any(d in run.pending for d in op.deps):
            _wait_rollouts(run)
        if any(run.results[d].status is not SwarmStatus.DONE for d in op.deps):
            run.results[op.id] = SwarmResult(
                op, SwarmStatus.SKIPPED, "an operation it depends on did not finish"
            )
            run.emit(op, SwarmStatus.SKIPPED.value)
            continue
        _run_op(run, op)
    _wait_rollouts(run)
    results = [run.results[op.id] for op in plan.operations]
    return SwarmReport(plan=plan, results=results, seconds=time.monotonic() - began)


def _run_op(run: _Run, op: Operation) -> None:
    run.emit(op, "start")
    began = time.monotonic()
    try:
        rollout = _call(run, op)
    except (DockerError, TransientError, _Missing) as exc:
        transient = isinstance(exc, TransientError)
        run.results[op.id] = SwarmResult(
            op, SwarmStatus.FAILED, str(exc), time.monotonic() - began, transient
        )
        run.emit(op, SwarmStatus.FAILED.value, str(exc))
        return
    if rollout is not None:
        run.pending[op.id] = rollout
        run.emit(op, "submitted")
        return
    run.results[op.id] = SwarmResult(op, SwarmStatus.DONE, seconds=time.monotonic() - began)
    run.emit(op, SwarmStatus.DONE.value)


class _Missing(GitdockError):
    """An object a service spec names is on neither the Swarm nor the plan."""


def _call(run: _Run, op: Operation) -> _Rollout | None:
    """The one API call of ``op``; a service operation returns the rollout to follow."""
    docker, name = run.docker, op.target_name or ""
    if op.kind is OpKind.CREATE_NETWORK:
        docker.create_network(next(n.body for n in run.desired.networks if n.name == name))
    elif op.kind in (OpKind.CREATE_CONFIG, OpKind.CREATE_SECRET):
        obj = next(o for o in run.desired.objects if o.name == name)
        create = docker.create_config if obj.kind == "config" else docker.create_secret
        run.ids[f"{obj.kind}:{name}"] = create(obj.body(run.desired.project))
    elif op.kind is OpKind.CREATE_SERVICE:
        ds = _desired_service(run, name)
        service_id = docker.create_service(_with_ids(run, ds))
        return _Rollout(op, service_id, time.monotonic(), None, replaces_tasks=False)
    elif op.kind is OpKind.UPDATE_SERVICE:
        return _update(run, op, _desired_service(run, name))
    elif op.kind is OpKind.REMOVE_SERVICE:
        docker.remove_service(op.target or name)
    elif op.kind is OpKind.REMOVE_CONFIG:
        docker.remove_config(op.target or name)
    elif op.kind is OpKind.REMOVE_SECRET:
        docker.remove_secret(op.target or name)
    elif op.kind is OpKind.REMOVE_NETWORK:
        docker.remove_network(op.target or name)
    else:
        raise _Missing(f"{op.kind.value} is not a Swarm operation")
    return None


def _update(run: _Run, op: Operation, ds: DesiredService) -> _Rollout:
    live: ObservedService = run.observed.services[ds.name]
    replaces = live.labels.get(LABEL_TASK_HASH) != ds.task_hash
    run.docker.update_service(live.id, live.version, _with_ids(run, ds))
    return _Rollout(op, live.id, time.monotonic(), live.update_started, replaces_tasks=replaces)


def _desired_service(run: _Run, name: str) -> DesiredService:
    return next(s for s in run.desired.services if s.name == name)


def _with_ids(run: _Run, ds: DesiredService) -> dict[str, Any]:
    """The spec with each config and secret reference's id filled in, as Swarm wants it."""
    spec = copy.deepcopy(ds.spec)
    container = spec["TaskTemplate"]["ContainerSpec"]
    for key, name_key, id_key in (
        ("Configs", "ConfigName", "ConfigID"),
        ("Secrets", "SecretName", "SecretID"),
    ):
        for ref in container.get(key, []):
            ref[id_key] = _object_id(run, name_key[:-4].lower(), ref[name_key])
    return spec


def _object_id(run: _Run, kind: str, name: str) -> str:
    """The id of a config or secret: observed, created by this run, or external (listed once)."""
    key = f"{kind}:{name}"
    if key not in run.ids and not run.external_looked_up:
        run.external_looked_up = True
        for found, listed in (("config", run.docker.list_configs()), ("secret", run.docker.list_secrets())):
            for obj in listed:
                run.ids.setdefault(f"{found}:{obj['Spec']['Name']}", str(obj["ID"]))
    if key not in run.ids:
        raise _Missing(f"{kind} {name!r} does not exist on the Swarm")
    return run.ids[key]


def _wait_rollouts(run: _Run) -> None:
    """Poll every pending rollout (one list call per poll) until each has ended."""
    while run.pending:
        try:
            live = observe_services(run.docker, run.desired.project)
        except TransientError as exc:
            _finish_all(run, SwarmStatus.FAILED, str(exc), transient=True)
            return
        by_id = {s.id: s for s in live.values()}
        for op_id, rollout in list(run.pending.items()):
            outcome = _rollout_outcome(rollout, by_id.get(rollout.service_id))
            if outcome is None and time.monotonic() - rollout.started > run.timeout:
                outcome = (SwarmStatus.TIMED_OUT, f"the rollout did not finish within {run.timeout:g}s")
            if outcome is not None:
                status, error = outcome
                if status is SwarmStatus.ROLLED_BACK:
                    error = _task_error(run.docker, rollout.service_id, error)
                _finish(run, op_id, status, error)
        if run.pending:
            time.sleep(run.poll)


def _rollout_outcome(
    rollout: _Rollout, live: ObservedService | None
) -> tuple[SwarmStatus, str | None] | None:
    """How a rollout ended, or None while it runs."""
    if live is None:
        return SwarmStatus.FAILED, "the service disappeared during its rollout"
    is_new = live.update_started is not None and live.update_started != rollout.previous_update
    if rollout.replaces_tasks:
        if not is_new:
            return None
        return _UPDATE_STATES.get(live.update_state or "", None)
    if is_new and live.update_state in _UPDATE_STATES:
        return _UPDATE_STATES[live.update_state or ""]
    if live.desired is not None and live.running is not None and live.running == live.desired:
        return SwarmStatus.DONE, None
    return None


_UPDATE_STATES: Mapping[str, tuple[SwarmStatus, str | None]] = {
    "completed": (SwarmStatus.DONE, None),
    "rollback_completed": (SwarmStatus.ROLLED_BACK, "Swarm rolled the update back"),
    "paused": (SwarmStatus.PAUSED, "Swarm paused the update"),
    "rollback_paused": (SwarmStatus.PAUSED, "Swarm paused the rollback"),
}


def _task_error(docker: DockerClient, service_id: str, fallback: str | None) -> str | None:
    """Why the rollout failed: the newest failed task's error (one tasks call)."""
    try:
        tasks = docker.list_tasks({"service": [service_id]})
    except (DockerError, TransientError):
        return fallback
    failed = [t for t in tasks if (t.get("Status") or {}).get("Err")]
    if not failed:
        return fallback
    newest = max(failed, key=lambda t: str((t.get("Status") or {}).get("Timestamp", "")))
    return f"{fallback}: {newest['Status']['Err']}"


def _finish(run: _Run, op_id: int, status: SwarmStatus, error: str | None, transient: bool = False) -> None:
    rollout = run.pending.pop(op_id)
    seconds = time.monotonic() - rollout.started
    run.results[op_id] = SwarmResult(rollout.op, status, error, seconds, transient)
    run.emit(rollout.op, status.value, error)


def _finish_all(run: _Run, status: SwarmStatus, error: str, *, transient: bool) -> None:
    for op_id in list(run.pending):
        _finish(run, op_id, status, error, transient)
