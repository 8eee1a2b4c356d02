"""Where applied records and the last drift report live: the project row of the state store.

The record is kept under ``"applied"`` in the project's desired-state JSON
(``StateStore.set_project_desired``), next to whatever else the agent keeps there, so the CLI
(``gitdock apply`` / ``gitdock drift``) and the agent share one state file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitdock.agent.state import StateError, StateStore
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.record import AppliedRecord, applied_record
from gitdock.specs.model import Project

if TYPE_CHECKING:
    from gitdock.runtime.converge import Outcome
    from gitdock.runtime.drift.detect import DriftReport

__all__ = ["STATE_DB", "AppliedStore", "default_state_dir", "store_applied"]

STATE_DB = "state.db"  # the file name the agent uses in its state_dir
_APPLIED = "applied"
_DRIFT = "drift"


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    """``$GITDOCK_STATE_DIR``; else ``/var/lib/gitdock`` as root; else ``$XDG_STATE_HOME/gitdock``."""
    env = os.environ if environ is None else environ
    if env.get("GITDOCK_STATE_DIR"):
        return Path(env["GITDOCK_STATE_DIR"])
    if os.geteuid() == 0:
        return Path("/var/lib/gitdock")
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gitdock"


class AppliedStore:
    """Applied records and drift reports per project, over a StateStore (thread-safe as it is)."""

    def __init__(self, store: StateStore, *, owns: bool = False) -> None:
        self.store = store
        self._owns = owns

    @classmethod
    def open(cls, state_dir: Path) -> AppliedStore:
        """Open (creating) ``state_dir/state.db``. Raises StateError when it cannot be used."""
        return cls(StateStore(Path(state_dir) / STATE_DB), owns=True)

    def close(self) -> None:
        if self._owns:
            self.store.close()

    def __enter__(self) -> AppliedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _payload(self, project: str) -> tuple[dict[str, Any], str | None]:
        state = self.store.project(project)
        if state is None:
            return {}, None
        desired = state.desired if isinstance(state.desired, dict) else {}
        return dict(desired), state.revision

    def save(self, record: AppliedRecord) -> bool:
        """Replace the project's record; the last drift report is dropped (the apply healed it).

        A record that differs from the stored one only in its time is not written again, so a
        no-op apply writes nothing (at 1,000 containers the record is half a megabyte): the
        stored time stays the time of the last apply that changed what is recorded. Returns
        whether it wrote.
        """
        fresh = record.to_dict()
        with self.store.transaction():
            payload, revision = self._payload(record.project)
            kept = payload.get(_APPLIED)
            if _DRIFT not in payload and revision == record.revision and _same_but_time(kept, fresh):
                return False
            payload[_APPLIED] = fresh
            payload.pop(_DRIFT, None)
            self.store.set_project_desired(record.project, payload, record.revision)
        return True

    def load(self, project: str) -> AppliedRecord | None:
        """The last applied record, or None when gitdock never applied the project here."""
        payload, _ = self._payload(project)
        data = payload.get(_APPLIED)
        if data is None:
            return None
        try:
            return AppliedRecord.from_dict(data)
        except ValueError as exc:
            raise StateError(f"project {project}: {exc}") from exc

    def save_report(self, report: DriftReport) -> None:
        """Keep the last report, so the next check carries each item's first_seen over."""
        with self.store.transaction():
            payload, revision = self._payload(report.project)
            if _APPLIED not in payload:
                return
            payload[_DRIFT] = report.to_dict()
            self.store.set_project_desired(report.project, payload, revision)

    def last_report(self, project: str) -> DriftReport | None:
        payload, _ = self._payload(project)
        data = payload.get(_DRIFT)
        if not data:
            return None
        try:
            from gitdock.runtime.drift.detect import DriftReport

            return DriftReport.from_dict(data)
        except (KeyError, ValueError):
            return None  # an unreadable old report only loses first_seen


def _same_but_time(kept: object, fresh: dict[str, Any]) -> bool:
    """Whether the stored record ``kept`` says what ``fresh`` says, but for appliedAt."""
    if not isinstance(kept, dict) or kept.keys() != fresh.keys():
        return False
    return all(kept[key] == value for key, value in fresh.items() if key != "appliedAt")


def store_applied(
    project: Project,
    docker: DockerClient,
    outcome: Outcome,
    state_dir: Path | AppliedStore,
    *,
    revision: str | None = None,
) -> AppliedRecord | None:
    """Record what ``outcome`` (a converge) left on the host. None for a dry run.

    An empty plan reuses the snapshot converge took; an executed plan costs one
    label-filtered list call (``observe_applied``). A partly failed apply records what exists
    afterwards, so what gitdock did is never reported as drift.
    """
    if outcome.report is None and not outcome.plan.is_empty:
        return None  # a dry run: nothing was applied
    from gitdock.runtime.converge import observe_applied

    observed = observe_applied(docker, outcome)
    planned = outcome.project or project  # with built images bound to their content tags
    record = applied_record(planned, observed, outcome.images, applied_at=time.time(), revision=revision)
    if isinstance(state_dir, AppliedStore):
        state_dir.save(record)
    else:
        with AppliedStore.open(state_dir) as store:
            store.save(record)
    return record
