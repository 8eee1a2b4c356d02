"""The agent process: its HTTP API (``httpd.BoundedHTTPServer``) over ``daemon.Agent``.

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

When an API token is configured, every request under /api/ needs ``Authorization: Bearer
<token>`` (reads too, unless ``api: {public_reads: true}``); /healthz, /readyz and /metrics
stay open for probes and scrapers. Webhooks authenticate by their signature instead, and a
delivery whose ID was seen in the last hour is acknowledged (200) and triggers nothing.
Bad input is a 4xx naming what is wrong, never a 500: query numbers out of range, a
Content-Length that is not a number, JSON nested too deeply. Error bodies are
``{"error": "what failed: why"}`` and never carry a secret. ``run_agent`` is the process:
telemetry, the agent, the server, and a bounded shutdown on SIGTERM.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from types import FrameType
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from gitdock.agent import telemetry as tm
from gitdock.agent.config import AgentConfig, SourceConfig
from gitdock.agent.daemon import SHUTDOWN_GRACE, Agent, Counts
from gitdock.agent.git import RefKind, classify_ref
from gitdock.agent.httpd import BoundedHTTPServer, Limits, PooledHandler
from gitdock.agent.metrics import PROMETHEUS_CONTENT_TYPE, Family, FamilyKind, render_prometheus
from gitdock.agent.reconcile import UnknownRevision
from gitdock.agent.results import iso_time
from gitdock.agent.scheduler import Ticket
from gitdock.agent.sdnotify import Notifier
from gitdock.agent.state import HistoryEntry, Result, Trigger
from gitdock.agent.targets import display_host
from gitdock.agent.webhooks import (
    MAX_BODY_BYTES,
    DeliveryLog,
    IgnoredEvent,
    InvalidWebhook,
    Provider,
    PushEvent,
    delivery_id,
    matches,
    parse_push,
    verify,
)
from gitdock.specs.errors import GitdockError

__all__ = ["Agent", "render_metrics", "run_agent"]

log = logging.getLogger("gitdock.agent")

WAIT_LIMIT: Final = 900.0  # longest ?wait=1 answer
HISTORY_LIMIT: Final = 1000  # most rows one ?limit= asks for
DELIVERIES_FILE: Final = "webhook-deliveries.json"  # the replay log, kept across a restart
_YES: Final = ("1", "true", "yes")
_NO: Final = ("0", "false", "no")


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
        "host": entry.host,
    }


# --- metrics -------------------------------------------------------------------------------


def render_metrics(agent: Agent) -> str:
    """Prometheus text: the process's instruments (``agent.metrics``) plus the agent's own gauges.

    Until telemetry installs real instruments, the agent's reconcile counter stands in.
    """
    counts = agent.counts()
    hosts = {s.project_name: agent.engine(s.name).reconciler.host for s in agent.config.sources}
    reconciles = Family(
        "gitdock_reconciles_total",
        FamilyKind.COUNTER,
        "Reconciles finished, by project and result.",
        [
            ({"project": p, "host": hosts.get(p, ""), "result": r}, n)
            for (p, r), n in sorted(counts.reconciles.items())
        ],
    )
    return render_prometheus(_own_families(agent, counts), stand_in=[reconciles])


def _own_families(agent: Agent, counts: Counts) -> list[Family]:
    ready = [
        (
            {"source": s.name, "host": agent.engine(s.name).reconciler.host},
            int(agent.store.source(s.name).result is Result.SUCCESS),
        )
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
            "gitdock_engine_wait_seconds_total",
            FamilyKind.COUNTER,
            "Seconds mutating Docker calls waited for a turn on their engine (defaults.parallel).",
            [({"host": display_host(c.endpoint)}, c.waited) for c in agent.targets.clients()],
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


class AgentHTTPServer(BoundedHTTPServer):
    """The agent's API on its listen address, with the replay log webhooks share."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.deliveries = DeliveryLog()
        self._deliveries_file = agent.config.state_dir / DELIVERIES_FILE
        api = agent.config.api
        limits = Limits(read_timeout=api.read_timeout, idle_timeout=api.idle_timeout)
        super().__init__(agent.config.listen_address, _Handler, limits)
        _load_deliveries(self.deliveries, self._deliveries_file)

    def server_close(self) -> None:
        super().server_close()
        _save_deliveries(self.deliveries, self._deliveries_file)


