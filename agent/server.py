"""The agent process: wiring (``Agent``) and its HTTP API (stdlib ``ThreadingHTTPServer``).

Endpoints:

    GET  /healthz                              the process is alive
    GET  /readyz                               state store open, scheduler running, Docker reachable
    GET  /metrics                              Prometheus text
    GET  /api/v1/sources                       status of every source (Flux-style conditions)
    GET  /api/v1/sources/<name>                status of one source
    GET  /api/v1/sources/<name>/history        recorded reconciles, newest first (?limit=N)
    POST /api/v1/sources/<name>/reconcile      reconcile now (?wait=1: answer with the result)
    POST /api/v1/sources/<name>/suspend        stop reconciling it
    POST /api/v1/sources/<name>/resume         reconcile it again (and once right away)
    POST /hooks/<provider>                     github | gitea | gitlab | generic push webhooks

When an API token is configured, every POST under /api/ needs ``Authorization: Bearer
<token>``. Webhooks authenticate by their signature instead. Error bodies are
``{"error": "what failed: why"}``.
"""

from __future__ import annotations

import hmac
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from opentelemetry.trace import SpanContext

from gitdock.agent import telemetry as tm
from gitdock.agent.config import AgentConfig, SourceConfig
from gitdock.agent.git import GitCache, RefKind, classify_ref
from gitdock.agent.metrics import PROMETHEUS_CONTENT_TYPE, render_prometheus
from gitdock.agent.reconcile import ConditionType, Reconciler, ReconcileResult, source_conditions
from gitdock.agent.scheduler import Schedule, SourceScheduler
from gitdock.agent.state import HistoryEntry, Result, StateStore, Trigger
from gitdock.agent.webhooks import (
    MAX_BODY_BYTES,
    Debouncer,
    IgnoredEvent,
    InvalidWebhook,
    Provider,
    PushEvent,
    matches,
    parse_push,
    verify,
)
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.drift.detect import DockerEvent
from gitdock.runtime.drift.watch import EventWatcher, check_drift
from gitdock.specs.errors import GitdockError

__all__ = ["Agent", "render_metrics", "run_agent"]

log = logging.getLogger("gitdock.agent")

MAX_LINKS: Final = 16  # webhook requests one reconcile links to
SHUTDOWN_GRACE: Final = 8.0  # seconds a running reconcile gets after SIGTERM (exit within 10 s)
DOCKER_CHECK_INTERVAL: Final = 15.0
WAIT_LIMIT: Final = 900.0  # longest ?wait=1 answer


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
        self.counters: dict[tuple[str, str], int] = {}
        self.webhooks: dict[tuple[str, str], int] = {}
        self._counters_lock = threading.Lock()
        self._transitions: dict[tuple[str, ConditionType], tuple[bool, datetime]] = {}
        self._transitions_lock = threading.Lock()
        self._links: dict[str, list[SpanContext]] = {}
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
        links = self._take_links(name) if trigger is Trigger.WEBHOOK else []
        return self.reconciler.reconcile(source, trigger, links)

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
            self.counters[key] = self.counters.get(key, 0) + 1
        # The reconcile's duration and result are recorded by its SYNC span (telemetry.sync_span).

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
            "lastResultAt": _iso(state.result_at),
            "appliedAt": _iso(state.applied_at),
            "lastCheckedAt": _iso(memo.last_checked),
            "lastDurationMs": round(memo.last_duration * 1000, 1),
            "retryAt": _iso(retry),
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
            "dockerCheckedAt": _iso(self.docker_checked),
        }

    def _store_ok(self) -> bool:
        try:
            _ = self.store.schema_version
        except Exception:  # sqlite3.ProgrammingError once closed, or any database error
            return False
        return True


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _history_dict(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": _iso(entry.at),
        "trigger": entry.trigger.value,
        "revision": entry.revision,
        "result": entry.outcome.value,
        "reason": entry.reason,
        "message": entry.message,
        "plan": entry.plan,
        "durationMs": entry.duration_ms,
    }


# --- metrics -------------------------------------------------------------------------------


