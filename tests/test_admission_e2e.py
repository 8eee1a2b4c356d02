"""The deploy policy end to end: `gitdock plan/apply --policy` and an agent source's `policy:`,
against real dockerd, real git and the agent as a real process (traces to a real OTLP receiver).

A refused revision is one line per violation, exit 1 (CLI) or a failed commit (agent), and
nothing on the host is touched; the next compliant commit deploys.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support.agent import AgentProcess
from support.docker import TEST_IMAGE, docker_events, list_project_resources, write_compose
from support.gitserver import Upstream, free_port
from support.otlp_receiver import OTLPReceiver

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"

PRIVILEGED_SPEC = f"""
services:
  web:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "{LOOP}"]
    privileged: true
    pid: host
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock
      - /srv/../etc/:/host-etc
  worker:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "{LOOP}"]
    cap_add: [SYS_ADMIN]
"""

EXPECTED = [
    "error: policy baseline: services.web.privileged: privileged containers are not allowed",
    "error: policy baseline: services.web.pid: sharing the host's PID namespace is not allowed",
    "error: policy baseline: services.web.volumes: binding the host path /var/run/docker.sock is not allowed",
    "error: policy baseline: services.web.volumes: binding the host path /etc is not allowed",
    "error: policy baseline: services.worker.cap_add: adding capability SYS_ADMIN is not allowed "
    "(outside Docker's default set)",
]


def gitdock(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitdock.agent.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def nothing_exists(project: str) -> bool:
    return list_project_resources(project) == {"container": [], "network": [], "volume": []}


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_cli_refuses_a_privileged_spec_whole_and_touches_nothing(
    tmp_path: Path, project_name: str, command: str
) -> None:
    write_compose(tmp_path, PRIVILEGED_SPEC)
    since = time.time()
    done = gitdock(command, "-p", project_name, "--policy", "baseline", cwd=tmp_path)
    assert done.returncode == 1, done
    assert done.stderr.splitlines() == EXPECTED
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert nothing_exists(project_name)
    assert docker_events(since, time.time(), label=f"io.gitdock.project={project_name}") == []


def test_cli_default_is_privileged_and_a_policy_file_grants_exceptions(
    tmp_path: Path, project_name: str
) -> None:
    write_compose(tmp_path, PRIVILEGED_SPEC)
    plain = gitdock("plan", "-p", project_name, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "CreateContainer" in plain.stdout

    (tmp_path / "policy.yaml").write_text(
        "level: baseline\n"
        "exceptions:\n"
        "  - {service: web, field: privileged}\n"
        "  - {service: web, field: volumes}\n"
        "  - {service: worker, field: cap_add}\n"
    )
    partly = gitdock("plan", "-p", project_name, "--policy-file", "policy.yaml", cwd=tmp_path)
    assert partly.returncode == 1
    assert partly.stderr.splitlines() == [EXPECTED[1]]

    (tmp_path / "policy.yaml").write_text("level: baseline\nexceptions: [{service: web, field: image}]\n")
    bad = gitdock("plan", "-p", project_name, "--policy-file", "policy.yaml", cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.startswith(
        "error: policy.yaml: exceptions[0].field: 'image' is not a key the policy checks"
    )
    assert nothing_exists(project_name)


def compliant(greeting: str) -> str:
    return (
        "services:\n"
        "  web:\n"
        f"    image: {TEST_IMAGE}\n"
        f'    command: ["sh", "-c", "{LOOP}"]\n'
        "    network_mode: host\n"  # allowed at baseline
        f"    environment: {{GREETING: '{greeting}'}}\n"
    )


def write_config(tmp_path: Path, project: str, url: str) -> tuple[Path, int]:
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"listen: 127.0.0.1:{port}\n"
        "defaults: {interval: 1s, jitter: 0.1s, debounce: 0.1s, settle: 0.2s}\n"
        "sources:\n"
        "  - name: app\n"
        f"    url: {url}\n"
        "    path: deploy\n"
        f"    project: {project}\n"
        "    policy: {level: baseline, exceptions: [{service: worker, field: cap_add}]}\n"
    )
    return config, port


def container_ids(project: str) -> list[str]:
    return sorted(list_project_resources(project)["container"])


def test_agent_refuses_a_commit_that_breaks_its_policy_then_deploys_the_next(
    tmp_path: Path, project_name: str
) -> None:
    upstream = Upstream(tmp_path / "repos" / "app.git")
    first = upstream.commit({"deploy/compose.yaml": compliant("1")}, "first")
    config, port = write_config(tmp_path, project_name, upstream.url)
    with OTLPReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        with AgentProcess(config, port, env=env) as agent:
            agent.wait_applied("app", first)
            before = container_ids(project_name)

            bad = upstream.commit({"deploy/compose.yaml": PRIVILEGED_SPEC}, "take the host")
            status = agent.wait_for("the refusal", lambda: _failed(agent, bad))
            assert (status["lastResult"], status["reason"]) == ("failure", "PolicyRefused")
            assert status["message"].splitlines() == [line.removeprefix("error: ") for line in EXPECTED[:4]]
            assert status["revision"]["applied"] == first
            row = agent.history("app")[0]
            assert (row["revision"], row["result"], row["reason"]) == (bad, "failure", "PolicyRefused")
            assert row["message"] == status["message"]
            assert container_ids(project_name) == before  # nothing touched

            good = upstream.commit({"deploy/compose.yaml": compliant("2")}, "fixed")
            agent.wait_applied("app", good)
            agent.wait_for("the traces", lambda: _policy_span(receiver, violations=4))
            agent.terminate()
        spans = receiver.spans()
    refused = _policy_span(receiver, violations=4)
    assert refused is not None
    assert refused.attributes["gitdock.policy.level"] == "baseline"
    assert refused.attributes["cicd.pipeline.task.run.result"] == "failure"
    assert [e.attributes["field"] for e in refused.events if e.name == "policy.violation"] == [
        "services.web.privileged",
        "services.web.pid",
        "services.web.volumes",
        "services.web.volumes",
    ]
    sync = next(s for s in spans if s.span_id == refused.parent_span_id)
    assert sync.name == f"SYNC {project_name}"
    same_trace = {s.name for s in spans if s.trace_id == sync.trace_id}
    assert "observe" not in same_trace and "execute" not in same_trace  # refused before the host
    passed = [s for s in spans if s.name == "policy" and s.attributes.get("gitdock.policy.violations") == 0]
    assert passed, "a compliant revision's policy step is traced too"


def _failed(agent: AgentProcess, sha: str) -> dict[str, Any] | None:
    status = agent.status("app")
    return status if status["revision"]["failed"] == sha else None


def _policy_span(receiver: OTLPReceiver, *, violations: int) -> Any:
    return next(
        (
            s
            for s in receiver.spans()
            if s.name == "policy" and s.attributes.get("gitdock.policy.violations") == violations
        ),
        None,
    )
