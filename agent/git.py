"""The git seam: the only module in gitdock that imports pygit2.

``GitCache`` keeps one bare repository per remote URL under a root directory, fetches it
incrementally, resolves a ref to a ``Revision`` and materialises a commit's tree into a
snapshot directory. Every pygit2 failure is translated here, once, by the tables in
its "error translation" section (``_BY_CLASS``, then ``_BY_TEXT`` where libgit2 gives only text):

    PermanentError
    ├── InvalidRemote       the URL or ref in the config cannot be used
    ├── SourceAuthError     the remote refused the credentials, or they cannot be read
    │   └── HostKeyError    the SSH host key is not the one in known_hosts
    ├── RepositoryNotFound  the URL names no repository
    ├── RefNotFound         the branch/tag does not exist (e.g. deleted upstream)
    │   └── CommitNotFound  a pinned commit SHA is not in the repository
    ├── AmbiguousRef        a short name is both a branch and a tag
    └── PathNotFound        the subpath/file is not in the commit
    TransientError
    └── SourceUnavailable   unreachable, timed out, TLS failure, local I/O

Messages name the URL without credentials and never contain a secret.

Timeouts: libgit2's socket connect/read timeouts are process-wide (``configure_timeouts``);
on top of them each fetch runs in its own daemon thread and a caller gives up after
``fetch_timeout`` seconds, so a server that trickles bytes forever cannot hang the agent,
and one URL's hung fetch never blocks another URL.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import itertools
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import pygit2
import pygit2.callbacks as _pygit2_callbacks
from pygit2.enums import CredentialType, FetchPrune, FileMode, SortMode
from pygit2.ffi import C as _C
from pygit2.ffi import ffi as _ffi
from pygit2.utils import StrArray as _StrArray

from gitdock.specs.errors import GitdockError, PermanentError, TransientError

__all__ = [
    "AmbiguousRef",
    "Ancestry",
    "BasicAuth",
    "CommitNotFound",
    "CommitSignature",
    "CommitWalk",
    "GitCache",
    "GitRemote",
    "HostKeyError",
    "InvalidRemote",
    "PathNotFound",
    "RefKind",
    "RefNotFound",
    "RepositoryNotFound",
    "Revision",
    "SecretRef",
    "SourceAuthError",
    "SshKeyAuth",
    "TokenAuth",
    "configure_timeouts",
    "display_url",
    "has_ssh_support",
    "normalise_url",
]

FETCH_REFSPECS: Final = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_SCP_RE = re.compile(r"^(?:(?P<user>[^@/]+)@)?(?P<host>[^:/]+):(?P<path>(?!//).+)$")
_SCHEMES = frozenset({"https", "http", "ssh", "git", "file"})
_DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}


# --- errors --------------------------------------------------------------------------------


class SourceUnavailable(TransientError):
    """A git remote could not be reached."""


class InvalidRemote(PermanentError):
    """The configured URL or ref cannot be used as written."""


class SourceAuthError(PermanentError):
    """The remote refused the credentials, or the configured secret cannot be read."""


class HostKeyError(SourceAuthError):
    """The SSH server's host key is unknown or differs from the one in known_hosts."""


class RepositoryNotFound(PermanentError):
    """The URL does not name a repository the server will serve."""


class RefNotFound(PermanentError):
    """The ref does not exist in the remote (a deleted branch, a typo)."""

    def __init__(self, message: str, ref: str = "", url: str = "") -> None:
        super().__init__(message)
        self.ref = ref
        self.url = url


class CommitNotFound(RefNotFound):
    """A pinned commit SHA is not reachable from any branch or tag of the remote."""


class AmbiguousRef(PermanentError):
    """A short ref name matches both a branch and a tag."""


class PathNotFound(PermanentError):
    """A subpath or file does not exist in the commit (or has the wrong type)."""


