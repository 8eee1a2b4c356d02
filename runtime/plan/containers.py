"""Containers, in dependency order: create, recreate or start each replica as needed. Pure.

A container is recreated only when its config hash or its image changed (or it is dead, was
renamed, shares the network of a recreated container, or drift says so), and started when
it stopped but should run. Each operation waits for the networks, volumes and image it
needs, and for the services it depends on (a WaitHealthy/WaitCompleted when the dependency
asks for a condition). A recreate builds the replacement before the old one is removed
(see ``runtime.execute`` for the exact sequence), and what an interrupted run left in a
replica's slot is settled by operations the replica's own operation waits for, so no two
operations act on one container without an order between them.
"""

from __future__ import annotations

from typing import Any

from gitdock.runtime.desired import DesiredContainer, changed_fields, desired_container
from gitdock.runtime.labels import LABEL_IMAGE_DIGEST, replacement_name, service_resource
from gitdock.runtime.observe import ObservedContainer
from gitdock.runtime.plan.context import Planning, owner_text
from gitdock.runtime.plan.images import mount_image_deps, pull_deps, source_image
from gitdock.runtime.plan.model import ContainerRef, OpKind, PlanError
from gitdock.runtime.plan.rollout import next_rollout, pinned_by, record_rollout
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
        _retire_old(p, svc)


def _reconcile_replica(p: Planning, svc: Service, dc: DesiredContainer, forced: str) -> int | None:
    """The op that creates, recreates or starts replica ``dc``, or None when it is fine.

    What an interrupted run left in the slot is settled first, each with one operation the
    replica's own waits for: a removal in progress is waited for, a replacement that matches
    the desired config is adopted (or, when the old container is already gone, its rename
    finished), and any other extra container is removed.
    """
    slot = p.mine.slot(svc.name, dc.number)
    removed_first = [p.pre_removals[c.id] for c in slot if c.id in p.pre_removals]
    present = [c for c in slot if c.id not in p.pre_removals]
    first = [*removed_first, *_wait_removals(p, dc, present)]
    present = [c for c in present if c.state != "removing"]
    spare = _adoptable(p, svc, dc, present)
    live = sorted((c for c in present if c is not spare), key=lambda c: (c.name != dc.name, -c.created))
    if spare is not None and not (live and live[0].name == dc.name):
        first += _remove_extras(p, dc, live)
        return _finish_rename(p, svc, dc, spare, forced, first)
    first += _remove_extras(p, dc, live[1:])
    if not live:
        cause = "network config changed" if removed_first else "not found"
        return _create(p, svc, dc, cause, first)
    primary = live[0]
    causes = _recreate_causes(p, svc, dc, primary, forced)
    if causes:
        return _recreate(p, svc, dc, primary, "; ".join(causes), first, spare)
    if spare is not None:
        first += _remove_extras(p, dc, [spare])
    _remember(p, dc, ContainerRef(id=primary.id))
    return _start_if_stopped(p, svc, dc, primary, first) or _restart_for_dependencies(
        p, svc, dc, primary, first
    )


def _wait_removals(p: Planning, dc: DesiredContainer, present: list[ObservedContainer]) -> list[int]:
    """A RemoveContainer for each container Docker is already removing: it waits until gone."""
    return [
        p.add(OpKind.REMOVE_CONTAINER, dc.resource, "removal in progress", target=c.id, target_name=c.name)
        for c in present
        if c.state == "removing"
    ]


def _remove_extras(p: Planning, dc: DesiredContainer, extras: list[ObservedContainer]) -> list[int]:
    return [
        p.add(OpKind.REMOVE_CONTAINER, dc.resource, "duplicate", target=c.id, target_name=c.name)
        for c in extras
    ]


def _adoptable(
    p: Planning, svc: Service, dc: DesiredContainer, present: list[ObservedContainer]
) -> ObservedContainer | None:
    """The replacement an interrupted recreate left that can be kept: it is named for the
    desired config hash, runs the desired image, and was started (it is running, or the old
    container is already gone, which happens only after the replacement was seen running)."""
    name = replacement_name(dc.name, dc.config_hash)
    old_gone = not any(c.name == dc.name for c in present)
    for c in present:
        if c.name != name or c.config_hash != dc.config_hash or _changes(p, svc, dc, c):
            continue
        if c.state == "running" or (old_gone and c.state not in ("created", "dead")):
            return c
    return None


def _create(p: Planning, svc: Service, dc: DesiredContainer, cause: str, first: list[int]) -> int:
    deps = [*_ready_deps(p, svc), *first]
    op = p.add(
        OpKind.CREATE_CONTAINER, dc.resource, cause, deps, container=dc, network_container=_shared(p, dc)
    )
    p.replaced.add(svc.name)
    _remember(p, dc, ContainerRef(op=op))
    return op


def _recreate(
    p: Planning,
    svc: Service,
    dc: DesiredContainer,
    primary: ObservedContainer,
    cause: str,
    first: list[int],
    spare: ObservedContainer | None = None,
) -> int:
    roll = next_rollout(p, svc)
    op = _act_on(
        p,
        OpKind.RECREATE_CONTAINER,
        svc,
        dc,
        primary,
        cause + ("; replacement adopted" if spare is not None else "") + roll.suffix,
        [*first, *roll.deps],
        temp_name=replacement_name(dc.name, dc.config_hash),
        replacement=spare.id if spare is not None else None,
        stop_first=not roll.start_first,
        restore_old=not primary.is_finished_job(svc.restart),
        renew_volumes=p.renew_anon_volumes,
        network_container=_shared(p, dc),
        gate=roll.start_first,
        monitor=roll.monitor,
        delay=roll.delay,
        after=roll.after,
        undo=roll.undo,
        retire_name=replacement_name(dc.name, primary.config_hash or primary.id) if roll.keep_old else None,
        failure_action=roll.failure_action.value if roll.failure_action else None,
    )
    record_rollout(p, svc, op)
    p.replaced.add(svc.name)
    _remember(p, dc, ContainerRef(op=op))
    return op


