"""Benchmark the health gate and rollback with the agent as a real process.

Run: .venv/bin/python tests/bench/bench_rollback.py [--rounds 5] [--settle 3s]

For a one-service project, over `--rounds` rounds:

1. push → signed GitHub webhook → the source reports the new revision applied *and healthy*
   (the gate includes the settle time, printed beside the figure);
2. push of a commit whose service exits 1 two seconds after start (so the settle time must be
   longer) → webhook → the source reports RolledBack, the previous revision running again.

Medians and maxima are printed as JSON. Everything it creates is removed at the end. Not a
pytest module: the name does not match test_*.py.
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

from support.agent import AgentProcess, github_push  # noqa: E402  (tests/ goes on sys.path first)
from support.docker import TEST_IMAGE, remove_project  # noqa: E402
from support.gitserver import Upstream, free_port  # noqa: E402

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
CRASH = "sleep 2; exit 1"
SECRET = "bench-secret"


def compose(value: str, script: str = LOOP) -> str:
    return (
        f"services:\n  web:\n    image: {TEST_IMAGE}\n"
        f'    command: ["sh", "-c", "{script}"]\n    environment:\n      VALUE: "{value}"\n'
    )


def write_config(tmp: Path, url: str, project: str, settle: str) -> tuple[Path, int]:
    port = free_port()
    (tmp / "hook.secret").write_text(SECRET)
    config = tmp / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp / 'state'}\nlisten: 127.0.0.1:{port}\n"
        "defaults: {interval: 1h, debounce: 0.05s}\n"
        f"webhooks:\n  github: {{secret: {{file: {tmp / 'hook.secret'}}}}}\n"
        f"sources:\n  - {{name: app, url: '{url}', project: {project}, settle: {settle}}}\n"
    )
    return config, port


def push(agent: AgentProcess, upstream: Upstream, files: str) -> tuple[str, float]:
    """Commit, deliver the webhook; the sha and the monotonic time the delivery was sent."""
    sha = upstream.commit({"compose.yaml": files})
    body, headers = github_push(SECRET, "refs/heads/main", sha, upstream.url)
    started = time.monotonic()
    code, _ = agent.request("POST", "/hooks/github", body, headers)
    assert code == 202, code
    return sha, started


def until(agent: AgentProcess, what: str, check: Any, started: float) -> float:
    agent.wait_for(what, check, timeout=90, interval=0.02)
    return time.monotonic() - started


def bench(tmp: Path, rounds: int, settle: str) -> dict[str, Any]:
    project = f"gdb-rollback-{secrets.token_hex(3)}"
    upstream = Upstream(tmp / "repo.git")
    first = upstream.commit({"compose.yaml": compose("0")})
    healthy: list[float] = []
    rollback: list[float] = []
    try:
        config, port = write_config(tmp, upstream.url, project, settle)
        with AgentProcess(config, port) as agent:
            agent.wait_applied("app", first, timeout=60)
            for i in range(1, rounds + 1):
                sha, started = push(agent, upstream, compose(str(i)))
                healthy.append(until(agent, f"{sha[:12]} healthy", _applied(agent, sha), started))
                bad, started = push(agent, upstream, compose(f"bad{i}", CRASH))
                rollback.append(until(agent, f"{bad[:12]} rolled back", _rolled_back(agent, bad), started))
            agent.terminate()
    finally:
        remove_project(project)
    return {
        "settle": settle,
        "push_to_healthy_s": _figures(healthy),
        "failing_commit_to_rollback_done_s": _figures(rollback),
    }


def _applied(agent: AgentProcess, sha: str) -> Any:
    def check() -> bool:
        s = agent.status("app")
        return bool(s["revision"]["applied"] == sha and s["lastResult"] == "success")

    return check


def _rolled_back(agent: AgentProcess, sha: str) -> Any:
    def check() -> bool:
        s = agent.status("app")
        return bool(s["revision"]["failed"] == sha and s["reason"] == "RolledBack")

    return check


def _figures(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3), "n": len(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--settle", default="3s", help="the settle time; above the crash at 2 s (default 3s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gitdock-bench-rollback-") as tmp:
        print(json.dumps(bench(Path(tmp), args.rounds, args.settle), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
