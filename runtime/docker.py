"""The Docker Engine seam: the only module in gitdock that talks to dockerd.

It speaks the Engine REST API with httpx over a unix socket, TCP with mutual TLS, or ssh
through the remote's ``docker system dial-stdio`` (runtime.dial), to the engine an Endpoint
names (runtime.contexts: a host, ``DOCKER_HOST``, a Docker context). Over a unix socket a
call that is not a stream is one HTTP/1.0 request on its own connection, read to the end
(``_over_unix``), and httpx is imported only for streams (pull, build, logs, exec, events)
and for TLS and ssh: httpx with what it imports was a fifth of a no-op apply's start-up and
a tenth of a change of one service. It negotiates the API
version as the Docker CLI does, from the ``Api-Version`` header of ``GET /_ping`` (dockerd
answers ``/version`` only after asking containerd and runc theirs: 12-17 ms here, against
half a millisecond), falling back to ``GET /version``, and translates every transport or API
failure into gitdock's error tree at this boundary, each by one table: ``DockerUnavailable``
(a TransientError) when dockerd cannot be reached, ``DockerBusy`` when it took a call and did
not answer it in time, ``DockerError`` with ``status`` when it answers with an error
(``NotFound`` for 404, ``Conflict`` for 409). No httpx exception escapes this module. The
errors are defined here, beside the code that raises them::

    GitdockError
    ├── DockerError            one call failed; ``status`` is the HTTP status (0 in a stream)
    │   ├── NotFound           404
    │   ├── Conflict           409
    │   └── NotSwarmManager    503: the engine is not a Swarm manager (Swarm endpoints only)
    └── TransientError
        └── DockerUnavailable  dockerd cannot be reached
            └── DockerBusy     dockerd took the call and did not answer within the timeout

Every request is counted by method in ``calls``, so callers (and tests) can prove that a
no-op reconcile made no mutating call. A client made with ``max_in_flight`` lets at most that
many of its mutating calls be in dockerd at once, across every thread that uses it (the agent's
sources on one engine share one client); the others wait their turn before they are sent, so a
busy engine queues work instead of timing it out. Stop and restart are not counted: they are
mostly waiting for a process to exit, and holding a turn for a grace period would stall every
other source.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from gitdock.runtime.contexts import Endpoint, Scheme, resolve_endpoint, ssl_context
from gitdock.specs.errors import GitdockError, TransientError

if TYPE_CHECKING:
    import ssl

    import httpx

# The newest API version this client knows how to speak. The version actually used is the
# lower of this and what the server reports, so older engines work.
MAX_API_VERSION = (1, 45)
# The one call sent at a newer version than MAX_API_VERSION: a create mounting an image.
IMAGE_MOUNT_VERSION = "1.48"
MIN_API_VERSION = (1, 41)

MUTATING_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})

JSON = dict[str, Any]


class DockerError(GitdockError):
    """Docker answered with an error for one call."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class DockerUnavailable(TransientError):
    """dockerd could not be reached at all."""


class DockerBusy(DockerUnavailable):
    """dockerd took a call (or the connection) and did not answer it within the timeout. A
    mutating call may have taken effect: the next reconcile observes before it acts again."""


class NotFound(DockerError):
    """The object does not exist (HTTP 404)."""


class Conflict(DockerError):
    """The request conflicts with the object's state or name (HTTP 409)."""


class NotSwarmManager(DockerError):
    """A Swarm endpoint was called on an engine that is not a Swarm manager (HTTP 503)."""


# HTTP statuses with an error class of their own; any other failing status is a DockerError.
# The Engine answers 503 only from Swarm endpoints, when the node is not a manager.
_STATUS_ERRORS: dict[int, type[DockerError]] = {404: NotFound, 409: Conflict, 503: NotSwarmManager}


