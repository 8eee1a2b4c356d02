"""One reconcile of one source: fetch → checkout → load → converge → record.

Flux's split, in order: acquire the desired state (fetch the ref, check the revision's subpath
out, load and validate the Compose files), and only then converge Docker to it. Nothing of
a commit that fails to load reaches the runtime.

Outcomes (``state.Result``):

- ``success``: the revision is applied (an empty plan included).
- ``failure``: a person must act (bad spec, name conflict, a ref that vanished, refused
  credentials). The commit is remembered as failed and not retried by polls or webhooks
  until a new commit arrives (a manual reconcile retries it). The live state is untouched.
- ``error``: the world failed (git, registry or Docker unreachable, a transient operation
  failure, a shutdown mid-plan). The scheduler retries with exponential backoff.
- ``skip``: suspended, or the commit is known to be bad.

A vanished ref is an error naming the ref, never a wipe: nothing is removed because git
cannot be read.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import SpanContext

from gitdock.agent import telemetry as tm
from gitdock.agent.applied_store import AppliedStore, store_applied
from gitdock.agent.config import AgentConfig, SourceConfig
from gitdock.agent.git import GitCache, Revision
from gitdock.agent.healing import Healer, HealMode, HealPolicy, heal_project
from gitdock.agent.metrics import get_metrics
from gitdock.agent.state import ImageLock, Result, SourceState, StateStore, Trigger
from gitdock.runtime.converge import Outcome, converge
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.drift.detect import DriftReport
from gitdock.runtime.drift.watch import EventWatcher, check_drift
from gitdock.runtime.execute import OpStatus
from gitdock.runtime.record import AppliedRecord
from gitdock.runtime.trust.resolve import TrustContext
from gitdock.specs.errors import GitdockError, PermanentError, SpecError, TransientError
from gitdock.specs.load import load_project
from gitdock.specs.model import Project

__all__ = [
    "BACKOFF_CAP",
    "ConditionType",
    "ReconcileResult",
    "Reconciler",
    "backoff_delay",
    "source_conditions",
]

log = logging.getLogger("gitdock.agent.reconcile")

BACKOFF_BASE: Final = 2.0
BACKOFF_CAP: Final = 300.0
_MESSAGE_LIMIT: Final = 2000


def backoff_delay(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait after `failures` consecutive transient errors: base·2ⁿ⁻¹, capped. Pure."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** min(failures - 1, 30)))


DEEP_CHECK_EVERY: Final = 10


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

    @property
    def is_transient(self) -> bool:
        return self.result is Result.ERROR

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
        }


@dataclass
class _Loaded:
    """A loaded revision, kept so a poll with no new commit skips checkout and parsing."""

    sha: str
    fingerprint: str
    project: Project


@dataclass
class _Memo:
    loaded: _Loaded | None = None
    last_result: Result | None = None
    last_checked: datetime | None = None
    last_duration: float = 0.0
    last_plan: dict[str, Any] | None = field(default=None)
    drift: DriftReport | None = None
    drift_checks: int = 0


def _reason(exc: BaseException) -> str:
    return type(exc).__name__


def _short(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


class Reconciler:
    """Runs reconciles against one StateStore, GitCache and DockerClient (all thread-safe).

    Not re-entrant per source: the scheduler guarantees one reconcile per source at a time.
    ``should_stop`` is polled between steps and between plan operations (shutdown).
    """

    def __init__(
        self,
        config: AgentConfig,
        store: StateStore,
        cache: GitCache,
        docker: DockerClient,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        on_docker_status: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.cache = cache
        self.docker = docker
        self.should_stop = should_stop
        self.on_docker_status = on_docker_status
        self.work_root = config.state_dir / "work"
        self._memo: dict[str, _Memo] = {}
        self._trust_contexts: dict[str, TrustContext] = {}
        self.applied = AppliedStore(store)
        self._healers: dict[str, Healer] = {}
        # Set by the agent: paused around gitdock's own changes, so they are not taken for drift.
        self.watcher: EventWatcher | None = None
        self.metrics = get_metrics()
        self.telemetry_environment = config.telemetry.environment
        self._memo_lock = threading.Lock()

    @contextlib.contextmanager
    def _paused(self, project: str) -> Iterator[None]:
        if self.watcher is None:
            yield
            return
        self.watcher.pause(project)
        try:
            yield
        finally:
            self.watcher.resume(project)

    def _handle_drift(
        self,
        source: SourceConfig,
        trigger: Trigger,
        revision: Revision,
        project: Project,
        record: AppliedRecord,
        memo: _Memo,
    ) -> ReconcileResult | None:
        """Check drift against the applied record; heal or report it by the source's policy.

        Returns the result when drift decided the reconcile, None to converge as usual (no
        drift: converge still runs, so a moved image tag is picked up).
        """
        # Settings only `docker inspect` shows (resources, restart policy) are compared for the
        # containers Docker events name; every DEEP_CHECK_EVERY-th scheduled check inspects all.
        memo.drift_checks += 1
        deep = trigger is Trigger.SCHEDULE and memo.drift_checks % DEEP_CHECK_EVERY == 1
        report = check_drift(
            self.docker, record, deep=deep, previous=memo.drift, secret_names=set(source.variables)
        )
        memo.drift = report if report.items else None
        self.metrics.set_drift(project.name, len(report.items))
        span = trace.get_current_span()
        for item in report.items:
            span.add_event(
                "drift.item",
                {
                    "resource": item.resource,
                    "field": item.field.value,
                    "kind": item.kind.value,
                    "what": item.what,
                },
            )
        if not report.items:
            return None
        summary = "; ".join(
            f"{i.resource} {i.field.value}: {i.what or i.kind.value}" for i in report.items[:5]
        )
        if len(report.items) > 5:
            summary += f" (and {len(report.items) - 5} more)"
        healer = self._healers.setdefault(source.name, Healer(HealPolicy(HealMode(source.drift.value))))
        heal, flapping = healer.should_heal(project.name, report.items, report.checked_at)
        if not heal:
            reason = Reason.FLAPPING if flapping else Reason.DRIFT_DETECTED
            why = (
                f"flapping, not healed again: {', '.join(flapping)}"
                if flapping
                else "policy report: not healed"
            )
            return ReconcileResult(
                source.name,
                trigger,
                Result.SUCCESS,
                reason.value,
                _short(f"{len(report.items)} drift item(s), {why}: {summary}"),
                revision.sha,
            )
        with self._paused(project.name):
            outcome, actions = heal_project(
                project,
                self.docker,
                report,
                record,
                trust=self._trust(source),
                wait_timeout=self.config.defaults.wait_timeout,
                should_stop=self.should_stop,
                **tm.converge_hooks(metrics=self.metrics),
            )
            store_applied(project, self.docker, outcome, self.applied, revision=revision.sha)
        memo.drift = None
        self.metrics.set_drift(project.name, 0)
        judged = self._judge(source, trigger, revision, outcome)
        if judged.result is not Result.SUCCESS:
            return judged
        return ReconcileResult(
            source.name,
            trigger,
            Result.SUCCESS,
            Reason.DRIFT_HEALED.value,
            _short(
                f"healed {len(report.items)} drift item(s) ({', '.join(actions) or 'converged'}): {summary}"
            ),
            revision.sha,
            judged.plan,
            outcome.mutating_calls,
        )

    def close(self) -> None:
        """Close the registry connections of the trust contexts built so far."""
        with self._memo_lock:
            contexts, self._trust_contexts = list(self._trust_contexts.values()), {}
        for context in contexts:
            context.registry.close()

    def _trust(self, source: SourceConfig) -> TrustContext | None:
        """The source's trust context, built once so its verification cache outlives reconciles."""
        config = source.trust or self.config.trust
        if config is None:
            return None
        with self._memo_lock:
            context = self._trust_contexts.get(source.name)
            if context is None:
                context = config.context(self.config.base_dir)
                self._trust_contexts[source.name] = context
            return context

    def memo(self, name: str) -> _Memo:
        with self._memo_lock:
            return self._memo.setdefault(name, _Memo())

    # -- the reconcile -------------------------------------------------------------------

    def reconcile(
        self, source: SourceConfig, trigger: Trigger, links: Sequence[SpanContext] = ()
    ) -> ReconcileResult:
        """Reconcile `source` once, as one ``SYNC <project>`` trace. Never raises for a gitdock
        error: the result says what happened. ``links`` are the webhook requests that asked for it."""
        with tm.sync_span(
            source.project_name,
            repository_url=source.url,
            ref=source.ref,
            environment=self.telemetry_environment,
            links=links,
        ) as sync:
            sync.span.set_attribute("gitdock.trigger", trigger.value)
            result = self._reconcile(source, trigger)
            if result.revision:
                sync.set_revision(result.revision)
            sync.set_result(result.result)
            if result.result in (Result.FAILURE, Result.ERROR):
                tm.fail_span(sync.span, result.message, error_type=result.reason)
        return result

    def _reconcile(self, source: SourceConfig, trigger: Trigger) -> ReconcileResult:
        started = time.monotonic()
        memo = self.memo(source.name)
        state = self.store.source(source.name)
        if state.suspended:
            return ReconcileResult(source.name, trigger, Result.SKIP, Reason.SUSPENDED.value, "suspended")
        revision: Revision | None = None
        outcome: Outcome | None = None
        try:
            with tm.step_span(tm.Step.FETCH):
                fetch_started = time.monotonic()
                revision = self.cache.fetch(source.remote())
                self.metrics.record_git_fetch(source.name, time.monotonic() - fetch_started)
            memo.last_checked = datetime.now(UTC)
            if revision.sha != state.fetched_sha:
                self.store.record_fetch(source.name, revision.sha)
            if trigger is not Trigger.MANUAL and state.failed_sha == revision.sha:
                return ReconcileResult(
                    source.name,
                    trigger,
                    Result.SKIP,
                    Reason.KNOWN_BAD.value,
                    f"commit {revision.sha[:12]} failed before: {state.message}",
                    revision.sha,
                    duration=time.monotonic() - started,
                )
            with tm.step_span(tm.Step.LOAD):
                project = self._load(source, revision, memo)
            if self.should_stop():
                raise _Interrupted("shutting down before converging")
            if state.attempted_sha != revision.sha:
                self.store.record_attempt(source.name, revision.sha)
            record = self.applied.load(project.name)
            drift_result = None
            if record is not None and record.revision == revision.sha and state.applied_sha == revision.sha:
                # Git has not moved: what differs now happened behind its back.
                drift_result = self._handle_drift(source, trigger, revision, project, record, memo)
            if drift_result is not None:
                result = drift_result
            else:
                with self._paused(project.name):
                    outcome = converge(
                        project,
                        self.docker,
                        trust=self._trust(source),
                        wait_timeout=self.config.defaults.wait_timeout,
                        should_stop=self.should_stop,
                        **tm.converge_hooks(metrics=self.metrics),
                    )
                    changed = outcome.report is not None or record is None or record.revision != revision.sha
                    if changed and (outcome.report is None or outcome.report.ok):
                        store_applied(project, self.docker, outcome, self.applied, revision=revision.sha)
                        memo.drift = None
                        self.metrics.set_drift(project.name, 0)
                if outcome.report is None or outcome.report.ok:
                    self.metrics.set_last_apply(project.name, time.time())
                result = self._judge(source, trigger, revision, outcome)
            self._docker_status(True)
        except _Interrupted as exc:
            result = ReconcileResult(
                source.name, trigger, Result.ERROR, Reason.INTERRUPTED.value, str(exc), _sha(revision)
            )
        except PermanentError as exc:
            message = exc.render() if isinstance(exc, SpecError) else str(exc)
            # Name files as they are in the repository, not in the agent's work directory.
            message = message.replace(f"{self.work_root / source.name}/", "")
            result = ReconcileResult(
                source.name, trigger, Result.FAILURE, _reason(exc), _short(message), _sha(revision)
            )
        except TransientError as exc:
            if type(exc).__name__ == "DockerUnavailable":
                self._docker_status(False)
            result = ReconcileResult(
                source.name, trigger, Result.ERROR, _reason(exc), _short(str(exc)), _sha(revision)
            )
        except GitdockError as exc:  # neither kind: treat as retryable, but say so
            result = ReconcileResult(
                source.name, trigger, Result.ERROR, _reason(exc), _short(str(exc)), _sha(revision)
            )
        except Exception as exc:  # a bug: record it (and retry with backoff) rather than go silent
            log.exception("source %s: reconcile crashed", source.name)
            result = ReconcileResult(
                source.name,
                trigger,
                Result.ERROR,
                "InternalError",
                _short(f"internal error: {type(exc).__name__}: {exc}"),
                _sha(revision),
            )
        duration = time.monotonic() - started
        result = ReconcileResult(
            result.source,
            result.trigger,
            result.result,
            result.reason,
            result.message,
            result.revision,
            result.plan,
            result.mutating_calls,
            duration,
        )
        self._record(source, state, memo, result, outcome)
        return result

    def _docker_status(self, ok: bool) -> None:
        if self.on_docker_status is not None:
            self.on_docker_status(ok)

    def _load(self, source: SourceConfig, revision: Revision, memo: _Memo) -> Project:
        """Check out the revision's subpath and load its Compose files (cached per sha and config)."""
        fingerprint = repr((source.path, source.files, source.project_name, sorted(source.environ().items())))
        loaded = memo.loaded
        if loaded is not None and loaded.sha == revision.sha and loaded.fingerprint == fingerprint:
            return loaded.project
        root = self.cache.checkout(revision, self.work_root / source.name, source.path)
        files = [root / f for f in source.files]
        project = load_project(files, project_name=source.project_name, environ=source.environ())
        memo.loaded = _Loaded(revision.sha, fingerprint, project)
        return project

    def _judge(
        self, source: SourceConfig, trigger: Trigger, revision: Revision, outcome: Outcome
    ) -> ReconcileResult:
        plan = outcome.plan.to_dict()
        plan_summary = {"summary": plan["summary"], "operations": [o for o in plan["operations"]]}
        if outcome.report is None:
            reason = Reason.UP_TO_DATE if outcome.plan.is_empty else Reason.APPLIED
            message = f"applied revision {_ref_label(revision)}"
            return ReconcileResult(
                source.name, trigger, Result.SUCCESS, reason.value, message, revision.sha, plan_summary, 0
            )
        report = outcome.report
        for r, op in zip(report.results, plan_summary["operations"], strict=False):
            op["status"] = r.status.value
            if r.error:
                op["error"] = r.error
        if report.ok:
            done = len(report.results)
            return ReconcileResult(
                source.name,
                trigger,
                Result.SUCCESS,
                Reason.APPLIED.value,
                f"applied revision {_ref_label(revision)}: {done} operation(s) in {report.seconds:.1f}s",
                revision.sha,
                plan_summary,
                outcome.mutating_calls,
            )
        failed = report.failed
        lines = [f"{r.op.resource}: {r.op.kind.value} failed: {r.error}" for r in failed]
        if not failed:  # nothing failed, yet not all done: stopped between operations
            stopped = sum(1 for r in report.results if r.status is OpStatus.SKIPPED)
            return ReconcileResult(
                source.name,
                trigger,
                Result.ERROR,
                Reason.INTERRUPTED.value,
                f"shutting down: {stopped} operation(s) left for the next start",
                revision.sha,
                plan_summary,
                outcome.mutating_calls,
            )
        kind = Result.ERROR if report.transient else Result.FAILURE
        return ReconcileResult(
            source.name,
            trigger,
            kind,
            Reason.EXECUTION_FAILED.value,
            _short("; ".join(lines)),
            revision.sha,
            plan_summary,
            outcome.mutating_calls,
        )

    def _record(
        self,
        source: SourceConfig,
        state: SourceState,
        memo: _Memo,
        result: ReconcileResult,
        outcome: Outcome | None,
    ) -> None:
        """Persist the result. A poll that changed nothing writes nothing (history stays useful)."""
        memo.last_duration = result.duration
        memo.last_result = result.result
        known_bad = result.result is Result.SKIP and result.reason == Reason.KNOWN_BAD.value
        unchanged = (
            result.result is Result.SUCCESS
            and result.reason == Reason.UP_TO_DATE.value
            and state.result is Result.SUCCESS
            and state.applied_sha == result.revision
        ) or (  # the same drift, reported again: once in history is enough
            result.reason in (Reason.DRIFT_DETECTED.value, Reason.FLAPPING.value)
            and (state.reason, state.message) == (result.reason, result.message)
        )
        if result.trigger is Trigger.SCHEDULE and (known_bad or unchanged):
            return
        with self.store.transaction():
            if result.result is not Result.SKIP:  # a skip keeps the recorded failure
                self.store.record_result(
                    source.name, result.revision, result.result, result.reason, result.message
                )
            if result.result is Result.SUCCESS and outcome is not None and outcome.images:
                self.store.set_image_locks(
                    source.project_name,
                    [
                        ImageLock(
                            image=image.reference,
                            digest=image.digest,
                            key=",".join(image.keys),
                            signed_at=datetime.fromtimestamp(image.signed_at, UTC)
                            if image.signed_at is not None
                            else None,
                        )
                        for image in outcome.images.values()
                    ],
                )
            self.store.add_history(
                source.name,
                result.trigger,
                result.revision,
                result.result,
                plan=result.plan,
                reason=result.reason,
                message=result.message,
                duration_ms=round(result.duration * 1000),
            )
        memo.last_plan = result.plan
        level = logging.INFO if result.result in (Result.SUCCESS, Result.SKIP) else logging.WARNING
        log.log(
            level,
            "source %s: %s (%s) at %s: %s",
            source.name,
            result.result.value,
            result.reason,
            (result.revision or "-")[:12],
            result.message,
        )


