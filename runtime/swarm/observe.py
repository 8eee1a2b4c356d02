"""A snapshot of one stack on a Swarm: four list calls, whatever the number of services.

Services, networks, configs and secrets are each listed once, by the name prefix
``<project>_`` (which Swarm matches as a prefix), so the snapshot holds both what the
project owns (its ``io.gitdock.project`` label) and what merely has one of its names, which
the planner refuses to touch. Tasks are not listed here: the executor asks for them only
while it follows a rollout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gitdock.runtime.docker import DockerClient
from gitdock.runtime.labels import LABEL_PROJECT

__all__ = ["ObservedObject", "ObservedService", "ObservedStack", "observe_stack"]


@dataclass(frozen=True)
class ObservedService:
    id: str
    name: str
    version: int
    labels: Mapping[str, str]
    spec: Mapping[str, Any] = field(compare=False)
    update_state: str | None = None  # UpdateStatus.State: updating, completed, rollback_completed...
    update_started: str | None = None
    update_message: str = ""
    running: int | None = None  # ServiceStatus.RunningTasks
    desired: int | None = None  # ServiceStatus.DesiredTasks

    def owned_by(self, project: str) -> bool:
        return self.labels.get(LABEL_PROJECT) == project

    @property
    def replicas(self) -> int | None:
        replicated = (self.spec.get("Mode") or {}).get("Replicated")
        return None if replicated is None else int(replicated.get("Replicas", 1))

    @property
    def image(self) -> str:
        return str(self.spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", ""))


@dataclass(frozen=True)
class ObservedObject:
    """A network, config or secret: ``kind`` is network, config or secret."""

    kind: str
    id: str
    name: str
    labels: Mapping[str, str]

    def owned_by(self, project: str) -> bool:
        return self.labels.get(LABEL_PROJECT) == project


@dataclass(frozen=True)
class ObservedStack:
    project: str
    services: Mapping[str, ObservedService]  # by full name
    networks: Mapping[str, ObservedObject]
    configs: Mapping[str, ObservedObject]
    secrets: Mapping[str, ObservedObject]

    def objects(self, kind: str) -> Mapping[str, ObservedObject]:
        return self.configs if kind == "config" else self.secrets


def _service(raw: Mapping[str, Any]) -> ObservedService:
    spec = raw.get("Spec") or {}
    update = raw.get("UpdateStatus") or {}
    status = raw.get("ServiceStatus") or {}
    return ObservedService(
        id=str(raw["ID"]),
        name=str(spec.get("Name", "")),
        version=int((raw.get("Version") or {}).get("Index", 0)),
        labels=dict(spec.get("Labels") or {}),
        spec=spec,
        update_state=update.get("State"),
        update_started=update.get("StartedAt"),
        update_message=str(update.get("Message") or ""),
        running=status.get("RunningTasks"),
        desired=status.get("DesiredTasks"),
    )


def observe_services(docker: DockerClient, project: str) -> dict[str, ObservedService]:
    """The services named ``<project>_*``, by name (with their task counts)."""
    services = [_service(raw) for raw in docker.list_services({"name": [f"{project}_"]})]
    return {s.name: s for s in services if s.name.startswith(f"{project}_")}


def _objects(kind: str, raws: list[dict[str, Any]], project: str) -> dict[str, ObservedObject]:
    found: dict[str, ObservedObject] = {}
    for raw in raws:
        spec = raw.get("Spec") or raw
        name = str(spec.get("Name", ""))
        if name.startswith(f"{project}_"):
            found[name] = ObservedObject(
                kind, str(raw.get("ID") or raw.get("Id")), name, dict(spec.get("Labels") or {})
            )
    return found


def observe_stack(docker: DockerClient, project: str) -> ObservedStack:
    """The four list calls: services, networks, configs, secrets named ``<project>_*``."""
    name = {"name": [f"{project}_"]}
    return ObservedStack(
        project=project,
        services=observe_services(docker, project),
        networks=_objects("network", docker.list_networks(name), project),
        configs=_objects("config", docker.list_configs(name), project),
        secrets=_objects("secret", docker.list_secrets(name), project),
    )
