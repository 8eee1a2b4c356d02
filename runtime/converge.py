"""One reconcile of a loaded project: observe → plan → execute.

The command line (``gitdock plan``/``apply``/``down``) and the agent both go through here, so
there is one path from a Project to a converged host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gitdock.runtime.docker import DockerClient
from gitdock.runtime.execute import ExecEvent, ExecutionReport, Executor
from gitdock.runtime.observe import ObservedState, observe
from gitdock.runtime.plan import Plan, plan_down, plan_project
from gitdock.specs.model import Project

if TYPE_CHECKING:  # the trust machinery (cryptography, registry) loads only when a policy is used
    from gitdock.runtime.trust.resolve import ImageHook, ResolvedImage, TrustContext

# Instrumentation hooks, so this module stays free of any telemetry library: ``step(name)`` is
# entered around each step (resolve, observe, plan, execute), ``on_plan`` sees the plan inside
# the plan step, and ``image_hook`` wraps the resolution of each image.
StepHook = Callable[[str], AbstractContextManager[Any]]


def _no_step(_name: str) -> AbstractContextManager[Any]:
    return nullcontext()


@dataclass
class Outcome:
    plan: Plan
    observed: ObservedState
    report: ExecutionReport | None  # None for a dry run or an empty plan
    api_calls: int
    mutating_calls: int
    images: dict[str, ResolvedImage] | None = None  # the lock record, when digests were resolved


def _count(docker: DockerClient) -> tuple[int, int]:
    return sum(docker.calls.values()), docker.mutating_calls


def converge(
    project: Project,
    docker: DockerClient,
    *,
    trust: TrustContext | None = None,
    dry_run: bool = False,
    concurrency: int = 8,
    wait_timeout: float = 120.0,
    on_event: Callable[[ExecEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    step: StepHook | None = None,
    on_plan: Callable[[Plan], None] | None = None,
    image_hook: ImageHook | None = None,
    force_recreate: Mapping[str, str] | None = None,
    force_start: Mapping[str, str] | None = None,
) -> Outcome:
    """Observe the host, plan ``project`` against it and, unless ``dry_run``, execute the plan.

    With ``trust``, every image is first resolved to a digest and checked against the policy;
    one refused image refuses the whole project before anything changes (ImagesRefused).
    Raises ConflictError/PlanError (nothing changed), DockerUnavailable or RegistryUnavailable.
    Failures of single operations do not raise: they are in ``Outcome.report``.
    """
    step = step or _no_step
    calls0, mut0 = _count(docker)
    with step("observe"):
        observed = observe(docker)
    images = None
    if trust is not None:
        from gitdock.runtime.trust.resolve import known_images, resolve_images

        with step("verify"):
            known = known_images(observed, project.name)
            images = resolve_images(project, trust, known=known, image_hook=image_hook)
    with step("plan"):
        plan = plan_project(project, observed, images, force_recreate=force_recreate, force_start=force_start)
        if on_plan is not None:
            on_plan(plan)
    report = None
    if not dry_run and not plan.is_empty:
        executor = Executor(
            docker,
            concurrency=concurrency,
            wait_timeout=wait_timeout,
            on_event=on_event,
            should_stop=should_stop,
        )
        with step("execute"):
            report = executor.execute(plan, observed)
    calls1, mut1 = _count(docker)
    return Outcome(plan, observed, report, calls1 - calls0, mut1 - mut0, images)


def tear_down(
    project_name: str,
    docker: DockerClient,
    *,
    remove_volumes: bool = False,
    concurrency: int = 32,
    on_event: Callable[[ExecEvent], None] | None = None,
    step: StepHook | None = None,
) -> Outcome:
    """Remove the project's containers and networks (and named volumes when asked).

    Stopping is mostly waiting for processes to exit, so more run at once than in apply.
    """
    step = step or _no_step
    calls0, mut0 = _count(docker)
    with step("observe"):
        observed = observe(docker)
    with step("plan"):
        plan = plan_down(project_name, observed, remove_volumes=remove_volumes)
    report = None
    if not plan.is_empty:
        with step("execute"):
            report = Executor(docker, concurrency=concurrency, on_event=on_event).execute(plan, observed)
    calls1, mut1 = _count(docker)
    return Outcome(plan, observed, report, calls1 - calls0, mut1 - mut0)
