"""Read the Swarm-only settings of a Compose project: the raw ``deploy`` sections and more.

The normalised model (``specs.model``) is built for a plain Docker host and drops what only
Swarm honours (placement, update_config, ``attachable``, a port's ``mode``). This reads the
same merged, interpolated document the loader reads and keeps those parts as plain data for
``gitdock.runtime.swarm.desired``, which validates them. Its only I/O is reading the files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gitdock.runtime.swarm.desired import SwarmInputs, SwarmSpecError
from gitdock.specs.load import StrPath
from gitdock.specs.model import Project
from gitdock.specs.read import Reader

__all__ = ["load_swarm_inputs", "swarm_warning"]

# The loader's warnings about Swarm-only settings, which the Swarm target does honour.
_SWARM_WARNING_MARKS = ("(Swarm only)", "is a Swarm object", "has no effect on a plain Docker host")


def swarm_warning(warning: str) -> bool:
    """Whether a load warning only says a setting needs Swarm (true, and moot, on Swarm)."""
    return any(mark in warning for mark in _SWARM_WARNING_MARKS)


def load_swarm_inputs(
    files: Sequence[StrPath],
    project: Project,
    *,
    environ: Mapping[str, str] | None = None,
    env_file: StrPath | None = None,
) -> SwarmInputs:
    """The Swarm-only settings of ``project``, loaded from ``files`` (so already valid).

    Also reads the config and secret files the plain-host model bind-mounts (Swarm needs their
    bytes); a SOPS-encrypted one was decrypted by the loader and carries its content already.
    """
    reader = Reader(
        [os.path.abspath(os.fspath(f)) for f in files], os.environ if environ is None else environ
    )
    reader.load_dotenv(None if env_file is None else os.path.abspath(os.fspath(env_file)))
    data = _plain(reader.read_document().data)
    services = data.get("services") or {}
    deploy = {name: dict(svc.get("deploy") or {}) for name, svc in services.items() if isinstance(svc, dict)}
    host_ports = {name: tuple(sorted(_host_ports(svc.get("ports") or []))) for name, svc in services.items()}
    networks = data.get("networks") or {}
    attachable = frozenset(k for k, v in networks.items() if isinstance(v, dict) and v.get("attachable"))
    external = {
        (kind, key): str(v.get("name") or key)
        for kind in ("configs", "secrets")
        for key, v in (data.get(kind) or {}).items()
        if isinstance(v, dict) and v.get("external")
    }
    refs = {
        name: tuple(
            (kind, *_file_ref(kind, entry))
            for kind in ("configs", "secrets")
            for entry in svc.get(kind) or []
        )
        for name, svc in services.items()
    }
    return SwarmInputs(
        deploy=deploy,
        host_ports={k: v for k, v in host_ports.items() if v},
        attachable=attachable,
        external_files=external,
        external_refs={k: tuple(r for r in v if (r[0], r[1]) in external) for k, v in refs.items()},
        file_contents=_file_contents(project),
    )


def _file_contents(project: Project) -> dict[str, bytes]:
    contents: dict[str, bytes] = {}
    for svc in project.services:
        for f in svc.files:
            if f.content is None and f.source and f.source not in contents:
                try:
                    contents[f.source] = Path(f.source).read_bytes()
                except OSError as exc:
                    raise SwarmSpecError(
                        f"{f.kind}.{f.name}: cannot read {f.source}: {exc.strerror}"
                    ) from None
    return contents


def _plain(value: Any) -> Any:
    """The document without its position-carrying mapping and list types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _host_ports(entries: list[Any]) -> list[tuple[int, str]]:
    """(target, protocol) of each long-syntax port published in ``mode: host``."""
    return [
        (int(entry["target"]), str(entry.get("protocol") or "tcp"))
        for entry in entries
        if isinstance(entry, dict) and entry.get("mode") == "host" and "target" in entry
    ]


def _file_ref(kind: str, entry: Any) -> tuple[str, str]:
    """(source, target) of a service's config or secret reference, with Compose's default target."""
    source = str(entry if isinstance(entry, str) else entry.get("source", ""))
    target = None if isinstance(entry, str) else entry.get("target")
    default = f"/run/secrets/{source}" if kind == "secrets" else f"/{source}"
    return source, str(target or default)
