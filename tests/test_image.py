"""The agent's container image (examples/image), built here and run against the host's dockerd.

The module builds the image once with `examples/image/build.sh` (which keeps a cached base and
skips the build when nothing it is made from changed), then runs the agent from it: as a
non-root user in the socket's group, with the host's Docker socket, deploying a project from a
file:// repository mounted into the container. The last test pushes the image to a real
`docker-registry`, signs it with `gitdock sign`, and has the containerised agent deploy a
second agent from that image under a trust policy, refusing an unsigned one.

The agent containers use the host's network (`--network host`, a free loopback port through
GITDOCK_LISTEN) so they reach the loopback registry; each is removed with its volumes after.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.docker import TEST_IMAGE, docker_cli, docker_host, is_docker_required, ping_docker
from support.gitserver import Upstream, free_port
from support.registry import LocalRegistry, has_registry_binary, push_image, run_registry

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "examples" / "image" / "build.sh"
AGENT_UID = 10001  # the image's gitdock user (examples/image/Dockerfile)
LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
PASSWORD = "image-test-password"


def version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def unavailable(reason: str) -> None:
    if is_docker_required():
        pytest.fail(f"{reason} (GITDOCK_REQUIRE_DOCKER=1 or CI is set, so this fails instead of skipping)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def agent_image() -> str:
    """The image's tag, built (or found up to date) by examples/image/build.sh."""
    reason = ping_docker()
    if reason is not None:
        unavailable(f"dockerd not reachable at {docker_host()}: {reason}")
    if shutil.which("debootstrap") is None:
        unavailable("debootstrap is not installed (tests/env/setup.sh installs it)")
    env = os.environ | {"PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=900, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def socket_path() -> str:
    host = docker_host()
    if not host.startswith("unix://"):
        pytest.skip(f"the agent container mounts the Docker socket; DOCKER_HOST is {host}")
    return host.removeprefix("unix://")


def compose(image: str = TEST_IMAGE) -> str:
    return f'services:\n  web:\n    image: {image}\n    command: ["sh", "-c", "{LOOP}"]\n'


def owned_by_agent(upstream: Upstream) -> Path:
    """libgit2 refuses a repository its user does not own, so hand the repository to uid 10001."""
    for path in [upstream.path, *upstream.path.rglob("*")]:
        os.chown(path, AGENT_UID, AGENT_UID, follow_symlinks=False)
    return upstream.path


@dataclass
class AgentContainer:
    """One agent container on the host network; `url` is its API on loopback."""

    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:  # noqa: S310 - loopback
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def inspect(self) -> dict[str, Any]:
        return dict(json.loads(docker_cli("inspect", self.name))[0])

    def logs(self) -> str:
        done = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True, check=False)
        return done.stdout + done.stderr

    def wait_for(self, what: str, check: Any, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                value = check()
                if value:
                    return value
            except (OSError, KeyError, ValueError) as exc:
                last = exc
            if self.inspect()["State"]["Status"] != "running":
                break
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r}):\n{self.logs()[-4000:]}")

    def source(self, name: str = "app") -> dict[str, Any]:
        code, body = self.get(f"/api/v1/sources/{name}")
        assert code == 200, body
        return dict(body)

    def wait_result(self, sha: str, result: str = "success") -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            s = self.source()
            return s if s["revision"]["attempted"] == sha and s["lastResult"] == result else None

        return dict(self.wait_for(f"revision {sha[:12]} to end in {result}", check))


@contextlib.contextmanager
def run_agent_container(
    image: str, tmp_path: Path, config: str, mounts: dict[Path, str]
) -> Iterator[AgentContainer]:
    """`docker run` the agent with the socket, the config and `mounts` (host path -> container path)."""
    sock = socket_path()
    port = free_port()
    name = f"gdt-agent-{tmp_path.name[-24:].strip('_-')}-{port}"
    (tmp_path / "agent.yaml").write_text(config)
    volumes = {
        Path(sock): "/var/run/docker.sock",
        tmp_path / "agent.yaml": "/etc/gitdock/agent.yaml",
    } | mounts
    argv = ["run", "-d", "--name", name, "--network", "host", "--group-add", str(os.stat(sock).st_gid)]
    argv += [
        "-e",
        f"GITDOCK_LISTEN=127.0.0.1:{port}",
        "--health-interval",
        "1s",
        "--health-start-period",
        "1s",
    ]
    for host_path, target in volumes.items():
        argv += ["-v", f"{host_path}:{target}:ro"]
    docker_cli(*argv, image)
    container = AgentContainer(name, port)
    try:
        container.wait_for("/healthz", lambda: container.get("/healthz")[0] == 200)
        yield container
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)


