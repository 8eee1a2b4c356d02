"""Plan one stack on a Swarm: (desired, observed) -> the shared ``Plan``, golden-testable.

The order is the plan's: networks, then config and secret versions, then services (each
after the networks and objects it needs that this plan creates), then orphan services, then
objects no desired service uses any more and orphan networks, after every service operation
(Swarm refuses to remove what a service still references). A service is never removed to
change it: UpdateService carries the live id and the executor the version index. Causes:
``not found``, ``config hash changed``, ``content changed``, ``orphan``, ``unused``, and
drift (``replicas changed by hand: 5, want 2``).

This module is a purely computational function of its inputs, with no side effects.
"""

from __future__ import annotations

from gitdock.runtime.labels import LABEL_CONFIG_HASH
from gitdock.runtime.plan.context import OperationList
from gitdock.runtime.plan.model import ConflictError, OpKind, Plan, PlanError
from gitdock.runtime.swarm.desired import LABEL_OBJECT_KEY, DesiredService, DesiredStack
from gitdock.runtime.swarm.drift import detect_swarm_drift
from gitdock.runtime.swarm.observe import ObservedObject, ObservedStack

__all__ = ["plan_stack", "plan_stack_down"]

_CREATE = {"config": OpKind.CREATE_CONFIG, "secret": OpKind.CREATE_SECRET}
_REMOVE = {"config": OpKind.REMOVE_CONFIG, "secret": OpKind.REMOVE_SECRET}


def plan_stack(desired: DesiredStack, observed: ObservedStack) -> Plan:
    """The operations that converge ``observed`` to ``desired``; raises ConflictError/PlanError."""
    ops = OperationList()
    ready = _plan_networks(ops, desired, observed)
    ready |= _plan_objects(ops, desired, observed)
    service_ops = _plan_services(ops, desired, observed, ready)
    service_ops += _plan_orphan_services(ops, desired, observed)
    _plan_unused(ops, desired, observed, service_ops)
    return Plan(project=desired.project, operations=tuple(ops.ops))


def plan_stack_down(observed: ObservedStack) -> Plan:
    """Remove every service, config, secret and network the project owns; never volumes."""
    ops = OperationList()
    project = observed.project
    removed = [
        ops.add(
            OpKind.REMOVE_SERVICE, _service_resource(project, s.name), "down", target=s.id, target_name=s.name
        )
        for s in sorted(observed.services.values(), key=lambda s: s.name)
        if s.owned_by(project)
    ]
    for kind in ("config", "secret", "network"):
        found = observed.networks if kind == "network" else observed.objects(kind)
        for obj in sorted(found.values(), key=lambda o: o.name):
            if obj.owned_by(project):
                remove = OpKind.REMOVE_NETWORK if kind == "network" else _REMOVE[kind]
                ops.add(
                    remove,
                    _object_resource(project, obj),
                    "down",
                    removed,
                    target=obj.id,
                    target_name=obj.name,
                )
    return Plan(project=project, operations=tuple(ops.ops))


def _service_resource(project: str, name: str) -> str:
    return f"service:{name.removeprefix(f'{project}_')}"


def _object_resource(project: str, obj: ObservedObject) -> str:
    key = obj.labels.get(LABEL_OBJECT_KEY) or obj.labels.get("io.gitdock.network")
    return f"{obj.kind}:{key or obj.name.removeprefix(f'{project}_')}"


def _refuse_foreign(obj: ObservedObject | None, project: str, what: str) -> None:
    if obj is not None and not obj.owned_by(project):
        raise ConflictError(
            f"{what} {obj.name!r} exists and is not owned by project {project!r}; gitdock leaves it alone"
        )


def _plan_networks(ops: OperationList, desired: DesiredStack, observed: ObservedStack) -> dict[str, int]:
    """Missing networks; returns network name -> the operation that creates it."""
    ready: dict[str, int] = {}
    for net in desired.networks:
        live = observed.networks.get(net.name)
        if net.external:
            if live is None and net.name.startswith(f"{desired.project}_"):
                raise PlanError(f"networks.{net.key}: external network {net.name!r} does not exist")
            continue
        _refuse_foreign(live, desired.project, "network")
        if live is None:
            ready[net.name] = ops.add(
                OpKind.CREATE_NETWORK, f"network:{net.key}", "not found", target_name=net.name
            )
    return ready