# --- configuration inputs ------------------------------------------------------------------


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives: a file path or an environment variable name. Read at fetch time."""

    file: Path | None = None
    env: str | None = None

    def __post_init__(self) -> None:
        if (self.file is None) == (self.env is None):
            raise ValueError("SecretRef needs exactly one of file= or env=")

    def __repr__(self) -> str:
        return f"SecretRef(file={str(self.file)!r})" if self.file else f"SecretRef(env={self.env!r})"

    def read(self) -> str:
        """The secret, without a trailing newline. Raises SourceAuthError if it cannot be read."""
        if self.file is not None:
            try:
                return self.file.read_text().rstrip("\r\n")
            except OSError as exc:
                raise SourceAuthError(f"secret file {self.file}: {exc.strerror or exc}") from None
        assert self.env is not None
        value = os.environ.get(self.env)
        if value is None:
            raise SourceAuthError(f"secret environment variable {self.env} is not set")
        return value


@dataclass(frozen=True, repr=False)
class TokenAuth:
    """An HTTPS token sent as basic auth (username ``x-access-token`` unless configured)."""

    token: SecretRef
    username: str = "x-access-token"

    def __repr__(self) -> str:
        return f"TokenAuth(username={self.username!r}, token=<{self.token!r}>)"


@dataclass(frozen=True, repr=False)
class BasicAuth:
    """HTTPS basic auth with a username and a password read from a secret."""

    username: str
    password: SecretRef

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password=<{self.password!r}>)"


@dataclass(frozen=True, repr=False)
class SshKeyAuth:
    """An SSH private key; the host key is checked against ``known_hosts`` unless opted out.

    ``username`` defaults to the one in the URL, else ``git``. ``known_hosts`` defaults to
    ``~/.ssh/known_hosts``.
    """

    private_key: Path
    passphrase: SecretRef | None = None
    username: str | None = None
    known_hosts: Path | None = None
    insecure_skip_host_key_check: bool = False

    def __repr__(self) -> str:
        return (
            f"SshKeyAuth(private_key={str(self.private_key)!r}, passphrase=<{self.passphrase!r}>, "
            f"username={self.username!r}, known_hosts={self.known_hosts and str(self.known_hosts)!r}, "
            f"insecure_skip_host_key_check={self.insecure_skip_host_key_check})"
        )


Auth = TokenAuth | BasicAuth | SshKeyAuth


class RefKind(str, Enum):
    """What a configured ref names."""

    BRANCH = "branch"
    TAG = "tag"
    COMMIT = "commit"


@dataclass(frozen=True)
class GitRemote:
    """One source's remote: URL, ref (branch, tag, ``refs/heads/x``, ``refs/tags/x`` or a SHA), auth.

    Construction validates the URL and the ref syntax (raises InvalidRemote).
    """

    url: str
    ref: str
    auth: Auth | None = None

    def __post_init__(self) -> None:
        _parse_url(self.url)
        classify_ref(self.ref, self.url)

    @property
    def cache_key(self) -> str:
        """Normalised, credential-free URL: sources with equal keys share one clone."""
        return normalise_url(self.url)


@dataclass(frozen=True)
class Revision:
    """A resolved commit: what a ref pointed at after a fetch."""

    sha: str
    ref: str  # full ref name that was resolved (refs/heads/main, refs/tags/v1) or the SHA
    message: str
    author: str  # "Name <email>"
    time: datetime  # committer time, UTC
    url: str  # display URL (no credentials); with cache_key it locates the clone
    cache_key: str = field(repr=False, default="")

    @property
    def summary(self) -> str:
        """The first line of the commit message."""
        return self.message.split("\n", 1)[0]


@dataclass(frozen=True, repr=False)
class CommitSignature:
    """A commit's armored signature and the exact bytes it signs (the commit minus ``gpgsig``).

    ``signature`` is empty for an unsigned commit.
    """

    sha: str
    signature: bytes
    payload: bytes
    committed_at: datetime  # committer time, UTC (ssh-keygen checks key validity at it, as git does)
    summary: str

    @property
    def is_signed(self) -> bool:
        return bool(self.signature)

    def __repr__(self) -> str:
        return f"CommitSignature(sha={self.sha[:12]!r}, signed={self.is_signed})"


class Ancestry(str, Enum):
    """How a new head relates to the base a walk started from."""

    NO_BASE = "no base"  # nothing deployed yet, or the base is not in the clone: head only
    DESCENDANT = "descendant"  # a fast-forward: the commits since the base
    REWRITTEN = "rewritten"  # a force-push that kept a common ancestor: the commits since it
    UNRELATED = "unrelated"  # a force-push to a history with no common ancestor: head only


@dataclass(frozen=True)
class CommitWalk:
    """The commits reachable from a head and not from its base, newest first (head included).

    ``complete`` is False when the walk stopped at its limit before reaching the base.
    """

    head: str
    shas: tuple[str, ...]
    ancestry: Ancestry
    base: str | None
    complete: bool


# --- URLs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Url:
    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    path: str
    scp: bool


def _parse_url(url: str) -> _Url:
    if "://" not in url:
        m = _SCP_RE.match(url)
        if m is None:
            raise InvalidRemote(
                f"{display_url(url)}: not a git URL (use https://, ssh://, user@host:path or file://)"
            )
        return _Url("ssh", m["user"], None, m["host"].lower(), None, m["path"], True)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise InvalidRemote(f"{display_url(url)}: unsupported scheme {scheme!r}")
    try:
        port = parts.port
    except ValueError:
        raise InvalidRemote(f"{display_url(url)}: invalid port") from None
    if scheme != "file" and not parts.hostname:
        raise InvalidRemote(f"{display_url(url)}: no host")
    if scheme == "file" and not parts.path:
        raise InvalidRemote(f"{display_url(url)}: no path")
    return _Url(
        scheme, parts.username, parts.password, (parts.hostname or "").lower(), port, parts.path, False
    )


def display_url(url: str) -> str:
    """The URL with credentials removed (a username is kept for ssh, where it is not secret)."""
    if "://" not in url:
        return url  # scp-like: user@host:path carries no secret
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return re.sub(r"//[^/@]*@", "//", url)
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port else "")
    if parts.username and parts.scheme.lower() == "ssh":
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def normalise_url(url: str) -> str:
    """Canonical, credential-free form of a git URL, used as the cache key.

    Deliberately conservative: only spellings that are certainly the same repository merge
    (case of scheme/host, default port, userinfo, trailing slash). ``.git`` suffixes and
    scp-like vs ssh:// paths stay distinct, because merging two different repositories
    would mix their refs.
    """
    u = _parse_url(url)
    path = u.path.rstrip("/") or "/"
    if u.scp:
        return f"scp://{u.host}/{path}"
    port = "" if u.port in (None, _DEFAULT_PORTS.get(u.scheme)) else f":{u.port}"
    host = f"[{u.host}]" if ":" in u.host else u.host
    return f"{u.scheme}://{host}{port}{path}"


def classify_ref(ref: str, url: str) -> tuple[RefKind | None, str]:
    """(kind, name). kind None means a short name that may be a branch or a tag."""
    if _SHA_RE.match(ref):
        return RefKind.COMMIT, ref
    for prefix, kind in (("refs/heads/", RefKind.BRANCH), ("refs/tags/", RefKind.TAG)):
        if ref.startswith(prefix):
            name = ref[len(prefix) :]
            if name and pygit2.reference_is_valid_name(ref):
                return kind, name
            raise InvalidRemote(f"{display_url(url)}: invalid ref {ref!r}")
    if ref.startswith("refs/") or not pygit2.reference_is_valid_name(f"refs/heads/{ref}"):
        raise InvalidRemote(
            f"{display_url(url)}: invalid ref {ref!r} (use a branch, a tag or a full commit SHA)"
        )
    return None, ref


# --- SSH host keys -------------------------------------------------------------------------


class HostKeyVerdict(str, Enum):
    """Outcome of looking a host key up in known_hosts."""

    MATCH = "match"
    MISMATCH = "mismatch"  # the host is listed with other keys
    UNKNOWN = "unknown"  # the host is not listed at all
    REVOKED = "revoked"


@dataclass(frozen=True)
class KnownHost:
    """One known_hosts line: host patterns (or a hashed host), key type and key blob."""

    patterns: tuple[str, ...]
    hashed: tuple[bytes, bytes] | None  # (salt, HMAC-SHA1(salt, host))
    key_type: str
    key: bytes
    marker: str | None = None  # "@revoked" or "@cert-authority"


def parse_known_hosts(text: str) -> list[KnownHost]:
    """Parse OpenSSH known_hosts text; malformed lines are skipped as ssh does."""
    entries: list[KnownHost] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        marker = None
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
        if len(fields) < 3:
            continue
        hosts, key_type, blob = fields[0], fields[1], fields[2]
        try:
            key = base64.b64decode(blob, validate=True)
        except ValueError:
            continue
        hashed = None
        patterns: tuple[str, ...] = ()
        if hosts.startswith("|1|"):
            try:
                _, _, salt, digest = hosts.split("|")
                hashed = (base64.b64decode(salt), base64.b64decode(digest))
            except ValueError:
                continue
        else:
            patterns = tuple(p.lower() for p in hosts.split(","))
        entries.append(KnownHost(patterns, hashed, key_type, key, marker))
    return entries


def _glob_match(text: str, pattern: str) -> bool:
    """OpenSSH's host pattern: only ``*`` and ``?`` are special (``[host]:port`` is literal)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text) is not None


