"""Plan: compare the desired project with the observed host and list what to do, and why.

``plan_project`` and ``plan_down`` are purely computational functions with no side effects:
they take data (a Project, an ObservedState) and return data (a Plan). The Plan is a DAG of
operations; each carries the resource it acts on, a short lowercase cause, and the ids of
the operations that must finish first. It renders as golden-testable text:

    [] -> #1 network:default, CreateNetwork, not found
    [#1] -> #2 service:web:1, CreateContainer, not found

Rules (from the project's ownership contract):
- only objects labelled with this project are changed or removed; a name held by anything
  else is a ConflictError and the plan is refused as a whole;
- containers are recreated only when their config hash or image changed;
- named volumes are never removed or recreated by apply: a changed one is a warning.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from gitdock.runtime.desired import (
    DesiredContainer,
    DesiredNetwork,
    DesiredVolume,
    changed_fields,
    desired_container,
    desired_network,
    desired_volume,
)
from gitdock.runtime.labels import (
    LABEL_CONFIG_FIELDS,
    LABEL_CONFIG_HASH,
    LABEL_IMAGE_DIGEST,
    LABEL_NETWORK,
    LABEL_VOLUME,
)
from gitdock.runtime.observe import ObservedContainer, ObservedState
from gitdock.specs.errors import PermanentError
from gitdock.specs.model import Condition, Project, Service

if TYPE_CHECKING:
    from gitdock.runtime.trust.resolve import ResolvedImage


class ConflictError(PermanentError):
    """A resource gitdock wants to create exists and is not owned by this project."""


class PlanError(PermanentError):
    """The spec is valid but the host cannot be converged to it as it stands."""


class OpKind(str, Enum):
    CREATE_NETWORK = "CreateNetwork"
    REMOVE_NETWORK = "RemoveNetwork"
    CREATE_VOLUME = "CreateVolume"
    REMOVE_VOLUME = "RemoveVolume"
    PULL_IMAGE = "PullImage"
    CREATE_CONTAINER = "CreateContainer"
    RECREATE_CONTAINER = "RecreateContainer"
    START_CONTAINER = "StartContainer"
    REMOVE_CONTAINER = "RemoveContainer"
    WAIT_HEALTHY = "WaitHealthy"
    WAIT_COMPLETED = "WaitCompleted"

    @property
    def is_mutating(self) -> bool:
        return self not in (OpKind.WAIT_HEALTHY, OpKind.WAIT_COMPLETED)


@dataclass(frozen=True)
class Operation:
    """One step of a plan. ``target`` is the live object acted on (id or name), if any."""

    id: int
    kind: OpKind
    resource: str
    cause: str
    deps: tuple[int, ...] = ()
    container: DesiredContainer | None = field(default=None, compare=False)
    network: DesiredNetwork | None = field(default=None, compare=False)
    volume: DesiredVolume | None = field(default=None, compare=False)
    target: str | None = None
    target_name: str | None = None
    image: str | None = None
    service: str | None = None

    def render(self) -> str:
        deps = ", ".join(f"#{d}" for d in self.deps)
        return f"[{deps}] -> #{self.id} {self.resource}, {self.kind.value}, {self.cause}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "resource": self.resource,
            "cause": self.cause,
            "deps": list(self.deps),
        }
        name = self.target_name or (self.container.name if self.container else None)
        if name:
            data["name"] = name
        if self.image or self.container:
            data["image"] = self.image or (self.container.image if self.container else None)
        return data


@dataclass(frozen=True)
class Plan:
    """What one reconcile will do. Data only: printable, diffable, golden-tested."""

    project: str
    operations: tuple[Operation, ...] = ()
    warnings: tuple[str, ...] = ()
    # service -> the image it runs, when digests were resolved: the plan's lock record.
    images: tuple[tuple[str, ResolvedImage], ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.operations

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.operations:
            counts[op.kind.value] = counts.get(op.kind.value, 0) + 1
        return dict(sorted(counts.items()))

    def render_images(self) -> list[str]:
        """One line per service: the digest it runs and who vouched for it."""
        return [f"image {service}: {_render_image(image)}" for service, image in self.images]

    def render(self) -> str:
        lines = [op.render() for op in self.operations]
        lines += self.render_images()
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "project": self.project,
            "operations": [op.to_dict() for op in self.operations],
            "warnings": list(self.warnings),
            "summary": self.summary(),
        }
        if self.images:
            data["images"] = {service: image.to_dict() for service, image in self.images}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _render_image(image: ResolvedImage) -> str:
    text = f"{image.reference} -> {image.digest}"
    if image.status == "verified":
        text += f", verified by {', '.join(image.keys)}"
        if image.signed_at is not None:
            signed = datetime.fromtimestamp(image.signed_at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            text += f", signed {signed}"
    else:
        text += f", {image.status}"
    return text


def familiar_image(ref: str) -> str:
    """Docker's short form of an image reference, as ``RepoTags`` lists it. Pure."""
    name, at, digest = ref.partition("@")
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if at:
        return f"{name}@{digest}"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name += ":latest"
    return name


