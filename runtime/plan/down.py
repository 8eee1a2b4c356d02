"""The teardown plan: remove everything labelled with the project. Pure.

Containers go first, then the networks; named volumes only with ``remove_volumes`` (else
each is a warning that says how to remove it).
"""

from __future__ import annotations

from gitdock.runtime.labels import (
    LABEL_NETWORK,
    LABEL_VOLUME,
    network_resource,
    service_resource,
    volume_resource,
)
from gitdock.runtime.observe import ObservedState
from gitdock.runtime.plan.context import OperationList
from gitdock.runtime.plan.model import OpKind, Plan


def plan_down(project_name: str, observed: ObservedState, *, remove_volumes: bool = False) -> Plan:
    """Remove everything labelled with the project; named volumes only when asked. Pure."""
    ops = OperationList()
    removals = [
        ops.add(
            OpKind.REMOVE_CONTAINER,
            service_resource(str(c.service), c.number),
            "down",
            target=c.id,
            target_name=c.name,
        )
        for c in sorted(observed.project_containers(project_name), key=lambda c: c.name)
    ]
    for n in sorted(observed.networks, key=lambda n: n.name):
        if n.project == project_name:
            resource = network_resource(n.labels.get(LABEL_NETWORK, n.name))
            ops.add(OpKind.REMOVE_NETWORK, resource, "down", removals, target=n.id, target_name=n.name)
    warnings: list[str] = []
    for v in sorted(observed.volumes, key=lambda v: v.name):
        if v.project != project_name:
            continue
        resource = volume_resource(v.labels.get(LABEL_VOLUME, v.name))
        if remove_volumes:
            ops.add(
                OpKind.REMOVE_VOLUME, resource, "down --volumes", removals, target=v.name, target_name=v.name
            )
        else:
            warnings.append(f"{resource}: kept ({v.name}); use --volumes to remove named volumes")
    return Plan(project_name, tuple(ops.ops), tuple(warnings))
