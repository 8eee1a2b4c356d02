"""Drift against the real dockerd: apply, change the host by hand, see `gitdock drift`, heal.

Each test applies in process (converge + store_applied, as `gitdock apply` will), makes one
change by hand with the docker CLI, checks `gitdock drift --output json` (exit 2 and the
items), then checks the heal policy: `report` heals nothing, `heal` converges it away.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gitdock.agent.applied_store import AppliedStore, store_applied
from gitdock.agent.healing import Healer, HealMode, HealPolicy, heal_project
from gitdock.runtime.converge import converge
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.drift.detect import DriftReport
from gitdock.runtime.drift.watch import check_drift
from gitdock.specs import load_project
from gitdock.specs.model import Project
from support.docker import TEST_IMAGE, docker_cli, write_compose

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"

COMPOSE = f"""
    services:
      web:
        image: {TEST_IMAGE}
        command: ["sh", "-c", "{LOOP}"]
        environment:
          GREETING: hi
          DB_PASSWORD: hunter2
        volumes:
          - data:/data
        networks: [default, backend]
      worker:
        image: {TEST_IMAGE}
        command: ["sh", "-c", "{LOOP}"]
    networks:
      backend: {{}}
    volumes:
      data: {{}}
"""


class Applied:
    """One applied project: its spec, where its record lives, and a Docker client."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.name = name
        self.state_dir = tmp_path / "state"
        self.project: Project = load_project([write_compose(tmp_path, COMPOSE)], project_name=name)
        self.docker = DockerClient()
        self.apply()

    def apply(self) -> None:
        outcome = converge(self.project, self.docker)
        assert outcome.report is None or outcome.report.ok
        assert store_applied(self.project, self.docker, outcome, self.state_dir) is not None

    def drift(self, *extra: str) -> tuple[int, dict[str, Any]]:
        result = gitdock(
            "drift", "-p", self.name, "--state-dir", str(self.state_dir), "--output", "json", *extra
        )
        assert result.returncode in (0, 2), result.stderr
        return result.returncode, json.loads(result.stdout)

    def report(self) -> DriftReport:
        with AppliedStore.open(self.state_dir) as store:
            record = store.load(self.name)
        assert record is not None
        return check_drift(self.docker, record)

    def heal(self, mode: HealMode) -> bool:
        """One agent step: check, ask the policy, heal when it says so, record the new state."""
        report = self.report()
        heal, flapping = Healer(HealPolicy(mode)).should_heal(self.name, report.items, report.checked_at)
        assert flapping == []
        if heal:
            with AppliedStore.open(self.state_dir) as store:
                record = store.load(self.name)
                assert record is not None
                outcome, _ = heal_project(self.project, self.docker, report, record)
                assert outcome.report is None or outcome.report.ok
                store_applied(self.project, self.docker, outcome, store)
        return heal

    def container(self, service: str) -> str:
        return f"{self.name}-{service}-1"


def gitdock(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitdock.agent.cli.main", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
        check=False,
    )


def inspect(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(docker_cli("inspect", name))[0]
    return data


def rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(i["resource"], i["field"], i["desired"], i["live"]) for i in report["items"]]


@pytest.fixture
def app(tmp_path: Path, project_name: str) -> Any:
    applied = Applied(tmp_path, project_name)
    yield applied
    applied.docker.close()


def test_no_applied_record_is_an_error(tmp_path: Path) -> None:
    result = gitdock("drift", "-p", "never-applied", "--state-dir", str(tmp_path))
    assert result.returncode == 1
    assert "no applied record for project never-applied: run gitdock apply first" in result.stderr


def test_fresh_apply_has_no_drift(app: Applied) -> None:
    code, report = app.drift("--deep")
    assert (code, report["drift"], report["items"]) == (0, False, [])
    text = gitdock("drift", "-p", app.name, "--state-dir", str(app.state_dir))
    assert (text.returncode, text.stdout.strip()) == (0, f"project {app.name}: no drift")


def test_container_stopped_by_hand(app: Applied) -> None:
    docker_cli("stop", app.container("web"))
    code, report = app.drift()
    assert code == 2
    assert rows(report) == [("service:web:1", "state", "running", "exited (0)")]
    what = report["items"][0]["what"]
    assert what.startswith("stopped by hand at ") and what.endswith(", exit 0"), what

    assert app.heal(HealMode.REPORT) is False
    assert inspect(app.container("web"))["State"]["Running"] is False
    assert app.heal(HealMode.HEAL) is True
    assert inspect(app.container("web"))["State"]["Running"] is True
    assert app.drift()[0] == 0


def test_container_killed_by_hand_shows_signal_and_exit_code(app: Applied) -> None:
    docker_cli("kill", app.container("worker"))
    code, report = app.drift()
    assert code == 2
    assert rows(report) == [("service:worker:1", "state", "running", "exited (137)")]
    assert report["items"][0]["what"].startswith("killed (SIGKILL) at ")
    assert app.heal(HealMode.HEAL) is True
    assert inspect(app.container("worker"))["State"]["Running"] is True


