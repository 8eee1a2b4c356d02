"""Volumes: create the missing ones; never remove or recreate one on apply. Pure.

Recreating a volume destroys its data, so a changed or no longer wanted volume is a warning
that says what to do by hand (``gitdock down --volumes`` is the one way gitdock removes them).
"""

from __future__ import annotations

from gitdock.runtime.desired import changed_fields, desired_volume
from gitdock.runtime.labels import LABEL_CONFIG_FIELDS, LABEL_CONFIG_HASH, LABEL_VOLUME
from gitdock.runtime.plan.context import Planning, owner_text
from gitdock.runtime.plan.model import OpKind
from gitdock.specs.model import Volume


def reconcile_volumes(p: Planning) -> None:
    """Create missing volumes; note conflicts and missing external ones; warn about the rest."""
    for volume in sorted(p.project.volumes, key=lambda v: v.key):
        _reconcile_volume(p, volume)
    _warn_about_unwanted_volumes(p)


def _reconcile_volume(p: Planning, volume: Volume) -> None:
    dv = desired_volume(p.project, volume)
    live = p.observed.volume_named(dv.name)
    if dv.external:
        if live is None:
            p.problems.append(f"volume:{dv.key}: external volume {dv.name!r} not found")
    elif live is None:
        p.volume_ready[dv.key] = p.add(OpKind.CREATE_VOLUME, dv.resource, "not found", volume=dv)
    elif live.project != p.project.name or live.labels.get(LABEL_VOLUME) != dv.key:
        p.conflicts.append(f"volume {dv.name!r} exists and {owner_text(live.labels)}")
    elif live.labels.get(LABEL_CONFIG_HASH) != dv.config_hash:
        fields = changed_fields(dv.fields, live.labels.get(LABEL_CONFIG_FIELDS))
        p.warnings.append(
            f"volume:{dv.key}: config changed ({', '.join(fields)}); not recreated, because "
            f"recreating a volume destroys its data. Remove {dv.name!r} by hand to apply it"
        )


def _warn_about_unwanted_volumes(p: Planning) -> None:
    wanted = {v.name for v in p.project.volumes}  # not project.volume(key): a scan each, O(N²)
    for live in p.observed.volumes:
        if live.project == p.project.name and live.name not in wanted:
            key = live.labels.get(LABEL_VOLUME, live.name)
            p.warnings.append(
                f"volume:{key}: no longer in the project; kept, because apply never removes "
                f"volumes (gitdock down --volumes does)"
            )
