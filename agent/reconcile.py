"""One reconcile of one source, stage by stage: fetch → load → policy → (drift) → converge → record.

Flux's split, in order: acquire the desired state (fetch the ref, check the revision's subpath
out, load and validate the Compose files), and only then converge Docker to it: verify the
images, observe, plan and execute (``runtime.converge``). Nothing of a commit that fails to
load reaches the runtime. When git has not moved since the last apply, the drift stage first
compares the host with the applied record, and heals or reports it by the source's policy.

Each stage is a method of ``Reconciler`` that can be called on its own (``fetch``, ``load``,
``handle_drift``, ``apply``, ``record``); ``reconcile`` runs them in order as one
``SYNC <project>`` trace. What a result and a condition say lives in ``results``. Errors are
sorted by the error tree: a PermanentError is a ``failure``, a TransientError (or any other
gitdock error) an ``error`` the scheduler retries. Every bad value in a revision is a SpecError,
and anything else the loader raises is ``LoadCrashed``: both permanent, so a revision that
cannot load is a failed commit, never a retry loop. A reconcile has a wall-clock budget
(``OverBudget``, transient), checked between stages and plan operations. A vanished ref is an
error naming the ref, never a wipe: nothing is removed because git cannot be read.

The gate (``runtime.health``) waits until every container the converge created or started is
ready; only then is the revision recorded healthy, with the exact images it ran. A revision
that fails it is recorded failed (not retried until a new commit) and, with ``rollback:
auto``, the last healthy revision is re-applied from the agent's record: its files from the
git cache, its images pinned by id (``rollout``), in a ``rollback`` trace linked to the
failed sync. A source with ``depends_on`` waits until those are healthy at their revision.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from gitdock.agent.config import AgentConfig, RollbackMode, SourceConfig, SourceMode, notify_targets
from gitdock.agent.git import GitCache, Revision
from gitdock.agent.healing import Healer, HealMode, HealPolicy, heal_project
from gitdock.agent.metrics import get_metrics
from gitdock.agent.notify import Notifier
from gitdock.agent.results import (
    Reason,
    ReconcileResult,
    drift_healed,
    drift_reported,
    is_quiet,
    judge_outcome,
    ref_label,
    shorten,
)
from gitdock.agent.rollout import (
    RollbackFailed,
    gated_containers,
    pinned_images,
    revision_images,
    rollback_message,
)
from gitdock.agent.signers import CommitVerifier, VerifiedRevision
from gitdock.agent.state import (
    ImageLock,
    Result,
    RevisionRecord,
    RevisionStatus,
    SourceState,
    StateStore,
    Trigger,
)
from gitdock.agent.targets import display_host
from gitdock.runtime.admission import PolicyRefused, check_project
from gitdock.runtime.converge import ConvergeHooks, Outcome, converge
from gitdock.runtime.docker import DockerBusy, DockerClient, DockerError, DockerUnavailable
from gitdock.runtime.drift.detect import DriftReport
from gitdock.runtime.drift.watch import EventWatcher, check_drift
from gitdock.runtime.health import GateReport, HealthGateFailed, wait_ready
from gitdock.runtime.observe import ObservedState, observe
from gitdock.runtime.record import AppliedRecord
from gitdock.runtime.trust.resolve import TrustContext
from gitdock.specs.errors import GitdockError, PermanentError, SpecError, TransientError
from gitdock.specs.load import load_project
from gitdock.specs.model import Project

__all__ = ["DEEP_CHECK_EVERY", "Reconciler", "SourceMemo", "UnknownRevision", "work_dir"]

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
    # The last reconcile that found no drift and changed nothing: (the events watcher's quiet
    # token read before it looked, the revision). See _last_look.
    last_look: tuple[int, str] | None = None


@dataclass
class _Run:
    """One reconcile in progress: what the stages have learnt so far."""

    source: SourceConfig
    trigger: Trigger
    state: SourceState
    memo: SourceMemo
    revision: Revision | None = None
    outcome: Outcome | None = None  # the converge's, for the image locks
    deadline: float = float("inf")  # time.monotonic() past which the reconcile stops

    def check_budget(self, stage: str) -> None:
        """Raise OverBudget when the deadline has passed, naming the stage not started."""
        if time.monotonic() > self.deadline:
            raise OverBudget(f"the reconcile ran past its wall-clock budget; stopped before {stage}")

    @property
    def sha(self) -> str | None:
        return self.revision.sha if self.revision is not None else None

    def result(self, result: Result, reason: str, message: str) -> ReconcileResult:
        return ReconcileResult(self.source.name, self.trigger, result, reason, message, self.sha)


class UnknownRevision(PermanentError):
    """A rollback by hand named a revision that never passed its health gate here."""


# A reconcile's wall-clock budget is ``defaults.reconcile_budget`` (900 s): no input can wedge a
# source. Checked between stages and between plan operations; the load is bounded by the spec
# package's own limits on hostile input.


class OverBudget(TransientError):
    """A reconcile ran past its wall-clock budget and stopped between stages; the next one retries."""


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
        self.host = display_host(docker.endpoint)  # how metrics and history name the engine
        self.metrics = get_metrics().for_host(self.host)
        # Commit statuses and webhooks: queued here, sent by the notifier's own thread.
        self.notifier = Notifier(notify_targets(config), metrics=self.metrics)
        self._memo: dict[str, SourceMemo] = {}
        self._trust_contexts: dict[str, TrustContext] = {}
        self._commit_verifiers: dict[str, CommitVerifier] = {}
        self._healers: dict[str, Healer] = {}
        self._memo_lock = threading.Lock()
        self.budget = float(config.defaults.reconcile_budget)
        self._deadlines: dict[str, float] = {}  # source -> its running reconcile's deadline
        # The newest look at the host that is known to still be it while the watcher's token
        # is unchanged, shared by the sources on this engine (one snapshot, not one per source).
        self._look: tuple[int, ObservedState] | None = None
        # Looks taken at once share one snapshot (50 sources starting together held 50).
        self._observer = _SharedObserve(docker)

    def close(self) -> None:
        """Close the registry connections of the trust contexts, the commit keyrings and the notifier."""
        with self._memo_lock:
            contexts, self._trust_contexts = list(self._trust_contexts.values()), {}
            verifiers, self._commit_verifiers = list(self._commit_verifiers.values()), {}
        for context in contexts:
            context.registry.close()
        for verifier in verifiers:
            verifier.close()
        self.notifier.close()

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
            metrics=self.metrics,
            server=(self.docker.endpoint.server_address, self.docker.endpoint.address.port),
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
        run.deadline = self._deadlines[source.name] = started + self.budget
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
        waiting = self._dependency_wait(run)
        if waiting is not None:
            return waiting
        revision = run.revision = self.fetch(source, run.state, memo)
        self._skip_known_bad(run, revision)
        verified = self.verify_commits(source, run.state, revision)
        run.check_budget("loading")
        with tm.step_span(tm.Step.LOAD):
            project = self.load(source, revision, memo)
        self.admit(source, project)
        run.check_budget("converging")
        if self.should_stop():
            raise _Interrupted("shutting down before converging")
        if run.state.attempted_sha != revision.sha:
            self.store.record_attempt(source.name, revision.sha)
            self.notifier.notify_deploying(source.name, revision.sha, run.trigger.value)
        if source.mode is SourceMode.SWARM:  # no drift healing, no gate: agent/swarm.py says why
            return _with_signer(self.apply_swarm(source, run.trigger, revision, project), verified)
        record = self.applied.load(project.name)
        token = self.watcher.quiet_token() if self.watcher is not None else None
        memo.last_look, last_look = None, memo.last_look
        snapshot: ObservedState | None = None
        if record is not None and _is_unmoved(record, run.state, revision):
            snapshot, drift_result = self._look_unmoved(run, project, record, last_look, token)
            if drift_result is not None:
                return drift_result
        result, run.outcome = self.apply(source, run.trigger, revision, project, record, memo, snapshot)
        if result.result is Result.SUCCESS:
            result = self.gate(run, project, result, run.outcome)
        quiet = snapshot is not None and token is not None and run.outcome.report is None
        if quiet and token is not None and result.result is Result.SUCCESS:
            memo.last_look = (token, revision.sha)  # no drift, no change
            if self._look is None or self._look[0] <= token:
                self._look = (token, run.outcome.observed)
        return _with_signer(result, verified)

    def _look_unmoved(
        self,
        run: _Run,
        project: Project,
        record: AppliedRecord,
        last_look: tuple[int, str] | None,
        token: int | None,
    ) -> tuple[ObservedState, ReconcileResult | None]:
        """Git has not moved: what differs now happened behind its back. Drift is decided from
        the snapshot converge then plans from (returned): a change landing between two looks
        would otherwise be healed by the plan whatever the drift policy says. The result is
        the drift policy's, when drift decided the reconcile."""
        assert run.revision is not None
        with tm.step_span(tm.Step.OBSERVE) as span:
            snapshot = _last_look(run, last_look, token, self._look)
            span.set_attribute(tm.OBSERVE_REUSED, snapshot is not None)
            if snapshot is not None:
                run.memo.drift_checks += 1  # nothing happened since a look that found no drift
                return snapshot, None
            snapshot = self._observer.observe()
        drift = self.handle_drift(run.source, run.trigger, run.revision, project, record, run.memo, snapshot)
        return snapshot, drift

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

    def verify_commits(
        self, source: SourceConfig, state: SourceState, revision: Revision
    ) -> VerifiedRevision | None:
        """Check the revision's commit signatures by the source's ``verify:`` (the fetch stage's
        last step). A refusal is a PermanentError: nothing of the revision is loaded or applied.

        In mode ``all`` the base is the deployed revision (``agent/signers.py`` says how a
        force-push is walked).
        """
        if source.verify is None:
            return None
        with self._memo_lock:
            verifier = self._commit_verifiers.get(source.name)
            if verifier is None:
                verifier = self._commit_verifiers[source.name] = source.verify.verifier(self.config.base_dir)
        with tm.step_span("verify-commits") as span:
            span.set_attribute("gitdock.commit.mode", source.verify.mode.value)
            verified = verifier.verify_revision(self.cache, revision, base=state.applied_sha)
            span.set_attribute("gitdock.commit.signer", verified.signer.principal)
            span.set_attribute("gitdock.commit.key", verified.signer.key)
            span.set_attribute("gitdock.commit.format", verified.signer.format.value)
            span.set_attribute("gitdock.commit.checked", verified.checked)
        if revision.sha != state.applied_sha:
            log.info("source %s: %s", source.name, verified.describe())
        return verified

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
        # The checkout is the root no env file, config, secret, include or extends may leave.
        project = load_project(files, project_name=source.project_name, environ=source.environ(), root=root)
        memo.loaded = _Loaded(revision.sha, fingerprint, project)
        return project

    def admit(self, source: SourceConfig, project: Project) -> None:
        """Check the loaded project against the source's deploy policy (the policy step), before
        drift, verify or anything on the host. Raises PolicyRefused naming every violation."""
        policy = self.config.policy(source)
        with tm.step_span(tm.Step.POLICY) as span:
            span.set_attribute(tm.POLICY_LEVEL, policy.level.value)
            violations = check_project(project, policy)
            tm.add_policy_events(span, [(v.path, v.rule.value, v.message) for v in violations])
            if violations:
                raise PolicyRefused(policy.level, violations)

    def handle_drift(
        self,
        source: SourceConfig,
        trigger: Trigger,
        revision: Revision,
        project: Project,
        record: AppliedRecord,
        memo: SourceMemo,
        observed: ObservedState | None = None,
    ) -> ReconcileResult | None:
        """Check drift against the applied record (on ``observed``, else a new look at the
        host); heal or report it by the source's policy.

        Returns the result when drift decided the reconcile, None to converge as usual (no
        drift: converge still runs, so a moved image tag is picked up).
        """
        report = self._check_drift(source, trigger, project, record, memo, observed)
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
        observed: ObservedState | None = None,
    ) -> DriftReport:
        """Compare the host with ``record``; the report is remembered, counted and traced."""
        # Settings only `docker inspect` shows (resources, restart policy) are compared for the
        # containers Docker events name; every DEEP_CHECK_EVERY-th scheduled check inspects all.
        memo.drift_checks += 1
        deep = trigger is Trigger.SCHEDULE and memo.drift_checks % DEEP_CHECK_EVERY == 1
        report = check_drift(
            self.docker,
            record,
            deep=deep,
            previous=memo.drift,
            secret_names=set(source.variables),
            observed=observed,
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
        outcome, actions = heal_project(
            project,
            self.docker,
            report,
            record,
            trust=self._trust(source),
            wait_timeout=self.config.defaults.wait_timeout,
            should_stop=self.should_stop,
            hooks=self._converge_hooks(project.name),
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
        observed: ObservedState | None = None,
    ) -> tuple[ReconcileResult, Outcome]:
        """Converge the host to ``project`` (verify, observe, plan, execute) and judge it;
        ``observed``, when given, is the snapshot the drift check just took.

        The applied record is written when something changed and nothing failed. Stops
        between operations on shutdown or past the reconcile's wall-clock budget.
        """
        deadline = self._deadlines.get(source.name, float("inf"))
        outcome = converge(
            project,
            self.docker,
            trust=self._trust(source),
            wait_timeout=self.config.defaults.wait_timeout,
            should_stop=lambda: self.should_stop() or time.monotonic() > deadline,
            hooks=self._converge_hooks(project.name),
            revision=revision.sha,
            observed=observed,
            look=None if observed is not None else self._observer.observe,
        )
        changed = outcome.report is not None or record is None or record.revision != revision.sha
        if changed and outcome.is_ok:
            store_applied(project, self.docker, outcome, self.applied, revision=revision.sha)
            memo.drift = None
            self.metrics.set_drift(project.name, 0)
        if outcome.is_ok:
            self.metrics.set_last_apply(project.name, time.time())
        return judge_outcome(source.name, trigger, revision, outcome), outcome

    def apply_swarm(
        self, source: SourceConfig, trigger: Trigger, revision: Revision, project: Project
    ) -> ReconcileResult:
        """Converge a ``mode: swarm`` source's stack (``agent.swarm``) and judge it; a success is
        recorded healthy, since Swarm's update monitor, not the container gate, judged it."""
        from gitdock.agent.swarm import apply_stack, judge_stack

        root = self.work_root / source.name / source.path
        outcome = apply_stack(
            project,
            [root / f for f in source.files],
            self.docker,
            environ=source.environ(),
            trust=self._trust(source),
            timeout=self.config.defaults.wait_timeout,
        )
        result = judge_stack(source.name, trigger, revision, outcome)
        if result.result is Result.SUCCESS:
            self.store.record_revision(source.name, revision.sha, RevisionStatus.HEALTHY)
            self.metrics.set_last_apply(project.name, time.time())
        return result

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
        waiting = result.reason == Reason.DEPENDENCY_NOT_READY.value
        with self.store.transaction():
            if result.live is not None and result.revision is not None:  # rolled back
                self.store.record_rollback(
                    source.name, result.revision, result.live, result.reason, result.message
                )
            elif result.result is not Result.SKIP or waiting:  # a skip keeps the recorded failure
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
                live=self.store.source(source.name).applied_sha,
                host=self.host,
            )
        memo.last_plan = result.plan
        _log_result(source, result)
        self.notifier.notify(result)

    # -- dependencies, the health gate and rollback -----------------------------------------

    def _dependency_wait(self, run: _Run) -> ReconcileResult | None:
        """A skip naming the first source of ``depends_on`` not healthy at its revision, or None."""
        for name in run.source.depends_on:
            if not self.is_healthy(name):
                state = self.store.source(name)
                why = f"{state.reason}: {state.message}" if state.reason else "not reconciled yet"
                message = shorten(f"waiting for source {name} to be healthy ({why})")
                return run.result(Result.SKIP, Reason.DEPENDENCY_NOT_READY.value, message)
        return None

    def is_healthy(self, name: str) -> bool:
        """Whether source ``name`` runs the revision it fetched and that revision passed its gate."""
        state = self.store.source(name)
        if state.result is not Result.SUCCESS or state.applied_sha is None:
            return False
        if state.fetched_sha not in (None, state.applied_sha):
            return False
        verdict = self.store.revision(name, state.applied_sha)
        return verdict is not None and verdict.status is RevisionStatus.HEALTHY

    def gate(self, run: _Run, project: Project, result: ReconcileResult, outcome: Outcome) -> ReconcileResult:
        """Wait for the containers ``outcome`` started to be ready (the health step); record the
        revision healthy, or failed and roll back (or fail) by the source's policy."""
        source, sha = run.source, result.revision
        assert sha is not None
        judged = self.store.revision(source.name, sha) is not None
        containers = gated_containers(outcome, project.name, judged=judged)
        if not containers and judged:
            return result
        try:
            with self._paused(project.name):
                report = self._wait_ready(source, containers)
        except HealthGateFailed as exc:
            cause = str(exc)
            self.store.record_revision(source.name, sha, RevisionStatus.FAILED, message=shorten(cause))
            return self._after_failed_gate(run, cause)
        self._record_healthy(source, sha, project)
        waited = f"; healthy in {report.seconds:.1f}s" if containers else ""
        return dataclasses.replace(result, message=shorten(result.message + waited))

    def _wait_ready(self, source: SourceConfig, containers: Sequence[str]) -> GateReport:
        """The health step: runtime.health's wait, with the source's settle time and timeout."""
        with tm.step_span("health") as span:
            span.set_attribute("gitdock.containers", len(containers))
            return wait_ready(
                self.docker,
                containers,
                settle=self.config.settle(source),
                timeout=self.config.health_timeout(source),
                should_stop=self.should_stop,
            )

    def _record_healthy(self, source: SourceConfig, sha: str, project: Project) -> None:
        """Record ``sha`` healthy with the images it runs (and their verified digests, if any)."""
        record = self.applied.load(project.name)
        images = revision_images(record, None) if record is not None else {}
        locks = self.store.image_locks(project.name)
        for entry in images.values():
            lock = locks.get(entry["reference"])
            if lock is not None and not entry["pinned"]:
                repository = entry["reference"].partition("@")[0]
                if ":" in repository.rpartition("/")[2]:
                    repository = repository.rsplit(":", 1)[0]
                entry["pinned"] = f"{repository}@{lock.digest}"
        self.store.record_revision(source.name, sha, RevisionStatus.HEALTHY, images=images)

    def _after_failed_gate(self, run: _Run, cause: str) -> ReconcileResult:
        """The failed gate's result: rolled back (or a failed rollback), or failed as it is."""
        source, revision = run.source, run.revision
        assert revision is not None
        good = self.store.last_healthy(source.name, besides=revision.sha)
        if source.rollback is RollbackMode.OFF or good is None:
            why = "rollback is off" if good is not None else "no healthy revision to roll back to"
            message = shorten(f"revision {ref_label(revision)} failed its health gate ({why}): {cause}")
            return run.result(Result.FAILURE, Reason.HEALTH_FAILED.value, message)
        return self.rollback(run, good, cause)

    def rollback(self, run: _Run, good: RevisionRecord, cause: str) -> ReconcileResult:
        """Re-apply ``good`` (its files at that commit, the images it ran) in a ``rollback`` trace.

        RolledBack when it is healthy again, RollbackFailed (Stalled) otherwise; never raises
        for a gitdock error, and tries nothing else afterwards.
        """
        source, failed = run.source, run.sha or ""
        with tm.rollback_span(source.project_name, failed, good.sha) as span:
            try:
                self._reapply(run, good)
            except GitdockError as exc:
                self.metrics.count_rollback(source.project_name, "failure")
                why = exc.render() if isinstance(exc, SpecError) else str(exc)
                tm.fail_span(span, why, error_type=Reason.ROLLBACK_FAILED.value)
                message = (
                    f"rollback from {failed[:12]} to {good.sha[:12]} failed: {why}; the failure: {cause}"
                )
                return run.result(Result.FAILURE, Reason.ROLLBACK_FAILED.value, shorten(message))
        self.metrics.count_rollback(source.project_name, "success")
        message = shorten(rollback_message(failed, good.sha, cause))
        return dataclasses.replace(
            run.result(Result.FAILURE, Reason.ROLLED_BACK.value, message), live=good.sha
        )

    def _reapply(self, run: _Run, good: RevisionRecord) -> None:
        """Converge to ``good`` and gate it. Raises RollbackFailed (or another gitdock error)."""
        source, memo = run.source, run.memo
        assert run.revision is not None
        revision = dataclasses.replace(run.revision, sha=good.sha, message="")
        with tm.step_span(tm.Step.LOAD):
            project = self.load(source, revision, memo)
        self.admit(source, project)
        pins = pinned_images(good.images, self._is_local_image)
        with self._paused(project.name):
            outcome = converge(
                project,
                self.docker,
                pinned=pins,
                wait_timeout=self.config.defaults.wait_timeout,
                should_stop=self.should_stop,
                hooks=tm.converge_hooks(metrics=self.metrics),
                revision=good.sha,
            )
            if not outcome.is_ok:
                failed = outcome.report.failed if outcome.report is not None else []
                raise RollbackFailed(
                    "; ".join(f"{r.op.resource}: {r.error}" for r in failed) or "interrupted"
                )
            store_applied(project, self.docker, outcome, self.applied, revision=good.sha)
            try:
                self._wait_ready(source, gated_containers(outcome, project.name, judged=False))
            except HealthGateFailed as exc:
                raise RollbackFailed(f"revision {good.sha[:12]} is not healthy either: {exc}") from exc
        self.store.record_revision(source.name, good.sha, RevisionStatus.HEALTHY)
        memo.drift = None

    def rollback_target(self, name: str, revision: str | None) -> RevisionRecord:
        """The healthy revision a rollback by hand goes to: ``revision`` (a sha or its prefix), or
        the last healthy one besides the live one. Raises UnknownRevision."""
        live = self.store.source(name).applied_sha
        healthy = [r for r in self.store.revisions(name) if r.status is RevisionStatus.HEALTHY]
        if revision is not None:
            found = [r for r in healthy if r.sha.startswith(revision.lower())]
        else:
            found = [r for r in healthy if r.sha != live]
        if not found or (revision is not None and len(found) > 1) or len(revision or "x" * 4) < 4:
            what = f"revision {revision}" if revision else "an earlier revision"
            raise UnknownRevision(f"source {name}: {what} is not one that passed its health gate here")
        return found[0]

    def rollback_by_hand(self, source: SourceConfig, revision: str | None) -> ReconcileResult:
        """``gitdock rollback``: re-apply a healthy revision as one ``SYNC`` trace; the fetched
        commit is recorded failed, so polls stay on it until a new commit arrives."""
        started = time.monotonic()
        run = _Run(source, Trigger.ROLLBACK, self.store.source(source.name), self.memo(source.name))
        with tm.sync_span(
            source.project_name, repository_url=source.url, ref=source.ref, metrics=self.metrics
        ) as sync:
            sync.span.set_attribute("gitdock.trigger", Trigger.ROLLBACK.value)
            try:
                run.revision = self.fetch(source, run.state, run.memo)
                good = self.rollback_target(source.name, revision)
                result = self.rollback(run, good, "requested by hand")
            except Exception as exc:  # sorted by kind in _result_of, as in a reconcile
                result = self._result_of(run, exc)
            sync.set_result(result.result if result.reason != Reason.ROLLED_BACK.value else Result.SUCCESS)
        result = result.with_duration(time.monotonic() - started)
        self.record(source, run.state, run.memo, result, None)
        return result

    def _is_local_image(self, image_id: str) -> bool:
        """Whether the image with id ``image_id`` is still on this host."""
        try:
            self.docker.inspect_image(image_id)
        except DockerError:  # NotFound, or an id Docker does not take: not usable as a pin
            return False
        return True

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
        if isinstance(exc, DockerUnavailable) and not isinstance(exc, DockerBusy):
            self._docker_status(False)  # a busy engine answered the connection: it is up
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

    def _converge_hooks(self, project: str) -> ConvergeHooks:
        """Converge's trace hooks, with the event watcher muted for ``project`` around the
        execute step only: an empty plan mutes nothing, so a change made while gitdock looked
        (a ``docker stop``'s die after its kill) still reaches the drift check."""
        hooks = tm.converge_hooks(metrics=self.metrics)

        @contextlib.contextmanager
        def step(name: str) -> Iterator[None]:
            muted = self._paused(project) if name == "execute" else contextlib.nullcontext()
            with hooks.step(name), muted:
                yield

        return dataclasses.replace(hooks, step=step)

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