def test_memory_changed_with_docker_update(app: Applied) -> None:
    docker_cli("update", "--memory", "64m", "--memory-swap", "128m", app.container("web"))
    # Seen without --deep: the update event since the apply says which container to inspect.
    code, report = app.drift()
    assert code == 2
    assert rows(report) == [("service:web:1", "memory", "unlimited", "64M")]
    assert report["items"][0]["what"].startswith("updated at ")
    assert report["items"][0]["what"].endswith(": memory unlimited → 64M")
    assert report["inspected"] == 1

    assert app.heal(HealMode.REPORT) is False
    assert inspect(app.container("web"))["HostConfig"]["Memory"] == 64 << 20
    assert app.heal(HealMode.HEAL) is True
    assert inspect(app.container("web"))["HostConfig"]["Memory"] == 0
    assert app.drift("--deep")[0] == 0


def test_network_disconnected_by_hand(app: Applied) -> None:
    backend = f"{app.name}_backend"
    docker_cli("network", "disconnect", backend, app.container("web"))
    code, report = app.drift()
    assert code == 2
    assert rows(report) == [
        ("service:web:1", "networks", f"{backend}, {app.name}_default", f"{app.name}_default")
    ]
    assert report["items"][0]["what"].startswith(f"disconnected from network {backend} at ")
    assert app.heal(HealMode.HEAL) is True
    assert backend in inspect(app.container("web"))["NetworkSettings"]["Networks"]
    assert app.drift()[0] == 0


def test_volume_removed_from_a_stopped_project(app: Applied) -> None:
    # Stop the project by hand (its containers gone), then remove its volume.
    docker_cli("rm", "--force", app.container("web"), app.container("worker"))
    docker_cli("volume", "rm", f"{app.name}_data")
    code, report = app.drift()
    assert code == 2
    assert rows(report) == [
        ("service:web:1", "existence", "running", "missing"),
        ("service:worker:1", "existence", "running", "missing"),
        ("volume:data", "existence", f"{app.name}_data", "missing"),
    ]
    assert [i["what"].split(" at ")[0] for i in report["items"]] == ["removed"] * 3

    assert app.heal(HealMode.REPORT) is False
    assert app.heal(HealMode.HEAL) is True
    assert inspect(app.container("web"))["State"]["Running"] is True
    assert app.drift()[0] == 0


def test_rogue_container_with_the_project_label(app: Applied) -> None:
    rogue = f"{app.name}-rogue"
    docker_cli(
        "run",
        "-d",
        "--name",
        rogue,
        "--label",
        f"io.gitdock.project={app.name}",
        TEST_IMAGE,
        "sh",
        "-c",
        LOOP,
    )
    code, report = app.drift()
    assert code == 2
    assert rows(report) == [(f"container:{rogue}", "existence", "absent", "running")]
    assert report["items"][0]["kind"] == "rogue"
    assert report["items"][0]["what"].startswith("created at ")
    assert app.heal(HealMode.HEAL) is True  # the planner removes it as an orphan
    assert docker_cli("ps", "-aq", "--filter", f"name={rogue}").strip() == ""
    assert app.drift()[0] == 0


def test_container_recreated_by_hand_with_other_env_is_reported_redacted(app: Applied) -> None:
    web = inspect(app.container("web"))
    docker_cli("rm", "--force", app.container("web"))
    labels = [arg for k, v in web["Config"]["Labels"].items() for arg in ("--label", f"{k}={v}")]
    docker_cli(
        "run", "-d", "--name", app.container("web"), *labels,
        "-e", "GREETING=hi", "-e", "DB_PASSWORD=changed-by-hand",
        "--network", f"{app.name}_default", "-v", f"{app.name}_data:/data",
        TEST_IMAGE, "sh", "-c", LOOP,
    )  # fmt: skip
    docker_cli("network", "connect", f"{app.name}_backend", app.container("web"))
    result = gitdock("drift", "-p", app.name, "--state-dir", str(app.state_dir), "--output", "json")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert [(i["field"], i["kind"]) for i in report["items"]] == [
        ("environment", "changed"),
        ("id", "recreated"),
    ]
    env = report["items"][0]
    assert (env["desired"], env["live"]) == ("DB_PASSWORD=<redacted>", "DB_PASSWORD=<redacted>")
    assert report["items"][1]["what"].startswith("recreated by hand at ")
    for output in ("text", "markdown", "json"):
        shown = gitdock("drift", "-p", app.name, "--state-dir", str(app.state_dir), "--output", output)
        assert "hunter2" not in shown.stdout and "changed-by-hand" not in shown.stdout
    assert app.heal(HealMode.HEAL) is True
    assert "DB_PASSWORD=hunter2" in inspect(app.container("web"))["Config"]["Env"]
    assert app.drift("--deep")[0] == 0


def test_first_seen_is_kept_across_checks(app: Applied) -> None:
    docker_cli("stop", app.container("worker"))
    first = app.drift()[1]["items"][0]["firstSeen"]
    again = app.drift()[1]["items"][0]
    assert again["firstSeen"] == first
    markdown = gitdock("drift", "-p", app.name, "--state-dir", str(app.state_dir), "--output", "markdown")
    assert markdown.returncode == 2
    assert "| service:worker:1 | state | running | exited (0) |" in markdown.stdout
