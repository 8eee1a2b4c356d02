"""Benchmark the agent as a real process: webhook latency, no-change poll cost, idle footprint.

Run: .venv/bin/python tests/bench/bench_agent.py [--pushes 5] [--idle-seconds 60] [--sources 10]
[--services 1] [--idle-only] [--keep PREFIX | --remove PREFIX] [--env NAME=VALUE] [--parallel N]

1. push → signed GitHub webhook → the changed container running with the new env
   (one-service env change; target ≤ 2 s), over `--pushes` pushes.
2. a poll with no new commit: the reconcile duration the agent reports for scheduled polls
   (target ≤ 20 ms) and the Docker events the project saw meanwhile (target: none).
3. an idle agent with `--sources` sources (10; one project of `--services` containers each)
   polling every 10 s: RSS now and at its peak (VmRSS, VmHWM; targets ≤ 100 MB at 10 sources,
   issue 17's bar ≤ 150 MB with 50 sources and 1,000 containers: `--sources 50 --services 20`)
   and average CPU over `--idle-seconds` (target ≤ 2 % of one core), from /proc/<pid>/stat
   and status. `--idle-only` skips 1 and 2.

Everything it creates (containers, networks, temp dirs) is removed at the end, except with
`--keep PREFIX`: the idle projects are then named PREFIX-s000, PREFIX-s001, … and left
running, and the next run with the same PREFIX (the same --services, and --sources on the
same side of 20, where the projects move to the default bridge) finds them up to date (the
commit is the same bytes, so the same sha) instead of creating 1,000 containers again
(4 to 15 min at 2 shared cores). `--remove PREFIX` removes them and exits. The agent's own
state is always new, so each run's startup reconciles every source once (a no-op when kept).
Not a pytest module: the name does not match test_*.py.
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
from collections import Counter
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


def compose(value: str, *, bridge: bool = False, services: int = 1) -> str:
    """``services`` services (``web``, else ``web0``…); with ``bridge`` on Docker's default
    bridge instead of a project network."""
    names = ["web"] if services == 1 else [f"web{i}" for i in range(services)]
    return "services:\n" + "".join(
        f"  {name}:\n    image: {TEST_IMAGE}\n"
        f'    command: ["sh", "-c", "{LOOP}"]\n    environment:\n      VALUE: "{value}"\n'
        + ("    network_mode: bridge\n" if bridge else "")
        for name in names
    )


def write_config(
    tmp: Path, url: str, projects: list[str], interval: str, parallel: int | None = None
) -> tuple[Path, int]:
    port = free_port()
    (tmp / "hook.secret").write_text(SECRET)
    turns = f", parallel: {parallel}" if parallel else ""
    lines = [
        f"state_dir: {tmp / 'state'}",
        f"listen: 127.0.0.1:{port}",
        f"defaults: {{interval: {interval}, debounce: 0.05s, settle: 0.2s{turns}}}",
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


def read_proc(pid: int) -> tuple[float, int, int]:
    """(CPU seconds used so far, VmRSS in kB, VmHWM in kB: the peak RSS since exec)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return cpu, int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


def idle_projects(sources: int, keep: str | None) -> list[str]:
    """Kept projects get fixed names, none a prefix of another (remove_project matches names)."""
    if keep:
        return [f"{keep}-s{i:03d}" for i in range(sources)]
    return [f"gdb-idle{i}-{secrets.token_hex(3)}" for i in range(sources)]


