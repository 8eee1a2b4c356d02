"""What one reconcile did (``ReconcileResult``) and what a source's status says (conditions).

Outcomes (``state.Result``):

- ``success``: the revision is applied (an empty plan included), or drift was healed or
  reported by policy.
- ``failure``: a person must act (bad spec, name conflict, a ref that vanished, refused
  credentials). The commit is remembered as failed and not retried by polls or webhooks
  until a new commit arrives (a manual reconcile retries it). The live state is untouched.
- ``error``: the world failed (git, registry or Docker unreachable, a transient operation
  failure, a shutdown mid-plan). The scheduler retries with backoff.
- ``skip``: suspended, the commit is known to be bad, or a source it depends on is not
  healthy yet (``DependencyNotReady``).

A revision whose containers do not pass the health gate (``runtime.health``) is a
``failure`` (``HealthCheckFailed``); when the last healthy revision was re-applied instead
it is ``RolledBack`` (the source is not Ready, but not Stalled: what runs is healthy), and
when that re-apply failed too, ``RollbackFailed`` (Stalled).

Conditions are Flux's: ``Ready``, ``Reconciling``, ``Stalled``. Everything here is pure: it
turns outcomes, drift reports and recorded state into results and conditions, and does no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

from gitdock.agent.state import Result, SourceState, Trigger
from gitdock.runtime.execute import OpStatus

if TYPE_CHECKING:
    from gitdock.agent.git import Revision
    from gitdock.runtime.converge import Outcome
    from gitdock.runtime.drift.detect import DriftItem
    from gitdock.runtime.execute import ExecutionReport, OpResult
    from gitdock.runtime.swarm.converge import SwarmOutcome
    from gitdock.runtime.swarm.execute import SwarmResult

__all__ = [
    "ConditionType",
    "Reason",
    "ReconcileResult",
    "drift_healed",
    "drift_reported",
    "is_quiet",
    "iso_time",
    "judge_outcome",
    "plan_summary",
    "ref_label",
    "shorten",
    "source_conditions",
]

MESSAGE_LIMIT: Final = 2000
DRIFT_SUMMARY_ITEMS: Final = 5


class Reason(str, Enum):
    """Short machine-readable reasons (Flux-style) recorded with a result."""

    APPLIED = "ReconciliationSucceeded"
    UP_TO_DATE = "UpToDate"
    SUSPENDED = "Suspended"
    KNOWN_BAD = "KnownBadCommit"
    INTERRUPTED = "Interrupted"
    EXECUTION_FAILED = "ExecutionFailed"
    DRIFT_DETECTED = "DriftDetected"  # policy report: drift is reported, not healed
    DRIFT_HEALED = "DriftHealed"
    FLAPPING = "Flapping"  # healed too often in the window: left alone, reported
    HEALTH_FAILED = "HealthCheckFailed"  # the revision failed its health gate; nothing to go back to
    ROLLED_BACK = "RolledBack"  # ... and the last healthy revision runs again
    ROLLBACK_FAILED = "RollbackFailed"  # ... and going back failed too: a person must act
    DEPENDENCY_NOT_READY = "DependencyNotReady"  # a source in depends_on is not healthy yet


@dataclass(frozen=True)
class ReconcileResult:
    """What one reconcile did; ``to_dict`` is what the API and CLI show."""

    source: str
    trigger: Trigger
    result: Result
    reason: str
    message: str = ""
    revision: str | None = None
    plan: dict[str, Any] | None = None
    mutating_calls: int = 0
    duration: float = 0.0
    live: str | None = None  # the revision running afterwards, when not ``revision`` (a rollback)

    @property
    def is_transient(self) -> bool:
        return self.result is Result.ERROR

    def with_duration(self, seconds: float) -> ReconcileResult:
        return dataclasses.replace(self, duration=seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "trigger": self.trigger.value,
            "result": self.result.value,
            "reason": self.reason,
            "message": self.message,
            "revision": self.revision,
            "plan": self.plan,
            "mutatingCalls": self.mutating_calls,
            "durationMs": round(self.duration * 1000, 1),
            "live": self.live,
        }


def iso_time(value: datetime | None) -> str | None:
    """``value`` as RFC 3339 with a ``Z`` for UTC, as the API shows times (None stays None)."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def shorten(text: str) -> str:
    """``text`` cut to MESSAGE_LIMIT characters (an ellipsis marks the cut)."""
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def ref_label(revision: Revision) -> str:
    """``main@sha1:0123456789ab``, or ``sha1:…`` for a pinned commit."""
    ref = revision.ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
    return f"{ref}@sha1:{revision.sha[:12]}" if ref != revision.sha else f"sha1:{revision.sha[:12]}"


# --- converge outcomes ---------------------------------------------------------------------


def judge_outcome(source: str, trigger: Trigger, revision: Revision, outcome: Outcome) -> ReconcileResult:
    """The result of one converge: applied, up to date, interrupted, or which operations failed."""
    plan = plan_summary(outcome)
    report = outcome.report
    if report is None:
        reason = Reason.UP_TO_DATE if outcome.plan.is_empty else Reason.APPLIED
        message = f"applied revision {ref_label(revision)}"
        return ReconcileResult(source, trigger, Result.SUCCESS, reason.value, message, revision.sha, plan, 0)
    result, reason, message = _judge_report(report, revision)
    return ReconcileResult(
        source, trigger, result, reason.value, message, revision.sha, plan, outcome.mutating_calls
    )