def _entry_matches_host(entry: KnownHost, host: str) -> bool:
    if entry.hashed is not None:
        salt, digest = entry.hashed
        return hmac.compare_digest(hmac.new(salt, host.encode(), hashlib.sha1).digest(), digest)
    matched = False
    for pattern in entry.patterns:
        negated = pattern.startswith("!")
        if _glob_match(host, pattern[1:] if negated else pattern):
            if negated:
                return False
            matched = True
    return matched


def check_host_key(entries: list[KnownHost], host: str, port: int, key: bytes) -> HostKeyVerdict:
    """Look `key` (the raw SSH public key blob) up for host:port the way OpenSSH does."""
    name = host.lower() if port == 22 else f"[{host.lower()}]:{port}"
    listed = False
    verdict = HostKeyVerdict.UNKNOWN
    for entry in entries:
        if entry.marker == "@cert-authority" or not _entry_matches_host(entry, name):
            continue
        same = hmac.compare_digest(entry.key, key)
        if entry.marker == "@revoked":
            if same:
                return HostKeyVerdict.REVOKED
            continue
        listed = True
        if same:
            verdict = HostKeyVerdict.MATCH
    if verdict is HostKeyVerdict.MATCH:
        return verdict
    return HostKeyVerdict.MISMATCH if listed else HostKeyVerdict.UNKNOWN


