"""Webhook building blocks: signature checks, replay protection, push payload parsing, URL
matching, debouncing.

Pure except for ``Debouncer`` (threads) and ``DeliveryLog`` (a lock; the clock is injected).
No HTTP server lives here: the agent's server reads at most ``MAX_BODY_BYTES`` (413 beyond),
calls ``verify`` with the raw body, then drops a delivery ``DeliveryLog`` has seen (by
``delivery_id``), then ``parse_push`` (which refuses JSON nested deeper than
``MAX_JSON_DEPTH``), then matches ``PushEvent.repo_urls`` against its sources with
``same_repository`` and feeds the match to a ``Debouncer``. A webhook only says *when* to
look again: the agent still fetches and resolves the ref itself, so a forged or stale
``after`` SHA cannot choose what gets deployed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Generic, TypeVar
from urllib.parse import urlsplit

from gitdock.specs.errors import PermanentError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "Debouncer",
    "DeliveryLog",
    "IgnoredEvent",
    "InvalidWebhook",
    "Provider",
    "PushEvent",
    "delivery_id",
    "json_depth_exceeds",
    "matches",
    "parse_push",
    "repository_identity",
    "same_repository",
    "verify",
    "verify_generic",
    "verify_gitea",
    "verify_github",
    "verify_gitlab",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 1024 * 1024  # GitHub caps payloads at 25 MB but pushes are far smaller
ZERO_SHA: Final = "0" * 40
MAX_JSON_DEPTH: Final = 64  # a push payload is 4 or 5 levels deep

GITHUB_SIGNATURE_HEADER: Final = "X-Hub-Signature-256"
GITEA_SIGNATURE_HEADERS: Final = ("X-Gitea-Signature", "X-Forgejo-Signature", "X-Gogs-Signature")
GITLAB_TOKEN_HEADER: Final = "X-Gitlab-Token"  # noqa: S105 - a header name, not a secret
GENERIC_SIGNATURE_HEADER: Final = "X-Gitdock-Signature"
GENERIC_DELIVERY_HEADER: Final = "X-Gitdock-Delivery"


class Provider(str, Enum):
    """Which forge sent the webhook; decides the signature header and the payload shape."""

    GITHUB = "github"
    GITEA = "gitea"  # also Forgejo and Gogs
    GITLAB = "gitlab"
    GENERIC = "generic"


class InvalidWebhook(PermanentError):
    """The body is not a payload this provider sends (bad JSON, missing fields)."""


# --- signatures ----------------------------------------------------------------------------


def _hmac_hex(body: bytes, secret: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.strip().lower().encode(), expected.encode())


def verify_github(body: bytes, header_value: str | None, secret: bytes) -> bool:
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``. Constant-time."""
    if not header_value or not secret or not header_value.startswith("sha256="):
        return False
    return _equal(header_value[len("sha256=") :], _hmac_hex(body, secret))


def verify_gitea(body: bytes, header_value: str | None, secret: bytes) -> bool:
    """``X-Gitea-Signature`` / ``X-Forgejo-Signature``: hex HMAC-SHA256 of the body, no prefix."""
    if not header_value or not secret:
        return False
    return _equal(header_value, _hmac_hex(body, secret))


def verify_gitlab(body: bytes, header_value: str | None, secret: bytes) -> bool:
    """``X-Gitlab-Token`` equals the shared token (GitLab signs nothing; the body is unused)."""
    del body
    if not header_value or not secret:
        return False
    return hmac.compare_digest(header_value.encode(), secret)


def verify_generic(body: bytes, header_value: str | None, secret: bytes) -> bool:
    """Hex HMAC-SHA256 of the body, with or without a ``sha256=`` prefix."""
    if not header_value or not secret:
        return False
    value = header_value.strip()
    if value.lower().startswith("sha256="):
        value = value[len("sha256=") :]
    return _equal(value, _hmac_hex(body, secret))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def verify(
    provider: Provider, headers: Mapping[str, str], body: bytes, secret: bytes, header_name: str | None = None
) -> bool:
    """Check the request's signature or token the way `provider` sends it.

    `header_name` overrides the header for the generic provider. Headers match
    case-insensitively. An empty secret never verifies.
    """
    if provider is Provider.GITHUB:
        return verify_github(body, _header(headers, GITHUB_SIGNATURE_HEADER), secret)
    if provider is Provider.GITEA:
        value = next((v for h in GITEA_SIGNATURE_HEADERS if (v := _header(headers, h))), None)
        return verify_gitea(body, value, secret)
    if provider is Provider.GITLAB:
        return verify_gitlab(body, _header(headers, GITLAB_TOKEN_HEADER), secret)
    return verify_generic(body, _header(headers, header_name or GENERIC_SIGNATURE_HEADER), secret)


