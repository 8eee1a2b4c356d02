"""The agent's wiring: state store, git cache, Docker client, reconciler, scheduler, watchers.

``Agent`` holds everything a running agent has and answers what the HTTP API asks (status,
readiness, drift, counters); ``server`` serves it. Triggers reach the scheduler from three
places: interval polls, webhooks (debounced per source) and Docker events (drift, debounced
per burst). The events stream only says when to look again: the reconcile decides. A source
that turns healthy wakes the sources that ``depends_on`` it.

Each Docker engine the sources name (their ``target``, else the agent's own) is an ``Engine``:
its client, a reconciler bound to it, its events watcher and its ping. Engines share nothing
that blocks, so an unreachable host fails its own sources' reconciles (a transient error,
retried with backoff) and never delays another host's.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from gitdock.agent.config import AgentConfig, SourceConfig
from gitdock.agent.git import GitCache
from gitdock.agent.memory import give_back, limit_arenas
from gitdock.agent.reconcile import Reconciler
from gitdock.agent.results import ConditionType, Reason, ReconcileResult, iso_time, source_conditions
from gitdock.agent.scheduler import Schedule, SourceScheduler, Ticket
from gitdock.agent.state import Result, StateStore, Trigger
from gitdock.agent.targets import Targets
from gitdock.agent.telemetry import SpanContext
from gitdock.agent.webhooks import Debouncer
from gitdock.runtime.contexts import Endpoint, TargetError
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.drift.detect import DockerEvent
from gitdock.runtime.drift.watch import EventWatcher, check_drift
from gitdock.specs.errors import GitdockError

__all__ = ["SHUTDOWN_GRACE", "Agent", "Counts", "Engine"]

log = logging.getLogger("gitdock.agent")

MAX_LINKS: Final = 16  # webhook requests one reconcile links to
SHUTDOWN_GRACE: Final = 8.0  # seconds a running reconcile gets after SIGTERM (exit within 10 s)
DOCKER_CHECK_INTERVAL: Final = 15.0
# How often the agent hands glibc's free memory back once reconciles have done work (memory.py).
MEMORY_INTERVAL: Final = 30.0
DOCKER_PING_WAIT: Final = 2.0  # at startup: how long the first ping of each engine is waited for


@dataclass(frozen=True)
class Counts:
    """The agent's own counters: reconciles by (project, result), webhooks by (provider, code)."""

    reconciles: dict[tuple[str, str], int]
    webhooks: dict[tuple[str, str], int]


@dataclass
class Engine:
    """One Docker engine the agent drives, and what is bound to it alone."""

    docker: DockerClient
    reconciler: Reconciler
    watcher: EventWatcher
    sources: list[str] = field(default_factory=list)
    ok: bool | None = None  # the last ping or reconcile: reachable?
    checked: datetime | None = None
    checking: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> Endpoint:
        return self.docker.endpoint


