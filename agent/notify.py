"""Commit statuses and notifications: the agent's one seam to forges' status APIs and webhooks.

What one reconcile ended with (``event_of``: deploying, healthy, failed, rolled back, ...)
is posted as a commit status to GitHub, Gitea/Forgejo and GitLab, and as JSON to webhook
URLs (``{"text": ...}`` for Slack-compatible receivers, plus gitdock's own fields for the
``json`` format). The request each target gets is pure data (``status_request``,
``webhook_request``); only ``Notifier`` does I/O.

``Notifier.notify`` never blocks the reconcile and never raises: it puts deliveries on a
bounded queue that one background thread works off. When the queue is full the oldest
delivery is dropped and counted (``gitdock_notifications_total{result="dropped"}``). A
delivery is retried with exponential backoff (honouring ``Retry-After``) for a bounded
number of attempts when the receiver cannot be reached, times out, or answers 408, 429 or
5xx; any other 4xx is final. Repeats are not posted again: a commit status only when the
commit's state changes, a webhook only when the outcome says something new.

Errors, translated from httpx here, once, by ``_TRANSPORT_ERRORS`` and ``_status_error``::

    PermanentError
    └── NotifyRejected      the receiver refused the request (4xx): a token or config to fix
    TransientError
    └── NotifyUnavailable   unreachable, timed out, 408, 429 or 5xx: retried with backoff

Secrets: a token is read when a delivery is sent and goes in a header only; a webhook URL
(which often is the secret, as Slack's) is logged as its origin only, and any URL loses its
credentials and query in logs and errors (``redact_url``).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from gitdock.agent.metrics import Metrics, get_metrics
from gitdock.agent.results import Reason, ReconcileResult
from gitdock.agent.state import Result
from gitdock.specs.errors import GitdockError, PermanentError, TransientError

__all__ = [
    "DEFAULT_API_URLS",
    "DESCRIPTION_LIMIT",
    "CommitState",
    "Event",
    "EventKind",
    "Forge",
    "Notifier",
    "NotifyRejected",
    "NotifyUnavailable",
    "Request",
    "SourceTargets",
    "StatusTarget",
    "WebhookFormat",
    "WebhookTarget",
    "event_of",
    "redact_url",
    "retry_delay",
    "status_request",
    "webhook_request",
]

log = logging.getLogger("gitdock.agent.notify")

DESCRIPTION_LIMIT: Final = 140  # GitHub's limit for a status description; the others take it too
TEXT_LIMIT: Final = 1000
GITHUB_API_VERSION: Final = "2022-11-28"
USER_AGENT: Final = "gitdock"
DEFAULT_API_URLS: Final = {"github": "https://api.github.com", "gitlab": "https://gitlab.com"}


class NotifyRejected(PermanentError):
    """The receiver refused the request (a 4xx other than 408 and 429): not retried."""


class NotifyUnavailable(TransientError):
    """The receiver could not be reached, timed out or answered 408, 429 or 5xx: retried."""

    def __init__(self, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # the answer's Retry-After header, if any


class Forge(str, Enum):
    """Whose commit-status API a target speaks."""

    GITHUB = "github"
    GITEA = "gitea"  # also Forgejo
    GITLAB = "gitlab"


class WebhookFormat(str, Enum):
    """``slack``: only ``{"text": ...}``; ``json``: the text plus gitdock's structured fields."""

    SLACK = "slack"
    JSON = "json"


class EventKind(str, Enum):
    """What a reconcile ended with, as a notification says it."""

    DEPLOYING = "deploying"
    HEALTHY = "healthy"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    ERROR = "error"
    DRIFT = "drift"  # drift healed or reported: news for webhooks, not a commit's status


class CommitState(str, Enum):
    """A commit status's state, in GitHub's words (``_FORGE_STATES`` says it per forge)."""

    PENDING = "pending"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"


_STATE_OF: Final = {
    EventKind.DEPLOYING: CommitState.PENDING,
    EventKind.HEALTHY: CommitState.SUCCESS,
    EventKind.FAILED: CommitState.FAILURE,
    EventKind.ROLLED_BACK: CommitState.FAILURE,
    EventKind.ROLLBACK_FAILED: CommitState.FAILURE,
    EventKind.ERROR: CommitState.ERROR,
}