# --- replays ------------------------------------------------------------------------------

_DELIVERY_HEADERS: Final = {
    Provider.GITHUB: ("X-GitHub-Delivery",),
    Provider.GITEA: ("X-Gitea-Delivery", "X-Forgejo-Delivery", "X-Gogs-Delivery"),
    Provider.GITLAB: ("X-Gitlab-Event-UUID", "Idempotency-Key"),
    Provider.GENERIC: (GENERIC_DELIVERY_HEADER,),
}
MAX_DELIVERY_ID: Final = 200  # longer IDs are kept as their digest


def delivery_id(
    provider: Provider, headers: Mapping[str, str], body: bytes, header_name: str | None = None
) -> str | None:
    """The key a repeated delivery shares with the first: the forge's delivery header.

    `header_name` replaces the generic provider's header. A generic delivery without one is
    keyed by its body's digest, unless the body is empty (a bare "look again now", never a
    replay). Keys are prefixed with the provider; None: nothing to key on.
    """
    names = (header_name,) if provider is Provider.GENERIC and header_name else _DELIVERY_HEADERS[provider]
    value = next((v.strip() for h in names if (v := _header(headers, h)) and v.strip()), None)
    if value is None:
        if provider is not Provider.GENERIC or not body.strip():
            return None
        value = "sha256:" + hashlib.sha256(body).hexdigest()
    elif len(value) > MAX_DELIVERY_ID or not value.isprintable():
        value = "sha256:" + hashlib.sha256(value.encode(errors="replace")).hexdigest()
    return f"{provider.value}:{value}"


