"""Swarm no-op reconcile of N services: gitdock's converge against ``docker stack deploy``.

Run: .venv/bin/python tests/bench/bench_swarm.py [--services 100] [--runs 5]

Starts a private single-node Swarm (``support.swarm``; the shared dockerd is not touched),
deploys one file of N replicated services on an overlay network with each tool as its own
stack, then times repeated no-op runs (median): gitdock's ``converge_swarm`` in-process (the
Docker API calls it makes are counted by the client), and the ``docker stack deploy``
command (wall clock of the CLI, which re-sends every service's update). Writes a table and
.bench/swarm.json. Not a pytest module.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from gitdock.runtime.docker import DockerClient  # noqa: E402
from gitdock.runtime.swarm.converge import converge_swarm  # noqa: E402
from gitdock.runtime.swarm.load import load_swarm_inputs  # noqa: E402
from gitdock.specs.load import load_project_with_warnings  # noqa: E402
from support.docker import TEST_IMAGE  # noqa: E402  (tests/ goes on sys.path first, as pytest does)
from support.swarm import SingleNodeSwarm  # noqa: E402


def write_compose(path: Path, services: int) -> None:
    svc = {
        "image": TEST_IMAGE,
        "command": ["sleep", "86400"],
        "networks": ["mesh"],
        "deploy": {"replicas": 1, "update_config": {"order": "start-first", "failure_action": "rollback"}},
    }
    compose = {
        "version": "3.8",  # docker stack deploy (20.10) wants one
        "services": {f"s{i:03d}": svc for i in range(services)},
        "networks": {"mesh": {"driver": "overlay", "attachable": True}},
    }
    path.write_text(json.dumps(compose))


def time_gitdock(swarm: SingleNodeSwarm, path: Path, runs: int) -> dict[str, float]:
    project, _swarm_only_warnings = load_project_with_warnings([path], project_name="gdbench")
    inputs = load_swarm_inputs([path], project)
    with DockerClient(swarm.host) as docker:
        cold = converge_swarm(project, docker, inputs, timeout=600)
        assert cold.is_ok, "the cold deploy did not finish"
    times, calls = [], []
    for _ in range(runs):
        with DockerClient(swarm.host) as docker:
            began = time.perf_counter()
            outcome = converge_swarm(project, docker, inputs)
            times.append((time.perf_counter() - began) * 1000)
            assert outcome.plan.is_empty and outcome.mutating_calls == 0
            calls.append(outcome.api_calls)
    return {"noop_ms": statistics.median(times), "api_calls": max(calls), "mutating_calls": 0}


def time_stack_deploy(swarm: SingleNodeSwarm, path: Path, runs: int) -> dict[str, float]:
    argv = [
        "docker",
        "-H",
        swarm.host,
        "stack",
        "deploy",
        "--resolve-image",
        "never",
        "-c",
        str(path),
        "stackbench",
    ]
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, timeout=600)
        times.append((time.perf_counter() - began) * 1000)
    return {"noop_ms": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    out = ROOT / ".bench"
    out.mkdir(exist_ok=True)
    path = out / "swarm-compose.yaml"
    write_compose(path, args.services)
    with SingleNodeSwarm() as swarm:
        gitdock = time_gitdock(swarm, path, args.runs)
        stack = time_stack_deploy(swarm, path, args.runs)
    result = {"services": args.services, "runs": args.runs, "gitdock": gitdock, "docker_stack_deploy": stack}
    print(f"Swarm no-op reconcile, {args.services} services (median of {args.runs})")
    print(
        f"  gitdock converge_swarm   {gitdock['noop_ms']:8.1f} ms  "
        f"{gitdock['api_calls']:.0f} API calls, 0 mutating"
    )
    print(f"  docker stack deploy      {stack['noop_ms']:8.1f} ms  (re-sends every service update)")
    (out / "swarm.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
