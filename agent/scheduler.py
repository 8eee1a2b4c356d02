"""When reconciles run: interval polls with jitter, triggers, single flight per source, backoff.

APScheduler (3.x ``BackgroundScheduler``) only keeps time: its jobs call ``request``, which
returns at once. Each reconcile runs in its own daemon thread, at most one per source (so
at most one per project: the config refuses two sources deploying one project), so a slow
or hanging source never holds up another, and a process that must exit is never held by a
stuck network call.

Single flight: a request arriving while the source is reconciling queues exactly one
follow-up, whatever the number of requests; every waiter of that follow-up gets its result.

Backoff: after a transient error (``Result.ERROR``) polls are held off for
``backoff_delay(n)`` (2 s, 4 s, … capped at 5 min) and one retry is scheduled then; a
success or a permanent failure resets it. Webhooks and manual requests ignore the backoff.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from apscheduler.executors.pool import ThreadPoolExecutor as APSThreadPool
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from gitdock.agent.results import ReconcileResult
from gitdock.agent.state import Result, Trigger

__all__ = ["BACKOFF_CAP", "Schedule", "SourceScheduler", "Ticket", "backoff_delay"]

log = logging.getLogger("gitdock.agent.scheduler")

BACKOFF_BASE: Final = 2.0
BACKOFF_CAP: Final = 300.0


def backoff_delay(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait after `failures` consecutive transient errors: base·2ⁿ⁻¹, capped. Pure."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** min(failures - 1, 30)))


class Ticket:
    """A handle on the run that will serve a request; ``wait`` returns its result."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self.result: ReconcileResult | None = None
        self.queued = False  # True when it waits behind a running reconcile

    def resolve(self, result: ReconcileResult | None) -> None:
        self.result = result
        self._done.set()

    def wait(self, timeout: float | None = None) -> ReconcileResult | None:
        """The result, or None on timeout or when the agent stopped before running it."""
        self._done.wait(timeout)
        return self.result

    @property
    def done(self) -> bool:
        return self._done.is_set()


@dataclass(frozen=True)
class Schedule:
    """One source's polling: every `interval` seconds, ± `jitter`."""

    name: str
    interval: float
    jitter: float


@dataclass
class _Slot:
    running: bool = False
    started_at: float = 0.0
    current: list[Ticket] = field(default_factory=list)
    queued: Trigger | None = None
    queued_tickets: list[Ticket] = field(default_factory=list)
    failures: int = 0
    retry_at: float | None = None  # wall clock


RunFn = Callable[[str, Trigger], ReconcileResult]


