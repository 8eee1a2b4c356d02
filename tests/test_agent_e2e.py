"""The agent as a real process: real git repositories (file:// and HTTP), real dockerd, real signals.

Each test starts `python -m gitdock.agent.cli.main agent` on a random loopback port with its own
state directory; `AgentProcess` kills it whatever happens, and `project_name` removes the
project's containers, networks and volumes by label.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from support.agent import AgentProcess, github_push
from support.docker import TEST_IMAGE, docker_cli, docker_events
from support.gitserver import Upstream, free_port, serve_http

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
HOOK_SECRET = "webhook-secret-for-tests"
MAX_BODY_BYTES = 1024 * 1024


def compose(greeting: str = "1", *, extra: str = "") -> str:
    return (
        "services:\n"
        "  web:\n"
        f"    image: {TEST_IMAGE}\n"
        f'    command: ["sh", "-c", "{LOOP}"]\n'
        "    environment:\n"
        f'      GREETING: "{greeting}"\n'
        "  worker:\n"
        f"    image: {TEST_IMAGE}\n"
        f'    command: ["sh", "-c", "{LOOP}"]\n' + extra
    )


def write_config(
    tmp_path: Path, project: str, url: str, *, interval: str = "1s", extra: str = "", source_extra: str = ""
) -> tuple[Path, int]:
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"listen: 127.0.0.1:{port}\n"
        f"defaults: {{interval: {interval}, jitter: 0.1s, debounce: 0.1s, settle: 0.2s}}\n"
        f"webhooks:\n  github: {{secret: {{file: {tmp_path / 'hook.secret'}}}}}\n"
        f"{extra}"
        "sources:\n"
        "  - name: app\n"
        f"    url: {url}\n"
        "    ref: main\n"
        "    path: deploy\n"
        f"    project: {project}\n"
        f"{source_extra}"
    )
    (tmp_path / "hook.secret").write_text(HOOK_SECRET + "\n")
    return config, port


def containers(project: str) -> dict[str, dict[str, Any]]:
    """name -> {id, state, env} for the project's containers."""
    out = docker_cli("ps", "-a", "--filter", f"label=io.gitdock.project={project}", "--format", "{{.ID}}")
    result = {}
    for cid in out.split():
        info = json.loads(docker_cli("inspect", cid))[0]
        result[info["Name"].lstrip("/")] = {
            "id": info["Id"],
            "state": info["State"]["Status"],
            "env": [e for e in info["Config"]["Env"] or [] if e.startswith("GREETING=")],
        }
    return result