def _hostkey_from_cert(cert: Any) -> bytes | None:
    """The raw host key libgit2 passes for an SSH connection, or None if it is not there.

    pygit2 declares only the head of ``git_cert_hostkey``; the fields after it are read at
    their libgit2 >= 1.4 offsets (x86-64/aarch64 LP64) and cross-checked against the
    SHA-256 and SHA-1 fingerprints libgit2 also fills in, so a layout change fails closed.
    """
    raw = _ffi.cast("unsigned char *", cert)
    kinds = _ffi.cast("int *", cert)[1]
    if not kinds & 8 or not kinds & 4:  # GIT_CERT_SSH_RAW, GIT_CERT_SSH_SHA256
        return None
    sha1 = bytes(_ffi.buffer(raw + 24, 20))
    sha256 = bytes(_ffi.buffer(raw + 44, 32))
    pointer = _ffi.cast("char **", raw + 80)[0]
    length = int(_ffi.cast("size_t *", raw + 88)[0])
    if pointer == _ffi.NULL or not 0 < length < 65536:
        return None
    key = bytes(_ffi.buffer(pointer, length))
    if hashlib.sha256(key).digest() != sha256 or hashlib.sha1(key).digest() != sha1:  # noqa: S324 - layout check
        return None
    return key


def _fingerprint(key: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(key).digest()).decode().rstrip("=")


# --- pygit2 callbacks ----------------------------------------------------------------------


class _Callbacks(pygit2.RemoteCallbacks):
    """Credentials from `auth`, tried once per kind so a rejected secret cannot loop."""

    def __init__(self, remote: GitRemote, url: _Url) -> None:
        super().__init__()
        self.source = remote
        self.parsed_url = url
        self.tried: set[CredentialType] = set()
        self.secrets: list[str] = []
        self.host_key_problem: str | None = None

    def _secret(self, ref: SecretRef) -> str:
        value = ref.read()
        self.secrets.append(value)
        return value

    def credentials(self, url: str, username_from_url: str | None, allowed_types: CredentialType) -> Any:
        auth = self.source.auth
        shown = display_url(self.source.url)
        if auth is None:
            raise SourceAuthError(
                f"fetching {shown}: the remote asks for credentials and none are configured"
            )
        if isinstance(auth, SshKeyAuth):
            user = auth.username or username_from_url or "git"
            if allowed_types & CredentialType.SSH_KEY:
                kind = CredentialType.SSH_KEY
                passphrase = self._secret(auth.passphrase) if auth.passphrase else ""
                if not auth.private_key.is_file():
                    raise SourceAuthError(
                        f"fetching {shown}: SSH private key {auth.private_key} does not exist"
                    )
                pub = auth.private_key.with_name(auth.private_key.name + ".pub")
                cred: Any = pygit2.Keypair(
                    user, str(pub) if pub.is_file() else None, str(auth.private_key), passphrase
                )
            elif allowed_types & CredentialType.USERNAME:
                kind, cred = CredentialType.USERNAME, pygit2.Username(user)
            else:
                raise SourceAuthError(f"fetching {shown}: the server offers no SSH key authentication")
        else:
            if not allowed_types & CredentialType.USERPASS_PLAINTEXT:
                raise SourceAuthError(f"fetching {shown}: the server does not accept a username and password")
            kind = CredentialType.USERPASS_PLAINTEXT
            if isinstance(auth, TokenAuth):
                cred = pygit2.UserPass(auth.username, self._secret(auth.token))
            else:
                cred = pygit2.UserPass(auth.username, self._secret(auth.password))
        if kind in self.tried:
            raise SourceAuthError(f"fetching {shown}: authentication failed (credentials rejected)")
        self.tried.add(kind)
        return cred

    def check_certificate(self, cert: Any, valid: int, host: bytes) -> int:
        """C-level certificate callback: SSH host keys against known_hosts, TLS by libgit2's verdict."""
        try:
            cert_type = _ffi.cast("int *", cert)[0]
            if cert_type != _C.GIT_CERT_HOSTKEY_LIBSSH2:
                return 0 if valid else int(_C.GIT_ECERTIFICATE)
            auth = self.source.auth
            if isinstance(auth, SshKeyAuth) and auth.insecure_skip_host_key_check:
                return 0
            key = _hostkey_from_cert(cert)
            hostname = _ffi.string(host).decode()
            if key is None:
                self.host_key_problem = f"{hostname}: libgit2 gave no raw host key to verify"
                return int(_C.GIT_ECERTIFICATE)
            known_hosts = (auth.known_hosts if isinstance(auth, SshKeyAuth) else None) or Path(
                "~/.ssh/known_hosts"
            ).expanduser()
            try:
                entries = parse_known_hosts(known_hosts.read_text())
            except OSError as exc:
                self.host_key_problem = f"known_hosts {known_hosts}: {exc.strerror or exc}"
                return int(_C.GIT_ECERTIFICATE)
            port = self.parsed_url.port or 22
            verdict = check_host_key(entries, hostname, port, key)
            if verdict is HostKeyVerdict.MATCH:
                return 0
            where = hostname if port == 22 else f"[{hostname}]:{port}"
            self.host_key_problem = {
                HostKeyVerdict.UNKNOWN: f"host key {_fingerprint(key)} of {where} is not in {known_hosts}",
                HostKeyVerdict.MISMATCH: f"host key {_fingerprint(key)} of {where} differs from the one in "
                f"{known_hosts} (possible man-in-the-middle)",
                HostKeyVerdict.REVOKED: f"host key {_fingerprint(key)} of {where} is revoked in "
                f"{known_hosts}",
            }[verdict]
        except Exception as exc:  # a C callback must not raise: fail closed
            self.host_key_problem = f"host key check failed: {exc}"
        return int(_C.GIT_ECERTIFICATE)


