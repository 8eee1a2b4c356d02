"""Commit statuses and webhooks from the real agent process, for a deploy and a rollback.

The agent (tests/support/agent.py) deploys from a real git repository to the real dockerd
and posts to a real HTTP server on 127.0.0.1 (tests/support/statusserver.py) that plays
GitHub, Gitea and GitLab (each at its documented path) and two webhook receivers. The
receiver holds every request while the first commit deploys: the deploy does not wait for
it. Then a commit that crashes is rolled back, and its statuses say so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support.agent import AgentProcess
from support.docker import TEST_IMAGE, TEST_IMAGE_2
from support.gitserver import Upstream, free_port
from support.statusserver import Recorded, StatusServer

pytestmark = pytest.mark.docker

GH_TOKEN = "ghp_e2e-github-s3cr3t"
GITEA_TOKEN = "gitea-e2e-s3cr3t"
GL_TOKEN = "glpat-e2e-s3cr3t"
SLACK_PATH = "/services/T0/B0/slack-s3cr3t"
LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
CRASH = "sleep 2; exit 1"


def compose(greeting: str, *, image: str = TEST_IMAGE, script: str = LOOP) -> str:
    return (
        "services:\n"
        "  web:\n"
        f"    image: {image}\n"
        f'    command: ["sh", "-c", "{script}"]\n'
        "    environment:\n"
        f'      GREETING: "{greeting}"\n'
    )


def write_config(tmp_path: Path, url: str, project: str, receiver: str) -> tuple[Path, int]:
    port = free_port()
    (tmp_path / "gitea-token").write_text(GITEA_TOKEN + "\n")
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"listen: 127.0.0.1:{port}\n"
        "defaults: {interval: 1s, jitter: 0.1s}\n"
        "sources:\n"
        "  - name: app\n"
        f"    url: {url}\n"
        f"    project: {project}\n"
        "    settle: 3s\n"
        "    health_timeout: 30s\n"
        "    notify:\n"
        f"      target_url: http://127.0.0.1:{port}/api/v1/sources/app\n"
        f"      github: {{url: {receiver}, repo: octo/app, token: {{env: GH_TOKEN}}}}\n"
        f"      gitea: {{url: {receiver}, repo: octo/app, token: {{file: gitea-token}}}}\n"
        f"      gitlab: {{url: {receiver}, repo: group/app, token: {{env: GL_TOKEN}}}}\n"
        "      webhooks:\n"
        f"        - url: {receiver}/hooks/gitdock\n"
        "        - {url: {env: SLACK_URL}, format: slack}\n"
    )
    return config, port


def states(server: StatusServer, path: str) -> list[str]:
    """The states posted to ``path``, in order, a retried request counted once."""
    seen: list[str] = []
    for request in server.received(path):
        if not seen or seen[-1] != request.json["state"]:
            seen.append(request.json["state"])
    return seen


def paths(sha: str) -> dict[str, str]:
    return {
        "github": f"/repos/octo/app/statuses/{sha}",
        "gitea": f"/api/v1/repos/octo/app/statuses/{sha}",
        "gitlab": f"/api/v4/projects/group%2Fapp/statuses/{sha}",
    }


def wait_states(agent: AgentProcess, server: StatusServer, sha: str, expected: dict[str, list[str]]) -> None:
    def check() -> bool:
        return all(states(server, p) == expected[forge] for forge, p in paths(sha).items())

    agent.wait_for(f"statuses {expected} for {sha[:12]}", check, timeout=60)


def hook(server: StatusServer, path: str, found: Callable[[dict[str, Any]], bool]) -> Recorded | None:
    """The first request to ``path`` whose JSON body ``found`` accepts."""
    return next((r for r in server.received(path) if found(r.json)), None)


def test_a_deploy_and_a_rollback_are_posted_as_commit_statuses_and_webhooks(
    tmp_path: Path, project_name: str
) -> None:
    upstream = Upstream(tmp_path / "repos" / "app.git")
    good = upstream.commit({"compose.yaml": compose("1")}, "good")
    with StatusServer() as server:
        config, port = write_config(tmp_path, upstream.url, project_name, server.url)
        env = {"GH_TOKEN": GH_TOKEN, "GL_TOKEN": GL_TOKEN, "SLACK_URL": server.url + SLACK_PATH}
        server.hang()  # the receiver holds every request: the deploy must not wait for it
        with AgentProcess(config, port, env=env) as agent:
            agent.wait_applied("app", good, timeout=60)
            # The notifier posts from its own thread: its "pending" may land just after the apply.
            agent.wait_for("a post held by the hanging receiver", server.received)
            server.release()
            wait_states(
                agent,
                server,
                good,
                {
                    "github": ["pending", "success"],
                    "gitea": ["pending", "success"],
                    "gitlab": ["running", "success"],
                },
            )
            success = server.received(paths(good)["github"])[-1]
            assert success.headers["authorization"] == f"Bearer {GH_TOKEN}"
            assert success.json["context"] == "gitdock/app"
            assert success.json["target_url"] == f"http://127.0.0.1:{port}/api/v1/sources/app"
            assert success.json["description"].startswith(f"healthy: applied revision main@sha1:{good[:12]}")
            assert (
                server.received(paths(good)["gitea"])[-1].headers["authorization"] == f"token {GITEA_TOKEN}"
            )
            assert server.received(paths(good)["gitlab"])[-1].headers["private-token"] == GL_TOKEN

            bad = upstream.commit({"compose.yaml": compose("2", image=TEST_IMAGE_2, script=CRASH)}, "bad")
            wait_states(
                agent,
                server,
                bad,
                {
                    "github": ["pending", "failure"],
                    "gitea": ["pending", "failure"],
                    "gitlab": ["running", "failed"],
                },
            )
            failure = server.received(paths(bad)["github"])[-1].json
            assert failure["description"].startswith(f"rolled back from {bad[:12]} to {good[:12]}: "), failure
            assert "service web: exited 1" in failure["description"]
            assert len(failure["description"]) <= 140

            rolled = agent.wait_for(
                "the rollback webhook",
                lambda: hook(
                    server, "/hooks/gitdock", lambda b: (b["revision"], b["event"]) == (bad, "rolled_back")
                ),
            )
            body = rolled.json
            assert (body["source"], body["project"], body["reason"]) == ("app", project_name, "RolledBack")
            assert (body["revision"], body["live"], body["state"]) == (bad, good, "failure")
            slack = agent.wait_for(
                "the Slack message",
                lambda: hook(server, SLACK_PATH, lambda b: f"rolled back main@{bad[:12]}" in b["text"]),
            )
            assert set(slack.json) == {"text"}
            assert slack.json["text"].startswith(
                f"gitdock: app rolled back main@{bad[:12]}: rolled back from"
            )
            assert states(server, paths(good)["github"]) == ["pending", "success"]  # the good one untouched

            # The receiver records a request before it answers; the agent counts it after the answer.
            agent.wait_for(
                "the sent notifications counted",
                lambda: 'gitdock_notifications_total{result="sent"}' in str(agent.get("/metrics")[1]),
            )
            log = agent.log()
        for secret in (GH_TOKEN, GITEA_TOKEN, GL_TOKEN, "slack-s3cr3t"):
            assert secret not in log, secret