def bench_idle(
    tmp: Path,
    seconds: float,
    sources: int = 10,
    services: int = 1,
    keep: str | None = None,
    env: dict[str, str] | None = None,
    parallel: int | None = None,
) -> dict[str, Any]:
    projects = idle_projects(sources, keep)
    upstream = Upstream(tmp / "idle.git")
    # A network per project would exhaust dockerd's default address pools (about 30) long
    # before 100 sources: above 20 the projects share the default bridge.
    sha = upstream.commit({"compose.yaml": compose("idle", bridge=sources > 20, services=services)})
    try:
        (tmp / "idle").mkdir()
        config, port = write_config(tmp / "idle", upstream.url, projects, "10s", parallel)
        with AgentProcess(config, port, env=env) as agent:
            started = time.monotonic()
            for i in range(sources):
                agent.wait_applied(f"s{i}", sha, timeout=60 + sources * services)
            startup = time.monotonic() - started
            # Every reconcile until each source applied: a failed try (e.g. a call dockerd did
            # not answer in time) is retried, and counted here by its result and reason.
            tries = Counter(
                f"{entry['result']} {entry['reason']}"
                for i in range(sources)
                for entry in agent.history(f"s{i}")
            )
            assert agent.proc is not None
            result = measure_idle(agent.proc.pid, seconds)
            try:
                result["exit_s"] = round(agent.terminate(), 1)
            except RuntimeError:  # killed by terminate(): the figures above still stand
                result["exit_s"] = None
        labels = docker_cli("ps", "--all", "--format", '{{.Label "io.gitdock.project"}}').split()
        containers = sum(label in projects for label in labels)
        host = len(docker_cli("ps", "--all", "--quiet").split())
        counts = {"sources": sources, "containers": containers, "host_containers": host}
        return counts | {"startup_s": round(startup, 1), "startup_tries": dict(tries)} | result
    finally:
        if not keep:
            try:
                remove_projects(projects)
            except Exception as exc:  # the figures above stand; say what is left behind
                print(f"removing the idle projects failed: {str(exc)[:200]}", file=sys.stderr)


def measure_idle(pid: int, seconds: float) -> dict[str, Any]:
    """CPU and RSS of process ``pid`` over ``seconds``, sampled every second."""
    time.sleep(2)
    cpu0, _, _ = read_proc(pid)
    t0 = time.monotonic()
    peak = 0
    while time.monotonic() - t0 < seconds:
        time.sleep(1)
        peak = max(peak, read_proc(pid)[1])
    cpu1, rss, hwm = read_proc(pid)
    elapsed = time.monotonic() - t0
    return {
        "interval_s": 10,
        "seconds": round(elapsed, 1),
        "rss_mb": round(rss / 1024, 1),
        "peak_rss_mb": round(peak / 1024, 1),
        "hwm_mb": round(hwm / 1024, 1),
        "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / elapsed, 2),
        "load_1m": os.getloadavg()[0],
    }


def remove_projects(projects: list[str]) -> None:
    for project in projects:
        remove_project(project)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pushes", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--sources", type=int, default=10, help="sources of the idle agent (10)")
    parser.add_argument("--services", type=int, default=1, help="services per idle source (1)")
    parser.add_argument("--idle-only", action="store_true", help="only the idle agent (3)")
    parser.add_argument("--keep", metavar="PREFIX", help="leave the idle projects running, reuse them")
    parser.add_argument("--remove", metavar="PREFIX", help="remove the kept projects and exit")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="in the idle agent")
    parser.add_argument(
        "--parallel", type=int, help="the idle agent's defaults.parallel (its own default: 8)"
    )
    args = parser.parse_args()
    if args.remove:
        remove_projects(idle_projects(args.sources, args.remove))
        return 0
    with tempfile.TemporaryDirectory(prefix="gitdock-bench-agent-") as tmp:
        results = {} if args.idle_only else bench_webhook_and_poll(Path(tmp), args.pushes)
        env = dict(item.split("=", 1) for item in args.env)
        idle = bench_idle(
            Path(tmp), args.idle_seconds, args.sources, args.services, args.keep, env, args.parallel
        )
        idle["env"] = env
        results["idle"] = idle
    print_results(results, idle)
    out = ROOT / ".bench" / "agent.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def print_results(results: dict[str, Any], idle: dict[str, Any]) -> None:
    if "webhook_to_running_s" in results:
        print_latencies(results)
    print(
        f"idle, {idle['sources']} sources, {idle['containers']} containers "
        f"({idle['host_containers']} on the host), every 10 s   "
        f"VmRSS {idle['rss_mb']} MB (peak while idle {idle['peak_rss_mb']}, VmHWM {idle['hwm_mb']}), "
        f"CPU {idle['cpu_percent_of_one_core']} % of one core over {idle['seconds']} s, "
        f"load {idle['load_1m']:.1f}; startup reconciles {idle['startup_s']} s "
        f"({', '.join(f'{n} {what}' for what, n in sorted(idle['startup_tries'].items()))}), "
        f"exit after SIGTERM {idle['exit_s'] if idle['exit_s'] is not None else 'over 15'} s"
        "   (targets ≤ 100 MB at 10 sources, ≤ 150 MB at 50 sources with 1,000 containers, ≤ 2 %)"
        + (f"; agent environment {idle['env']}" if idle.get("env") else "")
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