def find_image_id(observed: ObservedState, ref: str) -> str | None:
    """The id of the local image that ``ref`` names, or None when it is not present."""
    wanted = familiar_image(ref)
    if "@" in wanted:
        repo, _, digest = wanted.partition("@")
        repo = repo.rsplit(":", 1)[0] if ":" in repo.rsplit("/", 1)[-1] else repo
        for image in observed.images:
            for rd in image.repo_digests:
                if familiar_image(rd) == f"{repo}@{digest}":
                    return image.id
        return None
    for image in observed.images:
        if wanted in image.repo_tags:
            return image.id
    return None


class _Builder:
    def __init__(self) -> None:
        self.ops: list[Operation] = []

    def add(self, kind: OpKind, resource: str, cause: str, deps: Iterable[int] = (), **kw: Any) -> int:
        op_id = len(self.ops) + 1
        unique = tuple(sorted(set(deps)))
        self.ops.append(Operation(op_id, kind, resource, cause, unique, **kw))
        return op_id


def _service_order(project: Project) -> list[Service]:
    """Services in dependency order (dependencies first), ties broken by name."""
    by_name = {s.name: s for s in project.services}
    order: list[Service] = []
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise PlanError(f"dependency cycle: {cycle}")
        state[name] = 1
        svc = by_name[name]
        for dep in sorted(_dependencies(svc)):
            if dep in by_name:
                visit(dep, [*path, name])
        state[name] = 2
        order.append(svc)

    for name in sorted(by_name):
        visit(name, [])
    return order


def _dependencies(svc: Service) -> set[str]:
    deps = {name for name, _ in svc.depends_on}
    if svc.network_mode and svc.network_mode.startswith("service:"):
        deps.add(svc.network_mode.split(":", 1)[1])
    return deps


def _owner_text(labels: dict[str, str]) -> str:
    project = labels.get("io.gitdock.project")
    return f"it belongs to gitdock project {project!r}" if project else "it is not managed by gitdock"


def _needs_start(container: ObservedContainer, restart: str) -> str | None:
    """Why a stopped container of an unchanged service should be started, or None."""
    if container.state == "created":
        return "not started"
    if container.state == "exited":
        code = container.exit_code
        policy = restart.split(":", 1)[0]
        if code == 0 and policy in ("no", "on-failure"):
            return None  # a finished one-shot job: leave it be
        return f"exited ({code})" if code is not None else "exited"
    return None