def _transport_errors() -> tuple[tuple[type[Exception], type[TransientError], str], ...]:
    """httpx's failures, translated once here, first match wins, with how the message begins
    (``{host}`` is the engine's address). Every one of them means dockerd could not be reached,
    did not answer in time or stopped answering mid-request (refused, reset, a broken HTTP
    stream), which a retry may fix; an answer with an error status is a DockerError instead.
    A function, not a table at import: only a client that uses httpx imports it."""
    import httpx

    return (
        (httpx.ConnectTimeout, DockerBusy, "Docker at {host} did not accept a connection in time"),
        (httpx.TimeoutException, DockerBusy, "Docker at {host} did not answer in time"),
        (httpx.HTTPError, DockerUnavailable, "cannot reach Docker at {host}"),
    )


class _NoAnswer(Exception):
    """``_over_unix``'s timeout: what dockerd did not do in time."""


def _parse_version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor)


def _filters(filters: Mapping[str, list[str]] | None) -> dict[str, str]:
    return {"filters": json.dumps(filters)} if filters else {}


def _open_transport(endpoint: Endpoint, timeout: float) -> tuple[httpx.BaseTransport, str]:
    """The transport and base URL for ``endpoint``: a unix socket, TCP (mutual TLS when the
    endpoint has tls files) or ssh's ``docker system dial-stdio``. Raises TargetError."""
    import httpx

    address = endpoint.address
    if address.scheme is Scheme.UNIX:
        return httpx.HTTPTransport(uds=address.path, verify=_no_tls()), "http://docker"
    if address.scheme is Scheme.SSH:
        from gitdock.runtime.dial import open_pool, ssh_command  # httpcore: only ssh needs it

        transport = httpx.HTTPTransport(verify=_no_tls())
        # httpx takes no network backend; its pool is the one place a custom one plugs in.
        transport._pool = open_pool(ssh_command(address, endpoint.ssh, timeout))
        return transport, "http://docker"
    if endpoint.tls is not None:
        context = ssl_context(endpoint.tls, f"Docker host {endpoint.host}")
        return httpx.HTTPTransport(verify=context), f"https://{address.netloc}"
    return httpx.HTTPTransport(verify=_no_tls()), f"http://{address.netloc}"


def _no_tls() -> ssl.SSLContext:
    """The context for a transport that never speaks TLS. httpx's default loads the whole CA
    bundle (a third of a no-op apply's own time) for a context it never uses; this one, with
    no CA at all, would refuse any server it were ever asked to verify."""
    import ssl

    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class _Answer:
    """A whole answer ``_over_unix`` read: the part of httpx.Response callers use
    (``headers`` by lower-case name)."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, content: bytes, headers: dict[str, str] | None = None) -> None:
        self.status_code, self.content, self.headers = status_code, content, headers or {}

    def json(self) -> Any:
        return json.loads(self.content)


def _over_unix(
    socket_path: str,
    method: str,
    target: str,
    timeout: float,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> _Answer:
    """``method target`` (with ``content``) as one HTTP/1.0 request on a connection of its
    own, read until dockerd closes it (an HTTP/1.0 answer is neither chunked nor kept alive).
    Raises _NoAnswer (the connection or the answer did not come within ``timeout``), OSError
    (unreachable) or ValueError (not an HTTP answer, or one cut short)."""
    lines = [f"{method} {target} HTTP/1.0", "Host: docker", "User-Agent: gitdock"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if content is not None or method != "GET":
        lines.append(f"Content-Length: {len(content or b'')}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (content or b"")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path)
        except TimeoutError:
            raise _NoAnswer(f"did not accept a connection within {timeout:g} s") from None
        chunks = []
        try:
            sock.sendall(request)
            while chunk := sock.recv(1 << 18):
                chunks.append(chunk)
        except TimeoutError:
            path = target.partition("?")[0]
            raise _NoAnswer(f"did not answer {method} {path} within {timeout:g} s") from None
    head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    if not sep or not version.startswith("HTTP/") or not rest[:3].isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    elif (length := headers.get("content-length", "")).isdigit() and len(body) < int(length):
        raise ValueError(f"answer cut short: {len(body)} of {length} bytes")
    return _Answer(int(rest[:3]), body, headers)


def _dechunk(body: bytes) -> bytes:
    """A chunked transfer coding's content (no proxy in between should send one to HTTP/1.0)."""
    parts: list[bytes] = []
    at = 0
    while True:
        end = body.index(b"\r\n", at)  # ValueError when cut short
        size = int(body[at:end].split(b";", 1)[0], 16)
        if size == 0:
            return b"".join(parts)
        if end + 2 + size > len(body):
            raise ValueError("chunked answer cut short")
        parts.append(body[end + 2 : end + 2 + size])
        at = end + 4 + size


