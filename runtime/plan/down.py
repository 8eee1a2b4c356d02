"""The teardown plan: remove everything labelled with the project. Pure.

Containers go first, then the networks; volumes only with ``remove_volumes`` (else each named
one is a warning that says how to remove it). With it, as ``docker compose down -v``: the
project's named volumes and its containers' anonymous volumes, never an external volume (one
without the project's label that is not anonymous) nor an anonymous one another container
still mounts. Given the Compose project (``gitdock down`` with its file), each container of a
service with ``pre_stop`` hooks carries its service's container, so the executor runs them
before the stop, and a service's containers go only after those of the services depending on
it, as ``docker compose down`` does; from labels alone there are no hooks and no order.
"""

from __future__ import annotations

import re

from gitdock.runtime.desired import DesiredContainer, desired_container
from gitdock.runtime.labels import (
    LABEL_NETWORK,
    LABEL_VOLUME,
    network_resource,
    service_resource,
    volume_resource,
)
from gitdock.runtime.observe import ObservedContainer, ObservedState, ObservedVolume
from gitdock.runtime.plan.context import OperationList
from gitdock.runtime.plan.model import OpKind, Plan
from gitdock.specs.graph import dependency_order
from gitdock.specs.model import Project

# Docker names an anonymous volume with 64 hex digits and (since 23.0) labels it so.
_ANONYMOUS_NAME = re.compile(r"[0-9a-f]{64}")
_ANONYMOUS_LABEL = "com.docker.volume.anonymous"


def plan_down(
    project_name: str,
    observed: ObservedState,
    *,
    remove_volumes: bool = False,
    project: Project | None = None,
) -> Plan:
    """Remove everything labelled with the project; volumes only when asked. Pure.

    ``project`` (the loaded Compose file, if any) supplies the pre_stop hooks and the order."""
    ops = OperationList()
    containers = sorted(observed.project_containers(project_name), key=lambda c: c.name)
    hooked = pre_stop_containers(project, containers)
    removals: list[int] = []
    by_service: dict[str, list[int]] = {}
    for c, after in removal_order(project, containers):
        op = ops.add(
            OpKind.REMOVE_CONTAINER,
            service_resource(str(c.service), c.number),
            "down",
            [i for service in after for i in by_service.get(service, ())],
            target=c.id,
            target_name=c.name,
            remove_volumes=remove_volumes,
            container=hooked.get(c.id),
        )
        removals.append(op)
        by_service.setdefault(str(c.service), []).append(op)
    for n in sorted(observed.networks, key=lambda n: n.name):
        if n.project == project_name:
            resource = network_resource(n.labels.get(LABEL_NETWORK, n.name))
            ops.add(OpKind.REMOVE_NETWORK, resource, "down", removals, target=n.id, target_name=n.name)
    warnings: list[str] = []
    anonymous = anonymous_volumes(project_name, observed) if remove_volumes else set()
    for v in sorted(observed.volumes, key=lambda v: v.name):
        if v.name in anonymous:
            ops.add(
                OpKind.REMOVE_VOLUME,
                volume_resource(v.name),
                "down --volumes, anonymous",
                removals,
                target=v.name,
                target_name=v.name,
            )
        elif v.project != project_name:
            continue
        elif remove_volumes:
            resource = volume_resource(v.labels.get(LABEL_VOLUME, v.name))
            ops.add(
                OpKind.REMOVE_VOLUME, resource, "down --volumes", removals, target=v.name, target_name=v.name
            )
        else:
            resource = volume_resource(v.labels.get(LABEL_VOLUME, v.name))
            warnings.append(f"{resource}: kept ({v.name}); use --volumes to remove named volumes")
    return Plan(project_name, tuple(ops.ops), tuple(warnings))


def removal_order(
    project: Project | None, containers: list[ObservedContainer]
) -> list[tuple[ObservedContainer, set[str]]]:
    """The containers, dependents first, each with the services whose containers go before it,
    as docker compose down stops in reverse dependency order (a pre_stop hook may still need
    what its service depends on). Without the project, all at once. Pure."""
    if project is None:
        return [(c, set()) for c in containers]
    graph = {s.name: {name for name, _dep in s.depends_on} for s in project.services}
    dependents = {name: {s for s, deps in graph.items() if name in deps} for name in graph}
    level: dict[str, int] = {}  # 0: nothing depends on it; else one more than its dependents
    for name in reversed(dependency_order(graph)):  # dependents first
        level[name] = max((level[d] + 1 for d in dependents[name]), default=0)
    ordered = sorted(containers, key=lambda c: (level.get(str(c.service), 0), c.name))
    return [(c, dependents.get(str(c.service), set())) for c in ordered]


def pre_stop_containers(
    project: Project | None, containers: list[ObservedContainer]
) -> dict[str, DesiredContainer]:
    """By container id: the container the file defines for each one whose service has
    pre_stop hooks (the executor runs them before the stop). Pure."""
    if project is None:
        return {}
    hooked = {s.name: s for s in project.services if s.pre_stop}
    return {
        c.id: desired_container(project, hooked[str(c.service)], c.number)
        for c in containers
        if str(c.service) in hooked
    }


def anonymous_volumes(project_name: str, observed: ObservedState) -> set[str]:
    """The anonymous volumes only the project's containers mount. Pure.

    Docker removes a container's own anonymous volumes with it (``?v=1``), but not those a
    recreate carried over by name into the replacement, so those are planned here too.
    """
    ours = {c.id for c in observed.project_containers(project_name)}
    volumes = {v.name: v for v in observed.volumes}
    mounted_by_others = {name for c in observed.containers if c.id not in ours for name in c.volumes}
    return {
        name
        for c in observed.containers
        if c.id in ours
        for name in c.volumes
        if name in volumes and name not in mounted_by_others and is_anonymous(volumes[name])
    }


def is_anonymous(volume: ObservedVolume) -> bool:
    """Whether Docker made the volume for a container (not named by anyone, not owned)."""
    if volume.labels.get(_ANONYMOUS_LABEL) is not None:
        return True
    return _ANONYMOUS_NAME.fullmatch(volume.name) is not None and not volume.labels