def _remote_fetch(remote: Any, refspecs: list[str], callbacks: _Callbacks) -> None:
    """``Remote.fetch`` with prune, but with our own C certificate callback.

    pygit2's own certificate hook hands Python ``None`` for the certificate and accepts any
    SSH host key on pass-through, so the host key could not be checked; this plugs a cffi
    callback that sees the real ``git_cert`` instead.
    """
    c_check = _ffi.callback(
        "git_transport_certificate_check_cb",
        lambda cert, valid, host, _payload: callbacks.check_certificate(cert, valid, host),
    )
    with _pygit2_callbacks.git_fetch_options(callbacks) as payload:
        opts = payload.fetch_options
        opts.prune = FetchPrune.PRUNE
        opts.callbacks.certificate_check = c_check
        with _StrArray(refspecs) as arr:
            err = _C.git_remote_fetch(remote._remote, arr.ptr, opts, _ffi.NULL)
            payload.check_error(err)


def has_ssh_support() -> bool:
    """Whether this pygit2 build can speak ssh:// (libssh2 compiled in)."""
    return bool(pygit2.features & pygit2.enums.Feature.SSH)


def configure_timeouts(connect_seconds: float, read_seconds: float) -> None:
    """Set libgit2's socket connect and read timeouts. Process-wide: libgit2 has no per-call option."""
    pygit2.settings.server_connect_timeout = int(connect_seconds * 1000)
    pygit2.settings.server_timeout = int(read_seconds * 1000)


# --- error translation ---------------------------------------------------------------------
#
# Every failure of a fetch becomes one error of the tree above, here and nowhere else.
# ``_translate`` asks, in this order:
#   1. a gitdock error raised inside a callback (credentials, secrets) passes through as it is;
#   2. a host key the certificate callback refused is a HostKeyError, in the callback's words;
#   3. ``_BY_CLASS``: the classes pygit2 gives libgit2's distinct error codes
#      (GIT_ECERTIFICATE → CertificateError, GIT_EAUTH → AuthError);
#   4. ``_BY_TEXT``, for a pygit2.GitError only: libgit2 reports an HTTP 401/403/404, an SSH
#      key refusal or a missing local repository as the generic GIT_ERROR code, so only its
#      message tells them apart;
#   5. anything else (unreachable, timed out, local I/O) is SourceUnavailable: a retry may fix it.


@dataclass(frozen=True)
class _Kind:
    """What a failure is: the gitdock error, and the words put before libgit2's text."""

    error: type[GitdockError]
    what: str = ""


_BY_CLASS: Final[tuple[tuple[type[Exception], _Kind], ...]] = (
    (pygit2.CertificateError, _Kind(SourceUnavailable, "TLS certificate rejected: ")),
    (pygit2.AuthError, _Kind(SourceAuthError, "authentication failed: ")),
)
_BY_TEXT: Final[tuple[tuple[re.Pattern[str], _Kind], ...]] = (
    (
        re.compile(
            r"authenticat|status code: 40[13]\b|permission denied|publickey|unauthori[sz]ed|forbidden|"
            r"credentials",
            re.IGNORECASE,
        ),
        _Kind(SourceAuthError, "authentication failed: "),
    ),
    (
        re.compile(
            r"status code: 404|repository not found|does not appear to be a git repository|"
            r"could not find repository|failed to resolve path|not a git repository|"
            r"no such file or directory",
            re.IGNORECASE,
        ),
        _Kind(RepositoryNotFound, "repository not found: "),
    ),
)
_UNAVAILABLE: Final = _Kind(SourceUnavailable)


def _scrub(message: str, secrets: list[str]) -> str:
    message = re.sub(r"(\w+://)[^/@\s]*@", r"\1", message)
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


def _classify(exc: BaseException, text: str) -> _Kind:
    """Steps 3 to 5 above: the kind of a pygit2/OS failure whose (scrubbed) message is `text`."""
    for cls, kind in _BY_CLASS:
        if isinstance(exc, cls):
            return kind
    if isinstance(exc, pygit2.GitError):
        for pattern, kind in _BY_TEXT:
            if pattern.search(text):
                return kind
    return _UNAVAILABLE


