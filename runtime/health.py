"""The health gate: is every container a converge created or started actually ready?

A container is *ready* when:

- it has a healthcheck and Docker says ``healthy``;
- it has none, is running, and has not been (re)started for its settle time (the source's,
  or the container's ``io.gitdock.settle`` label: ``5s``, ``500ms``, ``1m`` or seconds);
- it is a one-shot job (restart ``no``) that exited 0.

It has *failed* when it turns ``unhealthy``, exits non-zero without a restart policy, or
restarts ``RESTART_LIMIT`` times. Failure reasons name the service and what happened:
``service web: unhealthy: <last healthcheck output>``, ``service api: restarted 3 times, exit 1``.

``judge_container`` is a purely computational function of one ``docker inspect`` document and
the clock; ``wait_ready`` is the small impure loop that feeds it through the Docker seam.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Final

from gitdock.runtime.docker import DockerClient, NotFound
from gitdock.runtime.labels import LABEL_PREFIX, LABEL_SERVICE
from gitdock.specs.errors import PermanentError, TransientError

__all__ = [
    "DEFAULT_SETTLE",
    "LABEL_SETTLE",
    "RESTART_LIMIT",
    "GateReport",
    "HealthGateFailed",
    "HealthGateInterrupted",
    "Readiness",
    "Verdict",
    "judge_container",
    "parse_settle",
    "wait_ready",
]

DEFAULT_SETTLE: Final = 10.0
RESTART_LIMIT: Final = 3
LABEL_SETTLE: Final = f"{LABEL_PREFIX}settle"
OUTPUT_LIMIT: Final = 200
_POLL: Final = 0.25
_SETTLE_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m)?")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}
_FRACTION_RE = re.compile(r"(\.\d{6})\d+")


class HealthGateFailed(PermanentError):
    """A container failed its health gate (or did not pass it in time); a new commit must fix it."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = tuple(reasons)


class HealthGateInterrupted(TransientError):
    """The agent is shutting down while waiting; the next start judges the revision again."""


class Verdict(str, Enum):
    READY = "ready"
    WAITING = "waiting"
    FAILED = "failed"


@dataclass(frozen=True)
class Readiness:
    """What one container is now: ready, still waiting (and for what), or failed (and why)."""

    container: str
    service: str
    verdict: Verdict
    reason: str


@dataclass(frozen=True)
class GateReport:
    """A passed gate: the containers judged and how long it took."""

    ready: tuple[Readiness, ...]
    seconds: float


def parse_settle(value: str | float | None, default: float) -> float:
    """A settle time from a label (``5s``, ``500ms``, ``1m``, ``3``); ``default`` when unset or bad."""
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value) if value >= 0 else default
    match = _SETTLE_RE.fullmatch(value.strip())
    if match is None:
        return default
    return float(match.group(1)) * _UNITS[match.group(2)]


def _started_at(text: str | None) -> float | None:
    """Docker's RFC 3339 time (nanoseconds) as a Unix time; None for the zero time."""
    if not text or text.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(_FRACTION_RE.sub(r"\1", text.replace("Z", "+00:00"))).timestamp()
    except ValueError:
        return None


def _last_output(health: Mapping[str, Any]) -> str:
    log = health.get("Log") or []
    output = str((log[-1] if log else {}).get("Output") or "").strip()
    return " ".join(output.split())[:OUTPUT_LIMIT] or "no output"


