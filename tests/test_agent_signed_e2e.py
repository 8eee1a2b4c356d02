"""Signed commits end to end: the real agent, real dockerd, commits signed by `git commit -S`.

The source's `verify:` allows one SSH key (allowed_signers) and one OpenPGP key; the agent
refuses an unsigned head, deploys the next correctly signed commit, refuses a commit signed by
a key it does not allow and a force-push of an unsigned commit, and each refusal keeps the live
state at the last good revision and is recorded once, not retried in a loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.agent import AgentProcess
from support.docker import TEST_IMAGE, docker_cli
from support.gitserver import free_port
from support.signing import Keys, SigningRepo

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def compose(greeting: str) -> dict[str, str]:
    return {
        "deploy/compose.yaml": (
            "services:\n"
            "  web:\n"
            f"    image: {TEST_IMAGE}\n"
            f'    command: ["sh", "-c", "{LOOP}"]\n'
            "    environment:\n"
            f'      GREETING: "{greeting}"\n'
        )
    }


def greeting(project: str) -> list[str]:
    out = docker_cli("ps", "-a", "--filter", f"label=io.gitdock.project={project}", "--format", "{{.ID}}")
    env: list[str] = []
    for cid in out.split():
        info = json.loads(docker_cli("inspect", cid))[0]
        env += [e for e in info["Config"]["Env"] or [] if e.startswith("GREETING=")]
    return env


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[Keys]:
    made = Keys(tmp_path / "keys")
    yield made
    made.close()


def write_config(tmp_path: Path, project: str, url: str, allowed: Path, gpg: Path) -> tuple[Path, int]:
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"listen: 127.0.0.1:{port}\n"
        "defaults: {interval: 1s, jitter: 0.1s}\n"
        "sources:\n"
        "  - name: app\n"
        f"    url: {url}\n"
        "    path: deploy\n"
        f"    project: {project}\n"
        f"    verify: {{mode: head, keys: {{ssh: {allowed}, gpg: [{gpg}]}}}}\n"
    )
    return config, port


def wait_failed(agent: AgentProcess, sha: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        s = agent.status("app")
        return s if s["revision"]["failed"] == sha else None

    return agent.wait_for(f"{sha[:12]} to be refused", check)


def test_agent_deploys_only_commits_signed_by_allowed_keys(
    tmp_path: Path, project_name: str, keys: Keys
) -> None:
    alice, mallory = keys.ssh("alice", "alice@example.com"), keys.ssh("mallory", "mallory@example.com")
    carol = keys.gpg("Carol", "carol@example.com")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(alice.allowed_line('namespaces="git"'))
    repo = SigningRepo(tmp_path / "git", keys)
    unsigned = repo.commit(compose("unsigned"), "not signed")
    config, port = write_config(tmp_path, project_name, repo.url, allowed, carol.public)
    with AgentProcess(config, port) as agent:
        # An unsigned head: refused, nothing deployed.
        status = wait_failed(agent, unsigned)
        assert (status["lastResult"], status["reason"]) == ("failure", "UnsignedCommit")
        assert status["message"] == f"commit {unsigned[:12]} ('not signed') is not signed"
        assert status["revision"]["applied"] is None
        assert greeting(project_name) == []

        # The next correctly signed commit deploys, and the status says who signed it.
        signed = repo.commit(compose("alice"), ssh=alice)
        status = agent.wait_applied("app", signed)
        assert greeting(project_name) == ["GREETING=alice"]
        assert f"signed by alice@example.com (SSH key {alice.fingerprint})" in status["message"]
        assert status["revision"]["failed"] is None

        # Signed, by a key the allowed_signers file does not list: refused, live state kept.
        rogue = repo.commit(compose("mallory"), ssh=mallory)
        status = wait_failed(agent, rogue)
        assert (status["lastResult"], status["reason"]) == ("failure", "UntrustedSigner")
        assert mallory.fingerprint in status["message"]
        assert "allowed_signers does not allow" in status["message"]
        assert status["revision"]["applied"] == signed
        assert greeting(project_name) == ["GREETING=alice"]
        agent.wait_polls("app", 2)  # two more polls: recorded once, not retried in a loop
        assert [h["revision"] for h in agent.history("app")].count(rogue) == 1

        # A force-push of an unsigned commit (history rewritten from nothing): refused too.
        repo.rewrite()
        forced = repo.commit(compose("forced"), "rewrite", push=False)
        repo.push(force=True)
        status = wait_failed(agent, forced)
        assert status["reason"] == "UnsignedCommit"
        assert status["revision"]["applied"] == signed
        assert greeting(project_name) == ["GREETING=alice"]

        # An OpenPGP-signed commit by the allowed key deploys.
        pgp = repo.commit(compose("carol"), gpg=carol)
        status = agent.wait_applied("app", pgp)
        assert greeting(project_name) == ["GREETING=carol"]
        assert f"signed by {carol.uid} (OpenPGP key {carol.fingerprint})" in status["message"]
