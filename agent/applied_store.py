"""Where applied records and the last drift report live: the project row of the state store.

The record is kept under ``"applied"`` in the project's desired-state JSON
(``StateStore.set_project_desired``), next to whatever else the agent keeps there, so the CLI
(``gitdock apply`` / ``gitdock drift``) and the agent share one state file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitdock.agent.state import StateError, StateStore
from gitdock.runtime import desired as desired_module
from gitdock.runtime import labels as labels_module
from gitdock.runtime import record as record_module
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.record import AppliedRecord, applied_record
from gitdock.specs.model import Project

if TYPE_CHECKING:
    from gitdock.runtime.converge import Outcome
    from gitdock.runtime.drift.detect import DriftReport
    from gitdock.runtime.observe import ObservedState

__all__ = ["STATE_DB", "AppliedStore", "applied_basis", "default_state_dir", "store_applied"]

STATE_DB = "state.db"  # the file name the agent uses in its state_dir
_APPLIED = "applied"
_DRIFT = "drift"
_BASIS = "basis"  # what the record was made from (applied_basis), when the CLI knows it


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

    def made_from(self, project: str, basis: str) -> bool:
        """Whether the project's stored record was made from ``basis`` (``applied_basis``),
        with no drift report kept beside it: recording the same apply again would write it."""
        payload, _ = self._payload(project)
        return _APPLIED in payload and _DRIFT not in payload and payload.get(_BASIS) == basis

    def save(self, record: AppliedRecord, basis: str | None = None) -> bool:
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
            same = _DRIFT not in payload and revision == record.revision and _same_but_time(kept, fresh)
            if same and payload.get(_BASIS) == basis:
                return False
            payload[_APPLIED] = kept if same else fresh
            payload.pop(_DRIFT, None)
            if basis is None:
                payload.pop(_BASIS, None)
            else:
                payload[_BASIS] = basis
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


@functools.cache
def _record_code() -> str:
    """The digest of the code that makes records from a project and a snapshot: a record an
    older gitdock made is never taken for one this code would make."""
    h = hashlib.sha256()
    for module in (record_module, desired_module, labels_module):
        h.update(Path(str(module.__file__)).read_bytes())
    return h.hexdigest()


def applied_basis(load: str, project: Project, observed: ObservedState, revision: str | None = None) -> str:
    """A digest of what a record of ``project`` is made from: ``load``, the fingerprint of the
    load that gave the project (its desired containers), the revision, and the project's
    containers, networks and volumes as ``observed`` shows them (only what a record keeps of
    them: ids, images, state, exit codes, networks; never their environment). Equal bases
    make equal records, so a no-op apply that finds its basis stored records nothing. Pure.

    Only for a project whose images were not resolved by a trust policy (the record holds the
    resolved digests, which the load does not cover).
    """
    h = hashlib.sha256(f"{load}\0{revision}\0{_record_code()}".encode())
    for c in sorted(observed.project_containers(project.name), key=lambda c: c.name):
        networks = ",".join(f"{k}={v}" for k, v in sorted(c.networks.items()))
        h.update(f"\0{c.name}|{c.id}|{c.image}|{c.image_id}|{c.state}|{c.exit_code}|{networks}".encode())
    for network in project.networks:
        live = observed.network_named(network.name)
        h.update(f"\0n|{network.name}|{live.id if live is not None else ''}".encode())
    for volume in project.volumes:
        h.update(f"\0v|{volume.name}|{observed.volume_named(volume.name) is not None}".encode())
    return h.hexdigest()


def store_applied(
    project: Project,
    docker: DockerClient,
    outcome: Outcome,
    state_dir: Path | AppliedStore,
    *,
    revision: str | None = None,
    load: str | None = None,
) -> AppliedRecord | None:
    """Record what ``outcome`` (a converge) left on the host. None for a dry run, and for a
    no-op whose record is stored already.

    An empty plan reuses the snapshot converge took; an executed plan costs one
    label-filtered list call (``observe_applied``). A partly failed apply records what exists
    afterwards, so what gitdock did is never reported as drift. ``load`` (the load's
    fingerprint, when the caller has one) lets a no-op skip building the record when the
    stored one was made from the same basis (``applied_basis``).
    """
    if outcome.report is None and not outcome.plan.is_empty:
        return None  # a dry run: nothing was applied
    from gitdock.runtime.converge import observe_applied

    with contextlib.ExitStack() as stack:
        store = (
            state_dir
            if isinstance(state_dir, AppliedStore)
            else stack.enter_context(AppliedStore.open(state_dir))
        )
        basis = None
        if load is not None and outcome.report is None and outcome.images is None:
            basis = applied_basis(load, project, outcome.observed, revision)
            if store.made_from(project.name, basis):
                return None
        observed = observe_applied(docker, outcome)
        planned = outcome.project or project  # with built images bound to their content tags
        record = applied_record(planned, observed, outcome.images, applied_at=time.time(), revision=revision)
        store.save(record, basis)
    return record