def _translate(exc: BaseException, remote: GitRemote, callbacks: _Callbacks | None) -> GitdockError:
    """Map a pygit2/OS failure of one fetch to gitdock's tree; scrub secrets from the text."""
    if isinstance(exc, GitdockError):
        return exc
    shown = display_url(remote.url)
    if callbacks and callbacks.host_key_problem:
        return HostKeyError(f"fetching {shown}: {callbacks.host_key_problem}")
    secrets = list(callbacks.secrets) if callbacks else []
    secrets += [s for s in (_parse_url(remote.url).password,) if s]
    text = _scrub(str(exc), secrets).strip()
    kind = _classify(exc, text)
    return kind.error(f"fetching {shown}: {kind.what}{text}")


# --- the cache -----------------------------------------------------------------------------


class _Flight:
    """One fetch of one URL, shared by every caller that joins it."""

    def __init__(self, remote: GitRemote) -> None:
        self.remote = remote
        self.started = threading.Event()
        self.done = threading.Event()
        self.start_time = 0.0
        self.error: GitdockError | None = None


class _Slot:
    """Per-URL state: the bare repository path, the running fetch and the one queued after it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.running: _Flight | None = None
        self.pending: _Flight | None = None


class GitCache:
    """Bare clones under `root`, one per normalised URL, shared by every source on that URL.

    Thread-safe. Concurrent ``fetch`` calls for one URL coalesce: with no fetch running a
    caller starts one; otherwise it joins the single fetch queued to start when the running
    one ends (never the running one, which may have read the refs before the caller's push),
    so a webhook during a fetch is never missed and a burst costs at most two fetches.

    Creating a GitCache sets libgit2's process-wide socket timeouts (``configure_timeouts``).
    """

    def __init__(
        self,
        root: Path,
        *,
        fetch_timeout: float = 300.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.root = root
        self.fetch_timeout = fetch_timeout
        self.root.mkdir(parents=True, exist_ok=True)
        configure_timeouts(connect_timeout, read_timeout)
        self._slots: dict[str, _Slot] = {}
        self._slots_lock = threading.Lock()
        self._threads = itertools.count(1)
        self._count_lock = threading.Lock()
        self.fetch_count = 0  # network fetches actually run (tests prove coalescing with it)

    # -- public API --

    def fetch(self, remote: GitRemote) -> Revision:
        """Fetch the remote (incrementally) and resolve its ref to a commit.

        A full SHA already in the cache is returned without a network round trip: it cannot
        change. Raises RefNotFound/CommitNotFound/AmbiguousRef, SourceAuthError/HostKeyError,
        RepositoryNotFound, or SourceUnavailable (unreachable, timed out).
        """
        kind, _ = classify_ref(remote.ref, remote.url)
        slot = self._slot(remote)
        if kind is RefKind.COMMIT and slot.path.exists():
            try:
                return self._resolve(slot, remote)
            except CommitNotFound:
                pass
        self._await(slot, self._join(slot, remote), remote)
        return self._resolve(slot, remote)

    def checkout(self, revision: Revision, dest: Path, subpath: str = "") -> Path:
        """Write the tree of `revision` (only `subpath`) into a fresh directory `dest`, atomically.

        The snapshot is built next to `dest` and renamed into place; an existing `dest` is
        replaced. Exec bits and symlinks are kept; submodules become empty directories.
        Returns ``dest / subpath``. Raises PathNotFound if `subpath` is not a directory there.
        """
        repo = self._open(revision)
        tree = self._subtree(repo, revision, subpath)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            target = tmp.joinpath(*_split(subpath))
            target.mkdir(parents=True)
            _write_tree(repo, tree, target)
            if dest.exists() or dest.is_symlink():
                trash = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
                dest.rename(trash)
                tmp.rename(dest)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                tmp.rename(dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest.joinpath(*_split(subpath))

    def read_file(self, revision: Revision, path: str) -> bytes:
        """The content of the blob at `path` in `revision`. Raises PathNotFound."""
        repo = self._open(revision)
        try:
            obj = _commit(repo, revision).tree[path.strip("/")]
        except KeyError:
            raise PathNotFound(f"{path}: not found in {revision.url}@{revision.sha[:12]}") from None
        if not isinstance(obj, pygit2.Blob):
            raise PathNotFound(f"{path}: not a file in {revision.url}@{revision.sha[:12]}")
        data: bytes = obj.data
        return data

    def read_signature(self, revision: Revision, sha: str | None = None) -> CommitSignature:
        """The signature and signed payload of commit `sha` (default: the revision's)."""
        repo = self._open(revision)
        commit = _commit(repo, revision if sha is None else dataclasses.replace(revision, sha=sha))
        signed = commit.gpg_signature
        signature, payload = signed if signed[0] is not None else (b"", commit.read_raw())
        return CommitSignature(
            sha=str(commit.id),
            signature=signature,
            payload=payload or b"",
            committed_at=datetime.fromtimestamp(commit.commit_time, UTC),
            summary=commit.message.split("\n", 1)[0],
        )

    def walk_new_commits(self, revision: Revision, base: str | None, limit: int) -> CommitWalk:
        """The commits `revision` brings since `base`, newest first, at most `limit`.

        A fast-forward walks back to `base`; a force-push that kept a common ancestor walks back
        to it (every commit of the rewritten history); with no common ancestor, or no base in
        the clone, the walk is the head alone (nothing earlier can be told apart as new).
        """
        repo = self._open(revision)
        head = revision.sha
        if base is None or repo.get(base) is None:
            return CommitWalk(head, (head,), Ancestry.NO_BASE, base, True)
        if base == head:
            return CommitWalk(head, (head,), Ancestry.DESCENDANT, base, True)
        try:
            fork = repo.merge_base(pygit2.Oid(hex=head), pygit2.Oid(hex=base))
        except pygit2.GitError as exc:
            raise SourceUnavailable(f"git cache for {revision.url}: {exc}") from None
        if fork is None:
            return CommitWalk(head, (head,), Ancestry.UNRELATED, base, True)
        ancestry = Ancestry.DESCENDANT if str(fork) == base else Ancestry.REWRITTEN
        walker = repo.walk(pygit2.Oid(hex=head), SortMode.TOPOLOGICAL)
        walker.hide(fork)
        shas = [str(c.id) for c in itertools.islice(walker, limit + 1)]
        complete = len(shas) <= limit
        return CommitWalk(head, tuple(shas[:limit]) or (head,), ancestry, str(fork), complete)

    def path_for(self, remote: GitRemote) -> Path:
        """Where the bare clone of this remote's URL lives."""
        return self.root / hashlib.sha256(remote.cache_key.encode()).hexdigest()[:32]

    # -- fetch coordination --

    def _slot(self, remote: GitRemote) -> _Slot:
        with self._slots_lock:
            slot = self._slots.get(remote.cache_key)
            if slot is None:
                slot = self._slots[remote.cache_key] = _Slot(self.path_for(remote))
            return slot

    def _join(self, slot: _Slot, remote: GitRemote) -> _Flight:
        with slot.lock:
            running = slot.running
            if running is not None and time.monotonic() - running.start_time > self.fetch_timeout:
                running = slot.running = None  # hung past its deadline: abandon it
            if running is None:
                flight = slot.pending or _Flight(remote)
                slot.pending = None
                self._start(slot, flight)
                return flight
            if slot.pending is None:
                slot.pending = _Flight(remote)
            return slot.pending

    def _start(self, slot: _Slot, flight: _Flight) -> None:
        """Run `flight` in a daemon thread. Caller holds slot.lock."""
        slot.running = flight
        flight.start_time = time.monotonic()
        flight.started.set()
        thread = threading.Thread(
            target=self._run, args=(slot, flight), name=f"git-fetch-{next(self._threads)}", daemon=True
        )
        thread.start()

    def _run(self, slot: _Slot, flight: _Flight) -> None:
        try:
            self._fetch_now(slot.path, flight.remote)
        except GitdockError as exc:
            flight.error = exc
        except Exception as exc:  # translated here, re-raised in the waiting callers
            flight.error = _translate(exc, flight.remote, None)
        finally:
            flight.done.set()
            with slot.lock:
                if slot.running is flight:
                    slot.running = None
                    if slot.pending is not None:
                        nxt, slot.pending = slot.pending, None
                        self._start(slot, nxt)

    def _await(self, slot: _Slot, flight: _Flight, remote: GitRemote) -> None:
        shown = display_url(remote.url)
        if not flight.started.wait(self.fetch_timeout):
            raise SourceUnavailable(
                f"fetching {shown}: an earlier fetch is still running after {self.fetch_timeout:g}s"
            )
        remaining = flight.start_time + self.fetch_timeout - time.monotonic()
        if not flight.done.wait(max(remaining, 0.0)):
            raise SourceUnavailable(f"fetching {shown}: no answer within {self.fetch_timeout:g}s")
        if flight.error is not None:
            raise flight.error

    def _fetch_now(self, path: Path, remote: GitRemote) -> None:
        """One network fetch into the bare clone at `path` (created on first use)."""
        with self._count_lock:
            self.fetch_count += 1
        repo = self._open_or_init(path)
        callbacks = _Callbacks(remote, _parse_url(remote.url))
        try:
            # A fresh anonymous Remote per fetch: a reused Remote object can report stale refs.
            anonymous = repo.remotes.create_anonymous(remote.url)
            _remote_fetch(anonymous, list(FETCH_REFSPECS), callbacks)
        except Exception as exc:
            raise _translate(exc, remote, callbacks) from None

    def _open_or_init(self, path: Path) -> pygit2.Repository:
        if path.exists():
            try:
                return pygit2.Repository(str(path))
            except pygit2.GitError:
                shutil.rmtree(path)  # a clone that cannot be opened is only a cache: start over
        tmp = path.with_name(f"{path.name}.init-{uuid.uuid4().hex[:8]}")
        pygit2.init_repository(str(tmp), bare=True)
        try:
            tmp.rename(path)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # lost a race with another init: use theirs
        return pygit2.Repository(str(path))

    # -- resolution --

    def _open(self, revision: Revision) -> pygit2.Repository:
        key = revision.cache_key or normalise_url(revision.url)
        path = self.root / hashlib.sha256(key.encode()).hexdigest()[:32]
        try:
            return pygit2.Repository(str(path))
        except pygit2.GitError as exc:
            raise SourceUnavailable(f"git cache for {revision.url}: {exc}") from None

    def _resolve(self, slot: _Slot, remote: GitRemote) -> Revision:
        shown = display_url(remote.url)
        kind, name = classify_ref(remote.ref, remote.url)
        try:
            repo = pygit2.Repository(str(slot.path))
        except pygit2.GitError as exc:
            raise SourceUnavailable(f"git cache for {shown}: {exc}") from None
        if kind is RefKind.COMMIT:
            obj = repo.get(name)
            if obj is None:
                raise CommitNotFound(f"commit {name} not found in {shown}", remote.ref, shown)
            try:
                commit = obj.peel(pygit2.Commit)
            except (pygit2.InvalidSpecError, ValueError, pygit2.GitError):
                raise CommitNotFound(f"{name} is not a commit in {shown}", remote.ref, shown) from None
            refname = name
        else:
            candidates = []
            if kind in (None, RefKind.BRANCH):
                candidates.append((f"refs/remotes/origin/{name}", f"refs/heads/{name}"))
            if kind in (None, RefKind.TAG):
                candidates.append((f"refs/tags/{name}", f"refs/tags/{name}"))
            found = [(local, full) for local, full in candidates if local in repo.references]
            if not found:
                what = {None: "branch or tag", RefKind.BRANCH: "branch", RefKind.TAG: "tag"}[kind]
                raise RefNotFound(f"{what} {name!r} not found in {shown}", remote.ref, shown)
            if len(found) > 1:
                raise AmbiguousRef(
                    f"ref {name!r} in {shown} is both a branch and a tag: "
                    f"write refs/heads/{name} or refs/tags/{name}"
                )
            local, refname = found[0]
            try:
                commit = repo.references[local].peel(pygit2.Commit)
            except (pygit2.InvalidSpecError, ValueError, pygit2.GitError):
                raise RefNotFound(
                    f"{refname} in {shown} does not point at a commit", remote.ref, shown
                ) from None
        author = commit.author
        return Revision(
            sha=str(commit.id),
            ref=refname,
            message=commit.message,
            author=f"{author.name} <{author.email}>",
            time=datetime.fromtimestamp(commit.commit_time, UTC),
            url=shown,
            cache_key=remote.cache_key,
        )

    def _subtree(self, repo: pygit2.Repository, revision: Revision, subpath: str) -> pygit2.Tree:
        tree: pygit2.Tree = _commit(repo, revision).tree
        parts = _split(subpath)
        if parts:
            try:
                obj = tree["/".join(parts)]
            except KeyError:
                raise PathNotFound(f"{subpath}: not found in {revision.url}@{revision.sha[:12]}") from None
            if not isinstance(obj, pygit2.Tree):
                raise PathNotFound(f"{subpath}: not a directory in {revision.url}@{revision.sha[:12]}")
            tree = obj
        return tree


def _commit(repo: pygit2.Repository, revision: Revision) -> pygit2.Commit:
    obj = repo.get(revision.sha)
    if not isinstance(obj, pygit2.Commit):
        raise CommitNotFound(f"commit {revision.sha} not found in the cache of {revision.url}")
    return obj


def _blob_data(repo: pygit2.Repository, oid: pygit2.Oid) -> bytes:
    blob = repo[oid]
    assert isinstance(blob, pygit2.Blob)
    data: bytes = blob.data
    return data


def _split(subpath: str) -> list[str]:
    parts = [p for p in subpath.strip("/").split("/") if p and p != "."]
    if any(p == ".." for p in parts):
        raise PathNotFound(f"{subpath}: '..' is not allowed in a subpath")
    return parts


def _write_tree(repo: pygit2.Repository, tree: pygit2.Tree, target: Path) -> None:
    """Write `tree` under the existing directory `target` (iterative; names are validated)."""
    stack: list[tuple[pygit2.Tree, Path]] = [(tree, target)]
    while stack:
        current, where = stack.pop()
        for entry in current:
            name = entry.name or ""
            if name in ("", ".", "..", ".git") or "/" in name or "\0" in name:
                raise PathNotFound(f"{where.name}/{name!r}: unsafe name in the tree")
            path = where / name
            mode = entry.filemode
            if mode == FileMode.TREE:
                path.mkdir()
                child = repo[entry.id]
                assert isinstance(child, pygit2.Tree)
                stack.append((child, path))
            elif mode == FileMode.LINK:
                os.symlink(_blob_data(repo, entry.id), path)
            elif mode == FileMode.COMMIT:
                path.mkdir()  # a submodule: git leaves an empty directory too
            else:
                with open(path, "wb") as fh:
                    fh.write(_blob_data(repo, entry.id))
                os.chmod(path, 0o755 if mode == FileMode.BLOB_EXECUTABLE else 0o644)
