"""A ``mode: swarm`` source: one real agent process deploys a stack to a real single-node Swarm.

The Swarm is a private dockerd (``support.swarm``); the agent's own engine is never used by
the source (``target.host`` is the Swarm's socket). Commits to the upstream repository are
the pushes the agent polls for.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitdock.runtime.docker import DockerClient
from gitdock.runtime.swarm.converge import tear_down_swarm
from support.agent import AgentProcess
from support.docker import TEST_IMAGE
from support.dockerd import SecondDockerd
from support.gitserver import Upstream, free_port
from support.swarm import SingleNodeSwarm

pytestmark = pytest.mark.docker

LOOP = '["sh", "-c", "trap exit TERM; while true; do sleep 1; done"]'


@pytest.fixture(scope="module")
def swarm() -> Iterator[SingleNodeSwarm]:
    reason = SecondDockerd.unavailable_reason()
    if reason:
        pytest.fail(f"a private Swarm cannot start here: {reason}")
    with SingleNodeSwarm() as s:
        yield s


@pytest.fixture
def stack(swarm: SingleNodeSwarm) -> Iterator[str]:
    name = f"gdas{secrets.token_hex(3)}"
    yield name
    with DockerClient(swarm.host) as docker:
        tear_down_swarm(name, docker)


def compose(worker_env: str, worker_command: str = LOOP) -> str:
    """Two services; ``monitor: 2s`` keeps each rollout's wait short."""
    deploy = "update_config: {monitor: 2s, order: start-first, failure_action: rollback}"
    return (
        "services:\n"
        f"  web:\n    image: {TEST_IMAGE}\n    command: {LOOP}\n"
        f"    deploy: {{replicas: 2, {deploy}}}\n"
        f"  worker:\n    image: {TEST_IMAGE}\n    command: {worker_command}\n"
        f"    environment: {{JOB: '{worker_env}'}}\n"
        f"    deploy: {{replicas: 1, {deploy}}}\n"
    )


def services(swarm: SingleNodeSwarm, name: str) -> dict[str, Any]:
    ids = swarm.docker("service", "ls", "-q", "--filter", f"label=io.gitdock.project={name}").split()
    if not ids:
        return {}
    return {s["Spec"]["Name"]: s for s in json.loads(swarm.docker("service", "inspect", *ids))}


def running(swarm: SingleNodeSwarm, service: str) -> int:
    out = swarm.docker(
        "service", "ps", service, "--filter", "desired-state=running", "--format", "{{.CurrentState}}"
    )
    return sum(1 for line in out.splitlines() if line.startswith("Running"))


def write_config(tmp_path: Path, url: str, stack: str, swarm: SingleNodeSwarm) -> tuple[Path, int]:
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"listen: 127.0.0.1:{port}\n"
        "defaults: {interval: 1s, jitter: 0.1s, debounce: 0.1s, wait_timeout: 60s}\n"
        "sources:\n"
        f"  - name: stack\n    url: {url}\n    ref: main\n    project: {stack}\n"
        f"    mode: swarm\n    target: {{host: '{swarm.host}'}}\n"
    )
    return config, port


def test_agent_deploys_a_stack_to_swarm_and_a_push_rolls_only_the_changed_service(
    tmp_path: Path, swarm: SingleNodeSwarm, stack: str
) -> None:
    upstream = Upstream(tmp_path / "repos" / "app.git")
    first = upstream.commit({"compose.yaml": compose("1")}, "a stack")
    config, port = write_config(tmp_path, upstream.url, stack, swarm)
    web, worker = f"{stack}_web", f"{stack}_worker"
    with AgentProcess(config, port) as agent:
        agent.wait_applied("stack", first, timeout=120)
        live = services(swarm, stack)
        assert sorted(live) == [web, worker]
        assert live[web]["Spec"]["Mode"]["Replicated"]["Replicas"] == 2
        assert live[worker]["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
        agent.wait_for("2 web replicas running", lambda: running(swarm, web) == 2)
        tasks = swarm.docker(
            "ps",
            "-a",
            "--filter",
            f"label=io.gitdock.project={stack}",
            "--format",
            '{{.Label "com.docker.swarm.task.id"}}',
        ).splitlines()
        assert len(tasks) == 3 and all(tasks), tasks  # all Swarm tasks: no plain containers

        second = upstream.commit({"compose.yaml": compose("2")}, "change the worker")
        agent.wait_applied("stack", second, timeout=120)
        after = services(swarm, stack)
        moved = {n for n in after if after[n]["Version"] != live[n]["Version"]}
        assert moved == {worker}
        assert after[worker]["ID"] == live[worker]["ID"]  # updated in place, not recreated
        env = after[worker]["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
        assert "JOB=2" in env
        assert agent.status("stack")["lastResult"] == "success"

        bad = upstream.commit({"compose.yaml": compose("3", '["sh", "-c", "exit 1"]')}, "a worker that dies")
        status = agent.wait_for(
            "the bad commit to fail", lambda: _failed_at(agent.status("stack"), bad), timeout=120
        )
        assert status["reason"] == "RolledBack"
        assert "rolled back" in status["message"] and "worker" in status["message"]
        assert status["revision"]["applied"] == second
        rolled = services(swarm, stack)[worker]
        assert rolled["UpdateStatus"]["State"] == "rollback_completed"
        assert "JOB=2" in rolled["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]  # the old spec runs


def _failed_at(status: dict[str, Any], sha: str) -> dict[str, Any] | None:
    return status if status["lastResult"] == "failure" and status["revision"].get("failed") == sha else None