class _SharedObserve:
    """``observe(docker)`` shared by the reconciles of one engine; thread-safe.

    A caller joins the look queued to start when the running one ends, never the running one
    (it may have listed before the caller's change), as ``GitCache.fetch`` does: the snapshot
    a caller gets was taken after it asked, and N reconciles looking at once cost at most two
    snapshots, not N (50 sources starting at once on a 1,000-container host held 50).
    """

    def __init__(self, docker: DockerClient) -> None:
        self._docker = docker
        self._lock = threading.Lock()
        self._running: _Flight | None = None
        self._queued: _Flight | None = None

    def observe(self) -> ObservedState:
        """A snapshot taken after this call; raises what ``observe`` raised."""
        with self._lock:
            start = None
            if self._running is None:
                flight = start = self._running = _Flight()
            else:
                flight = self._queued = self._queued or _Flight()
        if start is not None:
            self._start(start)
        flight.done.wait()
        if flight.error is not None:
            raise flight.error
        assert flight.snapshot is not None
        return flight.snapshot

    def _start(self, flight: _Flight) -> None:
        threading.Thread(target=self._run, args=(flight,), name="gitdock-look", daemon=True).start()

    def _run(self, flight: _Flight) -> None:
        try:
            flight.snapshot = observe(self._docker)
        except BaseException as exc:  # re-raised in every caller of this flight
            flight.error = exc
        finally:
            with self._lock:
                nxt, self._queued = self._queued, None
                self._running = nxt
            flight.done.set()
            if nxt is not None:
                self._start(nxt)


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    snapshot: ObservedState | None = None
    error: BaseException | None = None