def _load_deliveries(deliveries: DeliveryLog, path: Path) -> None:
    try:
        entries = json.loads(path.read_text())
        deliveries.restore((str(k), float(at)) for k, at in entries)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError) as exc:  # a damaged file costs one replay window
        log.warning("%s: not read (%s); webhook replay protection starts empty", path, exc)


def _save_deliveries(deliveries: DeliveryLog, path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(json.dumps(deliveries.entries()))
        os.replace(temporary, path)
    except OSError as exc:
        log.warning("%s: not written (%s); replayed deliveries count again after the restart", path, exc)


Route = Callable[["_Handler", list[str], dict[str, list[str]]], tuple[HTTPStatus, Any]]


class _Handler(PooledHandler):
    server: AgentHTTPServer  # type: ignore[assignment]  # BaseRequestHandler types it socketserver's
    protocol_version = "HTTP/1.1"
    server_version = "gitdock-agent"
    sys_version = ""
    _body_read = True  # whether the request's body (if any) has been read

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
        # A body this request leaves unread would be taken for the next request: close then.
        self._body_read = self.headers.get("Content-Length", "0").strip() == "0" and not self.headers.get(
            "Transfer-Encoding"
        )
        path = self.path.split("?", 1)[0]
        try:
            status, body = self._route(method, *_split_target(self.path))
        except _HttpError as exc:
            status, body = exc.status, {"error": str(exc)}
        except (ConnectionError, TimeoutError):
            raise  # the client went away or stalled: the server logs one debug line, no answer
        except GitdockError as exc:
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)}
        except Exception as exc:  # a bug: answer 500 instead of dropping the connection
            log.exception("%s %s failed", method, path[:200])
            status, body = (
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": f"internal error: {type(exc).__name__}"},
            )
        if not self._body_read:
            self.close_connection = True
        self._send(status, body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own refusals (a bad request line, too many headers) in JSON as well."""
        del explain
        status = HTTPStatus(code)
        self.close_connection = True
        self._send(status, {"error": (message or status.phrase).rstrip(".")})

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
        raise _HttpError(HTTPStatus.NOT_FOUND, f"{self.path.split('?')[0][:200]}: no such endpoint")

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
        try:
            expected = token.read()
        except GitdockError as exc:
            log.error("API token: %s", exc)
            raise _HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "the agent cannot read its API token") from None
        given = self.headers.get("Authorization", "")
        if not (
            given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), expected.encode())
        ):
            raise _HttpError(HTTPStatus.UNAUTHORIZED, "API token missing or wrong")

    def _api(self, method: str, rest: list[str], query: dict[str, list[str]]) -> tuple[HTTPStatus, Any]:
        agent = self.agent
        if method != "GET" or not agent.config.api.public_reads:
            self._authorise()  # before anything, so no answer tells which sources exist
        if method == "POST":
            self._drain()
        if method == "GET" and not rest:
            return HTTPStatus.OK, {"sources": [agent.status(s) for s in agent.config.sources]}
        if not rest:
            raise _HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} /api/v1/sources: not allowed")
        source = self._source(rest[0])
        if method == "GET" and len(rest) == 1:
            return HTTPStatus.OK, agent.status(source)
        if method == "GET" and rest[1:] == ["history"]:
            limit = _int(query, "limit", 50, HISTORY_LIMIT)
            return HTTPStatus.OK, {
                "source": source.name,
                "history": [_history_dict(e) for e in agent.store.history(source.name, limit=limit)],
            }
        if method == "GET" and rest[1:] == ["drift"]:
            return HTTPStatus.OK, agent.drift(source, deep=_flag(query, "deep"))
        if method == "POST" and len(rest) == 2 and rest[1] in ("reconcile", "rollback", "suspend", "resume"):
            _wait_options(query)  # a bad ?wait= or ?timeout= is refused before anything is queued
            return getattr(self, f"_do_{rest[1]}")(source, query)  # type: ignore[no-any-return]
        raise _HttpError(HTTPStatus.NOT_FOUND, f"{self.path.split('?')[0]}: no such endpoint")

    def _drain(self) -> None:
        """Read and drop a control request's body (none is expected), so the connection can stay."""
        length = self._content_length()
        if length is None:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                raise _HttpError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not a chunked body")
            return
        self._read_body(length)

    def _content_length(self) -> int | None:
        """The request's Content-Length: None if absent, 400 if not a number, 413 over the limit."""
        text = self.headers.get("Content-Length")
        if text is None:
            return None
        if not text.strip().isdigit() or not text.strip().isascii():
            self.close_connection = True  # where this request's body ends is unknown
            raise _HttpError(HTTPStatus.BAD_REQUEST, "Content-Length is not a number")
        length = int(text)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is never read
            raise _HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {length} bytes is over the {MAX_BODY_BYTES}-byte limit",
            )
        return length

    def _read_body(self, length: int) -> bytes:
        body = self.rfile.read(length)
        if len(body) < length:
            raise ConnectionAbortedError(f"the body ended after {len(body)} of {length} bytes")
        self._body_read = True
        return body

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
        try:
            length = self._content_length()
        except _HttpError as exc:
            return exc.status, {"error": f"webhook: {exc}"}
        if length is None:
            self.close_connection = True
            return HTTPStatus.LENGTH_REQUIRED, {"error": "webhook: Content-Length is required"}
        body = self._read_body(length)
        if hook is None:
            return HTTPStatus.NOT_FOUND, {"error": f"webhook provider {provider.value}: not configured"}
        headers = {k: v for k, v in self.headers.items()}
        try:
            secret = hook.secret.read().encode()
        except GitdockError as exc:  # the detail (a path, a variable name) goes to the log only
            log.error("webhook %s: %s", provider.value, exc)
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"webhook {provider.value}: secret unavailable"}
        if not verify(provider, headers, body, secret, hook.header):
            log.warning(
                "webhook %s: signature missing or wrong (from %s)", provider.value, self.address_string()
            )
            return HTTPStatus.UNAUTHORIZED, {"error": f"webhook {provider.value}: signature missing or wrong"}
        key = delivery_id(provider, headers, body, hook.delivery_header)
        if key is not None and not self.server.deliveries.first(key):
            log.info("webhook %s: delivery %s seen before; ignored", provider.value, key[:120])
            return HTTPStatus.OK, {"triggered": [], "ignored": "this delivery was received before"}
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