# GitLab has no `error` and calls a deploy in progress `running`; Gitea takes GitHub's words.
_FORGE_STATES: Final = {
    Forge.GITHUB: {s: s.value for s in CommitState},
    Forge.GITEA: {s: s.value for s in CommitState},
    Forge.GITLAB: {
        CommitState.PENDING: "running",
        CommitState.SUCCESS: "success",
        CommitState.FAILURE: "failed",
        CommitState.ERROR: "failed",
    },
}

_VERBS: Final = {
    EventKind.DEPLOYING: "deploying",
    EventKind.HEALTHY: "deployed",
    EventKind.FAILED: "failed",
    EventKind.ROLLED_BACK: "rolled back",
    EventKind.ROLLBACK_FAILED: "failed to roll back",
    EventKind.ERROR: "error",
    EventKind.DRIFT: "drift",
}

_DRIFT_REASONS: Final = {Reason.DRIFT_DETECTED.value, Reason.DRIFT_HEALED.value, Reason.FLAPPING.value}


# --- what is said ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One notification's content; ``revision`` is None when the reconcile never got a commit."""

    source: str
    kind: EventKind
    revision: str | None
    reason: str
    message: str
    trigger: str = ""
    live: str | None = None  # the revision running afterwards, when not ``revision``
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def state(self) -> CommitState | None:
        """The commit status this event posts, or None (drift says nothing about the commit)."""
        return _STATE_OF.get(self.kind)


def event_of(result: ReconcileResult) -> Event | None:
    """The notification a recorded result makes, or None for a skip. Pure."""
    if result.result is Result.SKIP:
        return None
    if result.reason in _DRIFT_REASONS:
        kind = EventKind.DRIFT
    elif result.reason == Reason.ROLLED_BACK.value:
        kind = EventKind.ROLLED_BACK
    elif result.reason == Reason.ROLLBACK_FAILED.value:
        kind = EventKind.ROLLBACK_FAILED
    else:
        kind = {
            Result.SUCCESS: EventKind.HEALTHY,
            Result.FAILURE: EventKind.FAILED,
            Result.ERROR: EventKind.ERROR,
        }[result.result]
    return Event(
        result.source,
        kind,
        result.revision,
        result.reason,
        result.message,
        result.trigger.value,
        result.live,
    )


def deploying_event(source: str, revision: str, trigger: str = "") -> Event:
    """The ``pending`` event of a deploy that starts. Pure."""
    return Event(source, EventKind.DEPLOYING, revision, "Progressing", "deploy started", trigger)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- targets and their requests -------------------------------------------------------------


@dataclass(frozen=True)
class StatusTarget:
    """One forge's commit statuses for one repository. ``token`` is called at send time."""

    forge: Forge
    api_url: str  # GitHub: the API root; Gitea and GitLab: the instance's root
    repo: str  # owner/name (GitLab: the project's full path)
    token: Callable[[], str] = field(repr=False, compare=False)
    context: str = "gitdock"
    target_url: str | None = None

    @property
    def label(self) -> str:
        return f"{self.forge.value} status ({redact_url(self.api_url)} {self.repo})"


@dataclass(frozen=True)
class WebhookTarget:
    """A webhook receiver. ``url`` is called at send time: it may be a secret."""

    url: Callable[[], str] = field(repr=False, compare=False)
    format: WebhookFormat = WebhookFormat.JSON
    name: str = "webhook"  # what logs call it: the URL's origin, or where the secret URL lives

    @property
    def label(self) -> str:
        return self.name


Target = StatusTarget | WebhookTarget


@dataclass(frozen=True)
class SourceTargets:
    """Everything one source notifies, and what its messages say about it."""

    statuses: tuple[StatusTarget, ...] = ()
    webhooks: tuple[WebhookTarget, ...] = ()
    project: str = ""
    ref: str = ""
    repository: str = ""  # the source's URL, without credentials


@dataclass(frozen=True)
class Request:
    """One HTTP request, without its credentials (``auth`` names the header they go in)."""

    method: str
    url: str
    headers: Mapping[str, str]
    json: Mapping[str, Any]
    auth: str | None = None  # the header the token goes in, or None
    auth_scheme: str = ""  # "Bearer ", "token " or "" before the token


