"""The converge stage of a ``mode: swarm`` source: the revision as a stack on a Swarm manager.

Called by ``reconcile`` in place of ``runtime.converge``: the Swarm-only settings are read
from the checked-out files (``runtime.swarm.load``), images are pinned to the digests the
trust policy resolved (none without a policy), and ``runtime.swarm.converge`` observes, plans,
updates services through the service-update API and waits for their rollouts.

There is no container health gate and no agent rollback for a Swarm source: Swarm's own
update monitor (``update_config.monitor``, ``failure_action``) judges a rollout, and a
rollout Swarm rolled back is a failure whose reason is ``RolledBack``. Drift is not healed
from the agent either: Swarm restores replicas itself, and the next commit re-converges.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gitdock.agent import telemetry as tm
from gitdock.agent.git import Revision
from gitdock.agent.results import Reason, ReconcileResult, plan_summary, ref_label, shorten
from gitdock.agent.state import Result, Trigger
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.swarm.converge import SwarmOutcome, converge_swarm
from gitdock.runtime.swarm.execute import SwarmReport, SwarmStatus
from gitdock.runtime.swarm.load import load_swarm_inputs
from gitdock.runtime.trust.resolve import TrustContext, resolve_images
from gitdock.specs.model import Project

__all__ = ["apply_stack", "judge_stack"]


def pinned_services(project: Project, trust: TrustContext | None) -> dict[str, str] | None:
    """Service name → digest-pinned image when a trust policy resolves them; None otherwise.

    Raises ImagesRefused (permanent) or RegistryUnavailable (transient), as the container
    target's verify step does.
    """
    if trust is None:
        return None
    with tm.step_span(tm.Step.VERIFY):
        resolved = resolve_images(project, trust)
    return {s.name: resolved[s.image].pinned for s in project.services if s.image in resolved}


def apply_stack(
    project: Project,
    files: Sequence[Path],
    docker: DockerClient,
    *,
    environ: dict[str, str],
    trust: TrustContext | None,
    timeout: float,
) -> SwarmOutcome:
    """Converge the stack of ``project`` (loaded from ``files``) on ``docker``, a Swarm manager."""
    inputs = load_swarm_inputs(files, project, environ=environ)
    images = pinned_services(project, trust)
    return converge_swarm(
        project, docker, inputs, images=images, timeout=timeout, step=lambda name: tm.step_span(name)
    )


def judge_stack(source: str, trigger: Trigger, revision: Revision, outcome: SwarmOutcome) -> ReconcileResult:
    """The result of one Swarm converge: applied, up to date, rolled back or which updates failed.

    A failure every cause of which is transient (Docker unreachable mid-rollout) is an ``error``
    the scheduler retries; anything else is a ``failure`` until a new commit.
    """
    plan = plan_summary(outcome)
    report = outcome.report
    label = ref_label(revision)
    if report is None or report.ok:
        done = Reason.UP_TO_DATE if outcome.plan.is_empty else Reason.APPLIED
        message = f"applied revision {label} to the Swarm"
        if report is not None:
            message += f": {len(report.results)} operation(s) in {report.seconds:.1f}s"
        return ReconcileResult(
            source, trigger, Result.SUCCESS, done.value, message, revision.sha, plan, outcome.mutating_calls
        )
    result, reason, why = _judge_failure(report)
    return ReconcileResult(
        source,
        trigger,
        result,
        reason,
        shorten(f"revision {label} on the Swarm: {why}"),
        revision.sha,
        plan,
        outcome.mutating_calls,
    )


def _judge_failure(report: SwarmReport) -> tuple[Result, str, str]:
    bad = [r for r in report.results if r.status not in (SwarmStatus.DONE, SwarmStatus.SKIPPED)]
    why = "; ".join(r.render() for r in bad) or "stopped before every operation ran"
    if report.with_status(SwarmStatus.ROLLED_BACK):
        return Result.FAILURE, Reason.ROLLED_BACK.value, why
    if report.transient:
        return Result.ERROR, Reason.EXECUTION_FAILED.value, why
    return Result.FAILURE, Reason.EXECUTION_FAILED.value, why