def plan_project(
    project: Project,
    observed: ObservedState,
    images: Mapping[str, ResolvedImage] | None = None,
    *,
    force_recreate: Mapping[str, str] | None = None,
    force_start: Mapping[str, str] | None = None,
) -> Plan:
    """Compute the plan that converges ``observed`` to ``project``. Pure.

    ``images`` maps image references to their resolved, verified digests; with it, containers
    are created by digest and a tag that moved is a change (``image changed: tag moved``).
    ``force_recreate`` / ``force_start`` map container names to a cause, for drift that labels
    cannot show (a setting changed in place, a finished-looking container stopped by hand).

    Raises ConflictError when a name gitdock needs is held by an object it does not own,
    and PlanError when the project cannot be converged (an external network is missing).
    """
    b = _Builder()
    warnings: list[str] = []
    conflicts: list[str] = []
    problems: list[str] = []
    mine = observed.project_containers(project.name)

    # Networks ---------------------------------------------------------------------------
    network_ready: dict[str, int] = {}  # network key -> op the containers must wait for
    recreated_networks: set[str] = set()  # keys of live networks whose config changed
    for network in sorted(project.networks, key=lambda n: n.key):
        dn = desired_network(project, network)
        live = observed.network_named(dn.name)
        if dn.external:
            if live is None:
                problems.append(f"network:{dn.key}: external network {dn.name!r} not found")
            continue
        if live is None:
            network_ready[dn.key] = b.add(OpKind.CREATE_NETWORK, dn.resource, "not found", network=dn)
        elif live.project != project.name or live.labels.get(LABEL_NETWORK) != dn.key:
            conflicts.append(f"network {dn.name!r} exists and {_owner_text(live.labels)}")
        elif live.labels.get(LABEL_CONFIG_HASH) != dn.config_hash:
            recreated_networks.add(dn.key)
    # Volumes ----------------------------------------------------------------------------
    volume_ready: dict[str, int] = {}
    for volume in sorted(project.volumes, key=lambda v: v.key):
        dv = desired_volume(project, volume)
        live_volume = observed.volume_named(dv.name)
        if dv.external:
            if live_volume is None:
                problems.append(f"volume:{dv.key}: external volume {dv.name!r} not found")
            continue
        if live_volume is None:
            volume_ready[dv.key] = b.add(OpKind.CREATE_VOLUME, dv.resource, "not found", volume=dv)
        elif live_volume.project != project.name or live_volume.labels.get(LABEL_VOLUME) != dv.key:
            conflicts.append(f"volume {dv.name!r} exists and {_owner_text(live_volume.labels)}")
        elif live_volume.labels.get(LABEL_CONFIG_HASH) != dv.config_hash:
            fields = changed_fields(dv.fields, live_volume.labels.get(LABEL_CONFIG_FIELDS))
            warnings.append(
                f"volume:{dv.key}: config changed ({', '.join(fields)}); not recreated, because "
                f"recreating a volume destroys its data. Remove {dv.name!r} by hand to apply it"
            )
    desired_volume_names = {project.volume(v.key).name for v in project.volumes}
    for live_volume in observed.volumes:
        if live_volume.project == project.name and live_volume.name not in desired_volume_names:
            key = live_volume.labels.get(LABEL_VOLUME, live_volume.name)
            warnings.append(
                f"volume:{key}: no longer in the project; kept, because apply never removes "
                f"volumes (gitdock down --volumes does)"
            )

    # Desired containers and name conflicts ---------------------------------------------
    services = _service_order(project)
    images = images or {}
    desired: dict[str, list[DesiredContainer]] = {
        s.name: [desired_container(project, s, n, images.get(s.image)) for n in range(1, s.replicas + 1)]
        for s in services
    }
    for containers in desired.values():
        for dc in containers:
            live_c = observed.container_named(dc.name)
            if live_c is not None and live_c.project != project.name:
                conflicts.append(f"container {dc.name!r} exists and {_owner_text(live_c.labels)}")
    if conflicts:
        raise ConflictError("; ".join(conflicts) + "; nothing was changed")
    if problems:
        raise PlanError("; ".join(problems))

    # Containers that must go before a changed network can be recreated.
    by_slot: dict[tuple[str, int], list[ObservedContainer]] = {}
    for c in mine:
        by_slot.setdefault((c.service or "", c.number), []).append(c)
    network_names = {n.key: n.name for n in project.networks}
    changed_network_names = {network_names[k]: k for k in recreated_networks}
    pre_removals: dict[str, int] = {}  # container id -> RemoveContainer op
    for c in sorted(mine, key=lambda c: c.name):
        hit = sorted(changed_network_names[n] for n in c.networks if n in changed_network_names)
        if hit:
            pre_removals[c.id] = b.add(
                OpKind.REMOVE_CONTAINER,
                f"service:{c.service}:{c.number}",
                f"network {hit[0]} config changed",
                target=c.id,
                target_name=c.name,
            )
    for key in sorted(recreated_networks):
        dn = desired_network(project, project.network(key))
        live = observed.network_named(dn.name)
        assert live is not None  # recreated_networks only holds live networks
        remove = b.add(
            OpKind.REMOVE_NETWORK,
            dn.resource,
            "config changed",
            deps=pre_removals.values(),
            target=live.id,
            target_name=live.name,
        )
        network_ready[key] = b.add(OpKind.CREATE_NETWORK, dn.resource, "config changed", [remove], network=dn)

    # Images: pulled only when a container that needs them is created ----------------------
    image_ready: dict[str, int] = {}
    image_ids: dict[str, str | None] = {}
    for svc in services:
        source = images[svc.image].pinned if svc.image in images else svc.image
        image_ids[svc.image] = find_image_id(observed, source)

    def pull(svc: Service) -> list[int]:
        if image_ids[svc.image] is not None:
            return []
        if svc.image not in image_ready:
            source = images[svc.image].pinned if svc.image in images else svc.image
            image_ready[svc.image] = b.add(
                OpKind.PULL_IMAGE, f"image:{svc.image}", "not present locally", image=source
            )
        return [image_ready[svc.image]]

    # Containers, in dependency order ----------------------------------------------------
    service_ops: dict[str, list[int]] = {}  # service -> ops that (re)create or start it
    service_replaced: set[str] = set()  # services whose containers get new ids
    waits: dict[tuple[str, Condition], int] = {}
    for svc in services:
        ops: list[int] = []

        def ready_deps(svc: Service = svc) -> list[int]:
            deps: list[int] = [network_ready[k] for k, _ in svc.networks if k in network_ready]
            deps += [
                volume_ready[m.source] for m in svc.mounts if m.type == "volume" and m.source in volume_ready
            ]
            deps += pull(svc)
            for dep_name, dep in svc.depends_on:
                if dep.condition is Condition.STARTED:
                    deps += service_ops.get(dep_name, [])
                    continue
                key = (dep_name, dep.condition)
                if key not in waits:
                    kind = (
                        OpKind.WAIT_HEALTHY if dep.condition is Condition.HEALTHY else OpKind.WAIT_COMPLETED
                    )
                    waits[key] = b.add(
                        kind,
                        f"service:{dep_name}",
                        f"{dep.condition.value} required by {svc.name}",
                        service_ops.get(dep_name, []),
                        service=dep_name,
                    )
                deps.append(waits[key])
            if svc.network_mode and svc.network_mode.startswith("service:"):
                deps += service_ops.get(svc.network_mode.split(":", 1)[1], [])
            return deps

        forced = ""
        if svc.network_mode and svc.network_mode.startswith("service:"):
            target = svc.network_mode.split(":", 1)[1]
            if target in service_replaced:
                forced = f"network_mode service:{target} recreated"

        for dc in desired[svc.name]:
            slot = by_slot.pop((svc.name, dc.number), [])
            removed_first = [pre_removals[c.id] for c in slot if c.id in pre_removals]
            live_list = sorted(
                (c for c in slot if c.id not in pre_removals),
                key=lambda c: (c.name != dc.name, -c.created),
            )
            primary, extras = (live_list[0], live_list[1:]) if live_list else (None, [])
            for extra in extras:
                b.add(
                    OpKind.REMOVE_CONTAINER, dc.resource, "duplicate", target=extra.id, target_name=extra.name
                )
            if primary is None:
                cause = "network config changed" if removed_first else "not found"
                ops.append(
                    b.add(
                        OpKind.CREATE_CONTAINER,
                        dc.resource,
                        cause,
                        [*ready_deps(), *removed_first],
                        container=dc,
                    )
                )
                service_replaced.add(svc.name)
                continue
            causes: list[str] = []
            if primary.config_hash != dc.config_hash:
                fields = changed_fields(dc.field_hashes, primary.config_fields)
                non_image = [f for f in fields if f != "image"]
                if "image" in fields:
                    causes.append("image changed")
                if non_image:
                    causes.append("config changed: " + ", ".join(non_image))
            elif svc.image in images and primary.labels.get(LABEL_IMAGE_DIGEST):
                if primary.labels[LABEL_IMAGE_DIGEST] != images[svc.image].digest:
                    causes.append("image changed: tag moved")
            elif image_ids.get(svc.image) is None:
                causes.append("image changed: not present locally")
            elif primary.image_id != image_ids[svc.image]:
                causes.append("image changed")
            if primary.name != dc.name:
                causes.append("name changed")
            if primary.state == "dead":
                causes.append("container dead")
            if forced:
                causes.append(forced)
            if primary.name in (force_recreate or {}):
                causes.append((force_recreate or {})[primary.name])
            if causes:
                ops.append(
                    b.add(
                        OpKind.RECREATE_CONTAINER,
                        dc.resource,
                        "; ".join(causes),
                        ready_deps(),
                        container=dc,
                        target=primary.id,
                        target_name=primary.name,
                    )
                )
                service_replaced.add(svc.name)
                continue
            start_cause = _needs_start(primary, svc.restart)
            if start_cause is None and primary.state in ("exited", "created"):
                start_cause = (force_start or {}).get(primary.name)
            if start_cause:
                ops.append(
                    b.add(
                        OpKind.START_CONTAINER,
                        dc.resource,
                        start_cause,
                        ready_deps(),
                        container=dc,
                        target=primary.id,
                        target_name=primary.name,
                    )
                )
        service_ops[svc.name] = ops

    # What is left in by_slot is no longer wanted -----------------------------------------
    removals: list[int] = list(pre_removals.values())
    wanted_services = {s.name for s in project.services}
    for (service, number), leftovers in sorted(by_slot.items()):
        cause = "scaled down" if service in wanted_services else "orphan"
        for c in sorted(leftovers, key=lambda c: c.name):
            if c.id in pre_removals:
                continue
            removals.append(
                b.add(
                    OpKind.REMOVE_CONTAINER,
                    f"service:{service}:{number}",
                    cause,
                    target=c.id,
                    target_name=c.name,
                )
            )
    desired_network_names = {n.name for n in project.networks}
    container_ops = [op.id for op in b.ops if op.kind is OpKind.RECREATE_CONTAINER] + removals
    for live in sorted(observed.networks, key=lambda n: n.name):
        if live.project == project.name and live.name not in desired_network_names:
            key = live.labels.get(LABEL_NETWORK, live.name)
            b.add(
                OpKind.REMOVE_NETWORK,
                f"network:{key}",
                "orphan",
                container_ops,
                target=live.id,
                target_name=live.name,
            )
    for image in images.values():
        warnings += image.warnings
    resolved = tuple(
        (s.name, images[s.image]) for s in sorted(project.services, key=lambda s: s.name) if s.image in images
    )
    return Plan(project.name, tuple(b.ops), tuple(warnings), resolved)


