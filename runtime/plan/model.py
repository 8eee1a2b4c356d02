"""The plan as data: operations, their kinds and causes, and the errors that refuse a plan.

A Plan is a DAG of operations; each carries the resource it acts on, a short lowercase cause,
the ids of the operations that must finish first, and everything the executor needs to run
it (the create bodies, the live object's id, the image to pull). It renders as golden-testable
text:

    [] -> #1 network:default, CreateNetwork, not found
    [#1] -> #2 service:web:1, CreateContainer, not found

This module is pure data and formatting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from gitdock.runtime.desired import DesiredBuild, DesiredContainer, DesiredNetwork, DesiredVolume
from gitdock.specs.errors import PermanentError

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
    BUILD_IMAGE = "BuildImage"
    CREATE_CONTAINER = "CreateContainer"
    RECREATE_CONTAINER = "RecreateContainer"
    RENAME_CONTAINER = "RenameContainer"
    START_CONTAINER = "StartContainer"
    RESTART_CONTAINER = "RestartContainer"  # depends_on.<x>.restart: x was recreated
    REMOVE_CONTAINER = "RemoveContainer"
    WAIT_HEALTHY = "WaitHealthy"
    WAIT_COMPLETED = "WaitCompleted"
    # service_healthy on a service with no Compose healthcheck: its image must declare one.
    CHECK_HEALTHCHECK = "CheckHealthcheck"
    # The Swarm target (runtime/swarm/): one Swarm API call each.
    CREATE_CONFIG = "CreateConfig"
    REMOVE_CONFIG = "RemoveConfig"
    CREATE_SECRET = "CreateSecret"  # noqa: S105 (an operation's name, not a password)
    REMOVE_SECRET = "RemoveSecret"  # noqa: S105 (likewise)
    CREATE_SERVICE = "CreateService"
    UPDATE_SERVICE = "UpdateService"
    REMOVE_SERVICE = "RemoveService"

    @property
    def is_mutating(self) -> bool:
        return self not in (OpKind.WAIT_HEALTHY, OpKind.WAIT_COMPLETED, OpKind.CHECK_HEALTHCHECK)


@dataclass(frozen=True)
class ContainerRef:
    """A container an operation needs: a live one by ``id``, or the one operation ``#op`` creates.

    The executor reads a created container's id from the result of operation ``op``, which is
    always among the dependencies of the operation holding the reference.
    """

    id: str | None = None
    op: int | None = None


@dataclass(frozen=True)
class Operation:
    """One step of a plan. ``target`` is the live object acted on (id or name), if any.

    ``pull`` is ``(image, tag)`` for a PullImage (the tag may be a digest); ``temp_name`` is
    the name a RecreateContainer builds the replacement under; ``build`` is what a BuildImage
    builds; ``network_container`` is the container whose network a ``network_mode: service:``
    container joins (None when that service has none); ``wait_for`` are the containers a
    WaitHealthy/WaitCompleted watches.

    For a RecreateContainer: ``replacement`` is the id of a replacement an interrupted run
    left under ``temp_name`` that matches the desired config and is adopted instead of built
    again; ``stop_first`` (the default) says the old one stops before the new one starts and
    is started again (``restore_old``) if the new one does not start; otherwise (start-first)
    the new one starts first and, with ``gate``, must pass the health gate (``monitor``
    seconds of settle time, None: the default) before the old one stops; ``renew_volumes``
    says the old container's anonymous volumes are not carried over (``-V``). For a
    RemoveContainer, ``remove_volumes`` says Docker removes its anonymous volumes with it.

    From ``deploy.update_config`` (``runtime.plan.rollout``): ``delay`` seconds are waited
    before starting; a failure of a dependency in ``after`` does not skip this operation
    (``continue``); if it fails, the done recreates in ``undo`` are put back to their old
    containers, which they kept stopped under ``retire_name`` (``rollback``).
    ``failure_action`` names what a failure does, for its message.

    A CheckHealthcheck inspects ``image`` and fails with ``refusal`` (one line naming the
    file, the service and its dependency) when the image declares no HEALTHCHECK either.
    """

    id: int
    kind: OpKind
    resource: str
    cause: str
    deps: tuple[int, ...] = ()
    container: DesiredContainer | None = field(default=None, compare=False)
    network: DesiredNetwork | None = field(default=None, compare=False)
    volume: DesiredVolume | None = field(default=None, compare=False)
    build: DesiredBuild | None = field(default=None, compare=False)
    target: str | None = None
    target_name: str | None = None
    image: str | None = None
    service: str | None = None
    pull: tuple[str, str] | None = None
    temp_name: str | None = None
    replacement: str | None = None
    stop_first: bool = False
    restore_old: bool = True
    renew_volumes: bool = False
    remove_volumes: bool = False
    gate: bool = False
    monitor: float | None = None
    delay: float = 0.0
    after: tuple[int, ...] = ()
    undo: tuple[int, ...] = ()
    retire_name: str | None = None
    failure_action: str | None = None
    network_container: ContainerRef | None = None
    wait_for: tuple[ContainerRef, ...] = ()
    refusal: str | None = field(default=None, compare=False)

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
