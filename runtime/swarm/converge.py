"""One reconcile of a project on a Swarm: observe → plan → execute, and ``down``.

The command line (``--swarm``) and the agent (a source with ``target: swarm``) both come
through here. Hooks are plain callables, so this module imports no telemetry library. The
engine must be a Swarm manager: the first list call says so (HTTP 503 otherwise), which is
raised as NotASwarm, a PermanentError: a person must init the Swarm or fix the target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from gitdock.runtime.docker import DockerClient, NotSwarmManager
from gitdock.runtime.plan.model import Plan
from gitdock.runtime.swarm.desired import DesiredStack, SwarmInputs, desired_stack
from gitdock.runtime.swarm.drift import SwarmDrift, detect_swarm_drift
from gitdock.runtime.swarm.execute import SwarmEvent, SwarmReport, execute_stack
from gitdock.runtime.swarm.observe import ObservedStack, observe_stack
from gitdock.runtime.swarm.plan import plan_stack, plan_stack_down
from gitdock.specs.errors import PermanentError
from gitdock.specs.model import Project

__all__ = ["NotASwarm", "SwarmOutcome", "converge_swarm", "tear_down_swarm"]


class NotASwarm(PermanentError):
    """The target engine is not a Swarm manager."""


def _no_step(_name: str) -> AbstractContextManager[Any]:
    return nullcontext()


@dataclass
class SwarmOutcome:
    plan: Plan
    observed: ObservedStack
    desired: DesiredStack | None
    report: SwarmReport | None  # None for a dry run or an empty plan
    drift: list[SwarmDrift]
    api_calls: int
    mutating_calls: int

    @property
    def is_ok(self) -> bool:
        return self.report is None or self.report.ok


def _observe(docker: DockerClient, project: str) -> ObservedStack:
    try:
        return observe_stack(docker, project)
    except NotSwarmManager as exc:
        raise NotASwarm(
            f"the Docker engine at {docker.host} is not a Swarm manager "
            "(run docker swarm init there, or point the target at a manager)"
        ) from exc


def converge_swarm(
    project: Project,
    docker: DockerClient,
    inputs: SwarmInputs | None = None,
    *,
    images: Mapping[str, str] | None = None,
    dry_run: bool = False,
    timeout: float = 300.0,
    step: Callable[[str], AbstractContextManager[Any]] = _no_step,
    on_plan: Callable[[Plan], None] | None = None,
    on_event: Callable[[SwarmEvent], None] | None = None,
) -> SwarmOutcome:
    """Converge the stack of ``project``; ``images`` pins services to digests (trust resolve).

    Raises SwarmSpecError for a setting Swarm cannot take, ConflictError for a name another
    owner holds, NotASwarm, and DockerUnavailable (transient). A rollout that fails is in the
    report (``rolled back``, ``paused``, ``timed out``), not raised.
    """
    desired = desired_stack(project, inputs or SwarmInputs(), images)
    with step("observe"):
        observed = _observe(docker, project.name)
    with step("plan"):
        drift = detect_swarm_drift(desired, observed)
        plan = plan_stack(desired, observed)
        if on_plan is not None:
            on_plan(plan)
    report = None
    if not dry_run and not plan.is_empty:
        with step("execute"):
            report = execute_stack(plan, desired, observed, docker, timeout=timeout, on_event=on_event)
    calls = sum(docker.calls.values())
    return SwarmOutcome(plan, observed, desired, report, drift, calls, docker.mutating_calls)


def tear_down_swarm(project: str, docker: DockerClient, *, dry_run: bool = False) -> SwarmOutcome:
    """Remove the project's services, configs, secrets and networks; volumes stay."""
    observed = _observe(docker, project)
    plan = plan_stack_down(observed)
    report = None
    if not dry_run and not plan.is_empty:
        empty = DesiredStack(project, (), (), ())
        report = execute_stack(plan, empty, observed, docker)
    return SwarmOutcome(plan, observed, None, report, [], sum(docker.calls.values()), docker.mutating_calls)
