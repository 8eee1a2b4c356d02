"""plan_project: the reconcile of one project, as a table of contents. Pure.

The reconcilers run in this order, and the order is the plan's: images built from the
revision (everything else waits for them), networks, volumes, then the
checks that refuse the whole plan, the recreation of changed networks, images, containers in
dependency order, and last what is no longer wanted. Ownership rules: only objects labelled
with this project are changed or removed; a name held by anything else refuses the plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from gitdock.runtime.build import BuildMode
from gitdock.runtime.observe import ObservedState
from gitdock.runtime.plan.containers import desire_containers, reconcile_containers
from gitdock.runtime.plan.context import Planning
from gitdock.runtime.plan.images import build_first, locate_images, reconcile_builds
from gitdock.runtime.plan.model import Plan
from gitdock.runtime.plan.networks import reconcile_networks, recreate_changed_networks
from gitdock.runtime.plan.orphans import remove_leftover_containers, remove_orphan_networks
from gitdock.runtime.plan.static import check_snapshot
from gitdock.runtime.plan.volumes import reconcile_volumes
from gitdock.specs.model import Project

if TYPE_CHECKING:
    from gitdock.runtime.trust.resolve import ResolvedImage


def plan_project(
    project: Project,
    observed: ObservedState,
    images: Mapping[str, ResolvedImage] | None = None,
    *,
    force_recreate: Mapping[str, str] | None = None,
    force_start: Mapping[str, str] | None = None,
    build: BuildMode = BuildMode.AUTO,
    renew_anon_volumes: bool = False,
) -> Plan:
    """Compute the plan that converges ``observed`` to ``project``. Pure.

    ``images`` maps image references to their resolved, verified digests; with it, containers
    are created by digest and a tag that moved is a change (``image changed: tag moved``).
    ``force_recreate`` / ``force_start`` map container names to a cause, for drift that labels
    cannot show (a setting changed in place, a finished-looking container stopped by hand).
    ``build`` says when a service with ``build:`` is built (``runtime.build.BuildMode``).
    A recreate carries the old container's anonymous volumes over unless ``renew_anon_volumes``.

    Raises ConflictError when a name gitdock needs is held by an object it does not own,
    and PlanError when the project cannot be converged (an external network is missing).
    """
    p = Planning(project, observed, images or {}, force_recreate or {}, force_start or {}, renew_anon_volumes)
    reconcile_builds(p, build)
    reconcile_networks(p)
    reconcile_volumes(p)
    desired = desire_containers(p)
    check_snapshot(p)  # shared containers exist, images may be pulled: refused whole, not half-applied
    p.refuse_if_blocked()
    recreate_changed_networks(p)
    locate_images(p)
    reconcile_containers(p, desired)
    remove_leftover_containers(p, desired)
    remove_orphan_networks(p)
    build_first(p)
    return p.plan()
