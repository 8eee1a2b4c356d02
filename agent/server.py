"""The agent process: its HTTP API (stdlib ``ThreadingHTTPServer``) over ``daemon.Agent``.

Endpoints:

    GET  /healthz                              the process is alive
    GET  /readyz                               state store open, scheduler running, Docker reachable
    GET  /metrics                              Prometheus text
    GET  /api/v1/sources                       status of every source (Flux-style conditions)
    GET  /api/v1/sources/<name>                status of one source
    GET  /api/v1/sources/<name>/history        recorded reconciles, newest first (?limit=N)
    GET  /api/v1/sources/<name>/drift          drift against the applied record (?deep=1)
    POST /api/v1/sources/<name>/reconcile      reconcile now (?wait=1: answer with the result)
    POST /api/v1/sources/<name>/rollback       back to the last healthy revision (?revision=SHA, ?wait=1)
    POST /api/v1/sources/<name>/suspend        stop reconciling it
    POST /api/v1/sources/<name>/resume         reconcile it again (and once right away)
    POST /hooks/<provider>                     github | gitea | gitlab | generic push webhooks

When an API token is configured, every POST under /api/ needs ``Authorization: Bearer
<token>``. Webhooks authenticate by their signature instead. Error bodies are
``{"error": "what failed: why"}``. ``run_agent`` is the process: telemetry, the agent, the
server, and a bounded shutdown on SIGTERM.
"""

from __future__ import annotations

import hmac
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from gitdock.agent import telemetry as tm
from gitdock.agent.config import AgentConfig, SourceConfig
from gitdock.agent.daemon import SHUTDOWN_GRACE, Agent, Counts
from gitdock.agent.git import RefKind, classify_ref
from gitdock.agent.metrics import PROMETHEUS_CONTENT_TYPE, Family, FamilyKind, render_prometheus
from gitdock.agent.reconcile import UnknownRevision
from gitdock.agent.results import iso_time
from gitdock.agent.scheduler import Ticket
from gitdock.agent.sdnotify import Notifier
from gitdock.agent.state import HistoryEntry, Result, Trigger
from gitdock.agent.webhooks import (
    MAX_BODY_BYTES,
    IgnoredEvent,
    InvalidWebhook,
    Provider,
    PushEvent,
    matches,
    parse_push,
    verify,
)
from gitdock.specs.errors import GitdockError

__all__ = ["Agent", "render_metrics", "run_agent"]

log = logging.getLogger("gitdock.agent")

WAIT_LIMIT: Final = 900.0  # longest ?wait=1 answer


def _history_dict(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": iso_time(entry.at),
        "trigger": entry.trigger.value,
        "revision": entry.revision,
        "result": entry.outcome.value,
        "reason": entry.reason,
        "message": entry.message,
        "plan": entry.plan,
        "durationMs": entry.duration_ms,
        "live": entry.live,
    }


# --- metrics -------------------------------------------------------------------------------


def render_metrics(agent: Agent) -> str:
    """Prometheus text: the process's instruments (``agent.metrics``) plus the agent's own gauges.

    Until telemetry installs real instruments, the agent's reconcile counter stands in.
    """
    counts = agent.counts()
    reconciles = Family(
        "gitdock_reconciles_total",
        FamilyKind.COUNTER,
        "Reconciles finished, by project and result.",
        [({"project": p, "result": r}, n) for (p, r), n in sorted(counts.reconciles.items())],
    )
    return render_prometheus(_own_families(agent, counts), stand_in=[reconciles])


def _own_families(agent: Agent, counts: Counts) -> list[Family]:
    ready = [
        ({"source": s.name}, int(agent.store.source(s.name).result is Result.SUCCESS))
        for s in agent.config.sources
    ]
    return [
        Family(
            "gitdock_webhooks_total",
            FamilyKind.COUNTER,
            "Webhook deliveries, by provider and HTTP status.",
            [({"provider": p, "code": c}, n) for (p, c), n in sorted(counts.webhooks.items())],
        ),
        Family(
            "gitdock_source_ready",
            FamilyKind.GAUGE,
            "Whether the source's last reconcile applied its revision.",
            ready,
        ),
        Family(
            "gitdock_docker_up",
            FamilyKind.GAUGE,
            "Whether Docker answered the last check.",
            [({}, int(bool(agent.docker_ok)))],
        ),
    ]


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
        if method == "POST" and len(rest) == 2 and rest[1] in ("reconcile", "rollback", "suspend", "resume"):
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
        return _answer(source, agent.scheduler.request(source.name, Trigger.MANUAL), "reconcile", query)

    def _do_rollback(self, source: SourceConfig, query: dict[str, list[str]]) -> tuple[HTTPStatus, Any]:
        if self.agent.stopping:
            raise _HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "the agent is shutting down")
        try:
            ticket = self.agent.rollback(source.name, query.get("revision", [None])[0])
        except UnknownRevision as exc:
            raise _HttpError(HTTPStatus.CONFLICT, str(exc)) from None
        return _answer(source, ticket, "rollback", query)

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
        known = provider_name in {p.value for p in Provider}
        self.agent.count_webhook(provider_name if known else "unknown", status.value)
        return status, body

    def _webhook_inner(self, provider_name: str, request: tm.SpanContext) -> tuple[HTTPStatus, Any]:
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


def _answer(
    source: SourceConfig, ticket: Ticket, what: str, query: dict[str, list[str]]
) -> tuple[HTTPStatus, Any]:
    """202 at once, or with ``?wait=1`` the result once the queued run has finished."""
    if query.get("wait", ["0"])[0] not in ("1", "true", "yes"):
        return HTTPStatus.ACCEPTED, {"source": source.name, "accepted": True, "queued": ticket.queued}
    result = ticket.wait(_int(query, "timeout", int(WAIT_LIMIT)))
    if result is None:
        raise _HttpError(HTTPStatus.SERVICE_UNAVAILABLE, f"source {source.name}: {what} did not finish")
    return HTTPStatus.OK, result.to_dict()


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
    notifier = Notifier()  # systemd's Type=notify; a no-op without $NOTIFY_SOCKET
    notifier.ready(f"serving on {config.listen}, {len(config.sources)} source(s)")
    while not stop.wait(0.25):
        notifier.tick()
    notifier.stopping()
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