class DockerClient:
    """A small, thread-safe client for the Docker Engine API.

    ``host`` is an Endpoint (runtime.contexts) or a host string: ``unix:///path``,
    ``tcp://host:port`` (TLS by ``DOCKER_TLS_VERIFY``) or ``ssh://user@host``; None resolves
    ``DOCKER_HOST``/``DOCKER_CONTEXT`` as the Docker CLI does. A host that cannot be used is a
    TargetError at once; no request is sent until the first call. ``max_in_flight`` caps the
    mutating calls in dockerd at once, across threads (see the module docstring); None: no cap.
    """

    def __init__(
        self,
        host: str | Endpoint | None = None,
        *,
        timeout: float = 30.0,
        max_in_flight: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the socket, for protocol edge cases in tests only."""
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self.endpoint = host if isinstance(host, Endpoint) else resolve_endpoint(host)
        self.host = self.endpoint.host
        self.timeout = timeout
        unix = self.endpoint.address.scheme is Scheme.UNIX
        # Plain GETs over a unix socket skip httpx (see the module docstring).
        self._unix_socket = self.endpoint.address.path if unix and transport is None else None
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        if transport is not None or not unix:  # a TLS or ssh host that cannot be used fails here
            self._client = self._new_client(transport)
        self._version_lock = threading.Lock()
        self._api_version: str | None = None
        self._server_api = ""  # what the server reported, once negotiated
        self._calls_lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.max_in_flight = max_in_flight
        self._turns = threading.BoundedSemaphore(max_in_flight) if max_in_flight else None
        self.waited = 0.0  # seconds mutating calls spent waiting for a turn, all threads together

    # -- plumbing -------------------------------------------------------------------------

    def _new_client(self, transport: httpx.BaseTransport | None) -> httpx.Client:
        import httpx

        base_url = "http://docker"
        if transport is None:
            transport, base_url = _open_transport(self.endpoint, self.timeout)
        return httpx.Client(
            transport=transport, base_url=base_url, timeout=self.timeout, headers={"User-Agent": "gitdock"}
        )

    @property
    def _http(self) -> httpx.Client:
        """The httpx client, made on first use."""
        with self._client_lock:
            if self._client is None:
                self._client = self._new_client(None)
            return self._client

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()

    def __enter__(self) -> DockerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def mutating_calls(self) -> int:
        """How many requests so far could have changed Docker's state."""
        with self._calls_lock:
            return sum(n for method, n in self.calls.items() if method in MUTATING_METHODS)

    def _count(self, method: str) -> None:
        with self._calls_lock:
            self.calls[method] += 1

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Translate httpx's exceptions into gitdock's tree, by ``_transport_errors``."""
        try:
            yield
        except Exception as exc:
            match = next((m for m in _transport_errors() if isinstance(exc, m[0])), None)
            if match is None:
                raise
            _, error, what = match
            raise error(f"{what.format(host=self.host)}: {exc or type(exc).__name__}") from exc

    def _get(self, target: str, params: Mapping[str, Any] | None, timeout: float) -> httpx.Response | _Answer:
        """One GET, over the unix socket without httpx when there is one; not counted here."""
        if self._unix_socket is None:
            with self._translated():
                return self._http.get(target, params=dict(params or {}), timeout=timeout)
        return self._over_unix("GET", target, params, timeout)

    def _over_unix(
        self,
        method: str,
        target: str,
        params: Mapping[str, Any] | None,
        timeout: float,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Answer:
        """One request over the unix socket without httpx (``_over_unix``); not counted here."""
        assert self._unix_socket is not None
        if params:
            target = f"{target}?{urlencode(params, doseq=True)}"
        try:
            return _over_unix(self._unix_socket, method, target, timeout, content, headers)
        except _NoAnswer as exc:
            raise DockerBusy(f"Docker at {self.host} {exc}") from None
        except (OSError, ValueError) as exc:
            raise DockerUnavailable(f"cannot reach Docker at {self.host}: {exc}") from exc

    def _pinged_version(self) -> tuple[int, int] | None:
        """The server's API version from ``GET /_ping``'s ``Api-Version`` header; None when
        the answer has none (a proxy in between, an engine that does not send it)."""
        self._count("GET")
        resp = self._get("/_ping", None, self.timeout)
        header = resp.headers.get("api-version") if resp.status_code == 200 else None
        try:
            return _parse_version(header) if header else None
        except ValueError:
            return None

    def api_version(self) -> str:
        """Negotiate once: the lower of the server's API version and ours."""
        with self._version_lock:
            if self._api_version is None:
                server = self._pinged_version()
                if server is None:
                    self._count("GET")
                    resp = self._get("/version", None, self.timeout)
                    if resp.status_code != 200:
                        raise DockerUnavailable(
                            f"Docker at {self.host} answered GET /version with HTTP {resp.status_code}"
                        )
                    server = _parse_version(str(resp.json().get("ApiVersion", "1.41")))
                if server < MIN_API_VERSION:
                    raise DockerUnavailable(
                        f"Docker at {self.host} speaks API {server[0]}.{server[1]}; gitdock needs "
                        f"{MIN_API_VERSION[0]}.{MIN_API_VERSION[1]} or newer"
                    )
                chosen = min(server, MAX_API_VERSION)
                self._api_version = f"{chosen[0]}.{chosen[1]}"
                self._server_api = f"{server[0]}.{server[1]}"
            return self._api_version

    def server_api_version(self) -> str:
        """The API version the server reports (negotiating first): newer than ``api_version``
        when the engine is newer than this client."""
        self.api_version()
        return self._server_api

    @contextlib.contextmanager
    def _turn(self, method: str, waits: bool) -> Iterator[None]:
        """A turn inside dockerd for a mutating call when the client caps them, unless the call
        ``waits`` (a stop: mostly waiting for a process, see the module docstring)."""
        if self._turns is None or waits or method not in MUTATING_METHODS:
            yield
            return
        started = time.monotonic()
        with self._turns:
            waited = time.monotonic() - started
            with self._calls_lock:
                self.waited += waited
            yield

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
        version: str | None = None,
        waits: bool = False,
    ) -> httpx.Response | _Answer:
        """One call, counted, after its turn (``_turn``)."""
        url = f"/v{version or self.api_version()}{path}"
        seconds = timeout if timeout is not None else self.timeout
        resp: httpx.Response | _Answer
        with self._turn(method, waits):
            self._count(method)
            if self._unix_socket is not None:  # no httpx (see the module docstring)
                sent = dict(headers or {})
                if body is not None:
                    content = json.dumps(body, separators=(",", ":")).encode()
                    sent["Content-Type"] = "application/json"
                resp = self._over_unix(method, url, params, seconds, content, sent)
            else:
                with self._translated():
                    resp = self._http.request(
                        method,
                        url,
                        params=dict(params or {}),
                        json=body,
                        content=content,
                        headers=headers,
                        timeout=seconds,
                    )
        if resp.status_code not in ok:
            raise self._error(method, path, resp.status_code, resp.content)
        return resp

    @staticmethod
    def _error(method: str, path: str, status: int, content: bytes) -> DockerError:
        try:
            message = str(json.loads(content).get("message", ""))
        except (ValueError, AttributeError):
            message = content.decode("utf-8", "replace").strip()
        text = f"Docker {method} {path}: {message or f'HTTP {status}'}"
        return _STATUS_ERRORS.get(status, DockerError)(text, status)

    def ping(self) -> bool:
        """True when dockerd answers ``/_ping``; raises DockerUnavailable otherwise."""
        self._count("GET")
        return self._get("/_ping", None, 5.0).status_code == 200

    # -- reads ------------------------------------------------------------------------------

    def list_containers(self, filters: Mapping[str, list[str]] | None = None) -> list[JSON]:
        resp = self._request("GET", "/containers/json", params={"all": "1", **_filters(filters)})
        return list(resp.json())

    def list_networks(self, filters: Mapping[str, list[str]] | None = None) -> list[JSON]:
        return list(self._request("GET", "/networks", params=_filters(filters)).json())

    def list_volumes(self, filters: Mapping[str, list[str]] | None = None) -> list[JSON]:
        data = self._request("GET", "/volumes", params=_filters(filters)).json()
        return list(data.get("Volumes") or [])

    def list_images(self) -> list[JSON]:
        return list(self._request("GET", "/images/json").json())

    def inspect_container(self, ident: str) -> JSON:
        return dict(self._request("GET", f"/containers/{quote(ident)}/json").json())

    def inspect_image(self, ref: str) -> JSON:
        return dict(self._request("GET", f"/images/{quote(ref, safe='/:@')}/json").json())

    def inspect_network(self, ident: str) -> JSON:
        return dict(self._request("GET", f"/networks/{quote(ident)}").json())

    # -- writes -----------------------------------------------------------------------------

    def create_container(self, name: str, body: JSON, *, platform: str | None = None) -> str:
        """Create container ``name``; a body that mounts an image (``Type: image``) is sent at
        API 1.48, the first to define it, whatever version the client negotiated (the caller
        checked ``server_api_version`` first: converge's ``refuse_image_mounts``)."""
        params = {"name": name, **({"platform": platform} if platform else {})}
        mounts = (body.get("HostConfig") or {}).get("Mounts") or ()
        version = IMAGE_MOUNT_VERSION if any(m.get("Type") == "image" for m in mounts) else None
        resp = self._request("POST", "/containers/create", params=params, body=body, version=version)
        return str(resp.json()["Id"])

    def put_archive(self, ident: str, path: str, tar: bytes) -> None:
        """Extract the tar archive ``tar`` into the container's filesystem at ``path``."""
        self._request(
            "PUT",
            f"/containers/{quote(ident)}/archive",
            params={"path": path},
            content=tar,
            headers={"Content-Type": "application/x-tar"},
        )

    def start_container(self, ident: str) -> None:
        self._request("POST", f"/containers/{quote(ident)}/start", ok=(204, 304))

    def stop_container(self, ident: str, timeout: int | None = 10) -> None:
        """Stop after ``timeout`` seconds; None uses the container's own StopTimeout."""
        self._request(
            "POST",
            f"/containers/{quote(ident)}/stop",
            params={} if timeout is None else {"t": str(timeout)},
            timeout=(timeout if timeout is not None else 600) + self.timeout,
            ok=(204, 304),
            waits=True,
        )

    def restart_container(self, ident: str, timeout: int | None = 10) -> None:
        """Stop (after ``timeout`` seconds; None: the container's own) and start again."""
        self._request(
            "POST",
            f"/containers/{quote(ident)}/restart",
            params={} if timeout is None else {"t": str(timeout)},
            timeout=(timeout if timeout is not None else 600) + self.timeout,
            waits=True,
        )

    def remove_container(self, ident: str, *, force: bool = False, volumes: bool = False) -> None:
        params = {"force": "1" if force else "0", "v": "1" if volumes else "0"}
        self._request("DELETE", f"/containers/{quote(ident)}", params=params)

    def rename_container(self, ident: str, name: str) -> None:
        self._request("POST", f"/containers/{quote(ident)}/rename", params={"name": name})

    def connect_network(self, network: str, container: str, endpoint: JSON | None = None) -> None:
        body: JSON = {"Container": container}
        if endpoint:
            body["EndpointConfig"] = endpoint
        self._request("POST", f"/networks/{quote(network)}/connect", body=body)

    def create_network(self, body: JSON) -> str:
        resp = self._request("POST", "/networks/create", body=body)
        return str(resp.json()["Id"])

    def remove_network(self, ident: str) -> None:
        self._request("DELETE", f"/networks/{quote(ident)}")

    def create_volume(self, body: JSON) -> JSON:
        return dict(self._request("POST", "/volumes/create", body=body).json())

    def remove_volume(self, name: str) -> None:
        self._request("DELETE", f"/volumes/{quote(name)}")

    def pull_image(self, image: str, tag: str, *, on_progress: Callable[[JSON], None] | None = None) -> None:
        """Pull ``image:tag`` (tag may be a digest). Errors inside the 200 stream are raised."""
        path = "/images/create"
        url = f"/v{self.api_version()}{path}"
        self._count("POST")
        with (
            self._translated(),
            self._http.stream("POST", url, params={"fromImage": image, "tag": tag}, timeout=None) as resp,
        ):
            if resp.status_code != 200:
                raise self._error("POST", path, resp.status_code, resp.read())
            for line in resp.iter_lines():
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if "error" in event or "errorDetail" in event:
                    detail = event.get("errorDetail") or {}
                    message = detail.get("message") or event.get("error") or "pull failed"
                    raise DockerError(f"pulling {image}:{tag}: {message}")
                if on_progress is not None:
                    on_progress(event)

    def build_image(
        self,
        context: bytes,
        params: Mapping[str, str | list[str]],
        *,
        on_output: Callable[[str], None] | None = None,
    ) -> str:
        """``POST /build`` with the context tar as the body; returns the built image's id.

        This is the classic builder: BuildKit is reachable over the Engine API only through
        its session protocol (gRPC over a hijacked ``/session`` connection). ``params`` are
        the query parameters (``t`` may repeat). Each output line goes to ``on_output``; an
        error in the 200 stream is raised as a DockerError naming the step it failed in.
        """
        path = "/build"
        query: list[tuple[str, str | int | float | bool | None]] = [
            (k, v) for k, values in params.items() for v in ([values] if isinstance(values, str) else values)
        ]
        self._count("POST")
        headers = {"Content-Type": "application/x-tar"}
        with (
            self._translated(),
            self._http.stream(
                "POST",
                f"/v{self.api_version()}{path}",
                params=query,
                content=context,
                headers=headers,
                timeout=None,
            ) as resp,
        ):
            if resp.status_code != 200:
                raise self._error("POST", path, resp.status_code, resp.read())
            return _read_build_stream(resp.iter_lines(), on_output)

    # -- swarm ------------------------------------------------------------------------------
    # Swarm objects carry a ``Version.Index``; an update names the index it read, so a
    # concurrent change makes the update fail (409/500 "update out of sequence") instead of
    # being overwritten.

    def inspect_swarm(self) -> JSON:
        """``GET /swarm``; raises NotSwarmManager when this engine is not a manager."""
        return dict(self._request("GET", "/swarm").json())

    def init_swarm(self, listen_addr: str = "0.0.0.0:2377", advertise_addr: str | None = None) -> str:
        body: JSON = {
            "ListenAddr": listen_addr,
            **({"AdvertiseAddr": advertise_addr} if advertise_addr else {}),
        }
        return str(self._request("POST", "/swarm/init", body=body).json())

    def list_nodes(self, filters: Mapping[str, list[str]] | None = None) -> list[JSON]:
        return list(self._request("GET", "/nodes", params=_filters(filters)).json())

    def list_services(
        self, filters: Mapping[str, list[str]] | None = None, *, status: bool = True
    ) -> list[JSON]:
        """With ``status``, each carries ``ServiceStatus`` (running and desired task counts)."""
        params = {**_filters(filters), **({"status": "true"} if status else {})}
        return list(self._request("GET", "/services", params=params).json())

    def inspect_service(self, ident: str) -> JSON:
        return dict(
            self._request("GET", f"/services/{quote(ident)}", params={"insertDefaults": "false"}).json()
        )

    def create_service(self, spec: JSON) -> str:
        return str(self._request("POST", "/services/create", body=spec).json()["ID"])

    def update_service(self, ident: str, version: int, spec: JSON, *, rollback: bool = False) -> list[str]:
        """Update to ``spec`` from ``version``; ``rollback`` asks Swarm for the previous spec."""
        params: dict[str, str] = {"version": str(version)}
        if rollback:
            params["rollback"] = "previous"
        resp = self._request("POST", f"/services/{quote(ident)}/update", params=params, body=spec)
        return [str(w) for w in (resp.json() or {}).get("Warnings") or []]

    def remove_service(self, ident: str) -> None:
        self._request("DELETE", f"/services/{quote(ident)}")

    def list_tasks(self, filters: Mapping[str, list[str]] | None = None) -> list[JSON]:
        return list(self._request("GET", "/tasks", params=_filters(filters)).json())

    def list_configs(self, filters: Mapping[str, list[str]] | None = None) -> list[JSON]:
        return list(self._request("GET", "/configs", params=_filters(filters)).json())

    def create_config(self, spec: JSON) -> str:
        return str(self._request("POST", "/configs/create", body=spec).json()["ID"])

    def remove_config(self, ident: str) -> None:
        self._request("DELETE", f"/configs/{quote(ident)}")

    def list_secrets(self, filters: Mapping[str, list[str]] | None = None) -> list[JSON]:
        return list(self._request("GET", "/secrets", params=_filters(filters)).json())

    def create_secret(self, spec: JSON) -> str:
        return str(self._request("POST", "/secrets/create", body=spec).json()["ID"])

    def remove_secret(self, ident: str) -> None:
        self._request("DELETE", f"/secrets/{quote(ident)}")

    # -- exec (lifecycle hooks) -------------------------------------------------------------

    def create_exec(self, ident: str, body: JSON) -> str:
        """``POST /containers/{id}/exec``: the exec's id (it is not started)."""
        return str(self._request("POST", f"/containers/{quote(ident)}/exec", body=body).json()["Id"])

    def start_exec(self, exec_id: str, *, on_output: Callable[[str, str], None] | None = None) -> None:
        """Run an exec attached, until its process ends; ``on_output(stream, line)`` per line."""
        import httpx

        path = f"/exec/{quote(exec_id)}/start"
        self._count("POST")
        with (
            self._translated(),
            self._http.stream(
                "POST",
                f"/v{self.api_version()}{path}",
                json={"Detach": False, "Tty": False},
                timeout=httpx.Timeout(self.timeout, read=None),
            ) as resp,
        ):
            if resp.status_code != 200:
                raise self._error("POST", path, resp.status_code, resp.read())
            _split_lines(_demultiplex(resp.iter_bytes()), on_output)

    def inspect_exec(self, exec_id: str) -> JSON:
        """``GET /exec/{id}/json``: ``Running`` and ``ExitCode``."""
        return dict(self._request("GET", f"/exec/{quote(exec_id)}/json").json())

    # -- streams ----------------------------------------------------------------------------

    def container_logs(
        self, ident: str, *, tail: str = "all", follow: bool = False, timestamps: bool = False
    ) -> Iterator[tuple[str, bytes]]:
        """Yield (stream, chunk) pairs, demultiplexing Docker's 8-byte frame headers."""
        path = f"/containers/{quote(ident)}/logs"
        params = {
            "stdout": "1",
            "stderr": "1",
            "tail": tail,
            "follow": "1" if follow else "0",
            "timestamps": "1" if timestamps else "0",
        }
        tty = bool(self.inspect_container(ident).get("Config", {}).get("Tty"))
        self._count("GET")
        with (
            self._translated(),
            self._http.stream("GET", f"/v{self.api_version()}{path}", params=params, timeout=None) as resp,
        ):
            if resp.status_code != 200:
                raise self._error("GET", path, resp.status_code, resp.read())
            if tty:
                for chunk in resp.iter_bytes():
                    yield "stdout", chunk
                return
            buf = b""
            for chunk in resp.iter_bytes():
                buf += chunk
                while len(buf) >= 8:
                    kind, size = struct.unpack(">BxxxL", buf[:8])
                    if len(buf) < 8 + size:
                        break
                    yield ("stderr" if kind == 2 else "stdout"), buf[8 : 8 + size]
                    buf = buf[8 + size :]

    def events(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        filters: Mapping[str, list[str]] | None = None,
        read_timeout: float | None = None,
    ) -> Iterator[JSON]:
        """Yield decoded events from ``GET /events`` until the stream ends."""
        import httpx

        params: dict[str, str] = dict(_filters(filters))
        if since is not None:
            params["since"] = since
        if until is not None:
            params["until"] = until
        self._count("GET")
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        with (
            self._translated(),
            self._http.stream(
                "GET", f"/v{self.api_version()}/events", params=params, timeout=timeout
            ) as resp,
        ):
            if resp.status_code != 200:
                raise self._error("GET", "/events", resp.status_code, resp.read())
            for line in resp.iter_lines():
                if line.strip():
                    yield dict(json.loads(line))


