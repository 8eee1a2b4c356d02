"""Health-gated deploys and automatic rollback, against the real agent process and dockerd.

A commit whose service crashes two seconds after start, or whose healthcheck turns
unhealthy, is rolled back to the last healthy revision (its image and environment back),
recorded as failed and not retried; the next good commit deploys. A source with
``depends_on`` is reconciled only once the other is healthy. Settle times are short (per
source) so the suite stays fast; the gate's logic is pinned down in test_health.py.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from support.agent import AgentProcess
from support.docker import TEST_IMAGE, TEST_IMAGE_2, docker_cli, remove_project
from support.gitserver import Upstream, free_port

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
CRASH = "sleep 2; exit 1"
SETTLE = "3s"  # longer than the crash's two seconds, or the gate would pass before it


def compose(greeting: str, *, image: str = TEST_IMAGE, script: str = LOOP, extra: str = "") -> str:
    return (
        "services:\n"
        "  web:\n"
        f"    image: {image}\n"
        f'    command: ["sh", "-c", "{script}"]\n'
        "    environment:\n"
        f'      GREETING: "{greeting}"\n' + extra
    )


UNHEALTHY = (
    "    healthcheck:\n"
    '      test: ["CMD-SHELL", "echo database not reachable; exit 1"]\n'
    "      interval: 300ms\n"
    "      timeout: 1s\n"
    "      retries: 2\n"
)


def write_config(tmp_path: Path, sources: list[tuple[str, str, str, str]]) -> tuple[Path, int]:
    """Sources as (name, url, project, extra YAML lines indented for the source)."""
    port = free_port()
    config = tmp_path / "agent.yaml"
    lines = [
        f"state_dir: {tmp_path / 'state'}",
        f"listen: 127.0.0.1:{port}",
        "defaults: {interval: 1s, jitter: 0.1s, debounce: 0.1s}",
        "sources:",
    ]
    for name, url, project, extra in sources:
        lines += [
            f"  - name: {name}",
            f"    url: {url}",
            f"    project: {project}",
            "    health_timeout: 30s",
        ]
        lines += [f"    {line}" for line in extra.splitlines()]
    config.write_text("\n".join(lines) + "\n")
    return config, port


def web(project: str) -> dict[str, Any]:
    """The web container's inspect document."""
    return dict(json.loads(docker_cli("inspect", f"{project}-web-1"))[0])


def greeting(info: dict[str, Any]) -> list[str]:
    return [e for e in info["Config"]["Env"] or [] if e.startswith("GREETING=")]


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def image_id(reference: str) -> str:
    return docker_cli("image", "inspect", "-f", "{{.Id}}", reference).strip()