def _last_look(
    run: _Run,
    last_look: tuple[int, str] | None,
    token: int | None,
    look: tuple[int, ObservedState] | None,
) -> ObservedState | None:
    """The engine's last look (``look``) when it still is the host, else None (observe again).

    It is, when this source's previous poll found no drift and changed nothing, and the events
    watcher has stayed connected and seen no event since that poll's token and the look's
    token were read (``EventWatcher.quiet_token``): a scheduled poll of an unmoved revision
    then makes no Docker call, and its drift check is that nothing happened. Any other
    trigger, and each periodic deep drift check, looks afresh.
    """
    if last_look is None or token is None or run.trigger is not Trigger.SCHEDULE:
        return None
    if (run.memo.drift_checks + 1) % DEEP_CHECK_EVERY == 1:  # the next check is a deep one
        return None
    seen_token, sha = last_look
    if seen_token != token or sha != run.sha or look is None or look[0] != token:
        return None
    return look[1]


def _is_unmoved(record: AppliedRecord, state: SourceState, revision: Revision) -> bool:
    """Whether ``revision`` is the one applied and recorded (git has not moved since)."""
    return record.revision == revision.sha and state.applied_sha == revision.sha


def _with_signer(result: ReconcileResult, verified: VerifiedRevision | None) -> ReconcileResult:
    """A success's message, naming who signed the commit when commits are verified."""
    if verified is None or result.result is not Result.SUCCESS:
        return result
    return dataclasses.replace(result, message=f"{result.message}; {verified.describe()}")


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