def _finish_rename(
    p: Planning, svc: Service, dc: DesiredContainer, spare: ObservedContainer, forced: str, first: list[int]
) -> int:
    """Rename the replacement an interrupted recreate left, then start or recreate it as needed."""
    rename = _act_on(p, OpKind.RENAME_CONTAINER, svc, dc, spare, "interrupted recreate", first)
    causes = [c for c in _recreate_causes(p, svc, dc, spare, forced) if c != "name changed"]
    if causes:
        return _recreate(p, svc, dc, spare, "; ".join(causes), [rename])
    _remember(p, dc, ContainerRef(id=spare.id))
    return _start_if_stopped(p, svc, dc, spare, [rename]) or rename


def cannot_run_twice(svc: Service) -> bool:
    """Whether two containers of ``svc`` must not run side by side: a fixed host port, a fixed
    ``container_name`` or a static address would be held by the old one, and a writable volume
    or bind would have two processes on the same data (a database's lock file is no guard when
    both claim PID 1). Every recreate is stop-first unless the service asks for start-first
    (``runtime.plan.rollout``), which the first three refuse and the last allows with a warning."""
    if pinned_by(svc) is not None:
        return True
    return any(m.type in ("volume", "bind") and not m.read_only for m in svc.mounts)


def _retire_old(p: Planning, svc: Service) -> None:
    """Remove the old containers a rollback-able update kept, once every replica is replaced."""
    recreates = p.rollouts.get(svc.name, [])
    for op_id in recreates:
        op = p.operations.ops[op_id - 1]
        if op.retire_name is not None and op.target is not None:
            p.add(
                OpKind.REMOVE_CONTAINER,
                op.resource,
                "replaced (kept for rollback until every replica was)",
                recreates,
                target=op.target,
                target_name=op.retire_name,
            )


def _start_if_stopped(
    p: Planning, svc: Service, dc: DesiredContainer, primary: ObservedContainer, first: list[int]
) -> int | None:
    cause = _needs_start(primary, svc.restart)
    if cause is None and primary.state in ("exited", "created"):
        cause = p.force_start.get(primary.name)
    return _act_on(p, OpKind.START_CONTAINER, svc, dc, primary, cause, first) if cause else None


# What makes a dependency count as updated for ``depends_on.<x>.restart`` (as in Compose, an
# update by gitdock, not a restart by Docker's restart policy).
_UPDATES = frozenset({OpKind.CREATE_CONTAINER, OpKind.RECREATE_CONTAINER, OpKind.RESTART_CONTAINER})


def _restart_for_dependencies(
    p: Planning, svc: Service, dc: DesiredContainer, primary: ObservedContainer, first: list[int]
) -> int | None:
    """A RestartContainer of the running ``primary`` once each dependency it asks to be
    restarted with (``restart: true``) that this plan creates, recreates or restarts is done
    (and healthy or completed when its condition says so); None when none is."""
    updated = [
        name
        for name, dep in svc.depends_on
        if dep.restart
        and any(p.operations.ops[op_id - 1].kind in _UPDATES for op_id in p.service_ops.get(name, []))
    ]
    if not updated or primary.state != "running":
        return None
    cause = f"dependency {', '.join(updated)} {'was' if len(updated) == 1 else 'were'} updated"
    return _act_on(p, OpKind.RESTART_CONTAINER, svc, dc, primary, cause, first)


def _act_on(
    p: Planning,
    kind: OpKind,
    svc: Service,
    dc: DesiredContainer,
    primary: ObservedContainer,
    cause: str,
    first: list[int],
    **kw: Any,
) -> int:
    """An operation on the live ``primary`` that waits for what a container of ``svc`` needs,
    and for the operations in ``first`` (what an interrupted run left in the same slot)."""
    deps = [*_ready_deps(p, svc), *first]
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
    elif primary.state == "created" and (dc.files or len(dc.networks) > 1):
        # Never started: it may have been left before its files were copied or its networks
        # connected, which a start alone would not redo.
        causes.append("not started")
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
    deps += mount_image_deps(p, svc)
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
        if condition is Condition.HEALTHY:
            _check_healthcheck(p, svc, name)
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


def _check_healthcheck(p: Planning, svc: Service, name: str) -> None:
    """A CheckHealthcheck when service ``name`` has no healthcheck test in the Compose file.

    Its image may declare one (HEALTHCHECK), which only an inspect of the pulled or built
    image shows: the check waits for that image, everything else waits for the check
    (``images.build_first``), so a missing healthcheck is refused before anything is created.
    """
    target = next((s for s in p.project.services if s.name == name), None)
    if target is None or (target.healthcheck is not None and target.healthcheck.test):
        return
    image = p.image_ids.get(target.image) or source_image(p, target)
    where = f"{svc.position}: " if svc.position is not None else ""
    p.warnings.append(
        f'{where}services.{svc.name}.depends_on.{name}: "{name}" has no healthcheck in the Compose file; '
        f"apply refuses it before anything is created unless image {target.image} declares one"
    )
    p.add(
        OpKind.CHECK_HEALTHCHECK,
        service_resource(name),
        "no healthcheck in the Compose file",
        [p.image_ready[target.image]] if target.image in p.image_ready else [],
        service=name,
        image=image,
        refusal=(
            f'{where}service {svc.name} depends on "{name}" being service_healthy, but neither the '
            f"Compose file nor image {target.image} declares a healthcheck (add one to service {name}, "
            "or wait for service_started)"
        ),
    )