def agent_config(project: str, extra: str = "") -> str:
    return (
        "defaults: {interval: 2s, jitter: 0.1s}\n"
        f"{extra}"
        "sources:\n"
        "  - name: app\n"
        "    url: file:///srv/git/app.git\n"
        "    ref: main\n"
        "    path: deploy\n"
        f"    project: {project}\n"
    )


def project_states(project: str) -> dict[str, str]:
    out = docker_cli(
        "ps", "-a", "--filter", f"label=io.gitdock.project={project}", "--format", "{{.Names}} {{.State}}"
    )
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def rss_kib(container: str) -> int:
    """The agent process's resident set (VmRSS of PID 1 in the container)."""
    status = docker_cli("exec", container, "cat", "/proc/1/status")
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))


# --- the image itself ------------------------------------------------------------------------------


def test_image_runs_gitdock_agent_as_non_root_with_healthcheck_state_volume_and_oci_labels(
    agent_image: str,
) -> None:
    config = json.loads(docker_cli("image", "inspect", agent_image))[0]["Config"]
    assert config["User"] == f"{AGENT_UID}:{AGENT_UID}"
    assert config["Entrypoint"] == ["/opt/gitdock/bin/gitdock", "agent"]
    assert config["Cmd"] == ["--config", "/etc/gitdock/agent.yaml"]
    assert config["Healthcheck"]["Test"] == ["CMD", "/opt/gitdock/bin/python", "/opt/gitdock/healthcheck.py"]
    assert "/var/lib/gitdock" in config["Volumes"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == version()
    revision = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert labels["org.opencontainers.image.revision"] == revision.stdout.strip()
    assert "org.opencontainers.image.source" in labels
    printed = docker_cli("run", "--rm", "--entrypoint", "/opt/gitdock/bin/gitdock", agent_image, "--version")
    assert printed.strip() == f"gitdock {version()}"
    groups = docker_cli("run", "--rm", "--entrypoint", "id", agent_image)
    assert groups.startswith(f"uid={AGENT_UID}(gitdock) gid={AGENT_UID}(gitdock)")


def test_image_build_is_skipped_when_nothing_changed(agent_image: str) -> None:
    """How long the skipped build takes is measured by tests/bench/bench_image_build.py."""
    before = docker_cli("image", "inspect", "-f", "{{.Id}}", agent_image).strip()
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard
        check=True,
        env=os.environ | {"PYTHON": sys.executable},
    )
    assert "is up to date" in done.stderr
    assert docker_cli("image", "inspect", "-f", "{{.Id}}", agent_image).strip() == before


# --- the agent from the image --------------------------------------------------------------------


def test_agent_container_deploys_a_project_from_a_file_repository(
    agent_image: str, tmp_path: Path, project_name: str
) -> None:
    upstream = Upstream(tmp_path / "app.git")
    sha = upstream.commit({"deploy/compose.yaml": compose()}, "first")
    mounts = {owned_by_agent(upstream): "/srv/git/app.git"}
    with run_agent_container(agent_image, tmp_path, agent_config(project_name), mounts) as agent:
        agent.wait_result(sha)
        assert project_states(project_name) == {f"{project_name}-web-1": "running"}
        agent.wait_for(
            "a healthy container", lambda: agent.inspect()["State"]["Health"]["Status"] == "healthy"
        )
        time.sleep(2)  # past start-up: what it holds while idle
        usage = docker_cli("stats", "--no-stream", "--format", "{{.MemUsage}}", agent.name).strip()
        print(f"agent container idle: VmRSS {rss_kib(agent.name)} KiB; docker stats {usage}")
        docker_cli("stop", "-t", "20", agent.name, timeout=30)
        # Exit 0 rules out the SIGKILL docker sends at 20 s (137); the log shows the agent's
        # own shutdown on SIGTERM, finished within its grace with no reconcile left running.
        state = agent.inspect()["State"]
        logs = agent.logs()
        assert (state["ExitCode"], state["OOMKilled"]) == (0, False), logs
        assert "received SIGTERM: stopping" in logs, logs
        assert "gitdock.agent: stopped in " in logs, logs
        assert "stopped with a reconcile still running" not in logs, logs
    assert project_states(project_name) == {f"{project_name}-web-1": "running"}  # an agent stop is no down