def status_request(target: StatusTarget, event: Event) -> Request | None:
    """The commit-status request ``event`` makes for ``target``, or None when it posts none. Pure."""
    state = event.state
    if state is None or event.revision is None:
        return None
    base, sha = target.api_url.rstrip("/"), event.revision
    body: dict[str, Any] = {
        "state": _FORGE_STATES[target.forge][state],
        "description": _cut(_description(event), DESCRIPTION_LIMIT),
    }
    if target.target_url:
        body["target_url"] = target.target_url
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if target.forge is Forge.GITLAB:
        body["name"] = target.context
        url = f"{base}/api/v4/projects/{quote(target.repo, safe='')}/statuses/{sha}"
        return Request("POST", url, headers, body, auth="PRIVATE-TOKEN")
    body["context"] = target.context
    if target.forge is Forge.GITHUB:
        headers |= {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": GITHUB_API_VERSION}
        url = f"{base}/repos/{target.repo}/statuses/{sha}"
        return Request("POST", url, headers, body, auth="Authorization", auth_scheme="Bearer ")
    url = f"{base}/api/v1/repos/{target.repo}/statuses/{sha}"
    return Request("POST", url, headers, body, auth="Authorization", auth_scheme="token ")


def _description(event: Event) -> str:
    """``healthy: applied revision ...``; a rollback's message says what it is already."""
    if event.kind is EventKind.DEPLOYING:
        return f"deploying revision {(event.revision or '')[:12]}"
    if event.kind in (EventKind.ROLLED_BACK, EventKind.ROLLBACK_FAILED) and event.message:
        return event.message
    return f"{event.kind.value}: {event.message}" if event.message else event.kind.value


def webhook_request(target: WebhookTarget, url: str, event: Event, about: SourceTargets) -> Request:
    """The JSON ``event`` posts to a webhook at ``url``. Pure."""
    body: dict[str, Any] = {"text": webhook_text(event, about)}
    if target.format is WebhookFormat.JSON:
        body |= {
            "source": event.source,
            "project": about.project,
            "repository": about.repository,
            "ref": about.ref,
            "event": event.kind.value,
            "state": event.state.value if event.state else None,
            "reason": event.reason,
            "message": event.message,
            "revision": event.revision,
            "live": event.live,
            "trigger": event.trigger,
            "at": event.at.isoformat().replace("+00:00", "Z"),
        }
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    return Request("POST", url, headers, body)


def webhook_text(event: Event, about: SourceTargets) -> str:
    """One line a person reads: ``gitdock: app rolled back main@abcdef012345: ...``. Pure."""
    where = about.ref + "@" if about.ref else ""
    commit = f" {where}{event.revision[:12]}" if event.revision else ""
    message = f": {event.message}" if event.message and event.kind is not EventKind.DEPLOYING else ""
    return _cut(f"gitdock: {event.source} {_VERBS[event.kind]}{commit}{message}", TEXT_LIMIT)


def redact_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` without credentials, query or fragment; with ``keep_path=False`` only its origin
    and ``/…`` (a webhook URL's path is often its secret). Pure."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port else "")
    path = parts.path if keep_path else ("/…" if parts.path not in ("", "/") or parts.query else "")
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def retry_delay(attempt: int, base: float, cap: float, retry_after: str | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: ``base`` doubled per attempt, or the receiver's
    ``Retry-After`` (seconds or an HTTP date), at most ``cap``. Pure but for the clock."""
    delay: float = base * 2.0 ** (attempt - 1)
    if retry_after:
        with contextlib.suppress(ValueError, TypeError, IndexError):
            value = retry_after.strip()
            if value.isdigit():
                delay = float(value)
            else:
                delay = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
    return max(0.0, min(cap, delay))


# --- httpx, translated once -----------------------------------------------------------------

# First match wins. A request that never got an answer may succeed later; a URL httpx cannot
# use will not.
_TRANSPORT_ERRORS: Final[tuple[tuple[type[Exception], type[GitdockError], str], ...]] = (
    (httpx.UnsupportedProtocol, NotifyRejected, "the URL's scheme is not http or https"),
    (httpx.InvalidURL, NotifyRejected, "the URL is not valid"),
    (httpx.TimeoutException, NotifyUnavailable, "timed out"),
    (httpx.HTTPError, NotifyUnavailable, "cannot reach it"),
)


def _status_error(status: int) -> type[GitdockError] | None:
    """The error an HTTP status means: None for 2xx, retried for 408, 429 and 5xx."""
    if 200 <= status < 300:
        return None
    if status in (408, 429) or status >= 500:
        return NotifyUnavailable
    return NotifyRejected


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@contextlib.contextmanager
def _translated(label: str, secrets: Sequence[str]) -> Iterator[None]:
    """httpx's exceptions as gitdock's, by ``_TRANSPORT_ERRORS``; no secret in the message."""
    try:
        yield
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        error, what = next((err, what) for cls, err, what in _TRANSPORT_ERRORS if isinstance(exc, cls))
        detail = _scrub(str(exc), secrets)
        raise error(f"{label}: {what}" + (f": {detail}" if detail else "")) from None


def _answer_detail(response: httpx.Response) -> str:
    """A short reason from the answer: its JSON ``message`` when it has one."""
    detail = ""
    with contextlib.suppress(ValueError, AttributeError):
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            detail = body["message"]
    return _cut(
        f"HTTP {response.status_code} {response.reason_phrase}" + (f": {detail}" if detail else ""), 300
    )


# --- the worker -----------------------------------------------------------------------------


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    target: Target = field(compare=False)
    event: Event = field(compare=False)
    attempt: int = field(default=1, compare=False)


class Notifier:
    """Delivers events to each source's targets from one background thread, with retries.

    ``notify`` and ``notify_deploying`` only queue (at most ``queue_size`` deliveries; the
    oldest is dropped beyond). The thread starts with the first delivery. ``close`` stops it.
    ``transport`` replaces the network, for protocol edge cases in tests only.
    """

    def __init__(
        self,
        targets: Mapping[str, SourceTargets],
        *,
        metrics: Metrics | None = None,
        queue_size: int = 100,
        attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.targets = {name: t for name, t in targets.items() if t.statuses or t.webhooks}
        self.metrics = metrics or get_metrics()
        self.queue_size, self.attempts = queue_size, attempts
        self.backoff, self.max_backoff, self.timeout = backoff, max_backoff, timeout
        self._transport = transport
        self._queue: list[_Delivery] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._closing = False
        self._dropping = False  # the queue overflowed and has not drained to half since
        self._thread: threading.Thread | None = None
        self._last: dict[tuple[str, int], tuple[Any, ...]] = {}  # (source, target) -> last said
        self.counts: dict[str, int] = {"sent": 0, "failed": 0, "dropped": 0}

    # -- the reconcile's side: queue, never block ------------------------------------------

    def notify(self, result: ReconcileResult) -> None:
        """Queue what ``result`` says for its source's targets. Never blocks, never raises."""
        event = event_of(result)
        if event is not None:
            self.notify_event(event)

    def notify_deploying(self, source: str, revision: str, trigger: str = "") -> None:
        """Queue the ``pending`` status of a deploy of ``revision`` that starts now."""
        self.notify_event(deploying_event(source, revision, trigger))

    def notify_event(self, event: Event) -> None:
        about = self.targets.get(event.source)
        if about is None:
            return
        with self._cv:
            if self._closing:
                return
            targets: tuple[Target, ...] = (*about.statuses, *about.webhooks)
            fresh = [t for i, t in enumerate(targets) if not self._is_repeat(event, i, t)]
            for target in fresh:
                self._push(_Delivery(time.monotonic(), next(self._seq), target, event))
            if fresh:
                self._start()
                self._cv.notify()

    def _is_repeat(self, event: Event, index: int, target: Target) -> bool:
        """Whether ``target`` was last told the same: a commit's state, or a webhook's outcome."""
        if isinstance(target, StatusTarget):
            if event.state is None or event.revision is None:
                return True  # nothing to post
            said: tuple[Any, ...] = (event.revision, event.state)
        else:
            said = (event.revision, event.kind, event.reason, event.message)
        key = (event.source, index)
        if self._last.get(key) == said:
            return True
        self._last[key] = said
        return False

    def _push(self, delivery: _Delivery) -> None:
        heapq.heappush(self._queue, delivery)
        if len(self._queue) > self.queue_size:
            oldest = min(range(len(self._queue)), key=lambda i: self._queue[i].seq)
            dropped = self._queue.pop(oldest)
            heapq.heapify(self._queue)
            self._count("dropped")
            if not self._dropping:  # once per episode: a flood of drops must not flood the log
                self._dropping = True
                log.warning(
                    "notification queue full (%d): dropping the oldest, first %s to %s of source %s",
                    self.queue_size,
                    dropped.event.kind.value,
                    dropped.target.label,
                    dropped.event.source,
                )

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="gitdock-notify", daemon=True)
            self._thread.start()

    def _count(self, result: str) -> None:
        self.counts[result] += 1
        self.metrics.count_notification(result)

    def close(self, timeout: float = 1.0) -> None:
        """Send what is due within ``timeout`` seconds, give up pending retries, stop the thread."""
        with self._cv:
            self._closing = True
            self._cv.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def pending(self) -> int:
        """Deliveries queued and not yet sent or given up (for tests and shutdown)."""
        with self._cv:
            return len(self._queue)

    # -- the worker's side -----------------------------------------------------------------

    def _work(self) -> None:
        with httpx.Client(timeout=self.timeout, transport=self._transport, follow_redirects=False) as client:
            while (delivery := self._next()) is not None:
                try:
                    self._deliver(client, delivery)
                except Exception:  # a bug must not end the thread and silence every later delivery
                    log.exception("notification to %s crashed", delivery.target.label)
                    with self._cv:
                        self._count("failed")

    def _next(self) -> _Delivery | None:
        """The next delivery that is due; None once closing and nothing is due."""
        with self._cv:
            while True:
                now = time.monotonic()
                if self._queue and self._queue[0].due <= now:
                    if len(self._queue) <= self.queue_size // 2:
                        self._dropping = False
                    return heapq.heappop(self._queue)
                if self._closing:
                    for given_up in self._queue:
                        self._count("failed")
                        log.warning("%s: shutting down, not retried", given_up.target.label)
                    self._queue.clear()
                    return None
                self._cv.wait(self._queue[0].due - now if self._queue else None)

    def _deliver(self, client: httpx.Client, delivery: _Delivery) -> None:
        target, event = delivery.target, delivery.event
        try:
            self._send(client, target, event)
        except NotifyUnavailable as exc:
            with self._cv:
                if delivery.attempt < self.attempts and not self._closing:
                    delay = retry_delay(delivery.attempt, self.backoff, self.max_backoff, exc.retry_after)
                    log.info("source %s: %s; retrying in %.1fs", event.source, exc, delay)
                    delivery.due, delivery.attempt = time.monotonic() + delay, delivery.attempt + 1
                    self._push(delivery)
                    return
                self._count("failed")
            log.warning("source %s: %s (gave up after %d attempts)", event.source, exc, delivery.attempt)
        except GitdockError as exc:  # refused, or the token cannot be read: a person must act
            with self._cv:
                self._count("failed")
            log.warning("source %s: %s (not retried)", event.source, exc)
        else:
            with self._cv:
                self._count("sent")
            log.debug("source %s: %s sent to %s", event.source, event.kind.value, target.label)

    def _send(self, client: httpx.Client, target: Target, event: Event) -> None:
        """Send one request. Raises NotifyUnavailable, NotifyRejected, or the token's error."""
        secrets: list[str] = []
        if isinstance(target, StatusTarget):
            request = status_request(target, event)
            if request is None:
                return
            token = target.token()
            secrets.append(token)
        else:
            url = target.url()
            secrets.extend(_url_secrets(url))
            request = webhook_request(target, url, event, self.targets[event.source])
            token = ""
        headers = dict(request.headers)
        if request.auth is not None:
            headers[request.auth] = request.auth_scheme + token
        with _translated(target.label, secrets):
            response = client.request(request.method, request.url, headers=headers, json=request.json)
        error = _status_error(response.status_code)
        if error is not None:
            message = f"{target.label}: {_scrub(_answer_detail(response), secrets)}"
            if error is NotifyUnavailable:
                raise NotifyUnavailable(message, response.headers.get("Retry-After"))
            raise error(message)


def _url_secrets(url: str) -> list[str]:
    """The parts of a URL that may be secret: the whole URL, its path, password and query."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    return [
        s for s in (url, parts.password or "", parts.query, parts.path if len(parts.path) > 1 else "") if s
    ]
