"""The agent's wiring: state store, git cache, Docker client, reconciler, scheduler, watchers.

``Agent`` holds everything a running agent has and answers what the HTTP API asks (status,
readiness, drift, counters); ``server`` serves it. Triggers reach the scheduler from three
places: interval polls, webhooks (debounced per source) and Docker events (drift, debounced
per burst). The events stream only says when to look again: the reconcile decides. A source
that turns healthy wakes the sources that ``depends_on`` it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from gitdock.agent.config import AgentConfig, SourceConfig
from gitdock.agent.git import GitCache
from gitdock.agent.reconcile import Reconciler
from gitdock.agent.results import ConditionType, Reason, ReconcileResult, iso_time, source_conditions
from gitdock.agent.scheduler import Schedule, SourceScheduler, Ticket
from gitdock.agent.state import Result, StateStore, Trigger
from gitdock.agent.telemetry import SpanContext
from gitdock.agent.webhooks import Debouncer
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.drift.detect import DockerEvent
from gitdock.runtime.drift.watch import EventWatcher, check_drift
from gitdock.specs.errors import GitdockError

__all__ = ["SHUTDOWN_GRACE", "Agent", "Counts"]

log = logging.getLogger("gitdock.agent")

MAX_LINKS: Final = 16  # webhook requests one reconcile links to
SHUTDOWN_GRACE: Final = 8.0  # seconds a running reconcile gets after SIGTERM (exit within 10 s)
DOCKER_CHECK_INTERVAL: Final = 15.0


@dataclass(frozen=True)
class Counts:
    """The agent's own counters: reconciles by (project, result), webhooks by (provider, code)."""

    reconciles: dict[tuple[str, str], int]
    webhooks: dict[tuple[str, str], int]


