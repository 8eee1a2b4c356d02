"""One agent process, one git repository, three kinds of target, one push.

The repository holds three directories, one source each: ``local`` on the agent's own engine
(the shared dockerd), ``edge`` on a TLS engine (a private dockerd on TCP with mutual TLS and
certificates made here, tests/support/tlsdockerd.py) and ``stack`` (``mode: swarm``) on a
single-node Swarm (a private dockerd, tests/support/swarm.py). Each push is one commit
changing all three. The two private daemons start concurrently, once for the module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gitdock.runtime.docker import DockerClient
from gitdock.runtime.swarm.converge import tear_down_swarm
from support.agent import AgentProcess
from support.docker import TEST_IMAGE, docker_cli, is_docker_required
from support.dockerd import SecondDockerd
from support.gitserver import Upstream, free_port
from support.swarm import SingleNodeSwarm
from support.tlsdockerd import TlsDockerd

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
LABEL = "io.gitdock.project"


def container_compose(greeting: str) -> str:
    return (
        "services:\n"
        "  web:\n"
        f"    image: {TEST_IMAGE}\n"
        f'    command: ["sh", "-c", "{LOOP}"]\n'
        f"    environment: {{GREETING: '{greeting}'}}\n"
    )


def swarm_compose(greeting: str) -> str:
    """One replicated service; ``monitor: 1s`` keeps each rollout's wait short."""
    return (
        "services:\n"
        "  web:\n"
        f"    image: {TEST_IMAGE}\n"
        f'    command: ["sh", "-c", "{LOOP}"]\n'
        f"    environment: {{GREETING: '{greeting}'}}\n"
        "    deploy: {replicas: 1, update_config: {monitor: 1s, order: start-first}}\n"
    )


def push(upstream: Upstream, greeting: str) -> str:
    """One commit that changes all three sources."""
    files = {
        "local/compose.yaml": container_compose(greeting),
        "edge/compose.yaml": container_compose(greeting),
        "stack/compose.yaml": swarm_compose(greeting),
    }
    return upstream.commit(files, f"greeting {greeting}")


def _start_tls(directory: Path) -> TlsDockerd:
    daemon = TlsDockerd(directory)
    try:
        daemon.start()
        daemon.load_test_image()
    except BaseException:
        daemon.close()
        raise
    return daemon


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsDockerd, SingleNodeSwarm]]:
    """The TLS engine and the Swarm, started side by side (each takes seconds)."""
    reason = TlsDockerd.unavailable_reason() or SecondDockerd.unavailable_reason()
    if reason:
        if is_docker_required():
            pytest.fail(
                f"{reason} (GITDOCK_REQUIRE_DOCKER=1 or CI is set, so this fails instead of skipping)"
            )
        pytest.skip(reason)
    with ThreadPoolExecutor(2) as pool:
        tls_future = pool.submit(_start_tls, tmp_path_factory.mktemp("tls") / "certs")
        swarm_future = pool.submit(SingleNodeSwarm().start)
        started: list[Any] = []
        try:
            started.append(tls_future.result())
            started.append(swarm_future.result())
        except BaseException:
            for future in (tls_future, swarm_future):
                if future.exception() is None:
                    future.result().close()
            raise
    tls, swarm = started
    try:
        yield tls, swarm
    finally:
        tls.close()
        swarm.close()


def write_config(
    tmp_path: Path, url: str, names: dict[str, str], tls: TlsDockerd, swarm: SingleNodeSwarm
) -> tuple[Path, int]:
    port = free_port()
    certs = tls.certs
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"listen: 127.0.0.1:{port}\n"
        "defaults: {interval: 1s, jitter: 0.1s, debounce: 0.1s, settle: 0.2s, wait_timeout: 60s}\n"
        "sources:\n"
        f"  - {{name: local, url: {url}, ref: main, path: local, project: {names['local']}}}\n"
        f"  - name: edge\n    url: {url}\n    ref: main\n    path: edge\n    project: {names['edge']}\n"
        f"    target:\n      host: {tls.tcp_host}\n      timeout: 3s\n"
        f"      tls: {{ca: {certs.ca}, cert: {certs.cert}, key: {certs.key}}}\n"
        f"  - name: stack\n    url: {url}\n    ref: main\n    path: stack\n    project: {names['stack']}\n"
        f"    mode: swarm\n    target: {{host: '{swarm.host}'}}\n"
    )
    return config, port


def greetings(inspect: str) -> list[str]:
    """The GREETING of each container in ``docker inspect`` output."""
    out = []
    for container in json.loads(inspect or "[]"):
        env = dict(e.split("=", 1) for e in container["Config"]["Env"])
        out.append(env.get("GREETING", ""))
    return out


def containers(docker: Any, project: str) -> list[str]:
    """GREETINGs of ``project``'s containers on the engine ``docker(*args)`` talks to."""
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}={project}").split()
    return greetings(docker("inspect", *ids)) if ids else []


