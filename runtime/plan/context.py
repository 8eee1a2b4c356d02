"""The state one planning pass shares between the reconcilers of ``gitdock.runtime.plan``.

``Planning`` is what docker/compose keeps on its reconciler: the inputs, the operations
added so far (an ``OperationList``: numbered in the order they are added, which is the
plan's order), and what one reconciler leaves for the next (which operation makes a network
ready, which containers a changed network forces out, ...). Pure: data and bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gitdock.runtime.labels import LABEL_PROJECT
from gitdock.runtime.observe import ObservedProject, ObservedState
from gitdock.runtime.plan.model import ConflictError, ContainerRef, Operation, OpKind, Plan, PlanError
from gitdock.specs.model import Condition, Project

if TYPE_CHECKING:
    from gitdock.runtime.trust.resolve import ResolvedImage


class OperationList:
    """Operations numbered from 1 in the order they are added, which is the plan's order."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []

    def add(self, kind: OpKind, resource: str, cause: str, deps: Iterable[int] = (), **kw: Any) -> int:
        """Append an operation (dependencies deduplicated and sorted); returns its id."""
        op_id = len(self.ops) + 1
        unique = tuple(sorted(set(deps)))
        self.ops.append(Operation(op_id, kind, resource, cause, unique, **kw))
        return op_id

    def ids_of(self, kind: OpKind) -> list[int]:
        return [op.id for op in self.ops if op.kind is kind]


@dataclass
class Planning:
    """Inputs, the operations so far, and what reconcilers hand each other."""

    project: Project
    observed: ObservedState
    images: Mapping[str, ResolvedImage] = field(default_factory=dict)
    force_recreate: Mapping[str, str] = field(default_factory=dict)
    force_start: Mapping[str, str] = field(default_factory=dict)
    renew_anon_volumes: bool = False  # recreates do not carry anonymous volumes over (-V)
    operations: OperationList = field(default_factory=OperationList)
    warnings: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # names held by others: refuse the plan
    problems: list[str] = field(default_factory=list)  # e.g. a missing external network
    network_ready: dict[str, int] = field(default_factory=dict)  # network key -> op to wait for
    volume_ready: dict[str, int] = field(default_factory=dict)  # volume key -> op to wait for
    changed_networks: set[str] = field(default_factory=set)  # live networks whose config changed
    pre_removals: dict[str, int] = field(default_factory=dict)  # container id -> its RemoveContainer
    image_ids: dict[str, str | None] = field(default_factory=dict)  # service image -> local image id
    image_ready: dict[str, int] = field(default_factory=dict)  # service image -> its PullImage
    service_ops: dict[str, list[int]] = field(default_factory=dict)  # ops that (re)create or start it
    replaced: set[str] = field(default_factory=set)  # services whose containers get new ids
    waits: dict[tuple[str, Condition], int] = field(default_factory=dict)
    # service -> replica number -> the container it has once the plan ran
    replicas: dict[str, dict[int, ContainerRef]] = field(default_factory=dict)
    removals: list[int] = field(default_factory=list)  # RemoveContainer ops of unwanted containers
    rollouts: dict[str, list[int]] = field(default_factory=dict)  # service -> its recreates (update_config)
    mine: ObservedProject = field(init=False)  # the project's own containers, by service and replica

    def __post_init__(self) -> None:
        self.mine = self.observed.project(self.project.name)

    def add(self, kind: OpKind, resource: str, cause: str, deps: Iterable[int] = (), **kw: Any) -> int:
        """Append an operation to the plan; returns its id."""
        return self.operations.add(kind, resource, cause, deps, **kw)

    def refuse_if_blocked(self) -> None:
        """Raise ConflictError for names held by others, then PlanError for other problems."""
        if self.conflicts:
            raise ConflictError("; ".join(self.conflicts) + "; nothing was changed")
        if self.problems:
            raise PlanError("; ".join(self.problems))

    def plan(self) -> Plan:
        """The finished plan, with the resolved images' warnings and lock record."""
        warnings = list(self.warnings)
        for image in self.images.values():
            warnings += image.warnings
        services = sorted(self.project.services, key=lambda s: s.name)
        resolved = tuple((s.name, self.images[s.image]) for s in services if s.image in self.images)
        return Plan(self.project.name, tuple(self.operations.ops), tuple(warnings), resolved)


def owner_text(labels: Mapping[str, str]) -> str:
    """Who holds an object gitdock wanted, for a ConflictError."""
    project = labels.get(LABEL_PROJECT)
    return f"it belongs to gitdock project {project!r}" if project else "it is not managed by gitdock"