# --- signed with gitdock, verified by gitdock --------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    if not has_registry_binary():
        unavailable("docker-registry binary is not installed (Debian package docker-registry)")
    with run_registry() as running:
        yield running


def gitdock(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gitdock.agent.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ | {"COSIGN_PASSWORD": PASSWORD},
    )
    assert done.returncode == 0, f"gitdock {' '.join(args)}: {done.stderr}"
    return done.stdout


def second_agent(image: str, port: int) -> str:
    """A Compose project running the agent image itself, with a config of its own."""
    return (
        "services:\n"
        "  agent:\n"
        f"    image: {image}\n"
        "    network_mode: host\n"
        f'    environment: {{GITDOCK_LISTEN: "127.0.0.1:{port}"}}\n'
        "    configs: [{source: agent, target: /etc/gitdock/agent.yaml}]\n"
        "configs:\n"
        "  agent:\n"
        "    content: |\n"
        "      sources: [{name: none, url: file:///srv/git/none.git, ref: main}]\n"
    )


def test_agent_deploys_another_agent_from_its_signed_image_and_refuses_an_unsigned_one(
    agent_image: str, registry: LocalRegistry, tmp_path: Path, project_name: str
) -> None:
    signed, unsigned = f"{registry.host}/gitdock/agent:{version()}", f"{registry.host}/gitdock/other:1"
    push_image(agent_image, signed)
    push_image(agent_image, unsigned)
    gitdock("keygen", "--output-key-prefix", str(tmp_path / "release"))
    digest = gitdock("sign", signed, "--key", str(tmp_path / "release.key")).strip().rpartition("@")[2]
    assert digest.startswith("sha256:")
    trust = (
        "trust:\n"
        "  keys: {release: {public_key_file: /etc/gitdock/release.pub}}\n"
        f'  rules: [{{pattern: "{registry.host}/gitdock/*", keys: [release]}}]\n'
        "  default: require\n"
    )
    upstream = Upstream(tmp_path / "app.git")
    port = free_port()
    first = upstream.commit({"deploy/compose.yaml": second_agent(signed, port)}, "agent")
    mounts = {
        owned_by_agent(upstream): "/srv/git/app.git",
        tmp_path / "release.pub": "/etc/gitdock/release.pub",
    }
    try:
        with run_agent_container(agent_image, tmp_path, agent_config(project_name, trust), mounts) as agent:
            agent.wait_result(first)
            labels = json.loads(docker_cli("inspect", f"{project_name}-agent-1"))[0]["Config"]["Labels"]
            assert labels["io.gitdock.image.digest"] == digest
            assert "release" in labels["io.gitdock.image.trust"]
            deployed = AgentContainer(f"{project_name}-agent-1", port)
            deployed.wait_for("the deployed agent's /healthz", lambda: deployed.get("/healthz")[0] == 200)

            second = upstream.commit({"deploy/compose.yaml": second_agent(unsigned, port)}, "unsigned")
            owned_by_agent(upstream)
            status = agent.wait_result(second, "failure")
            message = next(c for c in status["conditions"] if c["type"] == "Ready")["message"]
            assert "no signature" in message, message
            assert project_states(project_name) == {f"{project_name}-agent-1": "running"}
    finally:
        images = docker_cli("images", "-q", f"{registry.host}/gitdock/*").split()
        subprocess.run(["docker", "rmi", "-f", *set(images)], capture_output=True, check=False)
