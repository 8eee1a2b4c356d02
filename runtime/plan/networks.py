"""Networks: create the missing ones, and recreate one whose config changed. Pure.

A network cannot be changed in place, and Docker refuses to remove one that containers are
attached to, so a changed network first forces out the project's containers on it; they are
created again once the new network is ready.
"""

from __future__ import annotations

from gitdock.runtime.desired import desired_network
from gitdock.runtime.labels import LABEL_CONFIG_HASH, LABEL_NETWORK, service_resource
from gitdock.runtime.plan.context import Planning, owner_text
from gitdock.runtime.plan.model import OpKind
from gitdock.specs.model import Network


def reconcile_networks(p: Planning) -> None:
    """Create missing networks; note conflicts, missing external ones and changed configs."""
    for network in sorted(p.project.networks, key=lambda n: n.key):
        _reconcile_network(p, network)


def _reconcile_network(p: Planning, network: Network) -> None:
    dn = desired_network(p.project, network)
    live = p.observed.network_named(dn.name)
    if dn.external:
        if live is None:
            p.problems.append(f"network:{dn.key}: external network {dn.name!r} not found")
    elif live is None:
        p.network_ready[dn.key] = p.add(OpKind.CREATE_NETWORK, dn.resource, "not found", network=dn)
    elif live.project != p.project.name or live.labels.get(LABEL_NETWORK) != dn.key:
        p.conflicts.append(f"network {dn.name!r} exists and {owner_text(live.labels)}")
    elif live.labels.get(LABEL_CONFIG_HASH) != dn.config_hash:
        p.changed_networks.add(dn.key)


def recreate_changed_networks(p: Planning) -> None:
    """Remove the containers on a changed network, then the network, then create it again."""
    _remove_containers_on_changed_networks(p)
    for key in sorted(p.changed_networks):
        dn = desired_network(p.project, p.project.network(key))
        live = p.observed.network_named(dn.name)
        assert live is not None  # changed_networks only holds live networks
        remove = p.add(
            OpKind.REMOVE_NETWORK,
            dn.resource,
            "config changed",
            deps=p.pre_removals.values(),
            target=live.id,
            target_name=live.name,
        )
        p.network_ready[key] = p.add(
            OpKind.CREATE_NETWORK, dn.resource, "config changed", [remove], network=dn
        )


def _remove_containers_on_changed_networks(p: Planning) -> None:
    names = {n.key: n.name for n in p.project.networks}
    changed = {names[key]: key for key in p.changed_networks}
    for c in sorted(p.mine.containers, key=lambda c: c.name):
        hit = sorted(changed[n] for n in c.networks if n in changed)
        if hit:
            p.pre_removals[c.id] = p.add(
                OpKind.REMOVE_CONTAINER,
                service_resource(str(c.service), c.number),
                f"network {hit[0]} config changed",
                target=c.id,
                target_name=c.name,
            )