def service_greetings(swarm: SingleNodeSwarm, stack: str) -> dict[str, str]:
    ids = swarm.docker("service", "ls", "-q", "--filter", f"label={LABEL}={stack}").split()
    out = {}
    for service in json.loads(swarm.docker("service", "inspect", *ids)) if ids else []:
        env = dict(e.split("=", 1) for e in service["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env", []))
        out[service["Spec"]["Name"]] = env.get("GREETING", "")
    return out


def on_engines(tls: TlsDockerd, swarm: SingleNodeSwarm, names: dict[str, str]) -> dict[str, Any]:
    """Where every project's workloads are, on all three engines."""
    return {
        "local": {k: containers(docker_cli, v) for k, v in names.items()},
        "tls": {k: containers(tls.docker, v) for k, v in names.items()},
        "swarm services": service_greetings(swarm, names["stack"]),
        "swarm plain": {k: containers(swarm.docker, v) for k, v in names.items() if k != "stack"},
    }


def expected(names: dict[str, str], greeting: str) -> dict[str, Any]:
    return {
        "local": {"local": [greeting], "edge": [], "stack": []},
        "tls": {"local": [], "edge": [greeting], "stack": []},
        "swarm services": {f"{names['stack']}_web": greeting},
        "swarm plain": {"local": [], "edge": []},
    }


def metric_hosts(text: str, name: str) -> dict[str, str]:
    """project -> host label of metric ``name``'s samples in Prometheus text."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            key = labels.get("project") or labels.get("source", "")
            found[key] = labels.get("host", "")
    return found


def test_one_agent_one_push_converges_local_tls_and_swarm_and_a_dead_tls_engine_delays_neither(
    tmp_path: Path, project_name: str, engines: tuple[TlsDockerd, SingleNodeSwarm]
) -> None:
    tls, swarm = engines
    names = {"local": project_name, "edge": f"{project_name}-e", "stack": f"gdmt{project_name[-6:]}"}
    hosts = {"local": "unix:///var/run/docker.sock", "edge": tls.tcp_host, "stack": swarm.host}
    upstream = Upstream(tmp_path / "repos" / "app.git")
    first = push(upstream, "1")
    config, port = write_config(tmp_path, upstream.url, names, tls, swarm)
    try:
        with AgentProcess(config, port, env={"DOCKER_HOST": ""}) as agent:
            for source in names:
                status = agent.wait_applied(source, first, timeout=120)
                assert status["target"]["host"] == hosts[source]
            assert on_engines(tls, swarm, names) == expected(names, "1")

            second = push(upstream, "2")  # one push changes all three
            for source in names:
                agent.wait_applied(source, second, timeout=120)
            assert on_engines(tls, swarm, names) == expected(names, "2")
            assert_hosts_named(agent, names, hosts, second)

            tls.stop()
            third = push(upstream, "3")
            agent.wait_applied("local", third, timeout=120)  # neither waits for the dead engine
            agent.wait_applied("stack", third, timeout=120)
            edge = agent.wait_for("edge to report the dead engine", lambda: _errored(agent.status("edge")))
            assert edge["reason"] == "DockerUnavailable"
            assert tls.tcp_host in edge["message"]
            assert edge["revision"]["applied"] == second
            assert edge["target"]["reachable"] is False
            failed = agent.history("edge")[0]
            assert (failed["result"], failed["reason"], failed["host"]) == (
                "error",
                "DockerUnavailable",
                tls.tcp_host,
            )

            tls.start()
            agent.wait_applied("edge", third, timeout=120)  # retried with backoff once it is back
            assert on_engines(tls, swarm, names) == expected(names, "3")
    finally:
        with DockerClient(swarm.host) as docker:
            tear_down_swarm(names["stack"], docker)
        ids = tls.docker("ps", "-aq", "--filter", f"label={LABEL}={names['edge']}").split()
        if ids:
            tls.docker("rm", "--force", *ids)


def assert_hosts_named(agent: AgentProcess, names: dict[str, str], hosts: dict[str, str], sha: str) -> None:
    """/metrics and history name each source's engine."""
    code, text = agent.get("/metrics")
    assert code == 200
    by_project = {names[s]: h for s, h in hosts.items()}
    for metric in ("gitdock_reconciles_total", "gitdock_last_apply_timestamp_seconds"):
        assert metric_hosts(text, metric) == by_project, metric
    assert metric_hosts(text, "gitdock_source_ready") == hosts
    operations = [line for line in text.splitlines() if line.startswith("gitdock_operations_total{")]
    assert any(f'host="{hosts["edge"]}"' in line for line in operations), operations
    assert any(f'host="{hosts["local"]}"' in line for line in operations), operations
    for source, host in hosts.items():
        latest = agent.history(source)[0]
        assert (latest["revision"], latest["result"], latest["host"]) == (sha, "success", host)


def _errored(status: dict[str, Any]) -> dict[str, Any] | None:
    return status if status["lastResult"] == "error" else None
