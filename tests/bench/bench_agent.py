"""Benchmark the agent as a real process: webhook latency, no-change poll cost, idle footprint.

Run: .venv/bin/python tests/bench/bench_agent.py [--pushes 5] [--idle-seconds 60] [--sources 10]
[--idle-only]

1. push → signed GitHub webhook → the changed container running with the new env
   (one-service env change; target ≤ 2 s), over `--pushes` pushes.
2. a poll with no new commit: the reconcile duration the agent reports for scheduled polls
   (target ≤ 20 ms) and the Docker events the project saw meanwhile (target: none).
3. an idle agent with `--sources` sources (10; one project of one container each) polling
   every 10 s: RSS (target ≤ 100 MB at 10) and average CPU over `--idle-seconds` (target
   ≤ 2 % of one core), from /proc/<pid>/stat and status. `--idle-only` skips 1 and 2.

Everything it creates (containers, networks, temp dirs) is removed at the end. Not a
pytest module: the name does not match test_*.py.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support.agent import AgentProcess, github_push  # noqa: E402  (tests/ goes on sys.path first)
from support.docker import TEST_IMAGE, docker_cli, docker_events, remove_project  # noqa: E402
from support.gitserver import Upstream, free_port  # noqa: E402

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
SECRET = "bench-secret"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def compose(value: str, *, bridge: bool = False) -> str:
    """One service; with ``bridge`` on Docker's default bridge instead of a project network."""
    return (
        f"services:\n  web:\n    image: {TEST_IMAGE}\n"
        f'    command: ["sh", "-c", "{LOOP}"]\n    environment:\n      VALUE: "{value}"\n'
        + ("    network_mode: bridge\n" if bridge else "")
    )


def write_config(tmp: Path, url: str, projects: list[str], interval: str) -> tuple[Path, int]:
    port = free_port()
    (tmp / "hook.secret").write_text(SECRET)
    lines = [
        f"state_dir: {tmp / 'state'}",
        f"listen: 127.0.0.1:{port}",
        f"defaults: {{interval: {interval}, debounce: 0.05s, settle: 0.2s}}",
        f"webhooks:\n  github: {{secret: {{file: {tmp / 'hook.secret'}}}}}",
        "sources:",
    ]
    for i, project in enumerate(projects):
        lines.append(f"  - {{name: s{i}, url: '{url}', project: {project}}}")
    config = tmp / "agent.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config, port


def web_env(project: str) -> tuple[str, list[str]]:
    try:
        info = json.loads(docker_cli("inspect", f"{project}-web-1"))[0]
    except Exception:  # not there yet, mid-recreate
        return "", []
    return info["State"]["Status"], info["Config"]["Env"] or []


def bench_webhook_and_poll(tmp: Path, pushes: int) -> dict[str, Any]:
    project = f"gdb-agent-{secrets.token_hex(3)}"
    upstream = Upstream(tmp / "repo.git")
    first = upstream.commit({"compose.yaml": compose("0")})
    try:
        # Webhook latency: the interval is long, so only the webhook can explain a fast deploy.
        config, port = write_config(tmp, upstream.url, [project], "1h")
        latencies = []
        with AgentProcess(config, port) as agent:
            agent.wait_applied("s0", first)
            for i in range(1, pushes + 1):
                sha = upstream.commit({"compose.yaml": compose(str(i))})
                body, headers = github_push(SECRET, "refs/heads/main", sha, upstream.url)
                started = time.monotonic()
                code, _ = agent.request("POST", "/hooks/github", body, headers)
                assert code == 202, code
                while True:
                    state, env = web_env(project)
                    if state == "running" and f"VALUE={i}" in env:
                        break
                    if time.monotonic() - started > 30:
                        raise RuntimeError(f"push {i} not deployed after 30 s:\n{agent.log()[-3000:]}")
                    time.sleep(0.01)
                latencies.append(time.monotonic() - started)
                agent.wait_applied("s0", sha)
            agent.terminate()
        # No-change polls: a 1 s interval, nothing pushed.
        config, port = write_config(tmp, upstream.url, [project], "1s")
        durations: list[float] = []
        with AgentProcess(config, port) as agent:
            agent.wait_for("startup", lambda: agent.status("s0")["lastResult"] == "success")
            time.sleep(1.5)
            since = time.time()
            seen = None
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline:
                s = agent.status("s0")
                if s["lastCheckedAt"] != seen:
                    seen = s["lastCheckedAt"]
                    durations.append(s["lastDurationMs"])
                time.sleep(0.1)
            until = time.time()
            agent.terminate()
        time.sleep(0.2)
        events = [e for e in docker_events(since, until) if project in json.dumps(e)]
        return {
            "webhook_to_running_s": {
                "median": statistics.median(latencies),
                "max": max(latencies),
                "all": [round(x, 3) for x in latencies],
            },
            "no_change_poll_ms": {
                "median": statistics.median(durations[1:]),
                "max": max(durations[1:]),
                "samples": len(durations) - 1,
            },
            "docker_events_during_polls": len(events),
        }
    finally:
        remove_project(project)


