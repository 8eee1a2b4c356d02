"""The persisted agent state: round trips, reopen, threads, migrations and SIGKILL mid-write."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gitdock.agent.state import (
    MIGRATIONS,
    ImageLock,
    Result,
    SourceState,
    StateError,
    StateStore,
    Trigger,
)

SHA_A = "a" * 40
SHA_B = "b" * 40


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "state" / "gitdock.db", history_limit=5)
    yield s
    s.close()


def test_unknown_source_is_empty(store: StateStore) -> None:
    assert store.source("nope") == SourceState("nope")
    assert store.sources() == []


def test_source_lifecycle_round_trip(store: StateStore) -> None:
    store.record_fetch("app", SHA_A)
    store.record_attempt("app", SHA_A)
    store.record_result("app", SHA_A, Result.SUCCESS, "applied", "3 operations")
    state = store.source("app")
    assert (state.fetched_sha, state.attempted_sha, state.applied_sha) == (SHA_A, SHA_A, SHA_A)
    assert (state.result, state.reason, state.message) == (Result.SUCCESS, "applied", "3 operations")
    assert state.applied_at is not None and state.applied_at.tzinfo is UTC
    assert state.failed_sha is None and not state.suspended


def test_failed_commit_is_remembered_until_a_success(store: StateStore) -> None:
    store.record_result("app", SHA_A, Result.SUCCESS)
    store.record_result("app", SHA_B, Result.FAILURE, "spec", "services.web.image: missing")
    assert store.is_failed_commit("app", SHA_B)
    assert not store.is_failed_commit("app", SHA_A)
    assert store.source("app").applied_sha == SHA_A  # a failure never moves the applied revision
    store.record_result("app", SHA_B, Result.ERROR, "docker", "unreachable")
    assert store.is_failed_commit("app", SHA_B)  # a transient error does not clear it
    store.clear_failed("app")
    assert not store.is_failed_commit("app", SHA_B)
    store.record_result("app", SHA_B, Result.FAILURE)
    store.record_result("app", SHA_A, Result.SUCCESS)
    assert store.source("app").failed_sha is None


def test_suspend_and_remove(store: StateStore) -> None:
    store.set_suspended("app", True)
    assert store.source("app").suspended
    store.set_suspended("app", False)
    assert not store.source("app").suspended
    store.add_history("app", Trigger.MANUAL, None, Result.SKIP)
    store.remove_source("app")
    assert store.sources() == [] and store.history("app") == []


def test_project_desired_and_locks_round_trip(store: StateStore) -> None:
    assert store.project("web") is None
    desired = {"services": {"web": {"image": "nginx@sha256:" + "1" * 64}}, "networks": ["default"]}
    store.set_project_desired("web", desired, SHA_A)
    project = store.project("web")
    assert project is not None and project.desired == desired and project.revision == SHA_A
    signed = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    store.set_image_locks("web", [ImageLock("nginx:1", "sha256:" + "1" * 64, "key-1", signed)])
    store.set_image_locks("web", {"redis:7": ImageLock("redis:7", "sha256:" + "2" * 64)})  # replaces
    assert store.image_locks("web") == {"redis:7": ImageLock("redis:7", "sha256:" + "2" * 64, "", None)}
    store.remove_project("web")
    assert store.project("web") is None and store.image_locks("web") == {}


def test_history_is_newest_first_and_pruned_per_source(store: StateStore) -> None:
    for i in range(8):
        store.add_history(
            "app", Trigger.SCHEDULE, SHA_A, Result.SUCCESS, plan={"ops": i}, duration_ms=i, reason=f"r{i}"
        )
    store.add_history("other", Trigger.WEBHOOK, SHA_B, Result.FAILURE, message="bad")
    entries = store.history("app", limit=50)
    assert [e.plan for e in entries] == [{"ops": i} for i in range(7, 2, -1)]  # limit 5 kept
    assert entries[0].trigger is Trigger.SCHEDULE and entries[0].duration_ms == 7
    assert [e.outcome for e in store.history("other")] == [Result.FAILURE]
    assert len(store.history("app", limit=2)) == 2


def test_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "gitdock.db"
    with StateStore(path) as s:
        s.record_result("app", SHA_A, Result.SUCCESS)
        s.add_history("app", Trigger.STARTUP, SHA_A, Result.SUCCESS)
    with StateStore(path) as s:
        assert s.source("app").applied_sha == SHA_A
        assert s.history("app")[0].trigger is Trigger.STARTUP
        assert s.schema_version == len(MIGRATIONS)
        mode = s._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_transaction_groups_writes_and_rolls_back(store: StateStore) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.record_result("app", SHA_A, Result.SUCCESS)
        store.add_history("app", Trigger.MANUAL, SHA_A, Result.SUCCESS)
        raise RuntimeError("crash between the two writes")
    assert store.source("app") == SourceState("app")
    assert store.history("app") == []


def test_concurrent_writers_from_threads(store: StateStore) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(50):
                store.record_fetch(f"src{n}", f"{i:040x}")
                store.add_history(f"src{n}", Trigger.SCHEDULE, None, Result.SKIP, duration_ms=i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert [s.fetched_sha for s in store.sources()] == [f"{49:040x}"] * 8
    assert all(store.history(f"src{n}")[0].duration_ms == 49 for n in range(8))


def test_migration_hook_upgrades_and_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gitdock.db"
    with StateStore(path) as s:
        s.record_result("app", SHA_A, Result.SUCCESS)

    def v2(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE sources ADD COLUMN note TEXT NOT NULL DEFAULT 'migrated'")

    with StateStore(path, migrations=(*MIGRATIONS, v2)) as s:
        assert s.schema_version == len(MIGRATIONS) + 1
        assert s._db.execute("SELECT note FROM sources").fetchone()[0] == "migrated"
        assert s.source("app").applied_sha == SHA_A  # extra columns do not break reads
    with pytest.raises(StateError, match="newer than this gitdock knows"):
        StateStore(path)


def test_not_a_database_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "gitdock.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match=str(path)):
        StateStore(path)


CHILD = """
import sys
from pathlib import Path
from gitdock.agent.state import Result, StateStore, Trigger

store = StateStore(Path(sys.argv[1]))
i = 0
while True:
    i += 1
    with store.transaction():
        store.record_result("app", f"{i:040x}", Result.SUCCESS, message=str(i))
        plan = {"i": i, "pad": "x" * 2000}
        store.add_history("app", Trigger.SCHEDULE, f"{i:040x}", Result.SUCCESS, plan=plan)
    print(i, flush=True)
"""


def test_sigkill_mid_write_leaves_last_committed_state(tmp_path: Path) -> None:
    path = tmp_path / "gitdock.db"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    last = 0
    try:
        for line in proc.stdout:
            if int(line) >= 40:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # Drain what the child printed before it died: each number was printed after its commit.
        printed = [int(x) for x in proc.stdout.read().split()]
        last = max([40, *printed])
    finally:
        proc.stdout.close()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    with StateStore(path) as s:
        assert s._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        state = s.source("app")
        committed = int(state.message)
        # Everything printed was committed; at most the transaction in flight may also have landed.
        assert last <= committed <= last + 1
        assert state.applied_sha == f"{committed:040x}"
        newest = s.history("app", limit=1)[0]
        assert newest.plan["i"] == committed  # the result and its history row landed together