def rolled_back(agent: AgentProcess, name: str, bad: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        s = agent.status(name)
        return (
            s if s["revision"]["failed"] == bad and s["reason"] in ("RolledBack", "RollbackFailed") else None
        )

    return agent.wait_for(f"{name} to roll back from {bad[:12]}", check, timeout=60)


def assert_rolled_back(agent: AgentProcess, project: str, good: str, bad: str, cause: str) -> None:
    """The status says RolledBack with both revisions; the good revision's container is back."""
    status = rolled_back(agent, "app", bad)
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RolledBack"), status
    assert ready["message"].startswith(f"rolled back from {bad[:12]} to {good[:12]}: "), ready
    assert cause in ready["message"], ready
    assert condition(status, "Stalled")["status"] == "False", status
    assert status["revision"]["applied"] == good, status
    info = web(project)
    assert info["Image"] == image_id(TEST_IMAGE), info["Image"]
    assert greeting(info) == ["GREETING=1"]
    assert info["State"]["Status"] == "running"
    row = agent.history("app")[0]
    assert (row["revision"], row["reason"]) == (bad, "RolledBack"), row


def assert_not_retried(agent: AgentProcess, project: str, bad: str) -> None:
    """Several polls later the bad commit has one rollback in history and the container stayed."""
    container = web(project)["Id"]
    polls = agent.status("app")["lastCheckedAt"]
    agent.wait_for("three more polls", lambda: _polled(agent, polls, 3), timeout=30)
    assert web(project)["Id"] == container
    attempts = [h for h in agent.history("app") if h["revision"] == bad]
    assert [h["reason"] for h in attempts] == ["RolledBack"], attempts


def _polled(agent: AgentProcess, since: str, seconds: float) -> bool:
    last = agent.status("app")["lastCheckedAt"]
    return bool(last and since and _at(last) - _at(since) >= seconds)


def _at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize(
    ("bad_files", "cause"),
    [
        (compose("2", image=TEST_IMAGE_2, script=CRASH), "service web: exited 1"),
        (compose("2", image=TEST_IMAGE_2, extra=UNHEALTHY), "service web: unhealthy: database not reachable"),
    ],
    ids=["crash", "unhealthy"],
)
def test_a_failing_commit_is_rolled_back_not_retried_and_the_next_good_one_deploys(
    tmp_path: Path, project_name: str, bad_files: str, cause: str
) -> None:
    upstream = Upstream(tmp_path / "repos" / "app.git")
    good = upstream.commit({"compose.yaml": compose("1")}, "good")
    config, port = write_config(tmp_path, [("app", upstream.url, project_name, f"settle: {SETTLE}")])
    with AgentProcess(config, port) as agent:
        status = agent.wait_applied("app", good, timeout=60)
        assert condition(status, "Ready")["status"] == "True"
        assert "healthy in" in status["message"], status

        bad = upstream.commit({"compose.yaml": bad_files}, "bad")
        assert_rolled_back(agent, project_name, good, bad, cause)
        assert_not_retried(agent, project_name, bad)

        fixed = upstream.commit({"compose.yaml": compose("3")}, "fixed")
        status = agent.wait_applied("app", fixed, timeout=60)
        assert greeting(web(project_name)) == ["GREETING=3"]
        assert status["revision"]["failed"] is None
        assert condition(status, "Ready")["status"] == "True"


def test_rollback_off_fails_the_revision_and_leaves_it_stalled(tmp_path: Path, project_name: str) -> None:
    upstream = Upstream(tmp_path / "repos" / "app.git")
    good = upstream.commit({"compose.yaml": compose("1")}, "good")
    extra = "settle: 3s\nrollback: off"
    config, port = write_config(tmp_path, [("app", upstream.url, project_name, extra)])
    with AgentProcess(config, port) as agent:
        agent.wait_applied("app", good, timeout=60)
        bad = upstream.commit({"compose.yaml": compose("2", script=CRASH)}, "bad")

        def failed() -> dict[str, Any] | None:
            s = agent.status("app")
            return s if s["revision"]["failed"] == bad else None

        status = agent.wait_for("the bad commit to fail", failed, timeout=60)
        stalled = condition(status, "Stalled")
        assert (stalled["status"], stalled["reason"]) == ("True", "HealthCheckFailed"), status
        assert "rollback is off" in stalled["message"] and "service web: exited 1" in stalled["message"]
        assert status["revision"]["applied"] == good


def test_a_source_waits_for_the_source_it_depends_on(tmp_path: Path, project_name: str) -> None:
    db_project, app_project = f"{project_name}-db", f"{project_name}-app"
    db = Upstream(tmp_path / "repos" / "db.git")
    app = Upstream(tmp_path / "repos" / "app.git")
    db_sha = db.commit({"compose.yaml": compose("db")}, "db")
    app_sha = app.commit({"compose.yaml": compose("app")}, "app")
    config, port = write_config(
        tmp_path,
        [
            ("app", app.url, app_project, "settle: 0.2s\ndepends_on: [db]"),
            ("db", db.url, db_project, "settle: 3s"),
        ],
    )
    try:
        with AgentProcess(config, port) as agent:
            agent.wait_applied("app", app_sha, timeout=60)
            db_healthy = next(h for h in agent.history("db") if h["result"] == "success")
            assert db_healthy["revision"] == db_sha
            waited = [h for h in agent.history("app") if h["reason"] == "DependencyNotReady"]
            assert waited and "waiting for source db" in waited[-1]["message"], agent.history("app")
            created = web(app_project)["Created"]
            assert _at(_trim(created)) >= _at(db_healthy["at"]), (created, db_healthy)
    finally:
        remove_project(db_project)
        remove_project(app_project)


def _trim(docker_time: str) -> str:
    """Docker's nanosecond time cut to microseconds, as fromisoformat takes it."""
    head, _, rest = docker_time.partition(".")
    return f"{head}.{rest.rstrip('Z')[:6]}Z" if rest else docker_time


def test_the_rollback_is_a_trace_of_its_own_linked_to_the_failed_sync(
    tmp_path: Path, project_name: str
) -> None:
    from gitdock.agent.config import parse_config
    from gitdock.agent.git import GitCache
    from gitdock.agent.metrics import create_metrics, set_metrics
    from gitdock.agent.reconcile import Reconciler
    from gitdock.agent.state import StateStore, Trigger
    from gitdock.runtime.docker import DockerClient
    from support.spans import capture_spans, find_span, render_tree

    upstream = Upstream(tmp_path / "repos" / "app.git")
    upstream.commit({"compose.yaml": compose("1")}, "good")
    text = (
        f"state_dir: {tmp_path / 'state'}\n"
        f"sources:\n  - {{name: app, url: '{upstream.url}', project: {project_name}, settle: {SETTLE}}}\n"
    )
    config = parse_config(text, str(tmp_path / "agent.yaml"))
    metrics, provider = create_metrics()
    set_metrics(metrics)
    store = StateStore(tmp_path / "state.db")
    try:
        with DockerClient() as docker:
            reconciler = Reconciler(config, store, GitCache(tmp_path / "cache"), docker)
            assert reconciler.reconcile(config.sources[0], Trigger.MANUAL).reason == "ReconciliationSucceeded"
            upstream.commit({"compose.yaml": compose("2", script=CRASH)}, "bad")
            with capture_spans() as exporter:
                result = reconciler.reconcile(config.sources[0], Trigger.MANUAL)
            reconciler.close()
    finally:
        store.close()
        set_metrics(type(metrics).noop())
    assert result.reason == "RolledBack", result
    spans = list(exporter.get_finished_spans())
    sync, rollback = find_span(spans, f"SYNC {project_name}"), find_span(spans, "rollback")
    assert rollback.parent is None and rollback.context.trace_id != sync.context.trace_id
    assert [link.context.span_id for link in rollback.links] == [sync.context.span_id]
    assert "rollback\n  load\n  policy\n  observe\n  plan\n  execute\n" in render_tree(spans)
    labels = f'host="{reconciler.host}",project="{project_name}",result="success"'
    assert f"gitdock_rollbacks_total{{{labels}}} 1.0" in metrics.render_prometheus()
    provider.shutdown()
