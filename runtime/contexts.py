"""Where a Docker engine is: host addresses, TLS and ssh options, and the Docker CLI's contexts.

An ``Endpoint`` names one engine: ``unix:///path``, ``tcp://host:port`` (mutual TLS when it
carries ``tls`` files) or ``ssh://[user@]host[:port]`` (the remote's ``docker system
dial-stdio``, with strict host-key checking). It is resolved the way the Docker CLI resolves
one: ``--host``, else ``--context``, else ``DOCKER_HOST``, else ``DOCKER_CONTEXT``, else the
``currentContext`` of ``$DOCKER_CONFIG/config.json``; ``DOCKER_TLS_VERIFY`` with
``DOCKER_CERT_PATH`` (``ca.pem``, ``cert.pem``, ``key.pem``) turns TLS on for a tcp host.

A context is read from the CLI's store: ``contexts/meta/<sha256(name)>/meta.json`` for the
host and ``contexts/tls/<sha256(name)>/docker/`` for its certificates. This module only reads
files; nothing here opens a connection. A target that cannot be used as written is a
``TargetError`` (a PermanentError: a person must fix the config), naming what and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gitdock.specs.errors import PermanentError

if TYPE_CHECKING:
    import ssl

__all__ = [
    "DEFAULT_HOST",
    "Endpoint",
    "HostAddress",
    "Scheme",
    "SshOptions",
    "TargetError",
    "TlsFiles",
    "docker_config_dir",
    "parse_host",
    "read_context",
    "resolve_endpoint",
    "ssl_context",
]

DEFAULT_HOST = "unix:///var/run/docker.sock"
DEFAULT_CONTEXT = "default"  # the CLI's name for "DOCKER_HOST, else the local socket"


class TargetError(PermanentError):
    """A Docker target (host, TLS files, ssh options or context) cannot be used as written."""


class Scheme(str, Enum):
    UNIX = "unix"
    TCP = "tcp"
    SSH = "ssh"


@dataclass(frozen=True)
class HostAddress:
    """A parsed host: the socket ``path`` (unix) or ``hostname``/``port``/``user`` (tcp, ssh)."""

    scheme: Scheme
    path: str = ""
    hostname: str = ""
    port: int | None = None
    user: str | None = None

    @property
    def netloc(self) -> str:
        """``host:port`` with IPv6 brackets, as a URL wants it."""
        name = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{name}:{self.port}" if self.port is not None else name


@dataclass(frozen=True)
class TlsFiles:
    """Mutual TLS: the CA that signed the engine's certificate, and the client's own pair."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class SshOptions:
    """``known_hosts`` is the only file host keys are checked against; ``identity`` the key."""

    known_hosts: Path | None = None
    identity: Path | None = None


@dataclass(frozen=True)
class Endpoint:
    """One Docker engine and how to reach it. ``context`` is the CLI context it came from."""

    host: str
    tls: TlsFiles | None = None
    ssh: SshOptions | None = None
    context: str | None = None

    @property
    def address(self) -> HostAddress:
        return parse_host(self.host)

    @property
    def server_address(self) -> str:
        """What traces and metrics call the engine (``server.address``): host name or socket."""
        address = self.address
        return address.path if address.scheme is Scheme.UNIX else address.hostname

    @property
    def name(self) -> str:
        """How status and logs name the target: the context's name, else the host."""
        return self.context or self.host


def parse_host(host: str) -> HostAddress:
    """Parse ``unix:///path``, ``tcp://host:port`` (``http://`` too) or ``ssh://[user@]host[:port]``.

    Pure. Raises TargetError for any other scheme or a malformed address; a password in the
    URL is refused and never repeated in the message.
    """
    shown = repr(_redact(host))
    scheme, sep, rest = host.partition("://")
    if not sep:
        raise TargetError(
            f"Docker host {shown}: not a URL; use unix:///path, tcp://host:port or ssh://user@host"
        )
    if scheme == "unix":
        if not rest.startswith("/"):
            raise TargetError(f"Docker host {shown}: a unix socket needs an absolute path")
        return HostAddress(Scheme.UNIX, path=rest)
    if scheme not in ("tcp", "http", "ssh"):
        raise TargetError(
            f"Docker host {shown} is not supported: use unix:///path, tcp://host:port or ssh://user@host"
        )
    parts = urlsplit(host)
    try:
        port = parts.port
    except ValueError:
        raise TargetError(f"Docker host {shown}: the port is not a number from 1 to 65535") from None
    if parts.password is not None:
        raise TargetError(f"Docker host {shown}: no password in the URL; use ssh.identity")
    if not parts.hostname:
        raise TargetError(f"Docker host {shown}: no host name")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise TargetError(f"Docker host {shown}: nothing may follow host:port")
    if scheme == "ssh":
        return HostAddress(Scheme.SSH, hostname=parts.hostname, port=port, user=parts.username or None)
    if parts.username is not None:
        raise TargetError(f"Docker host {shown}: a tcp host takes no user")
    return HostAddress(Scheme.TCP, hostname=parts.hostname, port=port if port is not None else 2375)


