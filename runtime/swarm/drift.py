"""What changed on a Swarm behind git's back: replicas scaled or images swapped by hand.

A hand-made ``docker service scale`` or ``docker service update --image`` keeps gitdock's
labels (they live in the spec it changes), so the config hash alone cannot see it; this
compares the few fields people change by hand with what the desired spec says. ``detect``
is pure; the plan turns each finding into an UpdateService that heals it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gitdock.runtime.labels import LABEL_CONFIG_HASH
from gitdock.runtime.swarm.desired import DesiredStack
from gitdock.runtime.swarm.observe import ObservedStack

__all__ = ["SwarmDrift", "detect_swarm_drift"]


@dataclass(frozen=True)
class SwarmDrift:
    """One field of one service that differs from the applied spec."""

    resource: str
    field: str
    want: str
    got: str

    def render(self) -> str:
        return f"{self.resource}: {self.field} is {self.got}, want {self.want}"


def detect_swarm_drift(desired: DesiredStack, observed: ObservedStack) -> list[SwarmDrift]:
    """Drift of the services whose config hash is current (a stale one is updated anyway)."""
    found: list[SwarmDrift] = []
    for ds in desired.services:
        live = observed.services.get(ds.name)
        if live is None or not live.owned_by(desired.project):
            continue
        if live.labels.get(LABEL_CONFIG_HASH) != ds.config_hash:
            continue
        if live.replicas != ds.replicas:
            found.append(SwarmDrift(ds.resource, "replicas", str(ds.replicas), str(live.replicas)))
        if live.image != ds.image:
            found.append(SwarmDrift(ds.resource, "image", ds.image, live.image))
    return found
