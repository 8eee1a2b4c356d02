"""Time one agent reconciling many sources spread over several engines.

Run: .venv/bin/python tests/bench/bench_targets.py [--sources 50] [--engines 3]

One agent process, N sources (one single-service project each) dealt round-robin over the
local dockerd and ``engines - 1`` private dockerds on TCP with mutual TLS (tests/support/
tlsdockerd.py). Measured: from the agent's start to every source applied (first deploy), from
one git push changing every project to every source applied again, and the no-op reconcile
duration the agent reports per source (``lastDurationMs``), by engine. Then one TLS engine is
stopped and a second push is timed for the sources on the engines still up.
Writes a table to stdout and JSON to .bench/targets.json. Not a pytest module.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support.agent import AgentProcess  # noqa: E402  (tests/ on sys.path first)
from support.docker import TEST_IMAGE, remove_project  # noqa: E402
from support.gitserver import Upstream, free_port  # noqa: E402
from support.tlsdockerd import TlsDockerd  # noqa: E402

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def compose(version: int) -> str:
    return (
        # No network: 50 projects would use up the shared dockerd's default address pools.
        f"services:\n  web:\n    image: {TEST_IMAGE}\n    network_mode: none\n"
        f'    command: ["sh", "-c", "{LOOP}"]\n    environment: {{VERSION: "{version}"}}\n'
    )


def target_yaml(engine: TlsDockerd | None) -> str:
    if engine is None:
        return ""
    c = engine.certs
    tls = f"{{ca: {c.ca}, cert: {c.cert}, key: {c.key}}}"
    return f"    target: {{host: {engine.tcp_host}, tls: {tls}}}\n"


def write_config(
    work: Path, url: str, names: list[str], engines: list[TlsDockerd | None]
) -> tuple[Path, int]:
    port = free_port()
    lines = [
        f"state_dir: {work / 'state'}",
        f"listen: 127.0.0.1:{port}",
        "defaults: {interval: 5s, jitter: 1s, settle: 0.1s}",
        "sources:",
    ]
    text = "\n".join(lines) + "\n"
    for i, name in enumerate(names):
        text += f"  - name: {name}\n    url: {url}\n    path: {name}\n    project: {name}\n"
        text += target_yaml(engines[i % len(engines)])
    config = work / "agent.yaml"
    config.write_text(text)
    return config, port


def wait_all(agent: AgentProcess, names: list[str], sha: str, timeout: float = 300) -> float:
    started = time.monotonic()
    pending = set(names)
    deadline = started + timeout
    while pending:
        for name in list(pending):
            status = agent.status(name)
            if status["revision"]["applied"] == sha and status["lastResult"] == "success":
                pending.discard(name)
        if time.monotonic() > deadline:
            states = {n: (agent.status(n)["lastResult"], agent.status(n)["message"]) for n in sorted(pending)}
            raise RuntimeError(f"{len(pending)} sources not applied in {timeout}s: {states}")
        time.sleep(0.05)
    return time.monotonic() - started


def noop_durations(agent: AgentProcess, names: list[str], engine_of: dict[str, str]) -> dict[str, float]:
    time.sleep(12)  # two 5 s polls: each source has now reconciled an unmoved revision
    by_engine: dict[str, list[float]] = {}
    for name in names:
        by_engine.setdefault(engine_of[name], []).append(float(agent.status(name)["lastDurationMs"]))
    return {engine: round(statistics.median(values), 1) for engine, values in by_engine.items()}


def _engine_name(engine: TlsDockerd | None) -> str:
    return "local" if engine is None else engine.tcp_host


def run(args: argparse.Namespace, work: Path, remotes: list[TlsDockerd]) -> dict[str, Any]:
    engines: list[TlsDockerd | None] = [None, *remotes]
    tag = secrets.token_hex(3)
    names = [f"gdb-t{tag}-{i:02d}" for i in range(args.sources)]
    engine_of = {n: _engine_name(engines[i % len(engines)]) for i, n in enumerate(names)}
    upstream = Upstream(work / "repo.git")
    first = upstream.commit({f"{n}/compose.yaml": compose(1) for n in names}, "first")
    config, port = write_config(work, upstream.url, names, engines)
    result: dict[str, Any] = {"sources": args.sources, "engines": len(engines)}
    try:
        _measure(result, upstream, names, engine_of, remotes, config, port, first)
    finally:
        for name in names:
            if engine_of[name] == "local":
                remove_project(name)
    return result


def _measure(
    result: dict[str, Any],
    upstream: Upstream,
    names: list[str],
    engine_of: dict[str, str],
    remotes: list[TlsDockerd],
    config: Path,
    port: int,
    first: str,
) -> None:
    with AgentProcess(config, port, env={"DOCKER_HOST": ""}) as agent:
        started = time.monotonic()
        wait_all(agent, names, first)
        result["first_deploy_s"] = round(time.monotonic() - started, 2)
        result["noop_ms_median_by_engine"] = noop_durations(agent, names, engine_of)
        pushed = time.monotonic()
        second = upstream.commit({f"{n}/compose.yaml": compose(2) for n in names}, "second")
        wait_all(agent, names, second)
        result["push_to_all_applied_s"] = round(time.monotonic() - pushed, 2)
        remotes[-1].stop()
        live = [n for n in names if engine_of[n] != remotes[-1].tcp_host]
        pushed = time.monotonic()
        third = upstream.commit({f"{n}/compose.yaml": compose(3) for n in names}, "third")
        wait_all(agent, live, third)
        result["push_with_one_engine_down_s"] = round(time.monotonic() - pushed, 2)
        result["sources_on_live_engines"] = len(live)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sources", type=int, default=50)
    parser.add_argument("--engines", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gitdock-bench-targets-") as tmp:
        work = Path(tmp)
        remotes = [TlsDockerd(work / f"certs{i}") for i in range(args.engines - 1)]
        try:
            for remote in remotes:
                remote.start()
                remote.load_test_image()
            result = run(args, work, remotes)
        finally:
            for remote in remotes:
                remote.close()
    print(f"{'measure':<34} value")
    for key, value in result.items():
        print(f"{key:<34} {value}")
    out = ROOT / ".bench"
    out.mkdir(exist_ok=True)
    (out / "targets.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
