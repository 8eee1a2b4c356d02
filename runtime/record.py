"""The applied record: what gitdock left on the host after a successful apply.

Drift is measured against this record, not against git: it names the container ids, image
ids and networks gitdock created, so anything different afterwards was done by someone else.
Values that only an inspect shows (environment, restart policy, resource limits, mounts,
port bindings) are taken from the create bodies gitdock sent, so recording costs no inspect.

This is a purely computational module: no I/O, no Docker client. ``applied_record`` takes a
Project and a snapshot taken after the apply; ``AppliedRecord`` round-trips through JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from gitdock.runtime import labels
from gitdock.runtime.desired import DesiredContainer, desired_container
from gitdock.runtime.observe import ObservedContainer, ObservedState
from gitdock.specs.model import Project

if TYPE_CHECKING:
    from gitdock.runtime.trust.resolve import ResolvedImage

__all__ = [
    "RECORD_VERSION",
    "RESOURCE_KEYS",
    "AppliedContainer",
    "AppliedNetwork",
    "AppliedRecord",
    "AppliedVolume",
    "ExpectedState",
    "applied_record",
    "env_digest",
    "is_env_digest",
    "mount_keys",
    "port_keys",
    "record_applied",
    "restart_text",
]

RECORD_VERSION = 1
# HostConfig resource limits that `docker update` can change in place (0 is "unlimited").
RESOURCE_KEYS = ("Memory", "MemoryReservation", "NanoCpus", "CpuShares", "PidsLimit")


# How the record keeps a secret (SOPS-decrypted) environment value: its digest, never the
# value. NUL cannot occur in a real environment string, so no value is mistaken for one.
_ENV_DIGEST = "\0sha256:"


def env_digest(value: str) -> str:
    """The recorded form of a secret environment value. Pure."""
    return _ENV_DIGEST + hashlib.sha256(value.encode()).hexdigest()


def is_env_digest(value: str) -> bool:
    return value.startswith(_ENV_DIGEST)


def _recorded_env(entry: str, secret: frozenset[str]) -> str:
    key, sep, value = entry.partition("=")
    return f"{key}={env_digest(value)}" if sep and key in secret else entry


class Keyed(Protocol):
    """A network or volume as the record needs it: a model's, or a Desired one's."""

    @property
    def key(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def external(self) -> bool: ...


class ExpectedState(str, Enum):
    """What the container should be doing: still running, or a one-shot job that finished."""

    RUNNING = "running"
    COMPLETED = "completed"


def restart_text(policy: Mapping[str, Any] | None) -> str:
    """A RestartPolicy as Compose writes it: ``no``, ``always``, ``on-failure:3``. Pure."""
    policy = policy or {}
    name = str(policy.get("Name") or "no")
    count = int(policy.get("MaximumRetryCount") or 0)
    return f"{name}:{count}" if name == "on-failure" and count else name


def port_keys(bindings: Mapping[str, Any] | None) -> tuple[str, ...]:
    """HostConfig.PortBindings as sorted ``host_ip:host_port->port/proto`` strings. Pure."""
    keys: set[str] = set()
    for port, hosts in (bindings or {}).items():
        for host in hosts or [{}]:
            keys.add(f"{host.get('HostIp') or ''}:{host.get('HostPort') or ''}->{port}")
    return tuple(sorted(keys))


def mount_keys(host_config: Mapping[str, Any]) -> tuple[str, ...]:
    """A create body's Binds and Mounts as sorted ``type:source:target[:ro]`` strings. Pure.

    Anonymous volumes have an empty source, so they compare equal whatever name Docker gave.
    """
    keys: set[str] = set()
    for bind in host_config.get("Binds") or []:
        parts = str(bind).split(":")
        if len(parts) == 1:  # "/data": an anonymous volume
            parts = ["", parts[0]]
        ro = len(parts) > 2 and "ro" in parts[2].split(",")
        kind = "bind" if parts[0].startswith("/") else "volume"  # "name:/data" is a named volume
        keys.add(f"{kind}:{parts[0]}:{parts[1]}{':ro' if ro else ''}")
    for mount in host_config.get("Mounts") or []:
        kind = str(mount.get("Type", "volume"))
        source = str(mount.get("Source") or "") if kind != "tmpfs" else ""
        keys.add(f"{kind}:{source}:{mount.get('Target', '')}{':ro' if mount.get('ReadOnly') else ''}")
    return tuple(sorted(keys))


@dataclass(frozen=True)
class AppliedContainer:
    """One container as gitdock left it."""

    name: str
    id: str
    service: str
    number: int
    config_hash: str
    image: str  # the reference it was created from
    image_id: str
    expect: ExpectedState
    restart: str  # Compose syntax: no, always, unless-stopped, on-failure[:N]
    resources: tuple[tuple[str, int], ...]  # RESOURCE_KEYS -> value from the create body
    env: tuple[str, ...]  # KEY=VALUE as sent; a secret's value as its env_digest
    ports: tuple[str, ...]  # port_keys of the PortBindings sent
    mounts: tuple[str, ...]  # mount_keys of the Binds and Mounts sent
    networks: tuple[str, ...]  # Docker network names attached after the apply

    @property
    def resource(self) -> str:
        return labels.service_resource(self.service, self.number)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "service": self.service,
            "number": self.number,
            "configHash": self.config_hash,
            "image": self.image,
            "imageId": self.image_id,
            "expect": self.expect.value,
            "restart": self.restart,
            "resources": dict(self.resources),
            "env": list(self.env),
            "ports": list(self.ports),
            "mounts": list(self.mounts),
            "networks": list(self.networks),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AppliedContainer:
        return cls(
            name=str(data["name"]),
            id=str(data["id"]),
            service=str(data["service"]),
            number=int(data["number"]),
            config_hash=str(data.get("configHash", "")),
            image=str(data.get("image", "")),
            image_id=str(data.get("imageId", "")),
            expect=ExpectedState(data.get("expect", "running")),
            restart=str(data.get("restart", "no")),
            resources=tuple((k, int((data.get("resources") or {}).get(k) or 0)) for k in RESOURCE_KEYS),
            env=tuple(str(e) for e in data.get("env") or ()),
            ports=tuple(str(p) for p in data.get("ports") or ()),
            mounts=tuple(str(m) for m in data.get("mounts") or ()),
            networks=tuple(str(n) for n in data.get("networks") or ()),
        )


@dataclass(frozen=True)
class AppliedNetwork:
    key: str
    name: str
    id: str

    @property
    def resource(self) -> str:
        return labels.network_resource(self.key)


@dataclass(frozen=True)
class AppliedVolume:
    key: str
    name: str

    @property
    def resource(self) -> str:
        return labels.volume_resource(self.key)


@dataclass(frozen=True)
class AppliedRecord:
    """Per project: the containers, networks and volumes one apply left, and when."""

    project: str
    containers: tuple[AppliedContainer, ...]
    networks: tuple[AppliedNetwork, ...] = ()
    volumes: tuple[AppliedVolume, ...] = ()
    applied_at: float = 0.0  # unix seconds
    revision: str | None = None

    @cached_property
    def _by_name(self) -> dict[str, AppliedContainer]:
        return {c.name: c for c in self.containers}

    def container_named(self, name: str) -> AppliedContainer | None:
        return self._by_name.get(name)

    @property
    def container_ids(self) -> frozenset[str]:
        return frozenset(c.id for c in self.containers)

    @property
    def resource_names(self) -> frozenset[str]:
        """Docker names of the record's networks and volumes (events of these carry no labels)."""
        return frozenset([n.name for n in self.networks] + [v.name for v in self.volumes])

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "project": self.project,
            "revision": self.revision,
            "appliedAt": self.applied_at,
            "containers": [c.to_dict() for c in self.containers],
            "networks": [{"key": n.key, "name": n.name, "id": n.id} for n in self.networks],
            "volumes": [{"key": v.key, "name": v.name} for v in self.volumes],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AppliedRecord:
        """Raises ValueError for a record written by a newer gitdock or missing its keys."""
        version = int(data.get("version", 0))
        if version != RECORD_VERSION:
            raise ValueError(f"applied record version {version} is not {RECORD_VERSION}")
        try:
            return cls(
                project=str(data["project"]),
                containers=tuple(AppliedContainer.from_dict(c) for c in data["containers"]),
                networks=tuple(
                    AppliedNetwork(str(n["key"]), str(n["name"]), str(n["id"])) for n in data["networks"]
                ),
                volumes=tuple(AppliedVolume(str(v["key"]), str(v["name"])) for v in data["volumes"]),
                applied_at=float(data.get("appliedAt") or 0.0),
                revision=data.get("revision"),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"applied record is malformed: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str) -> AppliedRecord:
        return cls.from_dict(json.loads(text))


def _expect(live: ObservedContainer, restart: str) -> ExpectedState:
    # The planner's rule too: a one-shot job that exited 0 and is not restarted is done.
    return ExpectedState.COMPLETED if live.is_finished_job(restart) else ExpectedState.RUNNING


def _applied_container(dc: DesiredContainer, live: ObservedContainer) -> AppliedContainer:
    body = dc.create_body
    host = body.get("HostConfig") or {}
    restart = restart_text(host.get("RestartPolicy"))
    return AppliedContainer(
        name=dc.name,
        id=live.id,
        service=dc.service,
        number=dc.number,
        config_hash=dc.config_hash,
        image=live.image or dc.image,
        image_id=live.image_id,
        expect=_expect(live, restart),
        restart=restart,
        resources=tuple((k, int(host.get(k) or 0)) for k in RESOURCE_KEYS),
        env=(
            tuple(_recorded_env(str(e), dc.secret_env) for e in body.get("Env") or ())
            if dc.secret_env
            else tuple(map(str, body.get("Env") or ()))
        ),
        ports=port_keys(host.get("PortBindings")),
        mounts=mount_keys(host),
        networks=tuple(sorted(live.networks)),
    )


def record_applied(
    project_name: str,
    containers: Iterable[DesiredContainer],
    networks: Iterable[Keyed],
    volumes: Iterable[Keyed],
    observed_after: ObservedState,
    *,
    applied_at: float,
    revision: str | None = None,
) -> AppliedRecord:
    """Pair the desired objects with what ``observed_after`` shows. Pure.

    A desired object the snapshot lacks (an operation failed) is left out: the record holds
    only what gitdock really left. External networks and volumes are not gitdock's to watch.
    ``networks`` and ``volumes`` are the Desired ones or the model's: only their key, Docker
    name and ``external`` are read.
    """
    record_containers = []
    for dc in sorted(containers, key=lambda c: (c.service, c.number)):
        live = observed_after.container_named(dc.name)
        if live is not None:
            record_containers.append(_applied_container(dc, live))
    record_networks = []
    for dn in sorted(networks, key=lambda n: n.key):
        live_net = observed_after.network_named(dn.name)
        if live_net is not None and not dn.external:
            record_networks.append(AppliedNetwork(dn.key, dn.name, live_net.id))
    record_volumes = [
        AppliedVolume(dv.key, dv.name)
        for dv in sorted(volumes, key=lambda v: v.key)
        if not dv.external and observed_after.volume_named(dv.name) is not None
    ]
    return AppliedRecord(
        project=project_name,
        containers=tuple(record_containers),
        networks=tuple(record_networks),
        volumes=tuple(record_volumes),
        applied_at=applied_at,
        revision=revision,
    )


def applied_record(
    project: Project,
    observed_after: ObservedState,
    images: Mapping[str, ResolvedImage] | None = None,
    *,
    applied_at: float,
    revision: str | None = None,
) -> AppliedRecord:
    """The record of ``project`` as applied, from a snapshot taken after the apply. Pure.

    Recomputes the desired bodies exactly as the planner does (with the same resolved
    ``images``), so the record matches what was sent.
    """
    images = images or {}
    containers = [
        desired_container(project, svc, n, images.get(svc.image))
        for svc in project.services
        for n in range(1, svc.replicas + 1)
    ]
    return record_applied(
        project.name,
        containers,
        project.networks,  # their key, name and external are the Desired ones' (desired_network)
        project.volumes,
        observed_after,
        applied_at=applied_at,
        revision=revision,
    )
