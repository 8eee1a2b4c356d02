"""The agent's persisted state: one SQLite file in the state directory.

What survives a restart: per source, the revisions last fetched, attempted and applied, the
last result, the suspended flag and the last failed commit (so a bad commit is not retried
in a loop); per project, the last applied desired state and the image lock record; a
bounded history of reconciles (each with the revision live after it); and per source the
revisions judged by the health gate, healthy ones with the exact images they ran (what a
rollback re-applies).

Durability: WAL journal with ``synchronous=FULL``. WAL alone already keeps the file
consistent if the process dies (SIGKILL, OOM) mid-write; FULL adds an fsync of the WAL on
every commit, so a power loss cannot forget a recorded result either. Writes are a few per
reconcile, so the fsync costs nothing that matters. Every write method is one transaction;
``transaction()`` groups several (e.g. a result and its history row) into one.

Thread-safe: one connection guarded by a re-entrant lock (SQLite serialises writers anyway).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Final

from gitdock.specs.errors import PermanentError

__all__ = [
    "MIGRATIONS",
    "HistoryEntry",
    "ImageLock",
    "ProjectState",
    "Result",
    "RevisionRecord",
    "RevisionStatus",
    "SourceState",
    "StateError",
    "StateStore",
    "Trigger",
]

DEFAULT_HISTORY_LIMIT: Final = 100


class StateError(PermanentError):
    """The state file cannot be used (written by a newer gitdock, not a database, ...)."""


class Result(str, Enum):
    """Outcome of one reconcile of a source."""

    SUCCESS = "success"
    FAILURE = "failure"  # the commit is bad (spec, trust, plan): a new commit must fix it
    ERROR = "error"  # the world failed (git, registry, docker unreachable): retry later
    SKIP = "skip"  # nothing done on purpose (suspended, known-bad commit, no change)


class Trigger(str, Enum):
    """What started a reconcile."""

    SCHEDULE = "schedule"
    WEBHOOK = "webhook"
    MANUAL = "manual"
    STARTUP = "startup"
    DRIFT = "drift"  # the Docker events stream saw a change to the project
    DEPENDENCY = "dependency"  # a source this one depends on became healthy
    ROLLBACK = "rollback"  # `gitdock rollback`: back to a healthy revision by hand


Migration = Callable[[sqlite3.Connection], None]


def _v1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE sources (
            name TEXT PRIMARY KEY,
            fetched_sha TEXT, fetched_at REAL,
            attempted_sha TEXT, attempted_at REAL,
            applied_sha TEXT, applied_at REAL,
            result TEXT, reason TEXT NOT NULL DEFAULT '', message TEXT NOT NULL DEFAULT '', result_at REAL,
            suspended INTEGER NOT NULL DEFAULT 0,
            failed_sha TEXT, failed_at REAL,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE projects (
            name TEXT PRIMARY KEY,
            desired TEXT, revision TEXT, applied_at REAL,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE image_locks (
            project TEXT NOT NULL, image TEXT NOT NULL,
            digest TEXT NOT NULL, key TEXT NOT NULL DEFAULT '', signed_at REAL,
            PRIMARY KEY (project, image)
        )"""
    )
    db.execute(
        """CREATE TABLE history (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source TEXT NOT NULL, at REAL NOT NULL, trigger TEXT NOT NULL, revision TEXT,
            plan TEXT, outcome TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
            message TEXT NOT NULL DEFAULT '', duration_ms INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX history_by_source ON history (source, id)")


def _v2(db: sqlite3.Connection) -> None:
    """The health gate's verdicts per revision, and the revision live after each reconcile."""
    db.execute(
        """CREATE TABLE revisions (
            source TEXT NOT NULL, sha TEXT NOT NULL, status TEXT NOT NULL,
            images TEXT NOT NULL DEFAULT '{}', message TEXT NOT NULL DEFAULT '', at REAL NOT NULL,
            PRIMARY KEY (source, sha)
        )"""
    )
    db.execute("ALTER TABLE history ADD COLUMN live TEXT")


def _v3(db: sqlite3.Connection) -> None:
    """The engine each reconcile deployed to (``agent.targets.display_host``); older rows: NULL."""
    db.execute("ALTER TABLE history ADD COLUMN host TEXT")


# Append only: MIGRATIONS[i] takes the schema from user_version i to i + 1.
MIGRATIONS: Final[tuple[Migration, ...]] = (_v1, _v2, _v3)


class RevisionStatus(str, Enum):
    """The health gate's verdict on one revision of a source."""

    HEALTHY = "healthy"
    FAILED = "failed"


@dataclass(frozen=True)
class RevisionRecord:
    """One judged revision. ``images``: service -> {reference, image_id, pinned} it ran."""

    source: str
    sha: str
    status: RevisionStatus
    images: dict[str, dict[str, str]]
    message: str
    at: datetime


@dataclass(frozen=True)
class SourceState:
    """Everything remembered about one source. A never-seen source has all fields empty."""

    name: str
    fetched_sha: str | None = None
    fetched_at: datetime | None = None
    attempted_sha: str | None = None
    attempted_at: datetime | None = None
    applied_sha: str | None = None
    applied_at: datetime | None = None
    result: Result | None = None
    reason: str = ""
    message: str = ""
    result_at: datetime | None = None
    suspended: bool = False
    failed_sha: str | None = None
    failed_at: datetime | None = None


@dataclass(frozen=True)
class ProjectState:
    """The last applied desired state of a project (JSON as given) and the revision it came from."""

    name: str
    desired: Any
    revision: str | None
    applied_at: datetime | None


@dataclass(frozen=True)
class ImageLock:
    """One verified image: the digest it resolved to, the key that signed it, when it was signed."""

    image: str
    digest: str
    key: str = ""
    signed_at: datetime | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One reconcile, as recorded."""

    id: int
    source: str
    at: datetime
    trigger: Trigger
    revision: str | None
    plan: Any
    outcome: Result
    reason: str
    message: str
    duration_ms: int
    live: str | None = None  # the revision running after this reconcile
    host: str | None = None  # the engine it deployed to, as metrics name it (None: recorded before)


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class StateStore:
    """SQLite-backed state at `path` (created with its parent directory if missing).

    Raises StateError if the file is not a gitdock state database or is newer than this
    code's schema. ``history_limit`` rows are kept per source; older ones are pruned in the
    same transaction that adds a row.
    """

    def __init__(
        self,
        path: Path,
        *,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        migrations: Sequence[Migration] = MIGRATIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.history_limit = history_limit
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit BEGIN IMMEDIATE ... COMMIT below.
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate(migrations)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StateError(f"state file {path}: {exc}") from None
        except StateError:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
            return version

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        current = self.schema_version
        if current > len(migrations):
            raise StateError(
                f"state file {self.path}: schema version {current} is newer than this gitdock knows "
                f"({len(migrations)}); upgrade gitdock or move the file away"
            )
        for version in range(current, len(migrations)):
            with self.transaction():
                migrations[version](self._db)
                self._db.execute(f"PRAGMA user_version = {version + 1}")  # pragmas take no parameters

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one transaction (nested calls join the outer one). Holds the lock."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._depth = 0

    # -- sources --

    def _touch_source(self, name: str, now: float) -> None:
        self._db.execute(
            "INSERT INTO sources (name, updated_at) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET updated_at = ?",
            (name, now, now),
        )

    def _update_source(self, name: str, **fields: Any) -> None:
        now = self._clock()
        with self.transaction():
            self._touch_source(name, now)
            assigns = ", ".join(f"{key} = ?" for key in fields)
            values = [now if value is _NOW else value for value in fields.values()]
            self._db.execute(f"UPDATE sources SET {assigns} WHERE name = ?", (*values, name))  # noqa: S608 - keys are ours

    def source(self, name: str) -> SourceState:
        """The state of `name`; an empty SourceState if it was never recorded."""
        with self._lock:
            cur = self._db.execute("SELECT * FROM sources WHERE name = ?", (name,))
            cols = [d[0] for d in cur.description]
            row = cur.fetchone()
        return SourceState(name) if row is None else _source_from_row(dict(zip(cols, row, strict=True)))

    def sources(self) -> list[SourceState]:
        """Every recorded source, by name."""
        with self._lock:
            cur = self._db.execute("SELECT * FROM sources ORDER BY name")
            cols = [d[0] for d in cur.description]
            rows = cur.fetchall()
        return [_source_from_row(dict(zip(cols, row, strict=True))) for row in rows]

    def record_fetch(self, name: str, sha: str) -> None:
        """The source's ref resolved to `sha` on the last fetch."""
        self._update_source(name, fetched_sha=sha, fetched_at=_NOW)

    def record_attempt(self, name: str, sha: str) -> None:
        """An apply of `sha` is starting (so a crash mid-apply is visible after restart)."""
        self._update_source(name, attempted_sha=sha, attempted_at=_NOW)

    def record_result(
        self, name: str, sha: str | None, result: Result, reason: str = "", message: str = ""
    ) -> None:
        """The outcome of reconciling `sha`.

        SUCCESS makes `sha` the applied revision and clears the failed commit; FAILURE marks
        `sha` as the failed commit (``is_failed_commit`` then says to skip it); ERROR and SKIP
        record the outcome only.
        """
        fields: dict[str, Any] = {
            "result": result.value,
            "reason": reason,
            "message": message,
            "result_at": _NOW,
        }
        if result is Result.SUCCESS:
            fields |= {"applied_sha": sha, "applied_at": _NOW, "failed_sha": None, "failed_at": None}
        elif result is Result.FAILURE:
            fields |= {"failed_sha": sha, "failed_at": _NOW}
        self._update_source(name, **fields)

    def record_rollback(self, name: str, failed: str, live: str, reason: str, message: str) -> None:
        """`failed` failed its health gate and `live` runs again: a failure (not retried until
        a new commit) whose applied revision is `live`."""
        self._update_source(
            name,
            result=Result.FAILURE.value,
            reason=reason,
            message=message,
            result_at=_NOW,
            applied_sha=live,
            applied_at=_NOW,
            failed_sha=failed,
            failed_at=_NOW,
        )

    def is_failed_commit(self, name: str, sha: str) -> bool:
        """Whether `sha` is the commit that last failed permanently for `name` (do not retry it)."""
        return self.source(name).failed_sha == sha

    def clear_failed(self, name: str) -> None:
        """Forget the failed commit (a manual retry, a config change)."""
        self._update_source(name, failed_sha=None, failed_at=None)

    def set_suspended(self, name: str, suspended: bool) -> None:
        self._update_source(name, suspended=int(suspended))

    def remove_source(self, name: str) -> None:
        """Forget a source and its history."""
        with self.transaction():
            self._db.execute("DELETE FROM sources WHERE name = ?", (name,))
            self._db.execute("DELETE FROM history WHERE source = ?", (name,))
            self._db.execute("DELETE FROM revisions WHERE source = ?", (name,))

    # -- revisions judged by the health gate --

    def record_revision(
        self,
        source: str,
        sha: str,
        status: RevisionStatus,
        *,
        images: Mapping[str, Mapping[str, str]] | None = None,
        message: str = "",
    ) -> None:
        """Remember the gate's verdict on `sha`; a later verdict replaces it (known images stay)."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO revisions (source, sha, status, images, message, at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (source, sha) DO UPDATE SET status = excluded.status, "
                "images = CASE WHEN excluded.images = '{}' THEN revisions.images ELSE excluded.images END, "
                "message = excluded.message, at = excluded.at",
                (source, sha, status.value, _json(dict(images or {})), message, self._clock()),
            )

    def revision(self, source: str, sha: str) -> RevisionRecord | None:
        """The gate's verdict on `sha`, or None when it was never judged."""
        with self._lock:
            row = self._db.execute(
                "SELECT source, sha, status, images, message, at FROM revisions WHERE source = ? AND sha = ?",
                (source, sha),
            ).fetchone()
        return None if row is None else _revision_from_row(row)

    def revisions(self, source: str) -> list[RevisionRecord]:
        """Every judged revision of `source`, the most recently judged first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT source, sha, status, images, message, at FROM revisions "
                "WHERE source = ? ORDER BY at DESC, rowid DESC",
                (source,),
            ).fetchall()
        return [_revision_from_row(row) for row in rows]

    def last_healthy(self, source: str, *, besides: str | None = None) -> RevisionRecord | None:
        """The revision of `source` that last passed its gate (other than `besides`)."""
        with self._lock:
            row = self._db.execute(
                "SELECT source, sha, status, images, message, at FROM revisions "
                "WHERE source = ? AND status = ? AND sha IS NOT ? ORDER BY at DESC, rowid DESC LIMIT 1",
                (source, RevisionStatus.HEALTHY.value, besides),
            ).fetchone()
        return None if row is None else _revision_from_row(row)

    # -- projects --

    def set_project_desired(self, project: str, desired: Any, revision: str | None) -> None:
        """Store the desired state that was just applied (any JSON-serialisable value)."""
        now = self._clock()
        with self.transaction():
            self._db.execute(
                "INSERT INTO projects (name, desired, revision, applied_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET desired = excluded.desired, revision = excluded.revision, "
                "applied_at = excluded.applied_at, updated_at = excluded.updated_at",
                (project, _json(desired), revision, now, now),
            )

    def project(self, project: str) -> ProjectState | None:
        with self._lock:
            row = self._db.execute(
                "SELECT desired, revision, applied_at FROM projects WHERE name = ?", (project,)
            ).fetchone()
        if row is None:
            return None
        return ProjectState(project, None if row[0] is None else json.loads(row[0]), row[1], _dt(row[2]))

    def set_image_locks(self, project: str, locks: Mapping[str, ImageLock] | Sequence[ImageLock]) -> None:
        """Replace the project's whole lock record in one transaction."""
        items = list(locks.values()) if isinstance(locks, Mapping) else list(locks)
        with self.transaction():
            self._db.execute("DELETE FROM image_locks WHERE project = ?", (project,))
            self._db.executemany(
                "INSERT INTO image_locks (project, image, digest, key, signed_at) VALUES (?, ?, ?, ?, ?)",
                [(project, lock.image, lock.digest, lock.key, _ts(lock.signed_at)) for lock in items],
            )

    def image_locks(self, project: str) -> dict[str, ImageLock]:
        """The project's lock record: image reference -> ImageLock."""
        with self._lock:
            rows = self._db.execute(
                "SELECT image, digest, key, signed_at FROM image_locks WHERE project = ? ORDER BY image",
                (project,),
            ).fetchall()
        return {r[0]: ImageLock(r[0], r[1], r[2], _dt(r[3])) for r in rows}

    def remove_project(self, project: str) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM projects WHERE name = ?", (project,))
            self._db.execute("DELETE FROM image_locks WHERE project = ?", (project,))

    # -- history --

    def add_history(
        self,
        source: str,
        trigger: Trigger,
        revision: str | None,
        outcome: Result,
        *,
        plan: Any = None,
        reason: str = "",
        message: str = "",
        duration_ms: int = 0,
        at: datetime | None = None,
        live: str | None = None,
        host: str | None = None,
    ) -> int:
        """Append one reconcile to `source`'s history and prune beyond ``history_limit``. Returns its id."""
        when = at.timestamp() if at else self._clock()
        with self.transaction():
            cur = self._db.execute(
                "INSERT INTO history "
                "(source, at, trigger, revision, plan, outcome, reason, message, duration_ms, live, host) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    source,
                    when,
                    trigger.value,
                    revision,
                    None if plan is None else _json(plan),
                    outcome.value,
                    reason,
                    message,
                    duration_ms,
                    live,
                    host,
                ),
            )
            self._db.execute(
                "DELETE FROM history WHERE source = ? AND id NOT IN "
                "(SELECT id FROM history WHERE source = ? ORDER BY id DESC LIMIT ?)",
                (source, source, self.history_limit),
            )
            row_id = cur.lastrowid
        assert row_id is not None
        return row_id

    def history(self, source: str, limit: int = 20) -> list[HistoryEntry]:
        """`source`'s most recent reconciles, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, source, at, trigger, revision, plan, outcome, reason, message, duration_ms, "
                "live, host FROM history WHERE source = ? ORDER BY id DESC LIMIT ?",
                (source, limit),
            ).fetchall()
        return [
            HistoryEntry(
                id=r[0],
                source=r[1],
                at=datetime.fromtimestamp(r[2], UTC),
                trigger=Trigger(r[3]),
                revision=r[4],
                plan=None if r[5] is None else json.loads(r[5]),
                outcome=Result(r[6]),
                reason=r[7],
                message=r[8],
                duration_ms=r[9],
                live=r[10],
                host=r[11],
            )
            for r in rows
        ]


class _Now:
    """Marker: fill in the store's clock at write time."""


_NOW: Final = _Now()


def _revision_from_row(row: Sequence[Any]) -> RevisionRecord:
    at = datetime.fromtimestamp(row[5], UTC)
    return RevisionRecord(row[0], row[1], RevisionStatus(row[2]), json.loads(row[3]), row[4], at)


def _source_from_row(row: dict[str, Any]) -> SourceState:
    return SourceState(
        name=row["name"],
        fetched_sha=row["fetched_sha"],
        fetched_at=_dt(row["fetched_at"]),
        attempted_sha=row["attempted_sha"],
        attempted_at=_dt(row["attempted_at"]),
        applied_sha=row["applied_sha"],
        applied_at=_dt(row["applied_at"]),
        result=None if row["result"] is None else Result(row["result"]),
        reason=row["reason"],
        message=row["message"],
        result_at=_dt(row["result_at"]),
        suspended=bool(row["suspended"]),
        failed_sha=row["failed_sha"],
        failed_at=_dt(row["failed_at"]),
    )
