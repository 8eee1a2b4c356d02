"""One reconcile of one source, stage by stage: fetch → load → (drift) → converge → record.

Flux's split, in order: acquire the desired state (fetch the ref, check the revision's subpath
out, load and validate the Compose files), and only then converge Docker to it: verify the
images, observe, plan and execute (``runtime.converge``). Nothing of a commit that fails to
load reaches the runtime. When git has not moved since the last apply, the drift stage first
compares the host with the applied record, and heals or reports it by the source's policy.

Each stage is a method of ``Reconciler`` that can be called on its own (``fetch``, ``load``,
``handle_drift``, ``apply``, ``record``); ``reconcile`` runs them in order as one
``SYNC <project>`` trace. What a result and a condition say lives in ``results``. Errors are
sorted by the error tree: a PermanentError is a ``failure``, a TransientError (or any other
gitdock error) an ``error`` the scheduler retries. A vanished ref is an error naming the ref,
never a wipe: nothing is removed because git cannot be read.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from gitdock.agent import telemetry as tm
from gitdock.agent.applied_store import AppliedStore, store_applied
from gitdock.agent.config import AgentConfig, SourceConfig
from gitdock.agent.git import GitCache, Revision
from gitdock.agent.healing import Healer, HealMode, HealPolicy, heal_project
from gitdock.agent.metrics import get_metrics
from gitdock.agent.results import (
    Reason,
    ReconcileResult,
    drift_healed,
    drift_reported,
    is_quiet,
    judge_outcome,
    shorten,
)
from gitdock.agent.state import ImageLock, Result, SourceState, StateStore, Trigger
from gitdock.runtime.converge import Outcome, converge
from gitdock.runtime.docker import DockerClient, DockerUnavailable
from gitdock.runtime.drift.detect import DriftReport
from gitdock.runtime.drift.watch import EventWatcher, check_drift
from gitdock.runtime.record import AppliedRecord
from gitdock.runtime.trust.resolve import TrustContext
from gitdock.specs.errors import GitdockError, PermanentError, SpecError, TransientError
from gitdock.specs.load import load_project
from gitdock.specs.model import Project

__all__ = ["DEEP_CHECK_EVERY", "Reconciler", "SourceMemo", "work_dir"]

log = logging.getLogger("gitdock.agent.reconcile")

DEEP_CHECK_EVERY: Final = 10


@dataclass
class _Loaded:
    """A loaded revision, kept so a poll with no new commit skips checkout and parsing."""

    sha: str
    fingerprint: str
    project: Project


@dataclass
class SourceMemo:
    """What the agent keeps in memory about one source between reconciles."""

    loaded: _Loaded | None = None
    last_result: Result | None = None
    last_checked: datetime | None = None
    last_duration: float = 0.0
    last_plan: dict[str, Any] | None = field(default=None)
    drift: DriftReport | None = None
    drift_checks: int = 0


@dataclass
class _Run:
    """One reconcile in progress: what the stages have learnt so far."""

    source: SourceConfig
    trigger: Trigger
    state: SourceState
    memo: SourceMemo
    revision: Revision | None = None
    outcome: Outcome | None = None  # the converge's, for the image locks

    @property
    def sha(self) -> str | None:
        return self.revision.sha if self.revision is not None else None

    def result(self, result: Result, reason: str, message: str) -> ReconcileResult:
        return ReconcileResult(self.source.name, self.trigger, result, reason, message, self.sha)


class _Interrupted(GitdockError):
    """The agent is shutting down; the reconcile stopped before touching Docker."""


class _Skipped(Exception):
    """A stage decided the reconcile ends here, unrecorded (a known-bad commit)."""

    def __init__(self, result: ReconcileResult) -> None:
        super().__init__(result.message)
        self.result = result


class Reconciler:
    """Runs reconciles against one StateStore, GitCache and DockerClient (all thread-safe).

    Not re-entrant per source: the scheduler guarantees one reconcile per source at a time.
    ``should_stop`` is polled between stages and between plan operations (shutdown).
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
        self.config, self.store, self.cache, self.docker = config, store, cache, docker
        self.should_stop = should_stop
        self.on_docker_status = on_docker_status
        self.work_root = config.state_dir / "work"
        self.applied = AppliedStore(store)
        # Set by the agent: paused around gitdock's own changes, so they are not taken for drift.
        self.watcher: EventWatcher | None = None
        self.metrics = get_metrics()
        self._memo: dict[str, SourceMemo] = {}
        self._trust_contexts: dict[str, TrustContext] = {}
        self._healers: dict[str, Healer] = {}
        self._memo_lock = threading.Lock()

    def close(self) -> None:
        """Close the registry connections of the trust contexts built so far."""
        with self._memo_lock:
            contexts, self._trust_contexts = list(self._trust_contexts.values()), {}
        for context in contexts:
            context.registry.close()

    def memo(self, name: str) -> SourceMemo:
        """What is kept in memory about source ``name`` (last check, duration, drift)."""
        with self._memo_lock:
            return self._memo.setdefault(name, SourceMemo())

    # -- the pipeline ----------------------------------------------------------------------

    def reconcile(
        self, source: SourceConfig, trigger: Trigger, links: Sequence[tm.SpanContext] = ()
    ) -> ReconcileResult:
        """Reconcile `source` once, as one ``SYNC <project>`` trace. Never raises for a gitdock
        error: the result says what happened. ``links`` are the webhook requests that asked for it."""
        with tm.sync_span(
            source.project_name,
            repository_url=source.url,
            ref=source.ref,
            environment=self.config.telemetry.environment,
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
        """Run the stages; a suspended source and a known-bad commit end it unrecorded."""
        started = time.monotonic()
        run = _Run(source, trigger, self.store.source(source.name), self.memo(source.name))
        if run.state.suspended:
            return ReconcileResult(source.name, trigger, Result.SKIP, Reason.SUSPENDED.value, "suspended")
        try:
            result = self._run_stages(run)
            self._docker_status(True)
        except _Skipped as skipped:
            return skipped.result.with_duration(time.monotonic() - started)
        except Exception as exc:  # sorted by kind in _result_of; a bug is logged there
            result = self._result_of(run, exc)
        result = result.with_duration(time.monotonic() - started)
        self.record(run.source, run.state, run.memo, result, run.outcome)
        return result

    def _run_stages(self, run: _Run) -> ReconcileResult:
        source, memo = run.source, run.memo
        revision = run.revision = self.fetch(source, run.state, memo)
        self._skip_known_bad(run, revision)
        with tm.step_span(tm.Step.LOAD):
            project = self.load(source, revision, memo)
        if self.should_stop():
            raise _Interrupted("shutting down before converging")
        if run.state.attempted_sha != revision.sha:
            self.store.record_attempt(source.name, revision.sha)
        record = self.applied.load(project.name)
        if record is not None and _is_unmoved(record, run.state, revision):
            # Git has not moved: what differs now happened behind its back.
            drift_result = self.handle_drift(source, run.trigger, revision, project, record, memo)
            if drift_result is not None:
                return drift_result
        result, run.outcome = self.apply(source, run.trigger, revision, project, record, memo)
        return result

    # -- stages ----------------------------------------------------------------------------

    def fetch(self, source: SourceConfig, state: SourceState, memo: SourceMemo) -> Revision:
        """Fetch the source's ref (the fetch step) and record the commit when it is new."""
        with tm.step_span(tm.Step.FETCH):
            started = time.monotonic()
            revision = self.cache.fetch(source.remote())
            self.metrics.record_git_fetch(source.name, time.monotonic() - started)
        memo.last_checked = datetime.now(UTC)
        if revision.sha != state.fetched_sha:
            self.store.record_fetch(source.name, revision.sha)
        return revision

    def _skip_known_bad(self, run: _Run, revision: Revision) -> None:
        """Raise _Skipped for a commit that failed before (only a manual reconcile retries it)."""
        if run.trigger is not Trigger.MANUAL and run.state.failed_sha == revision.sha:
            message = f"commit {revision.sha[:12]} failed before: {run.state.message}"
            raise _Skipped(run.result(Result.SKIP, Reason.KNOWN_BAD.value, message))

    def load(self, source: SourceConfig, revision: Revision, memo: SourceMemo) -> Project:
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

    def handle_drift(
        self,
        source: SourceConfig,
        trigger: Trigger,
        revision: Revision,
        project: Project,
        record: AppliedRecord,
        memo: SourceMemo,
    ) -> ReconcileResult | None:
        """Check drift against the applied record; heal or report it by the source's policy.

        Returns the result when drift decided the reconcile, None to converge as usual (no
        drift: converge still runs, so a moved image tag is picked up).
        """
        report = self._check_drift(source, trigger, project, record, memo)
        if not report.items:
            return None
        healer = self._healers.setdefault(source.name, Healer(HealPolicy(HealMode(source.drift.value))))
        heal, flapping = healer.should_heal(project.name, report.items, report.checked_at)
        if not heal:
            return drift_reported(source.name, trigger, revision.sha, report.items, flapping)
        outcome, actions = self._heal(source, project, report, record, revision, memo)
        judged = judge_outcome(source.name, trigger, revision, outcome)
        return drift_healed(judged, report.items, actions, outcome.mutating_calls)

    def _check_drift(
        self,
        source: SourceConfig,
        trigger: Trigger,
        project: Project,
        record: AppliedRecord,
        memo: SourceMemo,
    ) -> DriftReport:
        """Compare the host with ``record``; the report is remembered, counted and traced."""
        # Settings only `docker inspect` shows (resources, restart policy) are compared for the
        # containers Docker events name; every DEEP_CHECK_EVERY-th scheduled check inspects all.
        memo.drift_checks += 1
        deep = trigger is Trigger.SCHEDULE and memo.drift_checks % DEEP_CHECK_EVERY == 1
        report = check_drift(
            self.docker, record, deep=deep, previous=memo.drift, secret_names=set(source.variables)
        )
        memo.drift = report if report.items else None
        self.metrics.set_drift(project.name, len(report.items))
        tm.add_drift_events(report.items)
        return report

    def _heal(
        self,
        source: SourceConfig,
        project: Project,
        report: DriftReport,
        record: AppliedRecord,
        revision: Revision,
        memo: SourceMemo,
    ) -> tuple[Outcome, list[str]]:
        """Converge the drifted project (``healing.heal_project``) and record what was applied."""
        with self._paused(project.name):
            outcome, actions = heal_project(
                project,
                self.docker,
                report,
                record,
                trust=self._trust(source),
                wait_timeout=self.config.defaults.wait_timeout,
                should_stop=self.should_stop,
                hooks=tm.converge_hooks(metrics=self.metrics),
            )
            store_applied(project, self.docker, outcome, self.applied, revision=revision.sha)
        memo.drift = None
        self.metrics.set_drift(project.name, 0)
        return outcome, actions

    def apply(
        self,
        source: SourceConfig,
        trigger: Trigger,
        revision: Revision,
        project: Project,
        record: AppliedRecord | None,
        memo: SourceMemo,
    ) -> tuple[ReconcileResult, Outcome]:
        """Converge the host to ``project`` (verify, observe, plan, execute) and judge it.

        The applied record is written when something changed and nothing failed.
        """
        with self._paused(project.name):
            outcome = converge(
                project,
                self.docker,
                trust=self._trust(source),
                wait_timeout=self.config.defaults.wait_timeout,
                should_stop=self.should_stop,
                hooks=tm.converge_hooks(metrics=self.metrics),
            )
            changed = outcome.report is not None or record is None or record.revision != revision.sha
            if changed and outcome.is_ok:
                store_applied(project, self.docker, outcome, self.applied, revision=revision.sha)
                memo.drift = None
                self.metrics.set_drift(project.name, 0)
        if outcome.is_ok:
            self.metrics.set_last_apply(project.name, time.time())
        return judge_outcome(source.name, trigger, revision, outcome), outcome

    def record(
        self,
        source: SourceConfig,
        state: SourceState,
        memo: SourceMemo,
        result: ReconcileResult,
        outcome: Outcome | None,
    ) -> None:
        """Persist the result and log it. A poll that changed nothing writes nothing (history
        stays useful)."""
        memo.last_duration = result.duration
        memo.last_result = result.result
        if is_quiet(state, result):
            return
        with self.store.transaction():
            if result.result is not Result.SKIP:  # a skip keeps the recorded failure
                self.store.record_result(
                    source.name, result.revision, result.result, result.reason, result.message
                )
            if result.result is Result.SUCCESS and outcome is not None and outcome.images:
                self.store.set_image_locks(source.project_name, _image_locks(outcome))
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
        _log_result(source, result)

    # -- errors and helpers ----------------------------------------------------------------

    def _result_of(self, run: _Run, exc: Exception) -> ReconcileResult:
        """The result a stage's exception makes, by the error tree. Call it inside ``except``."""
        if isinstance(exc, _Interrupted):
            return run.result(Result.ERROR, Reason.INTERRUPTED.value, str(exc))
        if isinstance(exc, PermanentError):
            message = exc.render() if isinstance(exc, SpecError) else str(exc)
            # Name files as they are in the repository, not in the agent's work directory.
            message = message.replace(f"{self.work_root / run.source.name}/", "")
            return run.result(Result.FAILURE, type(exc).__name__, shorten(message))
        if isinstance(exc, DockerUnavailable):
            self._docker_status(False)
        if isinstance(exc, TransientError | GitdockError):  # neither kind: retryable, but said so
            return run.result(Result.ERROR, type(exc).__name__, shorten(str(exc)))
        # A bug: record it (and retry with backoff) rather than go silent.
        log.exception("source %s: reconcile crashed", run.source.name)
        return run.result(
            Result.ERROR, "InternalError", shorten(f"internal error: {type(exc).__name__}: {exc}")
        )

    def _docker_status(self, ok: bool) -> None:
        if self.on_docker_status is not None:
            self.on_docker_status(ok)

    @contextlib.contextmanager
    def _paused(self, project: str) -> Iterator[None]:
        """Mute the event watcher for ``project`` while gitdock itself changes it."""
        if self.watcher is None:
            yield
            return
        self.watcher.pause(project)
        try:
            yield
        finally:
            self.watcher.resume(project)

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


def _is_unmoved(record: AppliedRecord, state: SourceState, revision: Revision) -> bool:
    """Whether ``revision`` is the one applied and recorded (git has not moved since)."""
    return record.revision == revision.sha and state.applied_sha == revision.sha


def _image_locks(outcome: Outcome) -> list[ImageLock]:
    return [
        ImageLock(
            image=image.reference,
            digest=image.digest,
            key=",".join(image.keys),
            signed_at=datetime.fromtimestamp(image.signed_at, UTC) if image.signed_at is not None else None,
        )
        for image in (outcome.images or {}).values()
    ]


def _log_result(source: SourceConfig, result: ReconcileResult) -> None:
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


def work_dir(config: AgentConfig, source: SourceConfig) -> Path:
    """Where a source's checked-out revision lives."""
    return config.state_dir / "work" / source.name
