"""Drift in the running agent: noticed from the events stream, then healed or only reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from support.agent import AgentProcess
from support.docker import TEST_IMAGE, docker_cli
from support.gitserver import Upstream, free_port

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
COMPOSE = (
    "services:\n"
    "  web:\n"
    f"    image: {TEST_IMAGE}\n"
    f'    command: ["sh", "-c", "{LOOP}"]\n'
    "    restart: unless-stopped\n"
    "    environment: {API_TOKEN: hunter2-not-for-logs}\n"
)


def start_agent(tmp_path: Path, project: str, policy: str) -> AgentProcess:
    upstream = Upstream(tmp_path / "upstream.git")
    upstream.commit({"compose.yaml": COMPOSE})
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nlisten: 127.0.0.1:{port}\n"
        "defaults: {interval: 1h, settle: 0.2s}\n"  # no polling: only the events stream can notice drift
        f"sources:\n  - name: app\n    url: {upstream.url}\n    project: {project}\n    drift: {policy}\n"
    )
    return AgentProcess(config, port)


def first_deploy(agent: AgentProcess) -> None:
    agent.wait_for("the first deploy", lambda: agent.status("app")["lastResult"] == "success")


def state(project: str) -> dict[str, Any]:
    info = json.loads(docker_cli("inspect", f"{project}-web-1"))[0]
    return dict(info["State"])


def test_a_container_stopped_by_hand_is_healed_from_the_events_stream(
    tmp_path: Path, project_name: str
) -> None:
    with start_agent(tmp_path, project_name, "heal") as agent:
        first_deploy(agent)
        before = json.loads(docker_cli("inspect", f"{project_name}-web-1"))[0]["Id"]
        docker_cli("stop", f"{project_name}-web-1")
        agent.wait_for("the container to run again", lambda: state(project_name)["Running"], timeout=60)
        healed = agent.wait_for(
            "a DriftHealed history row",
            lambda: next((h for h in agent.history("app") if h["reason"] == "DriftHealed"), None),
            timeout=60,
        )
        assert healed["trigger"] == "drift"
        assert "service:web:1" in healed["message"]
        after = json.loads(docker_cli("inspect", f"{project_name}-web-1"))[0]["Id"]
        assert after == before  # started again, not recreated
        code, drift = agent.get("/api/v1/sources/app/drift")
        assert code == 200
        assert drift["items"] == []


def test_report_policy_reports_drift_and_heals_nothing(tmp_path: Path, project_name: str) -> None:
    with start_agent(tmp_path, project_name, "report") as agent:
        first_deploy(agent)
        docker_cli("stop", f"{project_name}-web-1")
        reported = agent.wait_for(
            "a DriftDetected history row",
            lambda: next((h for h in agent.history("app") if h["reason"] == "DriftDetected"), None),
            timeout=60,
        )
        assert "policy report: not healed" in reported["message"]
        assert state(project_name)["Running"] is False
        code, drift = agent.get("/api/v1/sources/app/drift")
        assert code == 200
        items = drift["items"]
        assert [(i["resource"], i["field"]) for i in items] == [("service:web:1", "state")]
        assert "hunter2" not in json.dumps(drift)
        code, metrics = agent.get("/metrics")
        assert code == 200
        assert any(
            line.startswith("gitdock_drift_items") and project_name in line and float(line.split()[-1]) == 1
            for line in str(metrics).splitlines()
        ), metrics
        assert "hunter2" not in agent.log()