def judge_container(inspect: Mapping[str, Any], *, settle: float, now: float) -> Readiness:
    """Judge one container from its ``docker inspect`` at Unix time ``now``. Pure.

    ``settle`` is the default settle time; the container's ``io.gitdock.settle`` label wins.
    """
    config = inspect.get("Config") or {}
    labels = config.get("Labels") or {}
    ident = str(inspect.get("Id") or "")[:12]
    service = str(labels.get(LABEL_SERVICE) or str(inspect.get("Name") or ident).lstrip("/"))
    state = inspect.get("State") or {}
    status = str(state.get("Status") or "")
    restarts = int(inspect.get("RestartCount") or 0)
    code = state.get("ExitCode")
    policy = str(((inspect.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no")

    def said(verdict: Verdict, reason: str) -> Readiness:
        return Readiness(ident, service, verdict, f"service {service}: {reason}")

    if restarts >= RESTART_LIMIT:
        return said(Verdict.FAILED, f"restarted {restarts} times, exit {code}")
    if status in ("exited", "dead"):
        return _judge_exited(said, state, policy, restarts)
    health = state.get("Health")
    if status == "running" and health:
        return _judge_health(said, health)
    if status != "running":
        return said(Verdict.WAITING, f"{status or 'unknown state'}")
    wanted = parse_settle(labels.get(LABEL_SETTLE), settle)
    started = _started_at(state.get("StartedAt"))
    up = 0.0 if started is None else max(0.0, now - started)
    if up >= wanted:
        return said(Verdict.READY, f"running for {up:.1f}s")
    return said(Verdict.WAITING, f"running for {up:.1f}s of a {wanted:g}s settle time")


_Said = Callable[[Verdict, str], Readiness]


def _judge_exited(said: _Said, state: Mapping[str, Any], policy: str, restarts: int) -> Readiness:
    """An exited container: a finished job, one Docker will restart, or a failure."""
    code = state.get("ExitCode")
    if policy in ("always", "unless-stopped") or (policy == "on-failure" and code != 0):
        return said(Verdict.WAITING, f"exited {code}, restarting ({restarts} restart(s) so far)")
    if code == 0:
        return said(Verdict.READY, "completed (exit 0)")
    oom = " (out of memory)" if state.get("OOMKilled") else ""
    again = f" after {restarts} restart(s)" if restarts else ""
    return said(Verdict.FAILED, f"exited {code}{oom}{again}")


def _judge_health(said: _Said, health: Mapping[str, Any]) -> Readiness:
    status = str(health.get("Status") or "starting")
    if status == "healthy":
        return said(Verdict.READY, "healthy")
    if status == "unhealthy":
        return said(Verdict.FAILED, f"unhealthy: {_last_output(health)}")
    return said(Verdict.WAITING, f"health {status}")


def wait_ready(
    docker: DockerClient,
    containers: Sequence[str],
    *,
    settle: float = DEFAULT_SETTLE,
    timeout: float = 120.0,
    should_stop: Callable[[], bool] = lambda: False,
    poll: float = _POLL,
    clock: Callable[[], float] = time.time,
) -> GateReport:
    """Poll ``containers`` (ids) until every one is ready. Raises HealthGateFailed on the first
    failure, or with each waiting reason after ``timeout`` s; HealthGateInterrupted when
    ``should_stop``. A container once ready is not asked again."""
    started = time.monotonic()
    waiting = list(dict.fromkeys(containers))
    ready: list[Readiness] = []
    while True:
        judged = [_judge_one(docker, ident, settle, clock()) for ident in waiting]
        failed = [r.reason for r in judged if r.verdict is Verdict.FAILED]
        if failed:
            raise HealthGateFailed(failed)
        ready += [r for r in judged if r.verdict is Verdict.READY]
        pending = [r for r in judged if r.verdict is Verdict.WAITING]
        if not pending:
            return GateReport(tuple(ready), time.monotonic() - started)
        if time.monotonic() - started > timeout:
            raise HealthGateFailed([f"{r.reason}: not ready within {timeout:g}s" for r in pending])
        if should_stop():
            raise HealthGateInterrupted("shutting down during the health gate")
        waiting = [ident for ident, r in zip(waiting, judged, strict=True) if r.verdict is Verdict.WAITING]
        time.sleep(poll)


def _judge_one(docker: DockerClient, ident: str, settle: float, now: float) -> Readiness:
    try:
        inspect = docker.inspect_container(ident)
    except NotFound:
        return Readiness(ident[:12], ident[:12], Verdict.FAILED, f"container {ident[:12]}: removed")
    return judge_container(inspect, settle=settle, now=now)