class _Interrupted(GitdockError):
    """The agent is shutting down; the reconcile stopped before touching Docker."""


def _sha(revision: Revision | None) -> str | None:
    return revision.sha if revision is not None else None


def _ref_label(revision: Revision) -> str:
    ref = revision.ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
    return f"{ref}@sha1:{revision.sha[:12]}" if ref != revision.sha else f"sha1:{revision.sha[:12]}"


# --- status conditions -------------------------------------------------------------------


class ConditionType(str, Enum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


def source_conditions(
    state: SourceState, *, running: bool, since: Callable[[ConditionType, bool], datetime]
) -> list[dict[str, Any]]:
    """Flux-style conditions for one source. Pure given `since` (type, status) → lastTransitionTime."""

    def cond(kind: ConditionType, status: bool, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": kind.value,
            "status": "True" if status else "False",
            "reason": reason,
            "message": message,
            "lastTransitionTime": since(kind, status).isoformat().replace("+00:00", "Z"),
        }

    result = state.result
    ready = (
        result is Result.SUCCESS
        and state.applied_sha is not None
        and (state.fetched_sha in (None, state.applied_sha))
    )
    if result is None:
        ready_reason, ready_msg = "Progressing", "no reconcile has finished yet"
    elif ready:
        ready_reason, ready_msg = Reason.APPLIED.value, state.message
    else:
        ready_reason, ready_msg = state.reason or (result.value if result else ""), state.message
    stalled = result is Result.FAILURE
    if state.suspended:
        rec_reason, rec_msg = Reason.SUSPENDED.value, "reconciliation is suspended"
    elif running:
        rec_reason, rec_msg = "Progressing", "reconciliation in progress"
    else:
        rec_reason, rec_msg = "Idle", ""
    return [
        cond(ConditionType.READY, ready, ready_reason, ready_msg),
        cond(ConditionType.RECONCILING, running and not state.suspended, rec_reason, rec_msg),
        cond(
            ConditionType.STALLED,
            stalled,
            state.reason if stalled else "",
            state.message if stalled else "",
        ),
    ]


def work_dir(config: AgentConfig, source: SourceConfig) -> Path:
    """Where a source's checked-out revision lives."""
    return config.state_dir / "work" / source.name