class Agent:
    """Everything a running agent holds: state, git cache, engines, scheduler, counters.

    Raises TargetError when a source's target cannot be used (a missing context or TLS file).
    """

    def __init__(self, config: AgentConfig) -> None:
        limit_arenas()  # before the agent's threads start (agent/memory.py)
        self.config = config
        self.started = datetime.now(UTC)
        self._stop = threading.Event()
        self.store = StateStore(config.state_dir / "state.db")
        self.cache = GitCache(config.state_dir / "git", fetch_timeout=config.defaults.timeout)
        parallel = config.defaults.parallel
        self.docker = DockerClient(config.docker_host, timeout=30.0, max_in_flight=parallel)
        self.targets = Targets(self.docker, config.base_dir, os.environ, parallel=parallel)
        self._source_of = {s.project_name: s.name for s in config.sources}
        self.engines: dict[Endpoint, Engine] = {}
        self._engine_of: dict[str, Engine] = {}
        for docker, names in self._group_by_engine().items():
            engine = self._add_engine(docker, names)
            self._engine_of.update((name, engine) for name in names)
        self.reconciler = self.engines[self.docker.endpoint].reconciler  # the agent's own engine
        self.watcher = self.engines[self.docker.endpoint].watcher
        self.scheduler = SourceScheduler(
            [Schedule(s.name, config.interval(s), config.jitter(s)) for s in config.sources],
            self._run,
            on_result=self._count,
        )
        # Leading: a lone push reconciles at once; the pushes of a burst after it, once more.
        self.debouncer: Debouncer[str, str] = Debouncer(
            config.defaults.debounce,
            self._webhook_fire,
            max_delay=max(2.0, config.defaults.debounce),
            leading=True,
        )
        self.drift_debouncer: Debouncer[str, str] = Debouncer(0.1, self._drift_fire, max_delay=0.5)
        self._reconciles: dict[tuple[str, str], int] = {}
        self._webhooks: dict[tuple[str, str], int] = {}
        self._counters_lock = threading.Lock()
        self._worked = self._worked_at_trim = 0  # reconciles that did more than find it up to date
        self._transitions: dict[tuple[str, ConditionType], tuple[bool, datetime]] = {}
        self._transitions_lock = threading.Lock()
        self._links: dict[str, list[SpanContext]] = {}
        self._rollback_to: dict[str, str | None] = {}  # by hand: the revision asked for
        self._links_lock = threading.Lock()

    # -- engines ---------------------------------------------------------------------------

    def _group_by_engine(self) -> dict[DockerClient, list[str]]:
        """Source names by the client of their engine; the agent's own engine comes first."""
        groups: dict[DockerClient, list[str]] = {self.docker: []}
        for source in self.config.sources:
            try:
                client = self.targets.client(source.target)
            except TargetError as exc:
                raise TargetError(f"source {source.name}: target: {exc}") from None
            groups.setdefault(client, []).append(source.name)
        return groups

    def _add_engine(self, docker: DockerClient, names: list[str]) -> Engine:
        """An engine for ``docker``: a reconciler on it and its events watcher (started later)."""
        reconciler = Reconciler(self.config, self.store, self.cache, docker, should_stop=self._stop.is_set)
        projects = [s.project_name for s in self.config.sources if s.name in names]
        # Drift: the events stream tells when to look again (level-based: the reconcile decides).
        watcher = EventWatcher(
            docker, projects, on_event=self._on_docker_event, resource_names=self._resource_names
        )
        engine = self.engines[docker.endpoint] = Engine(docker, reconciler, watcher, names)
        watcher.on_reconnect = lambda since: self._on_docker_reconnect(engine, since)
        reconciler.on_docker_status = lambda ok: self._set_engine(engine, ok)
        reconciler.watcher = watcher
        return engine

    def engine(self, name: str) -> Engine:
        """The engine source ``name`` deploys to."""
        return self._engine_of[name]

    def _used_engines(self) -> list[Engine]:
        used = [e for e in self.engines.values() if e.sources]
        return used or [self.engines[self.docker.endpoint]]

    @property
    def docker_ok(self) -> bool | None:
        """Every engine in use answered its last check (None before the first)."""
        seen = [e.ok for e in self._used_engines()]
        return None if any(ok is None for ok in seen) else all(seen)

    @property
    def docker_checked(self) -> datetime | None:
        times = [e.checked for e in self._used_engines() if e.checked is not None]
        return min(times) if times else None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        for engine in self._used_engines():
            engine.watcher.start()
        self.check_docker(wait=True)
        self.scheduler.add_job(self.check_docker, DOCKER_CHECK_INTERVAL, "docker-ping")
        self.scheduler.add_job(self.tidy_memory, MEMORY_INTERVAL, "memory")
        self.scheduler.start()

    def stop(self, grace: float = SHUTDOWN_GRACE) -> bool:
        """Stop taking work, let running reconciles stop between operations. True if all finished."""
        self._stop.set()
        for engine in self.engines.values():
            engine.watcher.stop()
        self.debouncer.close()
        self.drift_debouncer.close()
        finished = self.scheduler.stop(grace)
        if finished:
            for engine in self.engines.values():
                engine.reconciler.close()
            self.store.close()
            self.targets.close()
        return finished

    def tidy_memory(self) -> bool:
        """Hand glibc's free memory back if a reconcile did work since the last time (an
        up-to-date poll frees little). True if it did."""
        with self._counters_lock:
            if self._worked == self._worked_at_trim:
                return False
            self._worked_at_trim = self._worked
        give_back()
        return True

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def check_docker(self, *, wait: bool = False) -> None:
        """Ping every engine in use, each on its own thread: a dead host's timeout delays no
        other's check. With ``wait``, return once the reachable ones have answered."""
        threads = [
            threading.Thread(target=self._check_engine, args=(e,), name="docker-ping", daemon=True)
            for e in self._used_engines()
        ]
        for thread in threads:
            thread.start()
        if wait:
            for thread in threads:
                thread.join(DOCKER_PING_WAIT)

    def _check_engine(self, engine: Engine) -> None:
        if not engine.checking.acquire(blocking=False):
            return  # the previous check of this engine is still waiting for it
        try:
            self._set_engine(engine, engine.docker.ping())
        except GitdockError:
            self._set_engine(engine, False)
        finally:
            engine.checking.release()

    def _set_engine(self, engine: Engine, ok: bool) -> None:
        engine.ok = ok
        engine.checked = datetime.now(UTC)

    # -- reconciles ------------------------------------------------------------------------

    def _run(self, name: str, trigger: Trigger) -> ReconcileResult:
        source = self.config.source(name)
        assert source is not None
        if trigger is Trigger.ROLLBACK:
            with self._links_lock:
                target = self._rollback_to.pop(name, None)
            return self.engine(name).reconciler.rollback_by_hand(source, target)
        links = self._take_links(name) if trigger is Trigger.WEBHOOK else []
        return self.engine(name).reconciler.reconcile(source, trigger, links)

    def rollback(self, name: str, revision: str | None) -> Ticket:
        """Roll source ``name`` back to ``revision`` (default: the last healthy one before the
        live one) in its turn. Raises UnknownRevision at once when there is no such revision."""
        self.engine(name).reconciler.rollback_target(name, revision)
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
            self._worked += result.reason != Reason.UP_TO_DATE.value
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

    def _on_docker_reconnect(self, engine: Engine, since: float) -> None:
        log.info(
            "docker events stream of %s is back (since %.0f): checking its sources",
            engine.endpoint.name,
            since,
        )
        for name in engine.sources:
            self.scheduler.request(name, Trigger.DRIFT)

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
        docker = self.engine(source.name).docker
        report = check_drift(docker, record, deep=deep, secret_names=set(source.variables))
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
        engine = self.engine(source.name)
        memo = engine.reconciler.memo(source.name)
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
            "target": {
                "host": engine.endpoint.host,
                "context": engine.endpoint.context,
                "reachable": engine.ok,
            },
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
            "docker": any(e.ok for e in self._used_engines()),  # one unreachable host: still useful
        }
        return all(checks.values()), {
            "ready": all(checks.values()),
            "checks": checks,
            "dockerCheckedAt": iso_time(self.docker_checked),
            "engines": {e.endpoint.name: bool(e.ok) for e in self._used_engines()},
        }

    def _store_ok(self) -> bool:
        try:
            _ = self.store.schema_version
        except Exception:  # sqlite3.ProgrammingError once closed, or any database error
            return False
        return True
