"""Containers, in dependency order: create, recreate or start each replica as needed. Pure.

A container is recreated only when its config hash or its image changed (or it is dead, was
renamed, shares the network of a recreated container, or drift says so), and started when
it stopped but should run. Each operation waits for the networks, volumes and image it
needs, and for the services it depends on (a WaitHealthy/WaitCompleted when the dependency
asks for a condition). A recreate builds the replacement before the old one is removed.
"""

from __future__ import annotations

from typing import Any

from gitdock.runtime.desired import DesiredContainer, changed_fields, desired_container
from gitdock.runtime.labels import LABEL_IMAGE_DIGEST, replacement_name, service_resource
from gitdock.runtime.observe import ObservedContainer
from gitdock.runtime.plan.context import Planning, owner_text
from gitdock.runtime.plan.images import pull_deps
from gitdock.runtime.plan.model import ContainerRef, OpKind, PlanError
from gitdock.specs.graph import CycleError, dependency_order
from gitdock.specs.model import Condition, Project, Service

Desired = list[tuple[Service, list[DesiredContainer]]]  # in dependency order


def desire_containers(p: Planning) -> Desired:
    """Every replica's desired container, services in dependency order; notes name conflicts.

    Raises PlanError for a dependency cycle.
    """
    desired = [
        (s, [desired_container(p.project, s, n, p.images.get(s.image)) for n in range(1, s.replicas + 1)])
        for s in service_order(p.project)
    ]
    for _, containers in desired:
        for dc in containers:
            live = p.observed.container_named(dc.name)
            if live is not None and live.project != p.project.name:
                p.conflicts.append(f"container {dc.name!r} exists and {owner_text(live.labels)}")
    return desired


def service_order(project: Project) -> list[Service]:
    """Services in dependency order (dependencies first), ties broken by name."""
    by_name = {s.name: s for s in project.services}
    try:
        names = dependency_order({name: _dependencies(svc) for name, svc in by_name.items()})
    except CycleError as exc:
        raise PlanError(str(exc)) from None
    return [by_name[name] for name in names]


def _dependencies(svc: Service) -> set[str]:
    deps = {name for name, _ in svc.depends_on}
    if (shared := _network_mode_service(svc)) is not None:
        deps.add(shared)
    return deps


def _network_mode_service(svc: Service) -> str | None:
    """The service whose network ``network_mode: service:NAME`` shares, if any."""
    if svc.network_mode and svc.network_mode.startswith("service:"):
        return svc.network_mode.split(":", 1)[1]
    return None


def reconcile_containers(p: Planning, desired: Desired) -> None:
    """Create, recreate or start each replica, services in dependency order."""
    for svc, containers in desired:
        ops: list[int] = []
        shared = _network_mode_service(svc)
        forced = f"network_mode service:{shared} recreated" if shared in p.replaced else ""
        for dc in containers:
            op = _reconcile_replica(p, svc, dc, forced)
            if op is not None:
                ops.append(op)
        p.service_ops[svc.name] = ops


def _reconcile_replica(p: Planning, svc: Service, dc: DesiredContainer, forced: str) -> int | None:
    """The op that creates, recreates or starts replica ``dc``, or None when it is fine."""
    slot = p.mine.slot(svc.name, dc.number)
    removed_first = [p.pre_removals[c.id] for c in slot if c.id in p.pre_removals]
    live = sorted(
        (c for c in slot if c.id not in p.pre_removals), key=lambda c: (c.name != dc.name, -c.created)
    )
    for extra in live[1:]:
        p.add(OpKind.REMOVE_CONTAINER, dc.resource, "duplicate", target=extra.id, target_name=extra.name)
    if not live:
        cause = "network config changed" if removed_first else "not found"
        return _create(p, svc, dc, cause, removed_first)
    primary = live[0]
    causes = _recreate_causes(p, svc, dc, primary, forced)
    if causes:
        return _recreate(p, svc, dc, primary, "; ".join(causes))
    _remember(p, dc, ContainerRef(id=primary.id))
    return _start_if_stopped(p, svc, dc, primary)


def _create(p: Planning, svc: Service, dc: DesiredContainer, cause: str, removed_first: list[int]) -> int:
    deps = [*_ready_deps(p, svc), *removed_first]
    op = p.add(
        OpKind.CREATE_CONTAINER, dc.resource, cause, deps, container=dc, network_container=_shared(p, dc)
    )
    p.replaced.add(svc.name)
    _remember(p, dc, ContainerRef(op=op))
    return op


def _recreate(p: Planning, svc: Service, dc: DesiredContainer, primary: ObservedContainer, cause: str) -> int:
    op = _act_on(
        p,
        OpKind.RECREATE_CONTAINER,
        svc,
        dc,
        primary,
        cause,
        temp_name=replacement_name(dc.name, dc.config_hash),
        network_container=_shared(p, dc),
    )
    p.replaced.add(svc.name)
    _remember(p, dc, ContainerRef(op=op))
    return op