def plan_summary(outcome: Outcome | SwarmOutcome) -> dict[str, Any]:
    """The plan's summary and operations, each operation with its status (and error) once run;
    for a container converge and a Swarm one alike."""
    plan = outcome.plan.to_dict()
    summary = {"summary": plan["summary"], "operations": list(plan["operations"])}
    if outcome.report is not None:
        ran: Sequence[OpResult | SwarmResult] = outcome.report.results
        for r, op in zip(ran, summary["operations"], strict=False):
            op["status"] = r.status.value
            if r.error:
                op["error"] = r.error
    return summary


def _judge_report(report: ExecutionReport, revision: Revision) -> tuple[Result, Reason, str]:
    if report.ok:
        done = len(report.results)
        return (
            Result.SUCCESS,
            Reason.APPLIED,
            f"applied revision {ref_label(revision)}: {done} operation(s) in {report.seconds:.1f}s",
        )
    failed = report.failed
    if not failed:  # nothing failed, yet not all done: stopped between operations
        stopped = sum(1 for r in report.results if r.status is OpStatus.SKIPPED)
        return (
            Result.ERROR,
            Reason.INTERRUPTED,
            f"shutting down: {stopped} operation(s) left for the next start",
        )
    lines = [f"{r.op.resource}: {r.op.kind.value} failed: {r.error}" for r in failed]
    kind = Result.ERROR if report.transient else Result.FAILURE
    return kind, Reason.EXECUTION_FAILED, shorten("; ".join(lines))


# --- drift ---------------------------------------------------------------------------------


def _drift_summary(items: Sequence[DriftItem]) -> str:
    summary = "; ".join(
        f"{i.resource} {i.field.value}: {i.what or i.kind.value}" for i in items[:DRIFT_SUMMARY_ITEMS]
    )
    if len(items) > DRIFT_SUMMARY_ITEMS:
        summary += f" (and {len(items) - DRIFT_SUMMARY_ITEMS} more)"
    return summary


def drift_reported(
    source: str, trigger: Trigger, revision: str, items: Sequence[DriftItem], flapping: Sequence[str]
) -> ReconcileResult:
    """Drift left alone: the policy only reports, or the resources are flapping."""
    reason = Reason.FLAPPING if flapping else Reason.DRIFT_DETECTED
    why = f"flapping, not healed again: {', '.join(flapping)}" if flapping else "policy report: not healed"
    message = shorten(f"{len(items)} drift item(s), {why}: {_drift_summary(items)}")
    return ReconcileResult(source, trigger, Result.SUCCESS, reason.value, message, revision)


def drift_healed(
    judged: ReconcileResult, items: Sequence[DriftItem], actions: Sequence[str], mutating_calls: int
) -> ReconcileResult:
    """The heal's converge, ``judged``, said as a heal when it succeeded (as is otherwise)."""
    if judged.result is not Result.SUCCESS:
        return judged
    done = ", ".join(actions) or "converged"
    message = shorten(f"healed {len(items)} drift item(s) ({done}): {_drift_summary(items)}")
    return dataclasses.replace(
        judged, reason=Reason.DRIFT_HEALED.value, message=message, mutating_calls=mutating_calls
    )


# --- what is worth recording ---------------------------------------------------------------


def is_quiet(state: SourceState, result: ReconcileResult) -> bool:
    """Whether a scheduled poll's result says nothing the recorded state does not already say.

    A known-bad skip, an up-to-date success on the applied revision, or the same drift report
    (or the same wait for a dependency) again: once in history is enough.
    """
    if result.trigger is not Trigger.SCHEDULE:
        return False
    known_bad = result.result is Result.SKIP and result.reason == Reason.KNOWN_BAD.value
    up_to_date = (
        result.result is Result.SUCCESS
        and result.reason == Reason.UP_TO_DATE.value
        and state.result is Result.SUCCESS
        and state.applied_sha == result.revision
    )
    same_drift = result.reason in (
        Reason.DRIFT_DETECTED.value,
        Reason.FLAPPING.value,
        Reason.DEPENDENCY_NOT_READY.value,
    ) and (
        state.reason,
        state.message,
    ) == (result.reason, result.message)
    return known_bad or up_to_date or same_drift


# --- status conditions ---------------------------------------------------------------------


class ConditionType(str, Enum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


Since = Callable[[ConditionType, bool], datetime]


def source_conditions(state: SourceState, *, running: bool, since: Since) -> list[dict[str, Any]]:
    """Flux-style conditions for one source. Pure given `since` (type, status) → lastTransitionTime."""
    stalled = state.result is Result.FAILURE and state.reason != Reason.ROLLED_BACK.value
    reconciling = running and not state.suspended
    return [
        _condition(ConditionType.READY, _is_ready(state), *_ready_reason(state), since),
        _condition(ConditionType.RECONCILING, reconciling, *_reconciling_reason(state, running), since),
        _condition(
            ConditionType.STALLED,
            stalled,
            state.reason if stalled else "",
            state.message if stalled else "",
            since,
        ),
    ]


def _condition(kind: ConditionType, status: bool, reason: str, message: str, since: Since) -> dict[str, Any]:
    return {
        "type": kind.value,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": iso_time(since(kind, status)),
    }


def _is_ready(state: SourceState) -> bool:
    return (
        state.result is Result.SUCCESS
        and state.applied_sha is not None
        and (state.fetched_sha in (None, state.applied_sha))
    )


def _ready_reason(state: SourceState) -> tuple[str, str]:
    if state.result is None:
        return "Progressing", "no reconcile has finished yet"
    if _is_ready(state):
        return Reason.APPLIED.value, state.message
    return state.reason or state.result.value, state.message


def _reconciling_reason(state: SourceState, running: bool) -> tuple[str, str]:
    if state.suspended:
        return Reason.SUSPENDED.value, "reconciliation is suspended"
    if running:
        return "Progressing", "reconciliation in progress"
    return "Idle", ""
