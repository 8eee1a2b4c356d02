"""Heal policy: whether the agent converges a drifted project, and when it must stop trying.

Under ``report`` nothing is healed. Under ``heal`` each drifting resource may be healed
``max_heals`` times within ``window`` seconds; after that it is ``flapping`` (something keeps
undoing gitdock's work) and healing stops for it until its old heals age out of the window.
Healing means one converge of the whole project, so a project whose drift is only flapping
resources is not healed; drift elsewhere still is (and that converge repairs all of it).

The policy is pure logic with in-memory history (the clock is passed in) and thread-safe;
``heal_project`` is the one impure step: it repairs what a converge cannot see, then converges.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from gitdock.runtime.converge import NO_HOOKS, ConvergeHooks, Outcome, converge
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.drift.detect import DriftItem, DriftReport, plan_blind_spots
from gitdock.runtime.record import AppliedRecord
from gitdock.specs.model import Project

if TYPE_CHECKING:
    from gitdock.runtime.trust.resolve import TrustContext

__all__ = ["HealDecision", "HealMode", "HealPolicy", "Healer", "heal_project"]


class HealMode(str, Enum):
    REPORT = "report"
    HEAL = "heal"


@dataclass(frozen=True)
class HealPolicy:
    mode: HealMode = HealMode.HEAL
    max_heals: int = 3
    window: float = 600.0  # seconds


@dataclass(frozen=True)
class HealDecision:
    """``heal``: converge now. ``healing``: resources counted as healed by it. ``flapping``: left alone."""

    heal: bool
    healing: tuple[str, ...] = ()
    flapping: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        parts = []
        if self.healing:
            parts.append(f"healing {', '.join(self.healing)}")
        if self.flapping:
            parts.append(
                f"not healing {', '.join(self.flapping)}: flapping (healed too often), reported only"
            )
        return "; ".join(parts)


class Healer:
    """Counts heals per (project, resource) and decides, per ``HealPolicy``."""

    def __init__(self, policy: HealPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._heals: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        heals = self._heals.setdefault(key, deque())
        while heals and now - heals[0] > self.policy.window:
            heals.popleft()
        return heals

    def decide(self, project: str, items: Iterable[DriftItem], now: float) -> HealDecision:
        """Decide for the drift items of one check, and count the heal when it says heal."""
        resources = sorted({i.resource for i in items})
        if self.policy.mode is HealMode.REPORT or not resources:
            return HealDecision(False)
        with self._lock:
            flapping = [r for r in resources if len(self._recent((project, r), now)) >= self.policy.max_heals]
            healing = [r for r in resources if r not in flapping]
            for r in healing:
                self._heals[(project, r)].append(now)
        return HealDecision(bool(healing), tuple(healing), tuple(flapping))

    def should_heal(self, project: str, items: Iterable[DriftItem], now: float) -> tuple[bool, list[str]]:
        """``(heal, flapping resources)``; the shape the agent calls."""
        decision = self.decide(project, items, now)
        return decision.heal, list(decision.flapping)

    def is_flapping(self, project: str, resource: str, now: float) -> bool:
        with self._lock:
            return len(self._recent((project, resource), now)) >= self.policy.max_heals

    def forget(self, project: str) -> None:
        """Drop the project's heal history (a new revision was applied)."""
        with self._lock:
            for key in [k for k in self._heals if k[0] == project]:
                del self._heals[key]


def heal_project(
    project: Project,
    docker: DockerClient,
    report: DriftReport,
    record: AppliedRecord,
    *,
    trust: TrustContext | None = None,
    wait_timeout: float = 120.0,
    should_stop: Callable[[], bool] | None = None,
    hooks: ConvergeHooks = NO_HOOKS,
) -> tuple[Outcome, list[str]]:
    """Heal drift with one converge. Returns (outcome, actions).

    What labels cannot show is handed to the planner: a container stopped by hand that would
    pass for a finished job is started, one whose settings were changed in place is recreated
    (replacement first, as every recreate). Raises what ``converge`` raises.
    """
    start, recreate = plan_blind_spots(report, record)
    outcome = converge(
        project,
        docker,
        force_recreate={name: "drift: changed by hand" for name in recreate},
        force_start={name: "drift: stopped by hand" for name in start},
        trust=trust,
        wait_timeout=wait_timeout,
        should_stop=should_stop,
        hooks=hooks,
    )
    actions = [f"recreate {name}" for name in recreate] + [f"start {name}" for name in start]
    return outcome, actions