class Agent:
    """Everything a running agent holds: state, git cache, Docker client, scheduler, counters."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.started = datetime.now(UTC)
        self._stop = threading.Event()
        self.store = StateStore(config.state_dir / "state.db")
        self.cache = GitCache(config.state_dir / "git", fetch_timeout=config.defaults.timeout)
        self.docker = DockerClient(config.docker_host, timeout=30.0)
        self.docker_ok: bool | None = None
        self.docker_checked: datetime | None = None
        self.reconciler = Reconciler(
            config,
            self.store,
            self.cache,
            self.docker,
            should_stop=self._stop.is_set,
            on_docker_status=self._set_docker,
        )
        self.scheduler = SourceScheduler(
            [Schedule(s.name, config.interval(s), config.jitter(s)) for s in config.sources],
            self._run,
            on_result=self._count,
        )
        self.debouncer: Debouncer[str, str] = Debouncer(
            config.defaults.debounce, self._webhook_fire, max_delay=max(2.0, config.defaults.debounce)
        )
        self.drift_debouncer: Debouncer[str, str] = Debouncer(0.1, self._drift_fire, max_delay=0.5)
        self._reconciles: dict[tuple[str, str], int] = {}
        self._webhooks: dict[tuple[str, str], int] = {}
        self._counters_lock = threading.Lock()
        self._transitions: dict[tuple[str, ConditionType], tuple[bool, datetime]] = {}
        self._transitions_lock = threading.Lock()
        self._links: dict[str, list[SpanContext]] = {}
        self._rollback_to: dict[str, str | None] = {}  # by hand: the revision asked for
        self._links_lock = threading.Lock()
        # Drift: the events stream tells when to look again (level-based: the reconcile decides).
        self._source_of = {s.project_name: s.name for s in config.sources}
        self.watcher = EventWatcher(
            self.docker,
            list(self._source_of),
            on_event=self._on_docker_event,
            resource_names=self._resource_names,
            on_reconnect=self._on_docker_reconnect,
        )
        self.reconciler.watcher = self.watcher

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.watcher.start()
        self.check_docker()
        self.scheduler.add_job(self.check_docker, DOCKER_CHECK_INTERVAL, "docker-ping")
        self.scheduler.start()

    def stop(self, grace: float = SHUTDOWN_GRACE) -> bool:
        """Stop taking work, let running reconciles stop between operations. True if all finished."""
        self._stop.set()
        self.watcher.stop()
        self.debouncer.close()
        self.drift_debouncer.close()
        finished = self.scheduler.stop(grace)
        if finished:
            self.reconciler.close()
            self.store.close()
            self.docker.close()
        return finished

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def check_docker(self) -> None:
        try:
            self._set_docker(self.docker.ping())
        except GitdockError:
            self._set_docker(False)

    def _set_docker(self, ok: bool) -> None:
        self.docker_ok = ok
        self.docker_checked = datetime.now(UTC)

    # -- reconciles ------------------------------------------------------------------------

    def _run(self, name: str, trigger: Trigger) -> ReconcileResult:
        source = self.config.source(name)
        assert source is not None
        if trigger is Trigger.ROLLBACK:
            with self._links_lock:
                target = self._rollback_to.pop(name, None)
            return self.reconciler.rollback_by_hand(source, target)
        links = self._take_links(name) if trigger is Trigger.WEBHOOK else []
        return self.reconciler.reconcile(source, trigger, links)

    def rollback(self, name: str, revision: str | None) -> Ticket:
        """Roll source ``name`` back to ``revision`` (default: the last healthy one before the
        live one) in its turn. Raises UnknownRevision at once when there is no such revision."""
        self.reconciler.rollback_target(name, revision)
        with self._links_lock:
            self._rollback_to[name] = revision
        return self.scheduler.request(name, Trigger.ROLLBACK)

    def add_link(self, name: str, request: SpanContext) -> None:
        """Remember a webhook request, so the reconcile it triggers links to its span."""
        with self._links_lock:
            pending = self._links.setdefault(name, [])
            pending.append(request)
            del pending[:-MAX_LINKS]  # a burst of pushes is one reconcile; keep the newest

    def _take_links(self, name: str) -> list[SpanContext]:
        with self._links_lock:
            return self._links.pop(name, [])

    def _count(self, result: ReconcileResult) -> None:
        source = self.config.source(result.source)
        project = source.project_name if source else result.source
        with self._counters_lock:
            key = (project, result.result.value)
            self._reconciles[key] = self._reconciles.get(key, 0) + 1
        # The reconcile's duration and result are recorded by its SYNC span (telemetry.sync_span).
        if result.result is Result.SUCCESS and result.reason != Reason.UP_TO_DATE.value:
            self._wake_dependents(result.source)  # an up-to-date poll changed nothing downstream waits on

    def _wake_dependents(self, name: str) -> None:
        """Source ``name`` is healthy: reconcile the sources that wait for it (``depends_on``)."""
        for source in self.config.sources:
            if name in source.depends_on and not self._stop.is_set():
                self.scheduler.request(source.name, Trigger.DEPENDENCY)

    def count_webhook(self, provider: str, status: int) -> None:
        """Count one webhook delivery answered with HTTP ``status``."""
        with self._counters_lock:
            key = (provider, str(status))
            self._webhooks[key] = self._webhooks.get(key, 0) + 1

    def counts(self) -> Counts:
        """A snapshot of the agent's own counters (reconciles by project and result, webhooks)."""
        with self._counters_lock:
            return Counts(dict(self._reconciles), dict(self._webhooks))

    def _on_docker_event(self, event: DockerEvent) -> None:
        name = self._source_of.get(event.project or "")
        if name is not None and not self._stop.is_set():
            # kill, die and stop arrive together: one drift reconcile for the burst.
            self.drift_debouncer.trigger(name, f"{event.type} {event.action} {event.name}")

    def _on_docker_reconnect(self, since: float) -> None:
        log.info("docker events stream is back (since %.0f): checking every source", since)
        for source in self.config.sources:
            self.scheduler.request(source.name, Trigger.DRIFT)

    def _drift_fire(self, name: str, what: str) -> None:
        log.info("source %s: docker event (%s), checking drift", name, what)
        self.scheduler.request(name, Trigger.DRIFT)

    def _resource_names(self) -> dict[str, str]:
        """Docker network and volume names -> project, from the applied records."""
        names: dict[str, str] = {}
        for project in self._source_of:
            record = self.reconciler.applied.load(project)
            if record is not None:
                names.update({n.name: project for n in record.networks})
                names.update({v.name: project for v in record.volumes})
        return names

    def drift(self, source: SourceConfig, *, deep: bool = False) -> dict[str, Any]:
        """The source's drift, checked now against its applied record."""
        record = self.reconciler.applied.load(source.project_name)
        if record is None:
            return {"source": source.name, "project": source.project_name, "applied": False, "items": []}
        report = check_drift(self.docker, record, deep=deep, secret_names=set(source.variables))
        return {"source": source.name, "applied": True, **report.to_dict()}

    def _webhook_fire(self, name: str, sha: str) -> None:
        log.info("source %s: webhook push (%s), reconciling", name, sha[:12] or "-")
        self.scheduler.request(name, Trigger.WEBHOOK)

    # -- status ----------------------------------------------------------------------------

    def _since(self, name: str, kind: ConditionType, status: bool, default: datetime) -> datetime:
        with self._transitions_lock:
            seen = self._transitions.get((name, kind))
            if seen is None or seen[0] != status:
                at = default if seen is None else datetime.now(UTC)
                self._transitions[(name, kind)] = (status, at)
                return at
            return seen[1]

    def status(self, source: SourceConfig) -> dict[str, Any]:
        """The JSON status of one source."""
        state = self.store.source(source.name)
        memo = self.reconciler.memo(source.name)
        running = self.scheduler.is_reconciling(source.name)
        default = state.result_at or self.started
        conditions = source_conditions(
            state, running=running, since=lambda k, s: self._since(source.name, k, s, default)
        )
        retry = self.scheduler.retry_at(source.name)
        return {
            "name": source.name,
            "url": source.display_url,
            "ref": source.ref,
            "path": source.path,
            "files": list(source.files),
            "project": source.project_name,
            "interval": self.config.interval(source),
            "suspended": state.suspended,
            "revision": {
                "fetched": state.fetched_sha,
                "attempted": state.attempted_sha,
                "applied": state.applied_sha,
                "failed": state.failed_sha,
            },
            "lastResult": state.result.value if state.result else None,
            "reason": state.reason,
            "message": state.message,
            "lastResultAt": iso_time(state.result_at),
            "appliedAt": iso_time(state.applied_at),
            "lastCheckedAt": iso_time(memo.last_checked),
            "lastDurationMs": round(memo.last_duration * 1000, 1),
            "retryAt": iso_time(retry),
            "failures": self.scheduler.failures(source.name),
            "conditions": conditions,
        }

    def ready(self) -> tuple[bool, dict[str, Any]]:
        checks = {
            "stateStore": self._store_ok(),
            "scheduler": self.scheduler.is_running,
            "docker": bool(self.docker_ok),
        }
        return all(checks.values()), {
            "ready": all(checks.values()),
            "checks": checks,
            "dockerCheckedAt": iso_time(self.docker_checked),
        }

    def _store_ok(self) -> bool:
        try:
            _ = self.store.schema_version
        except Exception:  # sqlite3.ProgrammingError once closed, or any database error
            return False
        return True