def greeting(project: str) -> list[str]:
    return list(containers(project).get(f"{project}-web-1", {}).get("env", []))


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def gitdock(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitdock.agent.cli.main", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path / "repos" / "app.git")


@pytest.fixture
def http_upstream(upstream: Upstream, tmp_path: Path) -> Iterator[tuple[Upstream, str]]:
    with serve_http(tmp_path / "repos") as server:
        yield upstream, f"{server.base_url}/app.git"


def test_agent_deploys_and_follows_pushes_force_pushes_and_bad_commits(
    tmp_path: Path, project_name: str, upstream: Upstream
) -> None:
    first = upstream.commit({"deploy/compose.yaml": compose("1")}, "first")
    config, port = write_config(tmp_path, project_name, upstream.url)
    with AgentProcess(config, port) as agent:
        status = agent.wait_applied("app", first)
        assert greeting(project_name) == ["GREETING=1"]
        assert {c["state"] for c in containers(project_name).values()} == {"running"}
        ready = condition(status, "Ready")
        assert (ready["status"], ready["reason"]) == ("True", "ReconciliationSucceeded")
        assert condition(status, "Stalled")["status"] == "False"
        assert ready["lastTransitionTime"].endswith("Z")
        worker_id = containers(project_name)[f"{project_name}-worker-1"]["id"]

        # A pushed env change is picked up by the 1 s poll; only web is recreated.
        second = upstream.commit({"deploy/compose.yaml": compose("2")}, "greet 2")
        agent.wait_applied("app", second)
        assert greeting(project_name) == ["GREETING=2"]
        assert containers(project_name)[f"{project_name}-worker-1"]["id"] == worker_id
        row = agent.history("app")[0]
        assert (row["trigger"], row["revision"], row["result"]) == ("schedule", second, "success")
        assert row["plan"]["summary"] == {"RecreateContainer": 1}

        # A bad commit: recorded as failed for that commit, live state kept, not retried in a loop.
        before = containers(project_name)
        bad = upstream.commit({"deploy/compose.yaml": "services:\n  web: [unclosed\n"}, "broken")

        def stalled() -> dict[str, Any] | None:
            s = agent.status("app")
            return s if s["revision"]["failed"] == bad else None

        status = agent.wait_for("the bad commit to fail", stalled)
        assert status["lastResult"] == "failure"
        assert status["reason"] == "SpecError"
        assert status["message"].startswith("deploy/compose.yaml:3:1: invalid YAML")
        assert status["revision"]["applied"] == second
        assert condition(status, "Stalled")["status"] == "True"
        assert condition(status, "Ready")["status"] == "False"
        agent.wait_polls("app", 2)  # two more polls of the bad commit
        assert [h["revision"] for h in agent.history("app")].count(bad) == 1
        assert containers(project_name) == before

        # The next good commit deploys.
        third = upstream.commit({"deploy/compose.yaml": compose("3")}, "fixed")
        status = agent.wait_applied("app", third)
        assert greeting(project_name) == ["GREETING=3"]
        assert condition(status, "Stalled")["status"] == "False"
        assert status["revision"]["failed"] is None

        # A force-push (history rewritten: a new root commit) is followed too.
        rewritten = upstream.commit({"deploy/compose.yaml": compose("forced")}, "rewrite", parents=[])
        agent.wait_applied("app", rewritten)
        assert greeting(project_name) == ["GREETING=forced"]


def test_github_webhook_triggers_a_reconcile_at_once_and_bad_deliveries_are_refused(
    tmp_path: Path, project_name: str, http_upstream: tuple[Upstream, str]
) -> None:
    upstream, url = http_upstream
    first = upstream.commit({"deploy/compose.yaml": compose("1")})
    config, port = write_config(tmp_path, project_name, url, interval="1h")
    with AgentProcess(config, port) as agent:
        agent.wait_applied("app", first)
        second = upstream.commit({"deploy/compose.yaml": compose("hook")})
        body, headers = github_push(HOOK_SECRET, "refs/heads/main", second, url)
        code, answer = agent.request("POST", "/hooks/github", body, headers)
        assert code == 202 and answer == {"triggered": ["app"]}
        # The poll interval is an hour, so an apply recorded with trigger "webhook" is the
        # webhook's doing; the timeout only guards against a hang.
        agent.wait_applied("app", second, timeout=60)
        assert greeting(project_name) == ["GREETING=hook"]
        assert agent.history("app")[0]["trigger"] == "webhook"
        rows = len(agent.history("app"))

        # Wrong signature, no signature: 401, nothing triggered.
        tampered = body.replace(b"refs/heads/main", b"refs/heads/mainx")
        assert agent.request("POST", "/hooks/github", tampered, headers)[0] == 401
        unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
        assert agent.request("POST", "/hooks/github", body, unsigned)[0] == 401
        # A push to a branch no source follows: acknowledged and ignored.
        other, other_headers = github_push(HOOK_SECRET, "refs/heads/feature", second, url)
        code, answer = agent.request("POST", "/hooks/github", other, other_headers)
        assert code == 202 and answer["triggered"] == [] and "refs/heads/feature" in answer["ignored"]
        # A body over the limit is refused from its Content-Length, before it is read.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.putrequest("POST", "/hooks/github")
        conn.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
        conn.putheader("X-GitHub-Event", "push")
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        conn.close()
        # A provider that is not configured.
        assert agent.request("POST", "/hooks/gitlab", body, headers)[0] == 404
        time.sleep(0.5)
        assert len(agent.history("app")) == rows


def test_deleted_branch_stalls_with_ref_not_found_and_keeps_containers(
    tmp_path: Path, project_name: str, upstream: Upstream
) -> None:
    first = upstream.commit({"deploy/compose.yaml": compose("1")})
    config, port = write_config(tmp_path, project_name, upstream.url)
    with AgentProcess(config, port) as agent:
        agent.wait_applied("app", first)
        before = containers(project_name)
        upstream.commit({"deploy/compose.yaml": compose("1")}, branch="other")
        upstream.delete_branch("main")

        def stalled() -> dict[str, Any] | None:
            s = agent.status("app")
            return s if s["reason"] == "RefNotFound" else None

        status = agent.wait_for("RefNotFound", stalled)
        assert status["lastResult"] == "failure"
        assert "branch or tag 'main' not found in file://" in status["message"]
        stalled_cond = condition(status, "Stalled")
        assert (stalled_cond["status"], stalled_cond["reason"]) == ("True", "RefNotFound")
        time.sleep(1.5)
        assert containers(project_name) == before  # never a wipe


def test_git_unreachable_is_transient_backs_off_and_keeps_containers(
    tmp_path: Path, project_name: str, upstream: Upstream
) -> None:
    first = upstream.commit({"deploy/compose.yaml": compose("1")})
    with serve_http(tmp_path / "repos") as server:
        url = f"{server.base_url}/app.git"
        config, port = write_config(tmp_path, project_name, url)
        agent = AgentProcess(config, port).start()
        try:
            agent.wait_applied("app", first)
            before = containers(project_name)
        except BaseException:
            agent.kill()
            raise
    try:  # the HTTP server is gone now

        def failing(more_than: int) -> Callable[[], dict[str, Any] | None]:
            def check() -> dict[str, Any] | None:
                s = agent.status("app")
                return s if s["failures"] > more_than and _has_pending_retry(s) else None

            return check

        first_error = agent.wait_for("a transient error", failing(0), timeout=60)
        status = agent.wait_for("another transient error", failing(first_error["failures"]), timeout=60)
        assert status["lastResult"] == "error"
        assert status["reason"] == "SourceUnavailable"
        assert condition(status, "Stalled")["status"] == "False"
        assert condition(status, "Ready")["status"] == "False"
        # The agent's own record, not the test's clock: each failure puts its retry further out
        # (2 s, 4 s, …), and the 1 s poll made no attempt before the retry time it was given.
        assert _backoff(status) > _backoff(first_error), (first_error, status)
        assert _at(status["lastResultAt"]) >= _at(first_error["retryAt"]), (first_error, status)
        assert containers(project_name) == before
    finally:
        agent.__exit__(None, None, None)


def test_restart_with_nothing_changed_makes_no_docker_change_and_sigterm_stops_cleanly(
    tmp_path: Path, project_name: str, upstream: Upstream
) -> None:
    first = upstream.commit({"deploy/compose.yaml": compose("1")})
    config, port = write_config(tmp_path, project_name, upstream.url)
    with AgentProcess(config, port) as agent:
        agent.wait_applied("app", first)
        before = containers(project_name)
        assert_stops_cleanly(agent)
    since = time.time()
    with AgentProcess(config, port) as agent:
        row = agent.wait_for(
            "the startup reconcile",
            lambda: next(
                (h for h in agent.history("app") if h["trigger"] == "startup" and _epoch(h["at"]) > since),
                None,
            ),
        )
        assert (row["result"], row["reason"], row["revision"]) == ("success", "UpToDate", first)
        assert row["plan"]["operations"] == []
        code, result = agent.post("/api/v1/sources/app/reconcile?wait=1")
        assert code == 200 and result["mutatingCalls"] == 0 and result["reason"] == "UpToDate"
        assert_stops_cleanly(agent)
    until = time.time() + 0.5
    time.sleep(0.6)
    assert [e for e in docker_events(since, until) if project_name in json.dumps(e)] == []
    assert containers(project_name) == before


def assert_stops_cleanly(agent: AgentProcess) -> None:
    """SIGTERM `agent` and check it stopped within its shutdown grace: exit 0, and the log of
    this run (the log file is shared by restarts) says so with no reconcile left running.
    terminate's own timeout is the hang guard."""
    seen = len(agent.log())
    agent.terminate()
    assert agent.proc is not None and agent.proc.returncode == 0, agent.log()
    said = agent.log()[seen:]
    assert "received SIGTERM: stopping" in said, said
    assert "gitdock.agent: stopped in " in said, said
    assert "stopped with a reconcile still running" not in said, said


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _has_pending_retry(status: dict[str, Any]) -> bool:
    """Whether `status` shows an error together with the retry scheduled for it. The status is
    read in parts: between an attempt's record and its backoff bookkeeping it shows the
    previous retry time (no later than that attempt, when backoff is honoured) or none."""
    if status["lastResult"] != "error" or status["retryAt"] is None:
        return False
    return _at(status["retryAt"]) > _at(status["lastResultAt"])


def _backoff(status: dict[str, Any]) -> float:
    """Seconds from the failure the agent recorded to the retry it scheduled for it."""
    return (_at(status["retryAt"]) - _at(status["lastResultAt"])).total_seconds()


def _epoch(at: str) -> float:
    """An API time as seconds since the epoch, to the microsecond (a row of the first agent's
    lifetime that began in the same second as ``since`` must not count as the second's)."""
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


SLOW = f"""\
services:
  db:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "sleep 5; touch /tmp/ready; {LOOP}"]
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1s
      retries: 30
  web:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "{LOOP}"]
    depends_on:
      db: {{condition: service_healthy}}
  worker:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "{LOOP}"]
    depends_on:
      db: {{condition: service_healthy}}
"""


def test_kill_9_mid_reconcile_then_restart_converges_without_duplicates(
    tmp_path: Path, project_name: str, upstream: Upstream
) -> None:
    sha = upstream.commit({"deploy/compose.yaml": SLOW})
    config, port = write_config(tmp_path, project_name, upstream.url, interval="1h")
    agent = AgentProcess(config, port)
    with agent:
        agent.wait_for(
            "the db container", lambda: f"{project_name}-db-1" in containers(project_name), interval=0.05
        )
        agent.kill()  # SIGKILL while web and worker wait for db to be healthy
    partial = containers(project_name)
    assert f"{project_name}-web-1" not in partial, "the kill came too late to be mid-reconcile"
    with AgentProcess(config, port) as agent:
        agent.wait_applied("app", sha, timeout=60)
        final = containers(project_name)
        assert sorted(final) == sorted(f"{project_name}-{s}-1" for s in ("db", "web", "worker"))
        assert {c["state"] for c in final.values()} == {"running"}
        assert final[f"{project_name}-db-1"]["id"] == partial[f"{project_name}-db-1"]["id"]
        status = agent.status("app")
        assert status["revision"]["attempted"] == sha


def test_cli_status_reconcile_suspend_resume_history_with_an_api_token(
    tmp_path: Path, project_name: str, upstream: Upstream
) -> None:
    first = upstream.commit({"deploy/compose.yaml": compose("1")})
    token = tmp_path / "api.token"
    token.write_text("api-token-for-tests\n")
    config, port = write_config(tmp_path, project_name, upstream.url, extra=f"api_token: {{file: {token}}}\n")
    client = ["--agent", f"http://127.0.0.1:{port}"]
    auth = [*client, "--token-file", str(token)]
    with AgentProcess(config, port, token="api-token-for-tests") as agent:
        agent.wait_applied("app", first)

        out = gitdock("status", *auth, "--output", "json")
        assert out.returncode == 0, out.stderr
        (status,) = json.loads(out.stdout)
        assert status["name"] == "app" and condition(status, "Ready")["status"] == "True"
        text = gitdock("status", "app", *auth)
        assert text.returncode == 0 and "ReconciliationSucceeded" in text.stdout

        # Control endpoints and reads need the token.
        anonymous = AgentProcess(config, port)  # the same agent, asked without the token
        assert anonymous.post("/api/v1/sources/app/suspend")[0] == 401
        assert anonymous.get("/api/v1/sources/app")[0] == 401
        denied = gitdock("suspend", "app", *client)
        assert denied.returncode == 1 and "HTTP 401" in denied.stderr
        unread = gitdock("status", *client)
        assert unread.returncode == 1 and "HTTP 401" in unread.stderr
        assert "api-token-for-tests" not in agent.log()

        assert gitdock("suspend", "app", *auth).returncode == 0
        second = upstream.commit({"deploy/compose.yaml": compose("2")})
        time.sleep(2.5)
        status = agent.status("app")
        assert status["suspended"] is True and status["revision"]["applied"] == first
        assert condition(status, "Reconciling")["reason"] == "Suspended"
        assert greeting(project_name) == ["GREETING=1"]
        refused = gitdock("reconcile", "app", *auth)
        assert refused.returncode == 1 and "suspended" in refused.stderr

        assert gitdock("resume", "app", *auth).returncode == 0
        agent.wait_applied("app", second)
        assert greeting(project_name) == ["GREETING=2"]

        done = gitdock("reconcile", "app", *auth, "--output", "json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"] == "success"
        history = gitdock("history", "app", *auth, "--output", "json")
        rows = json.loads(history.stdout)
        assert rows[0]["trigger"] == "manual" and rows[0]["revision"] == second
        assert "startup" in [r["trigger"] for r in rows]
        missing = gitdock("reconcile", "nope", *auth)
        assert missing.returncode == 1 and "not configured" in missing.stderr

    gone = gitdock("status", *client)
    assert gone.returncode == 1
    assert gone.stderr.strip().splitlines() == [
        f"error: cannot reach the agent at http://127.0.0.1:{port}: [Errno 111] Connection refused"
    ]


def test_readyz_healthz_and_metrics(tmp_path: Path, project_name: str, upstream: Upstream) -> None:
    first = upstream.commit({"deploy/compose.yaml": compose("1")})
    config, port = write_config(tmp_path, project_name, upstream.url)
    with AgentProcess(config, port) as agent:
        agent.wait_applied("app", first)
        assert agent.get("/healthz") == (200, {"status": "ok"})
        code, ready = agent.get("/readyz")
        assert code == 200 and ready["checks"] == {"stateStore": True, "scheduler": True, "docker": True}
        code, text = agent.get("/metrics")
        assert code == 200
        host = agent.status("app")["target"]["host"]  # the agent's own engine, as metrics name it
        assert f'gitdock_reconciles_total{{host="{host}",project="{project_name}",result="success"}}' in text
        assert f'gitdock_source_ready{{host="{host}",source="app"}} 1' in text
        assert agent.get("/api/v1/sources/nope")[0] == 404
