"""Observe: one snapshot of the live Docker state, so planning needs no further API calls.

``observe`` makes a fixed, small number of list calls whatever the project's size (one each
for containers, networks, volumes and images) and turns the answers into plain frozen data.
The data types here are pure; only ``observe`` touches Docker, through the client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gitdock.runtime.labels import (
    LABEL_CONFIG_FIELDS,
    LABEL_CONFIG_HASH,
    LABEL_NUMBER,
    LABEL_PROJECT,
    LABEL_SERVICE,
)

if TYPE_CHECKING:
    from gitdock.runtime.docker import DockerClient

_EXIT_CODE = re.compile(r"Exited \((-?\d+)\)")
_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")


@dataclass(frozen=True)
class ObservedContainer:
    id: str
    name: str
    image: str  # the image reference the container was created from
    image_id: str
    state: str  # created, running, paused, restarting, exited, removing, dead
    status: str  # Docker's human text, e.g. "Up 3 minutes (healthy)"
    labels: dict[str, str] = field(hash=False)
    networks: dict[str, str] = field(hash=False)  # network name -> network id
    created: int = 0
    ports: tuple[str, ...] = ()

    @property
    def project(self) -> str | None:
        return self.labels.get(LABEL_PROJECT)

    @property
    def service(self) -> str | None:
        return self.labels.get(LABEL_SERVICE)

    @property
    def number(self) -> int:
        try:
            return int(self.labels.get(LABEL_NUMBER, "0"))
        except ValueError:
            return 0

    @property
    def config_hash(self) -> str | None:
        return self.labels.get(LABEL_CONFIG_HASH)

    @property
    def config_fields(self) -> str | None:
        return self.labels.get(LABEL_CONFIG_FIELDS)

    @property
    def exit_code(self) -> int | None:
        match = _EXIT_CODE.search(self.status)
        return int(match.group(1)) if match else None

    @property
    def health(self) -> str:
        """``healthy``, ``unhealthy``, ``starting``, or "" when there is no healthcheck."""
        match = _HEALTH.search(self.status)
        if not match:
            return ""
        return "starting" if match.group(1) == "health: starting" else match.group(1)


@dataclass(frozen=True)
class ObservedNetwork:
    id: str
    name: str
    driver: str
    labels: dict[str, str] = field(hash=False)

    @property
    def project(self) -> str | None:
        return self.labels.get(LABEL_PROJECT)


@dataclass(frozen=True)
class ObservedVolume:
    name: str
    driver: str
    labels: dict[str, str] = field(hash=False)

    @property
    def project(self) -> str | None:
        return self.labels.get(LABEL_PROJECT)


@dataclass(frozen=True)
class ObservedImage:
    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]


@dataclass(frozen=True)
class ObservedState:
    """Everything the planner may look at. Built by ``observe``, or by hand in tests."""

    containers: tuple[ObservedContainer, ...] = ()
    networks: tuple[ObservedNetwork, ...] = ()
    volumes: tuple[ObservedVolume, ...] = ()
    images: tuple[ObservedImage, ...] = ()

    def project_containers(self, project: str) -> list[ObservedContainer]:
        return [c for c in self.containers if c.project == project]

    def container_named(self, name: str) -> ObservedContainer | None:
        for c in self.containers:
            if c.name == name:
                return c
        return None

    def network_named(self, name: str) -> ObservedNetwork | None:
        for n in self.networks:
            if n.name == name:
                return n
        return None

    def volume_named(self, name: str) -> ObservedVolume | None:
        for v in self.volumes:
            if v.name == name:
                return v
        return None


def _container(raw: dict[str, Any]) -> ObservedContainer:
    names = raw.get("Names") or ["/" + str(raw.get("Id", ""))[:12]]
    settings = (raw.get("NetworkSettings") or {}).get("Networks") or {}
    ports = []
    for p in raw.get("Ports") or []:
        if p.get("PublicPort"):
            ports.append(f"{p.get('IP', '')}:{p['PublicPort']}->{p['PrivatePort']}/{p.get('Type', 'tcp')}")
    return ObservedContainer(
        id=str(raw["Id"]),
        name=str(names[0]).lstrip("/"),
        image=str(raw.get("Image", "")),
        image_id=str(raw.get("ImageID", "")),
        state=str(raw.get("State", "")),
        status=str(raw.get("Status", "")),
        labels=dict(raw.get("Labels") or {}),
        networks={str(k): str((v or {}).get("NetworkID", "")) for k, v in settings.items()},
        created=int(raw.get("Created") or 0),
        ports=tuple(sorted(set(ports))),
    )


def observe(docker: DockerClient) -> ObservedState:
    """Snapshot the host: all containers, networks, volumes and images, in four list calls.

    Everything is listed, not just what carries the project's label, because the planner must
    see objects that collide with the names it wants to use.
    """
    return ObservedState(
        containers=tuple(_container(c) for c in docker.list_containers()),
        networks=tuple(
            ObservedNetwork(
                id=str(n["Id"]),
                name=str(n["Name"]),
                driver=str(n.get("Driver", "")),
                labels=dict(n.get("Labels") or {}),
            )
            for n in docker.list_networks()
        ),
        volumes=tuple(
            ObservedVolume(
                name=str(v["Name"]), driver=str(v.get("Driver", "")), labels=dict(v.get("Labels") or {})
            )
            for v in docker.list_volumes()
        ),
        images=tuple(
            ObservedImage(
                id=str(i["Id"]),
                repo_tags=tuple(i.get("RepoTags") or ()),
                repo_digests=tuple(i.get("RepoDigests") or ()),
            )
            for i in docker.list_images()
        ),
    )
