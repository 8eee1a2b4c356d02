"""Targets against real engines: a second dockerd on TCP with mutual TLS (certificates made here),
sshd running the remote's ``docker system dial-stdio``, and one agent process driving two hosts.

The TLS dockerd runs in its own network namespace behind a veth pair (tests/support/tlsdockerd.py);
it is started once for the module. The ssh "remote" is this machine: sshd on 127.0.0.1 lets root
in by a key made here, and its ``docker`` talks to the shared dockerd.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitdock.runtime.contexts import Endpoint, SshOptions
from gitdock.runtime.converge import converge
from gitdock.runtime.docker import DockerClient, DockerUnavailable
from gitdock.specs import load_project
from support.agent import AgentProcess
from support.docker import TEST_IMAGE, docker_cli, is_docker_required, write_compose
from support.gitserver import Upstream, free_port, has_sshd, keygen, serve_ssh
from support.tlsdockerd import TlsDockerd, make_certs

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def compose(greeting: str = "1") -> str:
    return (
        "services:\n"
        "  web:\n"
        f"    image: {TEST_IMAGE}\n"
        f'    command: ["sh", "-c", "{LOOP}"]\n'
        f"    environment: {{GREETING: '{greeting}'}}\n"
    )


def unavailable(reason: str) -> None:
    if is_docker_required():
        pytest.fail(f"{reason} (GITDOCK_REQUIRE_DOCKER=1 or CI is set, so this fails instead of skipping)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def tls_dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsDockerd]:
    reason = TlsDockerd.unavailable_reason()
    if reason:
        unavailable(reason)
    daemon = TlsDockerd(tmp_path_factory.mktemp("tls") / "certs")
    try:
        daemon.start()
        daemon.load_test_image()
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
def tls_engine(tls_dockerd: TlsDockerd) -> Iterator[TlsDockerd]:
    """The module's TLS engine, running, with no project containers left by the test."""
    if tls_dockerd._pid() is None:
        tls_dockerd.start()
    yield tls_dockerd
    if tls_dockerd._pid() is None:
        tls_dockerd.start()
    ids = tls_dockerd.docker("ps", "-aq", "--filter", "label=io.gitdock.project").split()
    if ids:
        tls_dockerd.docker("rm", "--force", *ids)
    for network in tls_dockerd.docker("network", "ls", "-q", "--filter", "label=io.gitdock.project").split():
        tls_dockerd.docker("network", "rm", network)


