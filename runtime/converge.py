"""One reconcile of a loaded project: observe → plan → execute.

The command line (``gitdock plan``/``apply``/``down``) and the agent both go through here, so
there is one path from a Project to a converged host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gitdock.specs.model import Project

from .docker import DockerClient
from .execute import ExecEvent, ExecutionReport, Executor
from .observe import ObservedState, observe
from .plan import Plan, plan_down, plan_project


@dataclass
class Outcome:
    plan: Plan
    observed: ObservedState
    report: ExecutionReport | None  # None for a dry run or an empty plan
    api_calls: int
    mutating_calls: int


def _count(docker: DockerClient) -> tuple[int, int]:
    return sum(docker.calls.values()), docker.mutating_calls


def converge(
    project: Project,
    docker: DockerClient,
    *,
    dry_run: bool = False,
    concurrency: int = 8,
    wait_timeout: float = 120.0,
    on_event: Callable[[ExecEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Outcome:
    """Observe the host, plan ``project`` against it and, unless ``dry_run``, execute the plan.

    Raises ConflictError/PlanError (nothing changed) or DockerUnavailable. Failures of single
    operations do not raise: they are in ``Outcome.report``.
    """
    calls0, mut0 = _count(docker)
    observed = observe(docker)
    plan = plan_project(project, observed)
    report = None
    if not dry_run and not plan.is_empty:
        executor = Executor(
            docker,
            concurrency=concurrency,
            wait_timeout=wait_timeout,
            on_event=on_event,
            should_stop=should_stop,
        )
        report = executor.execute(plan, observed)
    calls1, mut1 = _count(docker)
    return Outcome(plan, observed, report, calls1 - calls0, mut1 - mut0)


def tear_down(
    project_name: str,
    docker: DockerClient,
    *,
    remove_volumes: bool = False,
    on_event: Callable[[ExecEvent], None] | None = None,
) -> Outcome:
    """Remove the project's containers and networks (and named volumes when asked)."""
    calls0, mut0 = _count(docker)
    observed = observe(docker)
    plan = plan_down(project_name, observed, remove_volumes=remove_volumes)
    report = None
    if not plan.is_empty:
        report = Executor(docker, on_event=on_event).execute(plan, observed)
    calls1, mut1 = _count(docker)
    return Outcome(plan, observed, report, calls1 - calls0, mut1 - mut0)
