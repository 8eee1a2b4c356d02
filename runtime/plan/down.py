"""The teardown plan: remove everything labelled with the project. Pure.

Containers go first, then the networks; volumes only with ``remove_volumes`` (else each named
one is a warning that says how to remove it). With it, as ``docker compose down -v``: the
project's named volumes and its containers' anonymous volumes, never an external volume (one
without the project's label that is not anonymous) nor an anonymous one another container
still mounts.
"""

from __future__ import annotations

import re

from gitdock.runtime.labels import (
    LABEL_NETWORK,
    LABEL_VOLUME,
    network_resource,
    service_resource,
    volume_resource,
)
from gitdock.runtime.observe import ObservedState, ObservedVolume
from gitdock.runtime.plan.context import OperationList
from gitdock.runtime.plan.model import OpKind, Plan

# Docker names an anonymous volume with 64 hex digits and (since 23.0) labels it so.
_ANONYMOUS_NAME = re.compile(r"[0-9a-f]{64}")
_ANONYMOUS_LABEL = "com.docker.volume.anonymous"


def plan_down(project_name: str, observed: ObservedState, *, remove_volumes: bool = False) -> Plan:
    """Remove everything labelled with the project; volumes only when asked. Pure."""
    ops = OperationList()
    containers = sorted(observed.project_containers(project_name), key=lambda c: c.name)
    removals = [
        ops.add(
            OpKind.REMOVE_CONTAINER,
            service_resource(str(c.service), c.number),
            "down",
            target=c.id,
            target_name=c.name,
            remove_volumes=remove_volumes,
        )
        for c in containers
    ]
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