def render_metrics(agent: Agent) -> str:
    """Prometheus text: the process's instruments (``agent.metrics``) plus the agent's own gauges.

    Until telemetry installs real instruments, the agent's reconcile counter stands in.
    """
    shared = render_prometheus()
    return shared + _own_metrics(agent, with_reconciles=not shared.strip())


def _own_metrics(agent: Agent, *, with_reconciles: bool) -> str:
    lines: list[str] = []
    with agent._counters_lock:
        counters = dict(agent.counters)
        hooks = dict(agent.webhooks)
    if with_reconciles:
        lines += [
            "# HELP gitdock_reconciles_total Reconciles finished, by project and result.",
            "# TYPE gitdock_reconciles_total counter",
        ]
        lines += [
            f'gitdock_reconciles_total{{project="{p}",result="{r}"}} {n}'
            for (p, r), n in sorted(counters.items())
        ]
    lines += [
        "# HELP gitdock_webhooks_total Webhook deliveries, by provider and HTTP status.",
        "# TYPE gitdock_webhooks_total counter",
    ]
    for (provider, status), n in sorted(hooks.items()):
        lines.append(f'gitdock_webhooks_total{{provider="{provider}",code="{status}"}} {n}')
    lines += [
        "# HELP gitdock_source_ready Whether the source's last reconcile applied its revision.",
        "# TYPE gitdock_source_ready gauge",
    ]
    for s in agent.config.sources:
        state = agent.store.source(s.name)
        ready = int(state.result is Result.SUCCESS)
        lines.append(f'gitdock_source_ready{{source="{s.name}"}} {ready}')
    lines += [
        "# HELP gitdock_docker_up Whether Docker answered the last check.",
        "# TYPE gitdock_docker_up gauge",
        f"gitdock_docker_up {int(bool(agent.docker_ok))}",
    ]
    return "\n".join(lines) + "\n"


# --- webhooks ------------------------------------------------------------------------------


def _follows(source: SourceConfig, event: PushEvent) -> bool:
    """Whether a push to `event.ref` moves the ref `source` follows (a pinned SHA never moves)."""
    kind, name = classify_ref(source.ref, source.url)
    if kind is RefKind.COMMIT:
        return False
    if kind is RefKind.BRANCH:
        return event.branch == name
    if kind is RefKind.TAG:
        return event.tag == name
    return name in (event.branch, event.tag)


# --- HTTP ----------------------------------------------------------------------------------


class _HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class AgentHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        super().__init__(agent.config.listen_address, _Handler)


Route = Callable[["_Handler", list[str], dict[str, list[str]]], tuple[HTTPStatus, Any]]