def _read_build_stream(lines: Iterator[str], on_output: Callable[[str], None] | None) -> str:
    """Follow ``POST /build``'s JSON lines: output to ``on_output``, the image id at the end.

    Raises DockerError with the step that failed (``Step 3/5 : RUN make: ...``).
    """
    step, image_id = "", ""
    for line in lines:
        try:
            event = json.loads(line) if line.strip() else None
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if "error" in event or "errorDetail" in event:
            detail = event.get("errorDetail") or {}
            message = str(detail.get("message") or event.get("error") or "build failed").strip()
            raise DockerError(f"{step}: {message}" if step else message)
        aux = event.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = str(aux["ID"])
        for text in str(event.get("stream") or "").splitlines():
            if text.startswith("Step "):
                step = text.strip()
            if text.strip() and on_output is not None:
                on_output(text.rstrip())
    if not image_id:
        raise DockerError(f"the build ended without an image{f' after {step}' if step else ''}")
    return image_id


def _demultiplex(chunks: Iterator[bytes]) -> Iterator[tuple[str, bytes]]:
    """(stream, payload) of a non-TTY attach stream's 8-byte-header frames."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        while len(buf) >= 8:
            kind, size = struct.unpack(">BxxxL", buf[:8])
            if len(buf) < 8 + size:
                break
            yield ("stderr" if kind == 2 else "stdout"), buf[8 : 8 + size]
            buf = buf[8 + size :]


def _split_lines(frames: Iterator[tuple[str, bytes]], on_output: Callable[[str, str], None] | None) -> None:
    """Hand each complete line of each stream to ``on_output``; a last partial line too."""
    pending: dict[str, bytes] = {}
    for stream, payload in frames:
        *lines, pending[stream] = (pending.get(stream, b"") + payload).split(b"\n")
        for line in lines:
            if on_output is not None:
                on_output(stream, line.decode("utf-8", "replace").rstrip("\r"))
    for stream, rest in pending.items():
        if rest and on_output is not None:
            on_output(stream, rest.decode("utf-8", "replace"))
