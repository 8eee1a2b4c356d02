"""The registry seam: the only module that speaks the OCI Distribution API over HTTP.

Errors raised (nothing from httpx escapes: its exceptions are translated once, by the
`_HTTPX_ERRORS` table in `_map_exceptions`, and status codes are mapped in `_challenge` and
`_expect_found`):

    RegistryUnavailable          (transient) connection failure, timeout, 429 or 5xx
    RegistryAuthError            (permanent) 401/403 after authenticating: credentials are wrong
    ManifestNotFound             (permanent) the tag or digest does not exist
    RegistryIntegrityError       (TrustError) the registry sent bytes that do not match their digest,
                                 an oversized body, or a manifest that is not JSON

Every manifest and blob is hashed over its raw bytes and compared with the digest asked for
and with `Docker-Content-Digest`: a registry that lies is refused. Plain HTTP is used only for
loopback hosts and hosts configured insecure. Every call has a timeout and a body-size bound.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import ipaddress
import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from gitdock.runtime.trust.errors import TrustError
from gitdock.specs.errors import GitdockError, PermanentError, TransientError
from gitdock.specs.reference import ImageReference, is_digest

__all__ = [
    "DEFAULT_TIMEOUT",
    "MANIFEST_ACCEPT",
    "MAX_MANIFEST_BYTES",
    "Descriptor",
    "Manifest",
    "ManifestNotFound",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryIntegrityError",
    "load_docker_credentials",
    "select_platform_digest",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_BLOB_BYTES = 4 * 1024 * 1024
MAX_TOKEN_BYTES = 1024 * 1024
DEFAULT_TIMEOUT = 10.0
_TOKEN_DEFAULT_TTL = 60.0
_USER_AGENT = "gitdock"


class RegistryUnavailable(TransientError):
    """A registry could not be reached."""


class RegistryAuthError(PermanentError):
    """The registry refused our credentials (or we have none for a private repository)."""


class ManifestNotFound(PermanentError):
    """The registry has no manifest for that tag or digest."""


class RegistryIntegrityError(TrustError):
    """The registry sent content that does not match its digest, or is oversized or malformed."""


# httpx's exceptions and what they become, first match wins (as httpx's own `map_exceptions`).
# Every httpx.HTTPError — connect, read and write failures, timeouts, protocol and decoding
# errors — is a registry that a retry may reach.
_HTTPX_ERRORS: tuple[tuple[type[httpx.HTTPError], type[GitdockError]], ...] = (
    (httpx.HTTPError, RegistryUnavailable),
)


@contextlib.contextmanager
def _map_exceptions(what: str) -> Iterator[None]:
    """Translate an httpx exception raised inside into gitdock's error: `<what>: <httpx name>`."""
    try:
        yield
    except httpx.HTTPError as exc:
        target = next(t for source, t in _HTTPX_ERRORS if isinstance(exc, source))
        raise target(f"{what}: {type(exc).__name__}") from exc


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str]
    artifact_type: str | None = None
    platform: Mapping[str, str] | None = None

    @classmethod
    def from_json(cls, node: Any) -> Descriptor:
        """Parse a descriptor; raise RegistryIntegrityError when malformed."""
        if not isinstance(node, dict):
            raise RegistryIntegrityError("descriptor: not a JSON object")
        media_type, digest, size = node.get("mediaType"), node.get("digest"), node.get("size")
        if not isinstance(media_type, str) or not isinstance(digest, str) or not is_digest(digest):
            raise RegistryIntegrityError("descriptor: mediaType and a valid digest are required")
        if not isinstance(size, int) or size < 0:
            raise RegistryIntegrityError(f"descriptor {digest}: size is not a non-negative integer")
        annotations = node.get("annotations") or {}
        platform = node.get("platform")
        artifact = node.get("artifactType")
        return cls(
            media_type,
            digest,
            size,
            {str(k): v for k, v in annotations.items() if isinstance(v, str)}
            if isinstance(annotations, dict)
            else {},
            artifact if isinstance(artifact, str) else None,
            {str(k): v for k, v in platform.items() if isinstance(v, str)}
            if isinstance(platform, dict)
            else None,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Manifest:
    """A manifest's exact bytes, their digest and media type, and the parsed JSON."""

    digest: str
    media_type: str
    raw: bytes
    content: Mapping[str, Any]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def layers(self) -> list[Descriptor]:
        """The `layers` descriptors (raises RegistryIntegrityError if malformed)."""
        layers = self.content.get("layers", [])
        if not isinstance(layers, list):
            raise RegistryIntegrityError(f"manifest {self.digest}: layers is not a list")
        return [Descriptor.from_json(layer) for layer in layers]

    def layer_count(self) -> int:
        layers = self.content.get("layers", [])
        return len(layers) if isinstance(layers, list) else 0

    def descriptors(self) -> list[Descriptor]:
        """The `manifests` descriptors of an index."""
        manifests = self.content.get("manifests", [])
        if not isinstance(manifests, list):
            raise RegistryIntegrityError(f"index {self.digest}: manifests is not a list")
        return [Descriptor.from_json(m) for m in manifests]


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _digest_of(data: bytes, algorithm: str) -> str:
    if algorithm not in ("sha256", "sha384", "sha512"):
        raise RegistryIntegrityError(f"digest algorithm {algorithm!r} is not supported")
    return f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()


def parse_manifest(raw: bytes, *, digest: str, header_type: str = "") -> Manifest:
    """Parse manifest bytes already known to hash to `digest`."""
    try:
        content = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryIntegrityError(f"manifest {digest}: not valid JSON") from exc
    if not isinstance(content, dict):
        raise RegistryIntegrityError(f"manifest {digest}: not a JSON object")
    media_type = content.get("mediaType")
    if not isinstance(media_type, str):
        media_type = header_type.split(";")[0].strip()
        if not media_type:
            media_type = OCI_INDEX if "manifests" in content else OCI_MANIFEST
    return Manifest(digest, media_type, raw, content)


def select_platform_digest(
    index: Manifest, *, os: str = "linux", architecture: str = "amd64", variant: str | None = None
) -> str:
    """Digest of the platform's manifest in a multi-arch index (pure). A non-index returns itself.

    Matches `os` and `architecture`; when `variant` is given it must match too, otherwise a
    descriptor without a variant is preferred. Raises ManifestNotFound when none matches.
    """
    if not index.is_index:
        return index.digest
    candidates = [
        d
        for d in index.descriptors()
        if d.platform
        and d.platform.get("os") == os
        and d.platform.get("architecture") == architecture
        and (variant is None or d.platform.get("variant") == variant)
    ]
    if not candidates:
        want = "/".join(p for p in (os, architecture, variant) if p)
        raise ManifestNotFound(f"index {index.digest}: no manifest for platform {want}")
    candidates.sort(key=lambda d: d.platform is not None and "variant" in d.platform)
    return candidates[0].digest


def _normalise_auth_host(key: str) -> str:
    host = key.split("://", 1)[-1].split("/", 1)[0]
    if host in ("index.docker.io", "docker.io", "registry-1.docker.io", "registry.hub.docker.com"):
        return "registry-1.docker.io"
    return host


def load_docker_credentials(path: Path | None = None) -> dict[str, tuple[str, str]]:
    """Basic credentials per API host from a Docker `config.json` (`auths` with base64 `auth`).

    Missing file: no credentials. Credential helpers (`credsStore`) are not consulted.
    """
    path = path if path is not None else Path.home() / ".docker" / "config.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RegistryAuthError(f"docker config {path}: cannot be read as JSON") from exc
    auths = doc.get("auths") if isinstance(doc, dict) else None
    out: dict[str, tuple[str, str]] = {}
    for key, entry in (auths or {}).items():
        encoded = entry.get("auth") if isinstance(entry, dict) else None
        if isinstance(encoded, str) and encoded:
            try:
                user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise RegistryAuthError(f"docker config {path}: auth for {key} is not base64") from exc
            out[_normalise_auth_host(key)] = (user, password)
        elif isinstance(entry, dict) and isinstance(entry.get("username"), str):
            out[_normalise_auth_host(key)] = (entry["username"], str(entry.get("password", "")))
    return out


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split `Bearer realm="...",service="...",scope="..."` into scheme and parameters."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        eq = rest.find("=", i)
        if eq < 0:
            break
        name = rest[i:eq].strip().lstrip(",").strip().lower()
        if eq + 1 < len(rest) and rest[eq + 1] == '"':
            end = rest.find('"', eq + 2)
            end = len(rest) if end < 0 else end
            params[name] = rest[eq + 2 : end]
            i = end + 1
        else:
            end = rest.find(",", eq + 1)
            end = len(rest) if end < 0 else end
            params[name] = rest[eq + 1 : end].strip()
            i = end
        while i < len(rest) and rest[i] in ", ":
            i += 1
    return scheme.lower(), params


def _challenge(response: httpx.Response, host: str, request: str, *, first: bool) -> str:
    """The auth challenge to answer (first 401 only), or "" when `response` may be used.

    Status codes mapped to errors in one place: 401/403 after authenticating is
    RegistryAuthError, 429 and 5xx RegistryUnavailable.
    """
    status = response.status_code
    if status == 401 and first:
        challenge: str = response.headers.get("WWW-Authenticate", "")
        if not challenge:
            raise RegistryAuthError(f"registry {host}: 401 without a WWW-Authenticate challenge")
        return challenge
    if status in (401, 403):
        raise RegistryAuthError(f"registry {host}: {request}: refused ({status})")
    if status == 429 or status >= 500:
        raise RegistryUnavailable(f"registry {host}: {request}: {status}")
    return ""


def _parse_token(response: httpx.Response, host: str) -> tuple[str, float]:
    """The bearer token in a token response and its lifetime in seconds."""
    if len(response.content) > MAX_TOKEN_BYTES:
        raise RegistryIntegrityError(f"registry {host}: token response is oversized")
    try:
        doc = response.json()
    except ValueError as exc:
        raise RegistryIntegrityError(f"registry {host}: token response is not JSON") from exc
    token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise RegistryIntegrityError(f"registry {host}: token response has no token")
    expires = doc.get("expires_in")
    ttl = float(expires) if isinstance(expires, int | float) and expires > 0 else _TOKEN_DEFAULT_TTL
    return token, ttl


def _check_manifest_digest(raw: bytes, reference: str, header_digest: str | None, what: str) -> str:
    """The digest of manifest bytes, checked against the digest asked for and the header's."""
    algorithm = reference.split(":", 1)[0] if is_digest(reference) else "sha256"
    actual = _digest_of(raw, algorithm)
    if is_digest(reference) and actual != reference:
        raise RegistryIntegrityError(f"{what}: content hashes to {actual}, not the digest asked for")
    if header_digest:
        header_alg = header_digest.split(":", 1)[0]
        if not is_digest(header_digest) or _digest_of(raw, header_alg) != header_digest:
            raise RegistryIntegrityError(
                f"{what}: Docker-Content-Digest {header_digest} does not match the content ({actual})"
            )
    return actual


def _expect_found(response: httpx.Response, what: str) -> None:
    """A 404 is ManifestNotFound; any other status but 200 is RegistryUnavailable."""
    if response.status_code == 404:
        raise ManifestNotFound(f"{what}: not found")
    if response.status_code != 200:
        raise RegistryUnavailable(f"{what}: registry answered {response.status_code}")


class RegistryClient:
    """A thread-safe Distribution API client. Use as a context manager or call `close()`.

    `transport` exists for protocol tests with `httpx.MockTransport`.
    """

    def __init__(
        self,
        *,
        insecure: Iterable[str] = (),
        credentials: Mapping[str, tuple[str, str]] | None = None,
        auth_file: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        max_manifest_bytes: int = MAX_MANIFEST_BYTES,
    ) -> None:
        self._insecure = frozenset(insecure)
        self._credentials = (
            dict(credentials) if credentials is not None else load_docker_credentials(auth_file)
        )
        self._max_manifest = max_manifest_bytes
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"User-Agent": _USER_AGENT},
            follow_redirects=False,
        )
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._basic_hosts: set[str] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- plumbing --------------------------------------------------------------------------------

    def _allows_plain_http(self, host: str) -> bool:
        """Plain HTTP only for loopback hosts and hosts configured insecure."""
        return _is_loopback(host) or host in self._insecure

    def _is_refused_http(self, url: str) -> bool:
        """Whether `url` is plain HTTP to a host that must be reached over HTTPS."""
        return url.startswith("http://") and not self._allows_plain_http(httpx.URL(url).host)

    def _base(self, host: str) -> str:
        scheme = "http" if self._allows_plain_http(host) else "https"
        return f"{scheme}://{host}"

    def _auth_header(self, host: str, scope: str) -> dict[str, str]:
        with self._lock:
            token = self._tokens.get((host, scope))
            if token is not None and token[1] > time.monotonic():
                return {"Authorization": f"Bearer {token[0]}"}
            basic = host in self._basic_hosts
        creds = self._credentials.get(host)
        if basic and creds is not None:
            return {"Authorization": "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()}
        return {}

    def _request_token(self, host: str, params: Mapping[str, str], scope: str) -> httpx.Response:
        """Ask the challenge's realm for a token, with our credentials for `host` if we have any."""
        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise RegistryAuthError(f"registry {host}: token realm {realm!r} is not an http(s) URL")
        if self._is_refused_http(realm):
            raise RegistryAuthError(f"registry {host}: refusing plain-HTTP token realm {realm}")
        query = {"scope": params.get("scope") or scope}
        if "service" in params:
            query["service"] = params["service"]
        creds = self._credentials.get(host)
        auth = httpx.BasicAuth(*creds) if creds else None
        with _map_exceptions(f"registry {host}: token request failed"):
            return self._http.get(realm, params=query, auth=auth)

    def _fetch_token(self, host: str, params: Mapping[str, str], scope: str) -> None:
        response = self._request_token(host, params, scope)
        if response.status_code in (401, 403):
            raise RegistryAuthError(f"registry {host}: token request refused ({response.status_code})")
        if response.status_code != 200:
            raise RegistryUnavailable(f"registry {host}: token request answered {response.status_code}")
        token, ttl = _parse_token(response, host)
        with self._lock:
            # Renew a little early so a token never expires between check and use.
            self._tokens[(host, scope)] = (token, time.monotonic() + max(ttl - 5.0, 1.0))

    def _authenticate(self, host: str, challenge: str, scope: str) -> None:
        scheme, params = _parse_challenge(challenge)
        if scheme == "bearer":
            self._fetch_token(host, params, scope)
        elif scheme == "basic":
            if host not in self._credentials:
                raise RegistryAuthError(f"registry {host}: asks for a password and none is configured")
            with self._lock:
                self._basic_hosts.add(host)
        else:
            raise RegistryAuthError(f"registry {host}: unsupported auth scheme {scheme!r}")

    @contextlib.contextmanager
    def _stream(
        self,
        method: str,
        host: str,
        path: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        """One request, authenticating and retrying once on a 401 challenge.

        Yields a response whose status is neither 401/403 (RegistryAuthError) nor 429/5xx
        (RegistryUnavailable); an httpx error inside the block is translated too.
        """
        url = path if path.startswith(("http://", "https://")) else self._base(host) + path
        for attempt in (0, 1):
            # Credentials go only to the registry itself, never to a redirect target (e.g. a CDN).
            same_host = httpx.URL(url).netloc.decode() == host
            auth = self._auth_header(host, scope) if same_host else {}
            request_headers = {**(headers or {}), **auth}
            with (
                _map_exceptions(f"registry {host}: {method} {path}"),
                self._http.stream(
                    method, url, headers=request_headers, content=content, params=params
                ) as response,
            ):
                challenge = _challenge(response, host, f"{method} {path}", first=attempt == 0)
                if not challenge:
                    yield response
                    return
            self._authenticate(host, challenge, scope)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _read_bounded(response: httpx.Response, limit: int, what: str) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RegistryIntegrityError(f"{what}: {declared} bytes is larger than the {limit}-byte limit")
        chunks: list[bytes] = []
        total = 0
        with _map_exceptions(f"{what}: transfer failed"):
            for chunk in response.iter_bytes():
                total += len(chunk)
                if total > limit:
                    raise RegistryIntegrityError(f"{what}: larger than the {limit}-byte limit")
                chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _scope(ref: ImageReference, push: bool = False) -> str:
        return f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"

    # --- reading ---------------------------------------------------------------------------------

    def get_manifest(self, ref: ImageReference, reference: str | None = None) -> Manifest:
        """Fetch a manifest by tag or digest (default: the ref's digest, else its tag), verified.

        The digest is computed over the raw bytes and must equal `Docker-Content-Digest` (when
        sent) and the digest asked for (when fetching by digest).
        """
        reference = reference or ref.digest or ref.tag or "latest"
        what = (
            f"manifest {ref.repository_ref}:{reference}"
            if not is_digest(reference)
            else (f"manifest {ref.repository_ref}@{reference}")
        )
        path = f"/v2/{ref.repository}/manifests/{reference}"
        headers = {"Accept": ", ".join(MANIFEST_ACCEPT)}
        with self._stream("GET", ref.api_host, path, scope=self._scope(ref), headers=headers) as response:
            _expect_found(response, what)
            raw = self._read_bounded(response, self._max_manifest, what)
            header_digest = response.headers.get("Docker-Content-Digest")
            content_type = response.headers.get("Content-Type", "")
        actual = _check_manifest_digest(raw, reference, header_digest, what)
        return parse_manifest(raw, digest=actual, header_type=content_type)

    def resolve_digest(self, ref: ImageReference) -> str:
        """The digest a reference names. A digest-pinned ref is returned as-is, with no request.

        For a multi-arch tag this is the index digest (what signatures cover).
        """
        if ref.digest is not None:
            return ref.digest
        return self.get_manifest(ref).digest

    def get_blob(self, ref: ImageReference, digest: str, *, max_bytes: int = MAX_BLOB_BYTES) -> bytes:
        """Fetch a blob (following redirects), bounded in size and checked against its digest."""
        if not is_digest(digest):
            raise RegistryIntegrityError(f"blob {digest!r}: not a valid digest")
        what = f"blob {ref.repository_ref}@{digest}"
        path: str = f"/v2/{ref.repository}/blobs/{digest}"
        for _ in range(5):
            with self._stream("GET", ref.api_host, path, scope=self._scope(ref)) as response:
                if response.status_code in (301, 302, 303, 307, 308):
                    location = response.headers.get("Location", "")
                    path = str(response.url.join(location))
                    if self._is_refused_http(path):
                        raise RegistryIntegrityError(f"{what}: refusing redirect to plain HTTP")
                    continue
                _expect_found(response, what)
                data = self._read_bounded(response, max_bytes, what)
            if _digest_of(data, digest.split(":", 1)[0]) != digest:
                raise RegistryIntegrityError(f"{what}: content does not hash to its digest")
            return data
        raise RegistryUnavailable(f"{what}: too many redirects")

    def list_referrers(
        self, ref: ImageReference, digest: str, *, artifact_type: str | None = None
    ) -> list[Descriptor] | None:
        """Referrers of `digest` via `GET /v2/<name>/referrers/<digest>`; None when the API is missing."""
        what = f"referrers of {ref.repository_ref}@{digest}"
        params = {"artifactType": artifact_type} if artifact_type else None
        path = f"/v2/{ref.repository}/referrers/{digest}"
        headers = {"Accept": OCI_INDEX}
        with self._stream(
            "GET", ref.api_host, path, scope=self._scope(ref), headers=headers, params=params
        ) as response:
            if response.status_code in (404, 405):
                return None
            if response.status_code != 200:
                raise RegistryUnavailable(f"{what}: registry answered {response.status_code}")
            raw = self._read_bounded(response, self._max_manifest, what)
        index = parse_manifest(raw, digest=_sha256(raw))
        found = index.descriptors()
        if artifact_type:
            found = [d for d in found if d.artifact_type == artifact_type]
        return found

    # --- writing ---------------------------------------------------------------------------------

    def has_blob(self, ref: ImageReference, digest: str) -> bool:
        path = f"/v2/{ref.repository}/blobs/{digest}"
        with self._stream("HEAD", ref.api_host, path, scope=self._scope(ref, push=True)) as response:
            return response.status_code == 200

    def push_blob(self, ref: ImageReference, data: bytes) -> str:
        """Upload a blob monolithically (POST, then PUT with the digest) unless present; its digest."""
        digest = _sha256(data)
        if self.has_blob(ref, digest):
            return digest
        what = f"blob upload to {ref.repository_ref}"
        scope = self._scope(ref, push=True)
        with self._stream(
            "POST", ref.api_host, f"/v2/{ref.repository}/blobs/uploads/", scope=scope
        ) as response:
            if response.status_code != 202:
                raise RegistryUnavailable(f"{what}: POST answered {response.status_code}")
            location = response.headers.get("Location", "")
            upload_url = response.url.join(location)
        separator = "&" if upload_url.query else "?"
        url = str(upload_url) + f"{separator}digest={digest}"
        headers = {"Content-Type": "application/octet-stream"}
        with self._stream("PUT", ref.api_host, url, scope=scope, headers=headers, content=data) as response:
            if response.status_code != 201:
                raise RegistryUnavailable(f"{what}: PUT answered {response.status_code}")
        return digest

    def put_manifest(self, ref: ImageReference, reference: str, raw: bytes, media_type: str) -> str:
        """Upload manifest bytes under a tag or digest; returns their digest."""
        digest = _sha256(raw)
        path = f"/v2/{ref.repository}/manifests/{reference}"
        headers = {"Content-Type": media_type}
        scope = self._scope(ref, push=True)
        with self._stream("PUT", ref.api_host, path, scope=scope, headers=headers, content=raw) as response:
            if response.status_code != 201:
                raise RegistryUnavailable(
                    f"manifest upload {ref.repository_ref}:{reference}: answered {response.status_code}"
                )
        return digest
