"""The health gate's judgement (runtime.health.judge_container) and the rollout helpers, pure.

Literal `docker inspect` documents in, one verdict out; one behaviour per test. The agent's
use of it against real containers is tests/test_rollback_e2e.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gitdock.agent.config import ConfigError, parse_config
from gitdock.agent.rollout import pinned_images, rollback_message
from gitdock.agent.state import MIGRATIONS, Result, RevisionStatus, StateStore
from gitdock.runtime.health import LABEL_SETTLE, Verdict, judge_container, parse_settle

NOW = 1_700_000_100.0
STARTED = "2023-11-14T22:13:20.000000789Z"  # NOW - 100 s, in nanoseconds as Docker writes it


def inspect(
    status: str = "running",
    *,
    started: str = STARTED,
    restarts: int = 0,
    code: int = 0,
    policy: str = "no",
    health: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {"Status": status, "StartedAt": started, "ExitCode": code}
    if health is not None:
        state["Health"] = health
    return {
        "Id": "0123456789abcdef",
        "Name": "/p-web-1",
        "RestartCount": restarts,
        "State": state,
        "Config": {"Labels": {"io.gitdock.service": "web", **(labels or {})}},
        "HostConfig": {"RestartPolicy": {"Name": policy}},
    }


def test_a_running_container_without_healthcheck_is_ready_after_its_settle_time() -> None:
    r = judge_container(inspect(), settle=10, now=NOW)
    assert (r.verdict, r.reason) == (Verdict.READY, "service web: running for 100.0s")


def test_a_running_container_waits_until_its_settle_time_has_passed() -> None:
    r = judge_container(inspect(), settle=120, now=NOW)
    assert (r.verdict, r.reason) == (Verdict.WAITING, "service web: running for 100.0s of a 120s settle time")


def test_the_settle_label_wins_over_the_sources_settle_time() -> None:
    r = judge_container(inspect(labels={LABEL_SETTLE: "2m"}), settle=10, now=NOW)
    assert r.verdict is Verdict.WAITING


def test_a_healthcheck_decides_without_a_settle_time() -> None:
    healthy = inspect(health={"Status": "healthy"}, started="2023-11-14T22:14:59Z")
    assert judge_container(healthy, settle=10, now=NOW).verdict is Verdict.READY
    starting = inspect(health={"Status": "starting"})
    assert judge_container(starting, settle=0, now=NOW).verdict is Verdict.WAITING


def test_an_unhealthy_container_fails_with_its_last_healthcheck_output() -> None:
    health = {"Status": "unhealthy", "Log": [{"Output": "ok\n"}, {"Output": "db:5432\n  refused\n"}]}
    r = judge_container(inspect(health=health), settle=10, now=NOW)
    assert (r.verdict, r.reason) == (Verdict.FAILED, "service web: unhealthy: db:5432 refused")


def test_a_container_that_exits_non_zero_without_restart_policy_fails() -> None:
    r = judge_container(inspect("exited", code=1), settle=10, now=NOW)
    assert (r.verdict, r.reason) == (Verdict.FAILED, "service web: exited 1")


def test_a_one_shot_job_that_exits_zero_is_ready() -> None:
    r = judge_container(inspect("exited", code=0), settle=10, now=NOW)
    assert (r.verdict, r.reason) == (Verdict.READY, "service web: completed (exit 0)")


def test_a_crashing_container_with_a_restart_policy_waits_until_the_restart_limit() -> None:
    r = judge_container(inspect("restarting", restarts=1, code=1, policy="always"), settle=10, now=NOW)
    assert r.verdict is Verdict.WAITING


def test_a_container_restarted_three_times_fails_with_its_exit_code() -> None:
    r = judge_container(inspect("running", restarts=3, code=1, policy="always"), settle=0, now=NOW)
    assert (r.verdict, r.reason) == (Verdict.FAILED, "service web: restarted 3 times, exit 1")


def test_an_out_of_memory_exit_is_said() -> None:
    doc = inspect("exited", code=137)
    doc["State"]["OOMKilled"] = True
    assert judge_container(doc, settle=0, now=NOW).reason == "service web: exited 137 (out of memory)"


@pytest.mark.parametrize(
    ("text", "seconds"), [("5s", 5.0), ("500ms", 0.5), ("1m", 60.0), ("3", 3.0), ("soon", 10.0), (None, 10.0)]
)
def test_settle_times_are_parsed_with_the_default_for_anything_else(text: str | None, seconds: float) -> None:
    assert parse_settle(text, 10.0) == seconds


def test_a_rollback_pins_the_exact_image_id_while_it_is_here() -> None:
    image_id, digest = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    images = {"web": {"reference": "app:1", "image_id": image_id, "pinned": f"app@{digest}"}}
    here = pinned_images(images, lambda _id: True)["app:1"]
    assert (here.pinned, here.digest) == (image_id, image_id)
    gone = pinned_images(images, lambda _id: False)["app:1"]
    assert (gone.pinned, gone.digest) == (f"app@{digest}", digest)
    unknown = {"web": {"reference": "app:1", "image_id": "x", "pinned": ""}}
    assert pinned_images(unknown, lambda _id: False) == {}


def test_the_rollback_message_names_both_revisions() -> None:
    assert rollback_message("b" * 40, "a" * 40, "service web: exited 1") == (
        f"rolled back from {'b' * 12} to {'a' * 12}: service web: exited 1"
    )


def test_a_state_file_from_before_the_gate_is_migrated_and_keeps_its_history(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore(path, migrations=MIGRATIONS[:1]) as old:
        old.record_result("app", "a" * 40, Result.SUCCESS, "ReconciliationSucceeded", "applied")
        with old.transaction():  # a row as the old code wrote it: no `live` column yet
            old._db.execute(
                "INSERT INTO history (source, at, trigger, revision, outcome, duration_ms) "
                "VALUES ('app', 1.0, 'schedule', ?, 'success', 5)",
                ("a" * 40,),
            )
    with StateStore(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert store.source("app").applied_sha == "a" * 40
        assert [h.live for h in store.history("app")] == [None]
        store.record_revision("app", "a" * 40, RevisionStatus.HEALTHY, images={"web": {"reference": "x"}})
        store.record_revision("app", "b" * 40, RevisionStatus.FAILED, message="service web: exited 1")
        good = store.last_healthy("app", besides="b" * 40)
        assert good is not None and (good.sha, good.images) == ("a" * 40, {"web": {"reference": "x"}})
        store.record_rollback("app", "b" * 40, "a" * 40, "RolledBack", "rolled back")
        state = store.source("app")
        assert (state.applied_sha, state.failed_sha, state.result) == ("a" * 40, "b" * 40, Result.FAILURE)


def config_text(extra: str) -> str:
    return (
        "state_dir: /x\nsources:\n"
        "  - {name: a, url: file:///r/a, depends_on: [b]}\n"
        f"  - {{name: b, url: file:///r/b{extra}}}\n"
    )


def test_depends_on_takes_another_source() -> None:
    config = parse_config(config_text(""), "/etc/agent.yaml", {})
    assert config.sources[0].depends_on == ("b",)


def test_a_depends_on_cycle_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="depends_on has a cycle: a -> b -> a"):
        parse_config(config_text(", depends_on: [a]"), "/etc/agent.yaml", {})


def test_depends_on_an_unknown_source_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="depends_on names 'c', which is not another source"):
        parse_config(config_text(", depends_on: [c]"), "/etc/agent.yaml", {})