class _Handler(BaseHTTPRequestHandler):
    server: AgentHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "gitdock-agent"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    @property
    def agent(self) -> Agent:
        return self.server.agent

    # -- dispatch --

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        try:
            status, body = self._route(method, parts, query)
        except _HttpError as exc:
            status, body = exc.status, {"error": str(exc)}
        except GitdockError as exc:
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)}
        except Exception as exc:  # a bug: answer 500 instead of dropping the connection
            log.exception("%s %s failed", method, url.path)
            status, body = (
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": f"internal error: {type(exc).__name__}"},
            )
        self._send(status, body)

    def _send(self, status: HTTPStatus, body: Any) -> None:
        if isinstance(body, str):
            data = body.encode()
            ctype = PROMETHEUS_CONTENT_TYPE
        else:
            data = (json.dumps(body, indent=2) + "\n").encode()
            ctype = "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if status is HTTPStatus.UNAUTHORIZED and self.path.startswith("/api/"):
            self.send_header("WWW-Authenticate", 'Bearer realm="gitdock"')
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str, parts: list[str], query: dict[str, list[str]]) -> tuple[HTTPStatus, Any]:
        if method == "GET" and parts == ["healthz"]:
            return HTTPStatus.OK, {"status": "ok"}
        if method == "GET" and parts == ["readyz"]:
            ok, body = self.agent.ready()
            return (HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE), body
        if method == "GET" and parts == ["metrics"]:
            return HTTPStatus.OK, render_metrics(self.agent)
        if len(parts) == 2 and parts[0] == "hooks":
            if method != "POST":
                raise _HttpError(HTTPStatus.METHOD_NOT_ALLOWED, "webhooks: use POST")
            return self._webhook(parts[1])
        if parts[:3] == ["api", "v1", "sources"]:
            return self._api(method, parts[3:], query)
        raise _HttpError(HTTPStatus.NOT_FOUND, f"{self.path.split('?')[0]}: no such endpoint")

    # -- API --

    def _source(self, name: str) -> SourceConfig:
        source = self.agent.config.source(name)
        if source is None:
            raise _HttpError(HTTPStatus.NOT_FOUND, f"source {name!r}: not configured")
        return source

    def _authorise(self) -> None:
        token = self.agent.config.api_token
        if token is None:
            return
        expected = token.read()
        given = self.headers.get("Authorization", "")
        if not (
            given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), expected.encode())
        ):
            raise _HttpError(HTTPStatus.UNAUTHORIZED, "API token missing or wrong")

    def _api(self, method: str, rest: list[str], query: dict[str, list[str]]) -> tuple[HTTPStatus, Any]:
        agent = self.agent
        if method == "GET" and not rest:
            return HTTPStatus.OK, {"sources": [agent.status(s) for s in agent.config.sources]}
        if not rest:
            raise _HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} /api/v1/sources: not allowed")
        source = self._source(rest[0])
        if method == "GET" and len(rest) == 1:
            return HTTPStatus.OK, agent.status(source)
        if method == "GET" and rest[1:] == ["history"]:
            limit = _int(query, "limit", 50)
            return HTTPStatus.OK, {
                "source": source.name,
                "history": [_history_dict(e) for e in agent.store.history(source.name, limit=limit)],
            }
        if method == "GET" and rest[1:] == ["drift"]:
            return HTTPStatus.OK, agent.drift(source, deep=query.get("deep", ["0"])[0] in ("1", "true"))
        if method == "POST" and len(rest) == 2 and rest[1] in ("reconcile", "suspend", "resume"):
            self._authorise()
            self._drain()
            return getattr(self, f"_do_{rest[1]}")(source, query)  # type: ignore[no-any-return]
        raise _HttpError(HTTPStatus.NOT_FOUND, f"{self.path.split('?')[0]}: no such endpoint")

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)

    def _do_reconcile(self, source: SourceConfig, query: dict[str, list[str]]) -> tuple[HTTPStatus, Any]:
        agent = self.agent
        if agent.stopping:
            raise _HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "the agent is shutting down")
        if agent.store.source(source.name).suspended:
            raise _HttpError(HTTPStatus.CONFLICT, f"source {source.name}: suspended; resume it first")
        ticket = agent.scheduler.request(source.name, Trigger.MANUAL)
        if query.get("wait", ["0"])[0] not in ("1", "true", "yes"):
            return HTTPStatus.ACCEPTED, {"source": source.name, "accepted": True, "queued": ticket.queued}
        result = ticket.wait(_int(query, "timeout", int(WAIT_LIMIT)))
        if result is None:
            raise _HttpError(
                HTTPStatus.SERVICE_UNAVAILABLE, f"source {source.name}: reconcile did not finish"
            )
        return HTTPStatus.OK, result.to_dict()

    def _do_suspend(self, source: SourceConfig, query: dict[str, list[str]]) -> tuple[HTTPStatus, Any]:
        self.agent.store.set_suspended(source.name, True)
        log.info("source %s: suspended", source.name)
        return HTTPStatus.OK, self.agent.status(source)

    def _do_resume(self, source: SourceConfig, query: dict[str, list[str]]) -> tuple[HTTPStatus, Any]:
        self.agent.store.set_suspended(source.name, False)
        log.info("source %s: resumed", source.name)
        self.agent.scheduler.request(source.name, Trigger.MANUAL)
        return HTTPStatus.OK, self.agent.status(source)

    # -- webhooks --

    def _webhook(self, provider_name: str) -> tuple[HTTPStatus, Any]:
        # The request's own span continues the sender's traceparent; the reconciles it triggers
        # are new SYNC traces that link back to it.
        with tm.webhook_span(dict(self.headers.items()), route=self.path) as span:
            status, body = self._webhook_inner(provider_name, span.get_span_context())
            span.set_attribute("http.response.status_code", int(status))
        with self.agent._counters_lock:
            key = (
                provider_name if provider_name in Provider._value2member_map_ else "unknown",
                str(status.value),
            )
            self.agent.webhooks[key] = self.agent.webhooks.get(key, 0) + 1
        return status, body

    def _webhook_inner(self, provider_name: str, request: SpanContext) -> tuple[HTTPStatus, Any]:
        try:
            provider = Provider(provider_name)
        except ValueError:
            self.close_connection = True
            return HTTPStatus.NOT_FOUND, {"error": f"webhook provider {provider_name!r}: unknown"}
        hook = self.agent.config.webhooks.get(provider)
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self.close_connection = True
            return HTTPStatus.LENGTH_REQUIRED, {"error": "webhook: Content-Length is required"}
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is never read
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {
                "error": f"webhook: body of {length} bytes is over the {MAX_BODY_BYTES}-byte limit"
            }
        body = self.rfile.read(length)
        if hook is None:
            return HTTPStatus.NOT_FOUND, {"error": f"webhook provider {provider.value}: not configured"}
        headers = {k: v for k, v in self.headers.items()}
        if not verify(provider, headers, body, hook.secret.read().encode(), hook.header):
            log.warning(
                "webhook %s: signature missing or wrong (from %s)", provider.value, self.address_string()
            )
            return HTTPStatus.UNAUTHORIZED, {"error": f"webhook {provider.value}: signature missing or wrong"}
        try:
            event = parse_push(provider, headers, body)
        except InvalidWebhook as exc:
            return HTTPStatus.BAD_REQUEST, {"error": str(exc)}
        if isinstance(event, IgnoredEvent):
            return HTTPStatus.OK, {"ignored": event.reason}
        agent = self.agent
        same_repo = [s for s in agent.config.sources if not event.repo_urls or matches(event, s.url)]
        triggered = [s.name for s in same_repo if not event.ref or _follows(s, event)]
        if event.is_deletion:
            log.info("webhook %s: %s deleted; the next reconcile reports it", provider.value, event.ref)
        for name in triggered:
            agent.add_link(name, request)
            agent.debouncer.trigger(name, event.after_sha)
        if not triggered:
            why = "no source follows this repository" if not same_repo else f"no source follows {event.ref}"
            return HTTPStatus.ACCEPTED, {"triggered": [], "ignored": why}
        return HTTPStatus.ACCEPTED, {"triggered": triggered}


