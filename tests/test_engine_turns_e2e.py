"""Many sources on one engine share its turns: ``defaults.parallel`` caps the agent's mutating
calls in that dockerd at once, across every source (runtime.docker ``max_in_flight``).

One agent process, six sources in one git repository, all starting together on the real
dockerd, which the agent reaches through a proxy that counts the mutating calls in flight
(tests/bench/bench_converge.py ``CountingProxy``). With ``parallel: 2`` dockerd never has more
than two at once and every source still applies; with a cap above the agent's demand the same
start has more than two in flight, so the first run's figure is the cap's doing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bench.bench_converge import CountingProxy

from support.agent import AgentProcess
from support.docker import TEST_IMAGE, docker_cli, docker_host, remove_project
from support.gitserver import Upstream, free_port

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
SOURCES = 6


def compose(services: int) -> str:
    lines = ["services:"]
    for i in range(services):
        lines += [f"  s{i}:", f"    image: {TEST_IMAGE}", f'    command: ["sh", "-c", "{LOOP}"]']
    return "\n".join(lines) + "\n"


def write_config(tmp_path: Path, url: str, names: list[str], docker: str, parallel: int) -> tuple[Path, int]:
    port = free_port()
    config = tmp_path / f"agent-{parallel}.yaml"
    sources = "".join(
        f"  - {{name: src{i}, url: {url}, ref: main, path: p{i}, project: {name}}}\n"
        for i, name in enumerate(names)
    )
    config.write_text(
        f"state_dir: {tmp_path / f'state-{parallel}'}\n"
        f"listen: 127.0.0.1:{port}\n"
        f"docker_host: {docker}\n"
        f"defaults: {{interval: 1h, jitter: 0.01s, settle: 0.1s, parallel: {parallel}}}\n"
        f"sources:\n{sources}"
    )
    return config, port


def waited_seconds(metrics: str) -> float:
    """``gitdock_engine_wait_seconds_total`` summed over hosts, from Prometheus text."""
    pattern = r"^gitdock_engine_wait_seconds_total\{[^}]*\} (\S+)$"
    return sum(float(v) for v in re.findall(pattern, metrics, re.MULTILINE))


@pytest.mark.parametrize("parallel", [2, 64])
def test_the_sources_on_one_engine_share_its_turns(tmp_path: Path, project_name: str, parallel: int) -> None:
    names = [f"{project_name}-{i}" for i in range(SOURCES)]
    upstream = Upstream(tmp_path / "repo.git")
    sha = upstream.commit({f"p{i}/compose.yaml": compose(3) for i in range(SOURCES)}, "six projects")
    proxy = CountingProxy(docker_host())
    config, port = write_config(tmp_path, upstream.url, names, proxy.url, parallel)
    try:
        with AgentProcess(config, port, env={"DOCKER_HOST": ""}) as agent:
            for i in range(SOURCES):
                agent.wait_applied(f"src{i}", sha, timeout=180)
            code, metrics = agent.get("/metrics")
            assert code == 200
        for name in names:
            running = docker_cli("ps", "-q", "--filter", f"label=io.gitdock.project={name}").split()
            assert len(running) == 3, (name, running)
        assert proxy.requests["POST /containers/create"] == 3 * SOURCES, proxy.requests
        if parallel == 2:
            assert proxy.most_in_flight == 2, proxy.most_in_flight
            assert waited_seconds(metrics) > 0, metrics
        else:
            assert proxy.most_in_flight > 2, proxy.most_in_flight
    finally:
        proxy.close()
        for name in names:
            remove_project(name)