def _redact(host: str) -> str:
    """``host`` with any ``user:password@`` password replaced by ``***``."""
    return re.sub(r"^([a-z]+://[^/@:]*):[^/@]*@", r"\1:***@", host)


def docker_config_dir(env: Mapping[str, str]) -> Path:
    """``$DOCKER_CONFIG``, else ``~/.docker``: where the CLI keeps its config and contexts."""
    configured = env.get("DOCKER_CONFIG")
    return Path(configured) if configured else Path(env.get("HOME") or Path.home()) / ".docker"


def _context_dir(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def read_context(name: str, config_dir: Path) -> Endpoint:
    """The endpoint of Docker context ``name`` in the CLI's store under ``config_dir``.

    Reads ``meta.json`` and the context's ``tls/`` files. Raises TargetError when the context
    is missing, malformed, has no docker endpoint or skips TLS verification.
    """
    meta = config_dir / "contexts" / "meta" / _context_dir(name) / "meta.json"
    where = f"Docker context {name!r}"
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TargetError(f"{where}: not found (no {meta})") from None
    except (OSError, ValueError) as exc:
        raise TargetError(f"{where}: cannot read {meta}: {exc}") from None
    docker = (data.get("Endpoints") or {}).get("docker") if isinstance(data, dict) else None
    if not isinstance(docker, dict) or not isinstance(docker.get("Host"), str) or not docker["Host"]:
        raise TargetError(f"{where}: {meta} names no docker endpoint host")
    if docker.get("SkipTLSVerify"):
        raise TargetError(f"{where}: SkipTLSVerify is set; gitdock always verifies the engine's certificate")
    host = str(docker["Host"])
    parse_host(host)
    tls_dir = config_dir / "contexts" / "tls" / _context_dir(name) / "docker"
    return Endpoint(host, tls=_tls_in(tls_dir), context=name)


def _tls_in(directory: Path) -> TlsFiles | None:
    """The ``ca.pem``, ``cert.pem`` and ``key.pem`` present in ``directory``, or None if none is."""
    found = {stem: directory / f"{stem}.pem" for stem in ("ca", "cert", "key")}
    present = {stem: path for stem, path in found.items() if path.is_file()}
    return TlsFiles(**present) if present else None


def _current_context(config_dir: Path) -> str | None:
    try:
        data = json.loads((config_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the CLI, too, treats a missing or unreadable config as "no context"
    name = data.get("currentContext") if isinstance(data, dict) else None
    return str(name) if name else None


def _env_endpoint(host: str, env: Mapping[str, str], config_dir: Path) -> Endpoint:
    """``host`` with ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH`` applied, as the CLI does."""
    parse_host(host)
    if not env.get("DOCKER_TLS_VERIFY") or not host.startswith("tcp://"):
        return Endpoint(host)
    cert_dir = Path(env["DOCKER_CERT_PATH"]) if env.get("DOCKER_CERT_PATH") else config_dir
    tls = _tls_in(cert_dir)
    if tls is None:
        raise TargetError(f"DOCKER_TLS_VERIFY is set but {cert_dir} holds no ca.pem, cert.pem or key.pem")
    return Endpoint(host, tls=tls)


def resolve_endpoint(
    host: str | None = None, context: str | None = None, env: Mapping[str, str] | None = None
) -> Endpoint:
    """The engine the Docker CLI would talk to, given ``--host``, ``--context`` and ``env``.

    Reads only files (the context store, config.json). Raises TargetError for both flags at
    once, an unknown context or a bad host.
    """
    env = os.environ if env is None else env
    config_dir = docker_config_dir(env)
    if host and context:
        raise TargetError("--host and --context cannot be used together")
    if host:
        return _env_endpoint(host, env, config_dir)
    if not context and env.get("DOCKER_HOST"):
        return _env_endpoint(env["DOCKER_HOST"], env, config_dir)
    name = context or env.get("DOCKER_CONTEXT") or _current_context(config_dir)
    if name and name != DEFAULT_CONTEXT:
        return read_context(name, config_dir)
    return Endpoint(DEFAULT_HOST)


def ssl_context(tls: TlsFiles, where: str) -> ssl.SSLContext:
    """A client TLS context that verifies the engine against ``tls.ca`` and presents cert/key.

    Without ``ca`` the system's trust store is used. Raises TargetError naming the file that
    cannot be read or is not PEM; ``where`` names the target in that message.
    """
    import ssl  # here, not at the top: a unix-socket command never speaks TLS

    if (tls.cert is None) != (tls.key is None):
        raise TargetError(f"{where}: tls needs both cert and key, or neither")
    try:
        context = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise TargetError(f"{where}: tls.ca {tls.ca}: {_reason(exc)}") from None
    if tls.cert is not None and tls.key is not None:
        try:
            context.load_cert_chain(str(tls.cert), str(tls.key))
        except (OSError, ssl.SSLError) as exc:
            raise TargetError(f"{where}: tls.cert {tls.cert} / tls.key {tls.key}: {_reason(exc)}") from None
    return context


def _reason(exc: Exception) -> str:
    import ssl

    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, ssl.SSLError):
        return "not a PEM certificate or key" if "PEM" in str(exc) or exc.reason is None else str(exc.reason)
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