def read_proc(pid: int) -> tuple[float, int]:
    """(CPU seconds used so far, RSS in kB)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return cpu, rss


def bench_idle(tmp: Path, seconds: float, sources: int = 10) -> dict[str, Any]:
    projects = [f"gdb-idle{i}-{secrets.token_hex(3)}" for i in range(sources)]
    upstream = Upstream(tmp / "idle.git")
    # A network per project would exhaust dockerd's default address pools (about 30) long
    # before 100 sources: above 20 the projects share the default bridge.
    sha = upstream.commit({"compose.yaml": compose("idle", bridge=sources > 20)})
    try:
        (tmp / "idle").mkdir()
        config, port = write_config(tmp / "idle", upstream.url, projects, "10s")
        with AgentProcess(config, port) as agent:
            for i in range(sources):
                agent.wait_applied(f"s{i}", sha, timeout=60 + sources)
            assert agent.proc is not None
            pid = agent.proc.pid
            time.sleep(2)
            cpu0, _ = read_proc(pid)
            t0 = time.monotonic()
            peak = 0
            while time.monotonic() - t0 < seconds:
                time.sleep(1)
                peak = max(peak, read_proc(pid)[1])
            cpu1, rss = read_proc(pid)
            elapsed = time.monotonic() - t0
            agent.terminate()
        return {
            "sources": sources,
            "interval_s": 10,
            "seconds": round(elapsed, 1),
            "rss_mb": round(rss / 1024, 1),
            "peak_rss_mb": round(peak / 1024, 1),
            "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / elapsed, 2),
        }
    finally:
        for project in projects:
            remove_project(project)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pushes", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--sources", type=int, default=10, help="sources of the idle agent (10)")
    parser.add_argument("--idle-only", action="store_true", help="only the idle agent (3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gitdock-bench-agent-") as tmp:
        results = {} if args.idle_only else bench_webhook_and_poll(Path(tmp), args.pushes)
        results["idle"] = idle = bench_idle(Path(tmp), args.idle_seconds, args.sources)
    print_results(results, idle)
    out = ROOT / ".bench" / "agent.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def print_results(results: dict[str, Any], idle: dict[str, Any]) -> None:
    if "webhook_to_running_s" in results:
        print_latencies(results)
    print(
        f"idle, {idle['sources']} sources every 10 s   RSS {idle['rss_mb']} MB (peak {idle['peak_rss_mb']}), "
        f"CPU {idle['cpu_percent_of_one_core']} % of one core over {idle['seconds']} s"
        "   (targets ≤ 100 MB at 10 sources, ≤ 2 %)"
    )


def print_latencies(results: dict[str, Any]) -> None:
    w, p = results["webhook_to_running_s"], results["no_change_poll_ms"]
    print(f"push → webhook → running      median {w['median']:.2f} s, max {w['max']:.2f} s   (target ≤ 2 s)")
    print(
        f"no-change poll                median {p['median']:.1f} ms, max {p['max']:.1f} ms "
        f"over {p['samples']} polls, {results['docker_events_during_polls']} Docker events"
        "   (target ≤ 20 ms, no mutation)"
    )


if __name__ == "__main__":
    sys.exit(main())
