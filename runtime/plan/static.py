"""Checks that need the snapshot, run before the plan has any operation that changes the host. Pure.

The loader refuses everything the files alone can show; these are the questions only the
observed state answers: a ``container:NAME`` that ``volumes_from``, ``ipc``, ``pid`` or
``network_mode`` shares must exist, and an image that is not here must be one gitdock may
pull (``pull_policy: never`` forbids it). Each adds a problem to ``Planning.problems``, so the
plan is refused whole (``PlanError``) instead of failing after networks or containers exist.
"""

from __future__ import annotations

from collections.abc import Iterator

from gitdock.runtime.plan.context import Planning
from gitdock.runtime.plan.images import find_image_id, source_image
from gitdock.specs.model import Service


def check_snapshot(p: Planning) -> None:
    """Add a problem for each missing shared container and each image that may not be pulled."""
    for svc in sorted(p.project.services, key=lambda s: s.name):
        for field, name in _shared_containers(svc):
            if p.observed.container_named(name) is None:
                p.problems.append(f"service {svc.name}: {field} names container {name}, which does not exist")
        never = svc.build is None and svc.pull_policy == "never"
        if never and find_image_id(p.observed, source_image(p, svc)) is None:
            p.problems.append(
                f"service {svc.name}: image {svc.image} is not present locally and pull_policy is never"
            )


def _shared_containers(svc: Service) -> Iterator[tuple[str, str]]:
    """``(field, container name)`` for each ``container:NAME`` the service shares."""
    extra = dict(svc.extra)
    for entry in extra.get("volumes_from") or ():
        if isinstance(entry, str) and entry.startswith("container:"):
            yield "volumes_from", entry.removeprefix("container:").split(":")[0]
    for field in ("ipc", "pid"):
        mode = extra.get(field)
        if isinstance(mode, str) and mode.startswith("container:"):
            yield field, mode.removeprefix("container:")
    if svc.network_mode and svc.network_mode.startswith("container:"):
        yield "network_mode", svc.network_mode.removeprefix("container:")