def _start_if_stopped(
    p: Planning, svc: Service, dc: DesiredContainer, primary: ObservedContainer
) -> int | None:
    cause = _needs_start(primary, svc.restart)
    if cause is None and primary.state in ("exited", "created"):
        cause = p.force_start.get(primary.name)
    return _act_on(p, OpKind.START_CONTAINER, svc, dc, primary, cause) if cause else None


def _act_on(
    p: Planning,
    kind: OpKind,
    svc: Service,
    dc: DesiredContainer,
    primary: ObservedContainer,
    cause: str,
    **kw: Any,
) -> int:
    """An operation on the live ``primary`` that waits for what a container of ``svc`` needs."""
    deps = _ready_deps(p, svc)
    return p.add(
        kind, dc.resource, cause, deps, container=dc, target=primary.id, target_name=primary.name, **kw
    )


def _remember(p: Planning, dc: DesiredContainer, ref: ContainerRef) -> None:
    """Record which container replica ``dc`` is once the plan ran (for waits and network_mode)."""
    p.replicas.setdefault(dc.service, {})[dc.number] = ref


def _shared(p: Planning, dc: DesiredContainer) -> ContainerRef | None:
    """The container whose network ``dc`` joins: replica 1 of its network_mode service."""
    if dc.network_mode_service is None:
        return None
    return p.replicas.get(dc.network_mode_service, {}).get(1)


def _recreate_causes(
    p: Planning, svc: Service, dc: DesiredContainer, primary: ObservedContainer, forced: str
) -> list[str]:
    """Why the live ``primary`` must be replaced by ``dc``; empty when it may stay."""
    causes = _changes(p, svc, dc, primary)
    if primary.name != dc.name:
        causes.append("name changed")
    if primary.state == "dead":
        causes.append("container dead")
    if forced:
        causes.append(forced)
    if primary.name in p.force_recreate:
        causes.append(p.force_recreate[primary.name])
    return causes


def _changes(p: Planning, svc: Service, dc: DesiredContainer, primary: ObservedContainer) -> list[str]:
    """A changed config hash (by field), else a moved tag, a missing or another image."""
    if primary.config_hash != dc.config_hash:
        fields = changed_fields(dc.field_hashes, primary.config_fields)
        non_image = [f for f in fields if f != "image"]
        causes = ["image changed"] if "image" in fields else []
        if non_image:
            causes.append("config changed: " + ", ".join(non_image))
        return causes
    recorded = primary.labels.get(LABEL_IMAGE_DIGEST)
    if svc.image in p.images and recorded:
        return ["image changed: tag moved"] if recorded != p.images[svc.image].digest else []
    if p.image_ids.get(svc.image) is None:
        return ["image changed: not present locally"]
    if primary.image_id != p.image_ids[svc.image]:
        return ["image changed"]
    return []


def _needs_start(container: ObservedContainer, restart: str) -> str | None:
    """Why a stopped container of an unchanged service should be started, or None."""
    if container.state == "created":
        return "not started"
    if container.state == "exited":
        if container.is_finished_job(restart):
            return None  # leave a finished one-shot job be
        code = container.exit_code
        return f"exited ({code})" if code is not None else "exited"
    return None


def _ready_deps(p: Planning, svc: Service) -> list[int]:
    """The ops a container of ``svc`` waits for: networks, volumes, image, its dependencies."""
    deps = [p.network_ready[k] for k, _ in svc.networks if k in p.network_ready]
    deps += [
        p.volume_ready[m.source] for m in svc.mounts if m.type == "volume" and m.source in p.volume_ready
    ]
    deps += pull_deps(p, svc)
    for name, dep in svc.depends_on:
        if dep.condition is Condition.STARTED:
            deps += p.service_ops.get(name, [])
        else:
            deps.append(_wait(p, svc, name, dep.condition))
    if (shared := _network_mode_service(svc)) is not None:
        deps += p.service_ops.get(shared, [])
    return deps


def _wait(p: Planning, svc: Service, name: str, condition: Condition) -> int:
    """The WaitHealthy/WaitCompleted on service ``name``, added the first time it is needed."""
    key = (name, condition)
    if key not in p.waits:
        kind = OpKind.WAIT_HEALTHY if condition is Condition.HEALTHY else OpKind.WAIT_COMPLETED
        replicas = p.replicas.get(name, {})
        p.waits[key] = p.add(
            kind,
            service_resource(name),
            f"{condition.value} required by {svc.name}",
            p.service_ops.get(name, []),
            service=name,
            wait_for=tuple(replicas[n] for n in sorted(replicas)),
        )
    return p.waits[key]
