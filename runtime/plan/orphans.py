"""Orphans: remove what the project no longer wants, after everything that replaces it. Pure.

Containers in a slot no desired replica fills are removed (``scaled down`` when their service
still exists, ``orphan`` when it is gone); so are the project's networks the project no longer
names, once every container that may still use them is gone. Volumes are never removed here.
"""

from __future__ import annotations

from gitdock.runtime.desired import desired_container
from gitdock.runtime.labels import LABEL_NETWORK, network_resource, service_resource
from gitdock.runtime.plan.containers import Desired
from gitdock.runtime.plan.context import Planning
from gitdock.runtime.plan.model import OpKind


def remove_leftover_containers(p: Planning, desired: Desired) -> None:
    """Remove the project's containers that no desired replica claims."""
    wanted = {(svc.name, dc.number) for svc, containers in desired for dc in containers}
    services = {s.name for s in p.project.services}
    p.removals = list(p.pre_removals.values())
    for (service, number), leftovers in p.mine.leftovers(wanted):
        cause = "scaled down" if service in services else "orphan"
        svc = p.project.service(service) if service in services else None
        # A scaled-down replica carries its service's container, for its pre_stop hooks.
        hooked = desired_container(p.project, svc, number) if svc is not None and svc.pre_stop else None
        for c in sorted(leftovers, key=lambda c: c.name):
            if c.id not in p.pre_removals:
                p.removals.append(
                    p.add(
                        OpKind.REMOVE_CONTAINER,
                        service_resource(service, number),
                        cause,
                        target=c.id,
                        target_name=c.name,
                        container=hooked,
                    )
                )


def remove_orphan_networks(p: Planning) -> None:
    """Remove the project's networks it no longer names, after recreates and removals."""
    wanted = {n.name for n in p.project.networks}
    # Every removal, duplicates and waits for removals in progress included: any may hold an endpoint.
    ops = p.operations
    container_ops = ops.ids_of(OpKind.RECREATE_CONTAINER) + ops.ids_of(OpKind.REMOVE_CONTAINER)
    for live in sorted(p.observed.networks, key=lambda n: n.name):
        if live.project == p.project.name and live.name not in wanted:
            p.add(
                OpKind.REMOVE_NETWORK,
                network_resource(live.labels.get(LABEL_NETWORK, live.name)),
                "orphan",
                container_ops,
                target=live.id,
                target_name=live.name,
            )