class SourceScheduler:
    """Schedules and serialises reconciles per source; thread-safe."""

    def __init__(
        self,
        schedules: Sequence[Schedule],
        run: RunFn,
        *,
        on_result: Callable[[ReconcileResult], None] | None = None,
        backoff: Callable[[int], float] = backoff_delay,
    ) -> None:
        self._schedules = {s.name: s for s in schedules}
        self._run = run
        self._on_result = on_result
        self._backoff = backoff
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._slots = {s.name: _Slot() for s in schedules}
        self._stopping = False
        self._aps = BackgroundScheduler(
            executors={"default": APSThreadPool(max_workers=2)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, *, startup: bool = True) -> None:
        """Start the interval jobs; with `startup`, reconcile every source once right away."""
        for s in self._schedules.values():
            self._aps.add_job(
                self._poll,
                IntervalTrigger(seconds=s.interval, jitter=s.jitter or None, timezone=UTC),
                args=(s.name,),
                id=f"poll:{s.name}",
                name=f"poll {s.name}",
            )
        self._aps.start()
        if startup:
            for name in self._schedules:
                self.request(name, Trigger.STARTUP)

    def add_job(self, func: Callable[[], object], seconds: float, job_id: str) -> None:
        """Run `func` every `seconds` on the scheduler's thread (housekeeping, e.g. a Docker ping)."""
        self._aps.add_job(func, IntervalTrigger(seconds=seconds, timezone=UTC), id=job_id, name=job_id)

    @property
    def is_running(self) -> bool:
        return bool(self._aps.running) and not self._stopping

    def stop(self, timeout: float) -> bool:
        """Take no new work; wait up to `timeout` s for running reconciles. True if all finished."""
        with self._lock:
            self._stopping = True
            dropped = [t for slot in self._slots.values() for t in slot.queued_tickets]
            for slot in self._slots.values():
                slot.queued, slot.queued_tickets = None, []
        for ticket in dropped:
            ticket.resolve(None)
        if self._aps.running:
            self._aps.shutdown(wait=False)
        deadline = time.monotonic() + timeout
        with self._idle:
            while any(s.running for s in self._slots.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    # -- requests --------------------------------------------------------------------------

    def request(self, name: str, trigger: Trigger, *, respect_backoff: bool = False) -> Ticket:
        """Reconcile `name` now, or queue one follow-up if it is running. KeyError: unknown name."""
        ticket = Ticket()
        with self._lock:
            slot = self._slots[name]
            if self._stopping:
                ticket.resolve(None)
                return ticket
            if respect_backoff and slot.retry_at is not None and time.time() < slot.retry_at:
                ticket.resolve(None)
                return ticket
            if slot.running:
                ticket.queued = True
                if slot.queued is None or trigger is not Trigger.SCHEDULE:
                    slot.queued = trigger
                slot.queued_tickets.append(ticket)
                return ticket
            self._begin(name, slot, trigger, [ticket])
        return ticket

    def is_reconciling(self, name: str) -> bool:
        with self._lock:
            return self._slots[name].running

    def retry_at(self, name: str) -> datetime | None:
        with self._lock:
            at = self._slots[name].retry_at
        return None if at is None else datetime.fromtimestamp(at, UTC)

    def failures(self, name: str) -> int:
        with self._lock:
            return self._slots[name].failures

    # -- internals -------------------------------------------------------------------------

    def _poll(self, name: str) -> None:
        self.request(name, Trigger.SCHEDULE, respect_backoff=True)

    def _begin(self, name: str, slot: _Slot, trigger: Trigger, tickets: list[Ticket]) -> None:
        """Start a run. Caller holds the lock."""
        slot.running = True
        slot.started_at = time.monotonic()
        slot.current = tickets
        thread = threading.Thread(
            target=self._work, args=(name, trigger), name=f"reconcile-{name}", daemon=True
        )
        thread.start()

    def _work(self, name: str, trigger: Trigger) -> None:
        result: ReconcileResult | None = None
        try:
            result = self._run(name, trigger)
        except Exception:  # a bug, not a gitdock error: keep the agent alive and say so loudly
            log.exception("reconcile of %s crashed", name)
        if result is not None and self._on_result is not None:
            try:
                self._on_result(result)
            except Exception:
                log.exception("result hook for %s failed", name)
        with self._lock:
            slot = self._slots[name]
            tickets, slot.current = slot.current, []
            if result is not None:
                self._after(name, slot, result)
            slot.running = False
            if slot.queued is not None and not self._stopping:
                nxt, queued = slot.queued, slot.queued_tickets
                slot.queued, slot.queued_tickets = None, []
                self._begin(name, slot, nxt, queued)
            self._idle.notify_all()
        for ticket in tickets:
            ticket.resolve(result)

    def _after(self, name: str, slot: _Slot, result: ReconcileResult) -> None:
        """Backoff bookkeeping. Caller holds the lock."""
        if result.result is Result.ERROR:
            slot.failures += 1
            delay = self._backoff(slot.failures)
            slot.retry_at = time.time() + delay
            if self._aps.running and not self._stopping:
                self._aps.add_job(
                    self._request_retry,
                    DateTrigger(datetime.now(UTC) + timedelta(seconds=delay), timezone=UTC),
                    args=(name,),
                    id=f"retry:{name}",
                    name=f"retry {name}",
                    replace_existing=True,
                )
            log.info("source %s: retrying in %.0fs (attempt %d)", name, delay, slot.failures + 1)
        elif result.result in (Result.SUCCESS, Result.FAILURE):
            slot.failures = 0
            slot.retry_at = None
            if self._aps.running:
                with contextlib.suppress(JobLookupError):  # no retry was pending
                    self._aps.remove_job(f"retry:{name}")

    def _request_retry(self, name: str) -> None:
        with self._lock:
            self._slots[name].retry_at = None
        self.request(name, Trigger.SCHEDULE)