class DeliveryLog:
    """The delivery keys seen lately: at most `size`, each forgotten `ttl` seconds after it came.

    ``first(key)`` records `key` and says whether it is new. Thread-safe; `clock` is
    injected (``time.time`` by default, so ``entries``/``restore`` survive a restart).
    """

    def __init__(
        self, size: int = 10_000, ttl: float = 3600.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()  # key -> when, oldest first
        self._lock = threading.Lock()

    def first(self, key: str) -> bool:
        """Record `key`; True if it was not seen within the TTL (the delivery should count)."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            if key in self._seen:
                return False
            self._seen[key] = now
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)
            return True

    def _expire(self, now: float) -> None:
        while self._seen:
            key, at = next(iter(self._seen.items()))
            if now - at < self.ttl:
                return
            del self._seen[key]

    def entries(self) -> list[tuple[str, float]]:
        """(key, when) of every live entry, oldest first: what ``restore`` takes back."""
        with self._lock:
            self._expire(self._clock())
            return list(self._seen.items())

    def restore(self, entries: Iterable[tuple[str, float]]) -> None:
        """Take back ``entries`` (a previous process's), skipping the expired ones."""
        now = self._clock()
        for key, at in sorted(entries, key=lambda e: e[1]):
            with self._lock:
                if now - at < self.ttl and key not in self._seen:
                    self._seen[key] = at
                    while len(self._seen) > self.size:
                        self._seen.popitem(last=False)


# --- payloads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushEvent:
    """A push: the ref that moved, its new SHA and every URL the repository is known by.

    Empty `repo_urls` (generic hooks without a repository) means "unknown repository": the
    server should trigger the sources bound to that hook. `after_sha` is a hint only.
    """

    ref: str
    after_sha: str
    repo_urls: frozenset[str]

    @property
    def is_deletion(self) -> bool:
        return self.after_sha == ZERO_SHA

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None

    @property
    def tag(self) -> str | None:
        return self.ref.removeprefix("refs/tags/") if self.ref.startswith("refs/tags/") else None


@dataclass(frozen=True)
class IgnoredEvent:
    """A valid delivery that is not a push (GitHub ``ping``, issues, ...): answer 200, do nothing."""

    event: str
    reason: str


_EVENT_HEADERS: Final = {
    Provider.GITHUB: ("X-GitHub-Event",),
    Provider.GITEA: ("X-Gitea-Event", "X-Forgejo-Event", "X-Gogs-Event"),
    Provider.GITLAB: ("X-Gitlab-Event",),
    Provider.GENERIC: (),
}
_PUSH_EVENTS: Final = {
    Provider.GITHUB: {"push"},
    Provider.GITEA: {"push"},
    Provider.GITLAB: {"Push Hook", "Tag Push Hook", "System Hook"},
}
_URL_FIELDS: Final = (
    "clone_url",
    "ssh_url",
    "git_url",
    "html_url",
    "url",
    "git_http_url",
    "git_ssh_url",
    "web_url",
)


def _urls(obj: Any) -> set[str]:
    if isinstance(obj, str):
        return {obj} if obj else set()
    if not isinstance(obj, Mapping):
        return set()
    return {v for k in _URL_FIELDS if isinstance(v := obj.get(k), str) and v and "://api." not in v}


_JSON_TOKEN: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')  # a string, or a bracket


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether the JSON text nests arrays and objects deeper than `limit` (brackets inside
    strings do not count). Stops at the first bracket over the limit; does not validate."""
    depth = 0
    for token in _JSON_TOKEN.finditer(body):
        first = token.group()[:1]
        if first in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif first in (b"]", b"}"):
            depth -= 1
    return False


def parse_push(provider: Provider, headers: Mapping[str, str], body: bytes) -> PushEvent | IgnoredEvent:
    """Parse a verified delivery. Non-push events give IgnoredEvent; malformed pushes raise InvalidWebhook.

    Call only after ``verify``: nothing here authenticates the sender.
    """
    event = ""
    names = _EVENT_HEADERS[provider]
    if names:
        event = next((v for h in names if (v := _header(headers, h))), "")
        if event not in _PUSH_EVENTS[provider]:
            return IgnoredEvent(
                event or "(none)", f"{provider.value} event {event or '(none)'!r} is not a push"
            )
    if provider is Provider.GENERIC and not body.strip():
        return PushEvent("", "", frozenset())
    if json_depth_exceeds(body, MAX_JSON_DEPTH):
        raise InvalidWebhook(
            f"{provider.value} webhook: JSON nested too deeply (over {MAX_JSON_DEPTH} levels)"
        )
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidWebhook(f"{provider.value} webhook: body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(payload, dict):
        raise InvalidWebhook(f"{provider.value} webhook: body is not a JSON object")
    if provider is Provider.GITLAB and payload.get("object_kind") not in ("push", "tag_push"):
        kind = str(payload.get("object_kind"))
        return IgnoredEvent(event, f"gitlab {event!r} with object_kind {kind!r} is not a push")
    ref = payload.get("ref", "")
    after = payload.get("after", payload.get("sha", ""))
    if not isinstance(ref, str) or not isinstance(after, str):
        raise InvalidWebhook(f"{provider.value} webhook: 'ref' and 'after' must be strings")
    if provider is not Provider.GENERIC and not ref:
        raise InvalidWebhook(f"{provider.value} webhook: push without 'ref'")
    if after and not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", after):
        raise InvalidWebhook(f"{provider.value} webhook: 'after' is not a commit SHA: {after[:80]!r}")
    urls = _urls(payload.get("repository"))
    if provider is Provider.GITLAB:
        urls |= _urls(payload.get("project"))
    if provider is Provider.GENERIC:
        urls |= _urls(payload.get("repo_url"))
    if provider is not Provider.GENERIC and not urls:
        raise InvalidWebhook(f"{provider.value} webhook: push without a repository URL")
    return PushEvent(ref, after, frozenset(urls))


# --- repository identity -------------------------------------------------------------------

_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>(?!//).+)$")


def repository_identity(url: str) -> str:
    """``host/path`` in lower case, without scheme, user, port, ``.git`` or trailing slash.

    Loose on purpose: https, ssh:// and scp-like spellings of one repository compare equal,
    so a push can be matched to a source however either was written. A false match only
    costs one extra fetch.
    """
    text = url.strip()
    if "://" not in text:
        m = _SCP_LIKE.match(text)
        host, path = (m["host"], m["path"]) if m else ("", text)
    else:
        parts = urlsplit(text)
        host, path = parts.hostname or "", parts.path
    path = path.strip("/").lower()
    path = path.removesuffix(".git").rstrip("/")
    path = path.removeprefix("~")  # scp-like home-relative paths some forges print
    return f"{host.lower()}/{path}"


def same_repository(a: str, b: str) -> bool:
    """Whether two clone URLs name the same repository (see ``repository_identity``)."""
    return repository_identity(a) == repository_identity(b)


def matches(event: PushEvent, source_url: str) -> bool:
    """Whether the push concerns the repository of `source_url`."""
    identity = repository_identity(source_url)
    return any(repository_identity(u) == identity for u in event.repo_urls)


# --- debouncing ----------------------------------------------------------------------------

K = TypeVar("K")
V = TypeVar("V")


class Debouncer(Generic[K, V]):
    """Coalesce bursts of triggers per key into one call with the newest value.

    ``trigger(key, value)`` (re)starts the key's quiet `window`; when it elapses without a
    new trigger, ``callback(key, value)`` runs once on a timer thread with the newest value.
    With `max_delay`, a key that keeps being triggered still fires that long after the
    first trigger of its burst. With `leading`, the first trigger of a key that has not
    fired within the last `window` fires at once (no wait for a push that is alone); the
    triggers after it coalesce as above into one more call. Thread-safe; ``close`` cancels
    everything pending and makes later triggers no-ops. Exceptions from the callback are
    logged, never raised.
    """

    def __init__(
        self,
        window: float,
        callback: Callable[[K, V], None],
        max_delay: float | None = None,
        *,
        leading: bool = False,
    ) -> None:
        self.window = window
        self.max_delay = max_delay
        self.leading = leading
        self._callback = callback
        self._lock = threading.Lock()
        self._pending: dict[K, tuple[threading.Timer, V, float, int]] = {}
        self._fired: dict[K, float] = {}  # key -> when it last fired (monotonic), for `leading`
        self._generation = 0
        self._closed = False

    def trigger(self, key: K, value: V) -> None:
        """Schedule `key`; a trigger within the window replaces the value and restarts the wait."""
        with self._lock:
            if self._closed:
                return
            now = time.monotonic()
            first = now
            delay = self.window
            if key in self._pending:
                timer, _, first, _ = self._pending[key]
                timer.cancel()
            elif self.leading and now - self._fired.get(key, -self.window) >= self.window:
                delay = 0.0
            if self.max_delay is not None:
                delay = max(0.0, min(delay, first + self.max_delay - now))
            self._generation += 1
            timer = threading.Timer(delay, self._fire, args=(key, self._generation))
            timer.daemon = True
            self._pending[key] = (timer, value, first, self._generation)
            timer.start()

    def _fire(self, key: K, generation: int) -> None:
        with self._lock:
            entry = self._pending.get(key)
            if entry is None or entry[3] != generation or self._closed:
                return  # superseded by a newer trigger, cancelled, or closed
            del self._pending[key]
            self._fired[key] = time.monotonic()
            value = entry[1]
        try:
            self._callback(key, value)
        except Exception:
            log.exception("debounced callback for %r failed", key)

    def cancel(self, key: K) -> bool:
        """Drop a pending trigger. Returns whether one was pending."""
        with self._lock:
            entry = self._pending.pop(key, None)
        if entry is None:
            return False
        entry[0].cancel()
        return True

    def pending(self) -> set[K]:
        """Keys waiting for their window to elapse."""
        with self._lock:
            return set(self._pending)

    def close(self) -> None:
        """Cancel every pending call; later triggers are ignored. A callback already running finishes."""
        with self._lock:
            self._closed = True
            entries = list(self._pending.values())
            self._pending.clear()
        for timer, *_ in entries:
            timer.cancel()