def _split_target(target: str) -> tuple[list[str], dict[str, list[str]]]:
    """The request target's path segments and query; 400 for one that does not parse."""
    try:
        url = urlsplit(target)
        query = parse_qs(url.query, max_num_fields=32)
    except ValueError as exc:
        raise _HttpError(HTTPStatus.BAD_REQUEST, f"request target does not parse: {exc}") from None
    return [p for p in url.path.split("/") if p], query


def _answer(
    source: SourceConfig, ticket: Ticket, what: str, query: dict[str, list[str]]
) -> tuple[HTTPStatus, Any]:
    """202 at once, or with ``?wait=1`` the result once the queued run has finished."""
    wait, timeout = _wait_options(query)
    if not wait:
        return HTTPStatus.ACCEPTED, {"source": source.name, "accepted": True, "queued": ticket.queued}
    result = ticket.wait(timeout)
    if result is None:
        raise _HttpError(HTTPStatus.SERVICE_UNAVAILABLE, f"source {source.name}: {what} did not finish")
    return HTTPStatus.OK, result.to_dict()


def _wait_options(query: dict[str, list[str]]) -> tuple[bool, int]:
    """``?wait=`` and ``?timeout=`` (seconds, at most WAIT_LIMIT); 400 for bad values."""
    return _flag(query, "wait"), _int(query, "timeout", int(WAIT_LIMIT), int(WAIT_LIMIT))


def _int(query: dict[str, list[str]], key: str, default: int, most: int) -> int:
    """``?key=`` as a whole number from 1 to `most` (absent: `default`); 400 otherwise."""
    text = query.get(key, [str(default)])[-1].strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 12 and 1 <= int(text) <= most):
        raise _HttpError(HTTPStatus.BAD_REQUEST, f"?{key}= must be a whole number from 1 to {most}")
    return int(text)


def _flag(query: dict[str, list[str]], key: str) -> bool:
    """``?key=`` as yes (1, true, yes) or no (0, false, no; absent); 400 otherwise."""
    text = query.get(key, ["0"])[-1].strip().lower()
    if text not in _YES + _NO:
        raise _HttpError(HTTPStatus.BAD_REQUEST, f"?{key}= must be 1 or 0 (true or false)")
    return text in _YES


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