def _plan_objects(ops: OperationList, desired: DesiredStack, observed: ObservedStack) -> dict[str, int]:
    """Config and secret versions not on the Swarm yet; returns name -> creating operation."""
    ready: dict[str, int] = {}
    for obj in desired.objects:
        found = observed.objects(obj.kind)
        live = found.get(obj.name)
        _refuse_foreign(live, desired.project, obj.kind)
        if live is not None:
            continue
        older = any(
            o.owned_by(desired.project) and o.labels.get(LABEL_OBJECT_KEY) == obj.key for o in found.values()
        )
        cause = "content changed" if older else "not found"
        ready[obj.name] = ops.add(_CREATE[obj.kind], obj.resource, cause, target_name=obj.name)
    return ready


def _service_cause(ds: DesiredService, desired: DesiredStack, observed: ObservedStack) -> str | None:
    live = observed.services[ds.name]
    if live.labels.get(LABEL_CONFIG_HASH) != ds.config_hash:
        return "config hash changed"
    drift = [d for d in detect_swarm_drift(desired, observed) if d.resource == ds.resource]
    if drift:
        return "; ".join(f"{d.field} changed by hand: {d.got}, want {d.want}" for d in drift)
    return None


def _plan_services(
    ops: OperationList, desired: DesiredStack, observed: ObservedStack, ready: dict[str, int]
) -> list[int]:
    added: list[int] = []
    for ds in sorted(desired.services, key=lambda s: s.name):
        live = observed.services.get(ds.name)
        if live is not None and not live.owned_by(desired.project):
            raise ConflictError(
                f"service {ds.name!r} exists and is not owned by project {desired.project!r}; "
                "gitdock leaves it alone"
            )
        deps = [ready[n] for n in (*ds.networks, *ds.objects) if n in ready]
        if live is None:
            added.append(
                ops.add(
                    OpKind.CREATE_SERVICE,
                    ds.resource,
                    "not found",
                    deps,
                    target_name=ds.name,
                    service=ds.service,
                    image=ds.image,
                )
            )
            continue
        cause = _service_cause(ds, desired, observed)
        if cause is not None:
            added.append(
                ops.add(
                    OpKind.UPDATE_SERVICE,
                    ds.resource,
                    cause,
                    deps,
                    target=live.id,
                    target_name=ds.name,
                    service=ds.service,
                    image=ds.image,
                )
            )
    return added


def _plan_orphan_services(ops: OperationList, desired: DesiredStack, observed: ObservedStack) -> list[int]:
    wanted = {s.name for s in desired.services}
    return [
        ops.add(
            OpKind.REMOVE_SERVICE,
            _service_resource(desired.project, s.name),
            "orphan",
            target=s.id,
            target_name=s.name,
        )
        for s in sorted(observed.services.values(), key=lambda s: s.name)
        if s.owned_by(desired.project) and s.name not in wanted
    ]


def _plan_unused(
    ops: OperationList, desired: DesiredStack, observed: ObservedStack, after: list[int]
) -> None:
    """Old config/secret versions and orphan networks, once every service operation is done."""
    wanted = {o.name for o in desired.objects}
    for kind in ("config", "secret"):
        for obj in sorted(observed.objects(kind).values(), key=lambda o: o.name):
            if obj.owned_by(desired.project) and obj.name not in wanted:
                ops.add(
                    _REMOVE[kind],
                    _object_resource(desired.project, obj),
                    "unused",
                    after,
                    target=obj.id,
                    target_name=obj.name,
                )
    networks = {n.name for n in desired.networks}
    for net in sorted(observed.networks.values(), key=lambda o: o.name):
        if net.owned_by(desired.project) and net.name not in networks:
            ops.add(
                OpKind.REMOVE_NETWORK,
                _object_resource(desired.project, net),
                "orphan",
                after,
                target=net.id,
                target_name=net.name,
            )
