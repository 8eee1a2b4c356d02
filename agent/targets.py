"""Which Docker engine each source deploys to, and one Docker client per engine.

A source names its target in the agent config::

    target:
      host: tcp://edge-1.example.com:2376      # or unix:///path, or ssh://deploy@edge-1
      tls: {ca: certs/ca.pem, cert: certs/cert.pem, key: certs/key.pem}
      ssh: {known_hosts: ssh/known_hosts, identity: ssh/id_ed25519}
      timeout: 10s                              # this engine's own request timeout (30s, 2m, 1m30s)
      parallel: 4                               # its mutating calls in flight, all sources together
    # or: target: {context: edge-1}             # a Docker CLI context, by name

Without one, the source uses the agent's ``docker_host`` (else ``DOCKER_HOST``/``DOCKER_CONTEXT``
as the Docker CLI resolves them). Relative files are taken from the config file's directory.
``Targets`` holds one DockerClient per distinct engine, so the sources on one host share its
connections and an unreachable host fails only its own sources' calls: there is no lock or
connection shared across hosts. ``timeout`` is a Compose duration; a bare number is seconds.
``parallel`` (default ``defaults.parallel``, 8) caps the engine's mutating calls in flight
across every source that deploys there (``DockerClient(max_in_flight=...)``): fifty sources
starting at once queue for one 2-core dockerd instead of timing out on it. Two targets naming
one engine share its client, so the first one asked for sets its timeout and cap.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from gitdock.runtime.contexts import (
    Endpoint,
    Scheme,
    SshOptions,
    TargetError,
    TlsFiles,
    docker_config_dir,
    parse_host,
    read_context,
    resolve_endpoint,
)
from gitdock.runtime.docker import DockerClient
from gitdock.specs.schema import parse_duration

__all__ = [
    "DEFAULT_PARALLEL",
    "DEFAULT_TIMEOUT",
    "SshConfig",
    "TargetConfig",
    "Targets",
    "TlsConfig",
    "display_host",
]

DEFAULT_TIMEOUT = 30.0
# Mutating calls in flight on one engine, all its sources together: as many as one apply keeps
# in flight (runtime.execute.DEFAULT_CONCURRENCY); more did not make a 2-core dockerd faster.
DEFAULT_PARALLEL = 8


def parse_timeout(value: Any) -> float:
    """Seconds from a Compose duration (``30s``, ``2m``, ``1m30s``) or a bare number of seconds.

    Pure. Raises ValueError (or the Compose parser's error) naming what is wrong, for pydantic.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a duration like 30s, 2m or 1m30s, or a number of seconds")
    try:
        seconds = float(value)  # a bare number, also quoted: seconds, as before durations
    except ValueError:
        seconds = parse_duration(str(value).strip()) / 1e9
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{str(value)[:40]!r} is not a timeout: it must be more than 0 (e.g. 30s)")
    return seconds


Timeout = Annotated[float, BeforeValidator(parse_timeout)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Model):
    """Mutual TLS files: the CA that signed the engine's certificate, the client's cert and key."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls needs both cert and key, or neither")
        return self


class SshConfig(_Model):
    """Host keys are checked only against ``known_hosts``; ``identity`` is the private key file."""

    known_hosts: Path | None = None
    identity: Path | None = None


class TargetConfig(_Model):
    """One engine: a ``host`` (with ``tls`` or ``ssh`` options) or a Docker ``context``."""

    host: str | None = None
    context: str | None = None
    tls: TlsConfig | None = None
    ssh: SshConfig | None = None
    timeout: Timeout = DEFAULT_TIMEOUT
    parallel: int | None = Field(default=None, ge=1, le=256)  # None: the agent's defaults.parallel

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_host(v)
            except TargetError as exc:
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _one(self) -> TargetConfig:
        if (self.host is None) == (self.context is None):
            raise ValueError("a target is either host: or context:, exactly one")
        scheme = parse_host(self.host).scheme if self.host else None
        if self.tls is not None and scheme is not Scheme.TCP:
            raise ValueError("tls: applies to a tcp:// host only (a context brings its own)")
        if self.ssh is not None and scheme is not Scheme.SSH:
            raise ValueError("ssh: applies to an ssh:// host only")
        return self

    def endpoint(self, base_dir: Path, env: Mapping[str, str]) -> Endpoint:
        """The engine this names; relative files from ``base_dir``. Reads the context store."""
        if self.context is not None:
            return read_context(self.context, docker_config_dir(env))
        assert self.host is not None
        tls = ssh = None
        if self.tls is not None:
            tls = TlsFiles(*(_under(base_dir, p) for p in (self.tls.ca, self.tls.cert, self.tls.key)))
        if self.ssh is not None:
            ssh = SshOptions(_under(base_dir, self.ssh.known_hosts), _under(base_dir, self.ssh.identity))
        return Endpoint(self.host, tls=tls, ssh=ssh)


def _under(base_dir: Path, path: Path | None) -> Path | None:
    return None if path is None else (path if path.is_absolute() else base_dir / path)


class Targets:
    """One DockerClient per distinct engine, made when a source first asks for it.

    ``default`` is the engine of sources without a target. Thread-safe; each client has its
    own connection pool and timeouts, so a slow host never holds a lock another host needs.
    """

    def __init__(
        self,
        default: DockerClient,
        base_dir: Path,
        env: Mapping[str, str],
        *,
        parallel: int = DEFAULT_PARALLEL,
    ) -> None:
        self.default = default
        self._base_dir, self._env, self._parallel = base_dir, env, parallel
        self._clients: dict[Endpoint, DockerClient] = {default.endpoint: default}
        self._lock = threading.Lock()

    def endpoint(self, target: TargetConfig | None) -> Endpoint:
        """The endpoint of ``target`` (the default engine's for None). Raises TargetError."""
        return self.default.endpoint if target is None else target.endpoint(self._base_dir, self._env)

    def client(self, target: TargetConfig | None) -> DockerClient:
        """The shared client for ``target``. Raises TargetError when it cannot be used."""
        endpoint = self.endpoint(target)
        with self._lock:
            client = self._clients.get(endpoint)
            if client is None:
                timeout = target.timeout if target is not None else DEFAULT_TIMEOUT
                parallel = (target.parallel if target is not None else None) or self._parallel
                client = DockerClient(endpoint, timeout=timeout, max_in_flight=parallel)
                self._clients[endpoint] = client
            return client

    def clients(self) -> list[DockerClient]:
        with self._lock:
            return list(self._clients.values())

    def close(self) -> None:
        for client in self.clients():
            client.close()


def display_host(endpoint: Endpoint) -> str:
    """How metrics and history name an engine: the context's name, else the host URL with no
    user part (``ssh://deploy@edge-1`` is ``ssh://edge-1``). Pure; never carries credentials."""
    if endpoint.context:
        return endpoint.context
    address = endpoint.address
    if address.scheme is Scheme.SSH:
        return f"ssh://{address.netloc}"
    return endpoint.host


def resolve_default(docker_host: str | None, env: Mapping[str, str]) -> Endpoint:
    """The agent's own engine: ``docker_host``, else what the Docker CLI would use."""
    return resolve_endpoint(docker_host, None, env)