def gitdock(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    return subprocess.run(
        [sys.executable, "-m", "gitdock.agent.cli.main", *args],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=180,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def names_on(daemon: TlsDockerd, project: str) -> list[str]:
    out = daemon.docker("ps", "--filter", f"label=io.gitdock.project={project}", "--format", "{{.Names}}")
    return sorted(out.split())


def local_names(project: str) -> list[str]:
    out = docker_cli("ps", "-a", "--filter", f"label=io.gitdock.project={project}", "--format", "{{.Names}}")
    return sorted(out.split())


# -- the command line against a TLS engine ------------------------------------------------------


def test_cli_applies_plans_and_lists_on_a_tls_engine(
    tmp_path: Path, project_name: str, tls_engine: TlsDockerd
) -> None:
    spec = str(write_compose(tmp_path, compose()))
    env = tls_engine.tls_env()
    ok(gitdock("apply", "-f", spec, "-p", project_name, env=env))
    assert names_on(tls_engine, project_name) == [f"{project_name}-web-1"]
    assert local_names(project_name) == []  # the local engine was never touched
    plan = gitdock("plan", "-f", spec, "-p", project_name, "--exit-code", env=env)
    assert plan.returncode == 0, plan.stdout + plan.stderr  # nothing to change
    assert f"{project_name}-web-1" in ok(gitdock("ps", "-p", project_name, env=env))


def test_cli_takes_the_host_flag_with_docker_tls_verify(
    tmp_path: Path, project_name: str, tls_engine: TlsDockerd
) -> None:
    spec = str(write_compose(tmp_path, compose()))
    env = {k: v for k, v in tls_engine.tls_env().items() if k != "DOCKER_HOST"}
    ok(gitdock("--host", tls_engine.tcp_host, "apply", "-f", spec, "-p", project_name, env=env))
    assert names_on(tls_engine, project_name) == [f"{project_name}-web-1"]


def write_context(config_dir: Path, name: str, daemon: TlsDockerd) -> None:
    """A context as ``docker context create NAME --docker host=...,ca=...,cert=...,key=...`` stores it."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config_dir / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    endpoint = {"Host": daemon.tcp_host, "SkipTLSVerify": False}
    meta_json = {"Name": name, "Metadata": {}, "Endpoints": {"docker": endpoint}}
    (meta / "meta.json").write_text(json.dumps(meta_json))
    tls = config_dir / "contexts" / "tls" / digest / "docker"
    tls.mkdir(parents=True)
    for source, target in ((daemon.certs.ca, "ca"), (daemon.certs.cert, "cert"), (daemon.certs.key, "key")):
        shutil.copy(source, tls / f"{target}.pem")


def test_cli_uses_a_docker_context_by_name(tmp_path: Path, project_name: str, tls_engine: TlsDockerd) -> None:
    write_context(tmp_path / "docker", "edge", tls_engine)
    # The Docker CLI itself reads the same store: the context is a real one.
    listed = subprocess.run(
        ["docker", "--config", str(tmp_path / "docker"), "context", "inspect", "edge"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(listed.stdout)[0]["Endpoints"]["docker"]["Host"] == tls_engine.tcp_host
    spec = str(write_compose(tmp_path, compose()))
    env = {"DOCKER_CONFIG": str(tmp_path / "docker"), "DOCKER_CONTEXT": "edge"}
    ok(gitdock("apply", "-f", spec, "-p", project_name, env=env))
    assert names_on(tls_engine, project_name) == [f"{project_name}-web-1"]
    by_flag = {"DOCKER_CONFIG": str(tmp_path / "docker")}
    assert f"{project_name}-web-1" in ok(gitdock("--context", "edge", "ps", "-p", project_name, env=by_flag))
    refused = gitdock("--context", "nowhere", "ps", "-p", project_name, env=by_flag)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"error: Docker context 'nowhere': not found (no {tmp_path / 'docker'}/contexts/meta/"
        f"{hashlib.sha256(b'nowhere').hexdigest()}/meta.json)"
    ]


def test_engine_signed_by_another_ca_is_refused_in_one_line(
    tmp_path: Path, project_name: str, tls_engine: TlsDockerd
) -> None:
    other = make_certs(tmp_path / "other", tls_engine.ip)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    shutil.copy(other.ca, wrong / "ca.pem")
    shutil.copy(tls_engine.certs.cert, wrong / "cert.pem")
    shutil.copy(tls_engine.certs.key, wrong / "key.pem")
    spec = str(write_compose(tmp_path, compose()))
    result = gitdock(
        "apply", "-f", spec, "-p", project_name, env={**tls_engine.tls_env(), "DOCKER_CERT_PATH": str(wrong)}
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot reach Docker at {tls_engine.tcp_host}: ")
    assert "certificate verify failed" in lines[0]
    assert names_on(tls_engine, project_name) == []


def test_client_certificate_the_engine_does_not_trust_is_refused(
    tmp_path: Path, tls_engine: TlsDockerd
) -> None:
    other = make_certs(tmp_path / "other", tls_engine.ip)
    from gitdock.runtime.contexts import TlsFiles

    endpoint = Endpoint(tls_engine.tcp_host, tls=TlsFiles(tls_engine.certs.ca, other.cert, other.key))
    with DockerClient(endpoint) as client, pytest.raises(DockerUnavailable, match="certificate"):
        client.ping()


# -- ssh:// through the remote's docker system dial-stdio ---------------------------------------


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Any]:
    if not has_sshd() or shutil.which("ssh") is None:
        unavailable("sshd, ssh and ssh-keygen as root are needed for the ssh:// target")
    with serve_ssh(tmp_path / "sshd") as server:
        yield server


def test_ssh_target_converges_through_dial_stdio_with_strict_host_keys(
    tmp_path: Path, project_name: str, sshd: Any
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line())
    endpoint = Endpoint(f"ssh://root@127.0.0.1:{sshd.port}", ssh=SshOptions(known_hosts, sshd.client_key))
    project = load_project([write_compose(tmp_path, compose())], project_name=project_name)
    with DockerClient(endpoint) as docker:
        converge(project, docker)
        assert local_names(project_name) == [f"{project_name}-web-1"]  # the remote's engine is this one
        before = docker.mutating_calls
        converge(project, docker)
        assert docker.mutating_calls == before  # a no-op over ssh makes no mutating call


def test_ssh_target_with_an_unknown_host_key_is_refused(tmp_path: Path, project_name: str, sshd: Any) -> None:
    stranger = keygen(tmp_path / "stranger")
    known_hosts = tmp_path / "known_hosts"
    pub = (tmp_path / "stranger.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")  # a different key for that host
    assert stranger.exists()
    endpoint = Endpoint(f"ssh://root@127.0.0.1:{sshd.port}", ssh=SshOptions(known_hosts, sshd.client_key))
    with DockerClient(endpoint) as docker, pytest.raises(DockerUnavailable) as caught:
        docker.ping()
    assert "Host key verification failed" in str(caught.value)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with (
        DockerClient(Endpoint(endpoint.host, ssh=SshOptions(empty, sshd.client_key))) as docker,
        pytest.raises(DockerUnavailable, match="Host key verification failed"),
    ):
        docker.ping()
    assert local_names(project_name) == []


# -- one agent, two hosts -----------------------------------------------------------------------


def write_agent_config(
    tmp_path: Path, url: str, local: str, remote: str, daemon: TlsDockerd
) -> tuple[Path, int]:
    port = free_port()
    config = tmp_path / "agent.yaml"
    certs = daemon.certs
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"listen: 127.0.0.1:{port}\n"
        "defaults: {interval: 1s, jitter: 0.1s, debounce: 0.1s, settle: 0.2s}\n"
        "sources:\n"
        f"  - {{name: local, url: {url}, ref: main, path: local, project: {local}}}\n"
        f"  - name: edge\n    url: {url}\n    ref: main\n    path: edge\n    project: {remote}\n"
        f"    target:\n      host: {daemon.tcp_host}\n      timeout: 3\n"
        f"      tls: {{ca: {certs.ca}, cert: {certs.cert}, key: {certs.key}}}\n"
    )
    return config, port


def test_one_agent_converges_two_hosts_and_a_dead_host_delays_only_its_own(
    tmp_path: Path, project_name: str, tls_engine: TlsDockerd
) -> None:
    remote = f"{project_name}-r"
    upstream = Upstream(tmp_path / "repos" / "app.git")
    files = {"local/compose.yaml": compose("1"), "edge/compose.yaml": compose("1")}
    first = upstream.commit(files, "both hosts")
    config, port = write_agent_config(tmp_path, upstream.url, project_name, remote, tls_engine)
    with AgentProcess(config, port, env={"DOCKER_HOST": ""}) as agent:
        agent.wait_applied("local", first)
        status = agent.wait_applied("edge", first)
        assert status["target"]["host"] == tls_engine.tcp_host
        assert local_names(project_name) == [f"{project_name}-web-1"]
        assert names_on(tls_engine, remote) == [f"{remote}-web-1"]
        assert local_names(remote) == []

        tls_engine.stop()
        second = upstream.commit(
            {"local/compose.yaml": compose("2"), "edge/compose.yaml": compose("2")}, "two"
        )
        agent.wait_applied("local", second)  # converges while the other host is down
        edge = agent.wait_for("edge to report the dead host", lambda: _errored(agent.status("edge")))
        assert edge["reason"] == "DockerUnavailable"
        assert tls_engine.tcp_host in edge["message"]
        assert edge["revision"]["applied"] == first

        tls_engine.start()
        agent.wait_applied("edge", second, timeout=120)  # retried with backoff once it is back


def _errored(status: dict[str, Any]) -> dict[str, Any] | None:
    return status if status["lastResult"] == "error" else None


def test_agent_refuses_a_target_context_that_does_not_exist(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path / "repos" / "app.git")
    upstream.commit({"compose.yaml": compose()}, "one")
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nlisten: 127.0.0.1:{port}\n"
        f"sources:\n  - {{name: edge, url: {upstream.url}, target: {{context: nowhere}}}}\n"
    )
    result = gitdock("agent", "--config", str(config), env={"DOCKER_CONFIG": str(tmp_path / "docker")})
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: source edge: target: Docker context 'nowhere': not found")
    ), result.stderr