def plan_down(project_name: str, observed: ObservedState, *, remove_volumes: bool = False) -> Plan:
    """Remove everything labelled with the project; named volumes only when asked. Pure."""
    b = _Builder()
    removals = [
        b.add(
            OpKind.REMOVE_CONTAINER,
            f"service:{c.service}:{c.number}",
            "down",
            target=c.id,
            target_name=c.name,
        )
        for c in sorted(observed.project_containers(project_name), key=lambda c: c.name)
    ]
    for n in sorted(observed.networks, key=lambda n: n.name):
        if n.project == project_name:
            b.add(
                OpKind.REMOVE_NETWORK,
                f"network:{n.labels.get(LABEL_NETWORK, n.name)}",
                "down",
                removals,
                target=n.id,
                target_name=n.name,
            )
    warnings: list[str] = []
    for v in sorted(observed.volumes, key=lambda v: v.name):
        if v.project != project_name:
            continue
        resource = f"volume:{v.labels.get(LABEL_VOLUME, v.name)}"
        if remove_volumes:
            b.add(
                OpKind.REMOVE_VOLUME, resource, "down --volumes", removals, target=v.name, target_name=v.name
            )
        else:
            warnings.append(f"{resource}: kept ({v.name}); use --volumes to remove named volumes")
    return Plan(project_name, tuple(b.ops), tuple(warnings))
