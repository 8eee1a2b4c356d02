"""One reconcile of a loaded project: (policy →) (verify →) observe → plan → execute.

The command line (``gitdock plan``/``apply``/``down``) and the agent both go through here, so
there is one path from a Project to a converged host. ``ConvergeHooks`` is the typed seam for
instrumentation: this module imports no telemetry library (the agent's ``telemetry`` module
builds the hooks that trace each step).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gitdock.runtime.build import BuildMode, bind_builds
from gitdock.runtime.desired import desired_container
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.execute import ExecEvent, ExecutionReport, Executor, Gate
from gitdock.runtime.observe import ObservedState, observe, observe_later, refresh_project
from gitdock.runtime.plan import Operation, OpKind, Plan, plan_down, plan_project
from gitdock.runtime.plan.images import IMAGE_MOUNT_API
from gitdock.runtime.trust.errors import TrustError
from gitdock.specs.errors import PermanentError
from gitdock.specs.model import Project

if TYPE_CHECKING:  # the trust machinery (cryptography, registry) loads only when a policy is used
    from gitdock.runtime.admission import Policy
    from gitdock.runtime.trust.resolve import ImageHook, ResolvedImage, TrustContext

__all__ = ["NO_HOOKS", "ConvergeHooks", "Outcome", "StepHook", "converge", "observe_applied", "tear_down"]

StepHook = Callable[[str], AbstractContextManager[Any]]


def _no_step(_name: str) -> AbstractContextManager[Any]:
    return nullcontext()


@dataclass(frozen=True)
class ConvergeHooks:
    """What a caller may observe of one converge; every hook is optional.

    ``step(name)`` is entered around each step (verify, observe, plan, execute); ``on_plan``
    sees the plan inside the plan step; ``on_event`` receives every executor event (progress,
    operation spans); ``image_hook`` wraps the resolution of each image; ``on_output``
    receives each line a BuildImage's builder prints.
    """

    step: StepHook = field(default=_no_step)
    on_plan: Callable[[Plan], None] | None = None
    on_event: Callable[[ExecEvent], None] | None = None
    image_hook: ImageHook | None = None
    on_output: Callable[[Operation, str], None] | None = None


NO_HOOKS = ConvergeHooks()


@dataclass
class Outcome:
    plan: Plan
    observed: ObservedState
    report: ExecutionReport | None  # None for a dry run or an empty plan
    api_calls: int
    mutating_calls: int
    images: dict[str, ResolvedImage] | None = None  # the lock record, when digests were resolved
    # The project as planned: images built from the revision bound to their content tags.
    project: Project | None = None

    @property
    def is_ok(self) -> bool:
        """Nothing failed: the plan was empty, a dry run, or every operation finished."""
        return self.report is None or self.report.ok


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
    should_stop: Callable[[], bool] | None = None,
    hooks: ConvergeHooks = NO_HOOKS,
    force_recreate: Mapping[str, str] | None = None,
    force_start: Mapping[str, str] | None = None,
    pinned: Mapping[str, ResolvedImage] | None = None,
    build: BuildMode = BuildMode.AUTO,
    revision: str | None = None,
    policy: Policy | None = None,
    renew_anon_volumes: bool = False,
    observed: ObservedState | None = None,
    look: Callable[[], ObservedState] | None = None,
) -> Outcome:
    """Observe the host, plan ``project`` against it and, unless ``dry_run``, execute the plan.

    With ``trust``, every image is first resolved to a digest and checked against the policy;
    one refused image refuses the whole project before anything changes (ImagesRefused).
    Raises ConflictError/PlanError (nothing changed), DockerUnavailable or RegistryUnavailable.
    Failures of single operations do not raise: they are in ``Outcome.report``.
    ``pinned`` (a rollback: the images a healthy revision ran) replaces resolving and verifying.
    Services with ``build:`` are first bound to their content tags (reading their contexts;
    a missing one raises BuildError) and built as ``build`` says, labelled with ``revision``.
    With ``policy`` (the deploy policy), a project that breaks it raises PolicyRefused first.
    ``renew_anon_volumes``: recreated containers get fresh anonymous volumes (Compose's ``-V``).
    ``observed``: the host as the caller just saw it (a drift check's snapshot), planned from
    instead of observing again, so the plan changes nothing the check did not see.
    ``look``: an observe the caller already started (``observe_later``), waited for where
    converge would observe (after admission: a refused project is refused even with dockerd down).
    """
    if policy is not None:  # admission first: a refused revision touches nothing
        from gitdock.runtime.admission import admit_project  # only an apply with a policy needs it

        with hooks.step("policy"):
            admit_project(project, policy)
    calls0, mut0 = _count(docker)
    project = bind_builds(project, revision=revision)
    if observed is None:
        snapshot = look or observe_later(docker)  # the four list calls go out now ...
        if trust is None and pinned is None:
            _desire_early(project)  # ... and the desired bodies are built while dockerd lists
        with hooks.step("observe"):
            observed = snapshot()
    if pinned is not None:
        images: dict[str, ResolvedImage] | None = dict(pinned)
    else:
        images = _verify_images(project, observed, trust, hooks) if trust is not None else None
    with hooks.step("plan"):
        plan = plan_project(
            project,
            observed,
            images,
            force_recreate=force_recreate,
            force_start=force_start,
            build=build,
            renew_anon_volumes=renew_anon_volumes,
        )
        if hooks.on_plan is not None:
            hooks.on_plan(plan)
    report = None
    if not dry_run and not plan.is_empty:
        refuse_image_mounts(plan, docker.server_api_version())
        executor = Executor(
            docker,
            concurrency=concurrency,
            wait_timeout=wait_timeout,
            on_event=hooks.on_event,
            should_stop=should_stop,
            on_output=hooks.on_output,
            gate=_health_gate(docker, wait_timeout, should_stop),
        )
        with hooks.step("execute"):
            report = executor.execute(plan, observed)
    calls1, mut1 = _count(docker)
    return Outcome(plan, observed, report, calls1 - calls0, mut1 - mut0, images, project)


_NETWORK_OPS = frozenset({OpKind.CREATE_NETWORK, OpKind.REMOVE_NETWORK})
_VOLUME_OPS = frozenset({OpKind.CREATE_VOLUME, OpKind.REMOVE_VOLUME})


def _desire_early(project: Project) -> None:
    """Build every replica's desired container now, while observe's list calls are in flight
    (with 1,000 containers each side takes ~0.1-0.2 s): desired_container memoises them, so
    the plan and the applied record find them built. Without trust only: verified images
    would key them differently."""
    with contextlib.suppress(Exception):  # a bad service is the plan's to raise, in its order
        for svc in project.services:
            for number in range(1, svc.replicas + 1):
                desired_container(project, svc, number)


def observe_applied(docker: DockerClient, outcome: Outcome) -> ObservedState:
    """The host after ``outcome``'s apply, as its applied record needs it.

    Nothing executed: the snapshot converge took. Else that snapshot with the project's
    containers listed again (one label-filtered call), and the networks or volumes when the
    plan created or removed any: never a full observe.
    """
    if outcome.report is None:
        return outcome.observed
    kinds = {op.kind for op in outcome.plan.operations}
    return refresh_project(
        docker,
        outcome.observed,
        outcome.plan.project,
        networks=bool(kinds & _NETWORK_OPS),
        volumes=bool(kinds & _VOLUME_OPS),
    )


def _health_gate(docker: DockerClient, timeout: float, should_stop: Callable[[], bool] | None) -> Gate:
    """The gate a start-first replacement passes before the old container stops."""

    stop = should_stop or (lambda: False)

    def gate(container: str, monitor: float | None) -> None:
        from gitdock.runtime.health import DEFAULT_SETTLE, wait_ready  # only a gated recreate needs it

        settle = DEFAULT_SETTLE if monitor is None else monitor
        wait_ready(docker, [container], settle=settle, timeout=timeout, should_stop=stop)

    return gate


class EngineTooOld(PermanentError):
    """The plan needs an Engine API version newer than the engine's (``type: image`` mounts)."""


def refuse_image_mounts(plan: Plan, api_version: str) -> None:
    """Raise EngineTooOld when a container the plan creates mounts an image (Engine API
    1.48) and the engine speaks an older ``api_version``: before anything live is touched."""
    engine = tuple(int(part) for part in api_version.split("."))
    if engine >= IMAGE_MOUNT_API:
        return
    needed = ".".join(map(str, IMAGE_MOUNT_API))
    for op in plan.operations:
        if op.container is None:
            continue
        for mount in op.container.create_body.get("HostConfig", {}).get("Mounts") or ():
            if mount.get("Type") == "image":
                raise EngineTooOld(
                    f"service {op.container.service}: volume {mount.get('Source')} at {mount.get('Target')} "
                    f"is type image, which needs Docker Engine API {needed}; this engine speaks {api_version}"
                )


class BuildsRefused(TrustError):
    """The trust policy says ``build: deny`` and services would run images built from the revision."""

    def __init__(self, services: list[str]) -> None:
        names = ", ".join(f"service {name}" for name in services)
        super().__init__(f"{names}: built from the revision, and the trust policy says build: deny")


class ImageMountsUnverified(TrustError):
    """A ``type: image`` volume under a trust policy: the mounted image would reach the host
    unverified (the verify step checks the images services run), so it is refused."""

    def __init__(self, mounts: list[str]) -> None:
        super().__init__(
            f"{'; '.join(mounts)}: a type image volume is not verified by the trust policy; "
            "refused rather than mounted unchecked"
        )


def _verify_images(
    project: Project, observed: ObservedState, trust: TrustContext, hooks: ConvergeHooks
) -> dict[str, ResolvedImage]:
    """Resolve and verify every pulled image of ``project`` (the verify step).

    Raises ImagesRefused, or BuildsRefused when the policy says ``build: deny``.

    An image built from the revision comes from no registry: its containers record
    ``io.gitdock.image.source: build@<revision>`` instead of a digest.
    """
    from gitdock.runtime.trust.policy import BuildAction
    from gitdock.runtime.trust.resolve import known_images, resolve_images

    built = sorted(s.name for s in project.services if s.build is not None)
    if built and trust.policy.build is BuildAction.DENY:
        raise BuildsRefused(built)
    mounted = sorted(
        {f"service {s.name}: {m.source}" for s in project.services for m in s.mounts if m.type == "image"}
    )
    if mounted:
        raise ImageMountsUnverified(mounted)
    pulled = dataclasses.replace(project, services=tuple(s for s in project.services if s.build is None))
    with hooks.step("verify"):
        known = known_images(observed, project.name)
        return resolve_images(pulled, trust, known=known, image_hook=hooks.image_hook)


def tear_down(
    project_name: str,
    docker: DockerClient,
    *,
    remove_volumes: bool = False,
    project: Project | None = None,
    concurrency: int = 32,
    on_event: Callable[[ExecEvent], None] | None = None,
    on_output: Callable[[Operation, str], None] | None = None,
    step: StepHook | None = None,
) -> Outcome:
    """Remove the project's containers and networks (and named volumes when asked).

    With the loaded ``project`` each service's pre_stop hooks run before its containers stop
    (their output to ``on_output``). Stopping is mostly waiting for processes to exit, so more
    run at once than in apply.
    """
    step = step or _no_step
    calls0, mut0 = _count(docker)
    with step("observe"):
        observed = observe(docker)
    with step("plan"):
        plan = plan_down(project_name, observed, remove_volumes=remove_volumes, project=project)
    report = None
    if not plan.is_empty:
        with step("execute"):
            executor = Executor(docker, concurrency=concurrency, on_event=on_event, on_output=on_output)
            report = executor.execute(plan, observed)
    calls1, mut1 = _count(docker)
    return Outcome(plan, observed, report, calls1 - calls0, mut1 - mut0)