def _int(query: dict[str, list[str]], key: str, default: int) -> int:
    try:
        return max(1, int(query.get(key, [str(default)])[0]))
    except ValueError:
        raise _HttpError(HTTPStatus.BAD_REQUEST, f"?{key}= must be a number") from None


# --- the process ---------------------------------------------------------------------------


def run_agent(config: AgentConfig) -> int:
    """Run until SIGTERM/SIGINT: serve HTTP, reconcile on schedule. Returns the exit code."""
    tm.setup_telemetry(config.telemetry)
    for handler in logging.getLogger().handlers:
        tm.install_log_correlation(handler)
    agent = Agent(config)
    try:
        server = AgentHTTPServer(agent)
    except OSError as exc:
        agent.store.close()
        raise GitdockError(f"listening on {config.listen}: {exc.strerror or exc}") from None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    log.info(
        "gitdock agent listening on http://%s:%s with %d source(s); state in %s",
        host,
        port,
        len(config.sources),
        config.state_dir,
    )
    agent.start()
    while not stop.wait(0.25):
        pass
    started = time.monotonic()
    finished = agent.stop(SHUTDOWN_GRACE)
    server.shutdown()
    server.server_close()
    if not finished:
        log.warning(
            "stopped with a reconcile still running after %.0fs; it resumes on the next start", SHUTDOWN_GRACE
        )
    tm.shutdown_telemetry(timeout=max(0.5, SHUTDOWN_GRACE - (time.monotonic() - started)))
    log.info("stopped in %.1fs", time.monotonic() - started)
    return 0
