"""Benchmark push → running: a commit, its signed GitHub webhook, the changed container running.

Run: .venv/bin/python tests/bench/bench_push.py [--pushes 10] [--debounce 0.2s] [--url file|http]

A real agent process (tests/support/agent.py) deploys one service from a real git repository
(file://, or git's http-backend with ``--url http``); each push commits a new environment value
for that one service (the image is present, stop-first, the container traps TERM so its stop
is immediate) and POSTs the signed webhook at once. The latency of a push is the new
container's ``State.StartedAt`` (dockerd's clock, the same host) minus the moment the POST was
sent. The agent exports its traces to a real OTLP receiver (tests/support/otlp_receiver.py),
so each step of the webhook's ``SYNC`` trace is timed from the same origin: the webhook
request, the wait before the reconcile starts (debounce, scheduling), fetch, load, policy,
observe, plan, execute and its operations, and the health gate (after the container runs).

Prints the median, min and max of each over the pushes and the target (≤ 1 s); writes
.bench/push.json. Everything it creates is removed at the end. Not a pytest module.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support.agent import AgentProcess, github_push  # noqa: E402  (tests/ goes on sys.path first)
from support.docker import TEST_IMAGE, docker_cli, docker_host, remove_project  # noqa: E402
from support.gitserver import Upstream, free_port, serve_http  # noqa: E402
from support.otlp_receiver import OTLPReceiver, ReceivedSpan  # noqa: E402

SECRET = "bench-secret"
# `sleep & wait`: sh runs a trap only between commands, and `wait` returns at once on TERM.
LOOP = "trap 'exit 0' TERM; while :; do sleep 1 & wait; done"
TARGET_S = 1.0


def compose(value: int) -> str:
    """One service on Docker's default bridge; only VALUE changes between pushes."""
    return (
        f"services:\n  web:\n    image: {TEST_IMAGE}\n    network_mode: bridge\n"
        f'    command: ["sh", "-c", "{LOOP}"]\n    environment:\n      VALUE: "{value}"\n'
    )


def write_config(tmp: Path, url: str, project: str, debounce: str | None) -> tuple[Path, int]:
    port = free_port()
    (tmp / "hook.secret").write_text(SECRET)
    defaults = "interval: 1h, settle: 0.2s" + (f", debounce: {debounce}" if debounce else "")
    config = tmp / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp / 'state'}\nlisten: 127.0.0.1:{port}\ndefaults: {{{defaults}}}\n"
        f"webhooks:\n  github: {{secret: {{file: {tmp / 'hook.secret'}}}}}\n"
        f"sources:\n  - {{name: app, url: '{url}', project: {project}}}\n"
    )
    return config, port


def started_at_ns(container: str) -> tuple[int, list[str]]:
    """The container's State.StartedAt as Unix nanoseconds, and its environment."""
    info = json.loads(docker_cli("inspect", container))[0]
    stamp = info["State"]["StartedAt"].rstrip("Z")
    whole, _, frac = stamp.partition(".")
    seconds = datetime.fromisoformat(whole + "+00:00").timestamp()
    return int(seconds) * 1_000_000_000 + int((frac + "000000000")[:9]), info["Config"]["Env"] or []


def push_once(agent: AgentProcess, upstream: Upstream, url: str, project: str, i: int) -> dict[str, Any]:
    """One push; returns the POST time, the new container's start and the applied sha."""
    sha = upstream.commit({"compose.yaml": compose(i)})
    body, headers = github_push(SECRET, "refs/heads/main", sha, url)
    posted = time.time_ns()
    code, answer = agent.request("POST", "/hooks/github", body, headers)
    if code != 202:
        raise RuntimeError(f"webhook answered {code}: {answer}")
    agent.wait_applied("app", sha, timeout=60)
    started, env = started_at_ns(f"{project}-web-1")
    if f"VALUE={i}" not in env:
        raise RuntimeError(f"push {i}: the running container has {env}")
    return {"sha": sha, "posted_ns": posted, "started_ns": started}


def trace_steps(spans: list[ReceivedSpan], push: dict[str, Any], project: str) -> dict[str, float]:
    """Seconds of each step of the push's SYNC trace (``name``) and when it began after the POST
    (``@name``); the gaps between them are the agent's own code outside any step."""
    sync = next(
        s
        for s in spans
        if s.name == f"SYNC {project}" and s.attributes.get("vcs.ref.head.revision") == push["sha"]
    )
    origin = push["posted_ns"]
    steps = {
        "SYNC (whole reconcile)": (sync.end_ns - sync.start_ns) / 1e9,
        "@SYNC (whole reconcile)": (sync.start_ns - origin) / 1e9,
    }
    children = [s for s in spans if s.trace_id == sync.trace_id and s.span_id != sync.span_id]
    by_id = {s.span_id: s for s in children}
    for span in sorted(children, key=lambda s: s.start_ns):
        depth = 1
        parent = by_id.get(span.parent_span_id)
        while parent is not None:
            depth, parent = depth + 1, by_id.get(parent.parent_span_id)
        name = "  " * depth + span.name.replace("service:web:1", "web")
        steps[name] = steps.get(name, 0.0) + (span.end_ns - span.start_ns) / 1e9
        steps.setdefault("@" + name, (span.start_ns - origin) / 1e9)
    steps["push → running"] = steps["@push → running"] = (push["started_ns"] - origin) / 1e9
    return steps


def run(tmp: Path, pushes: int, debounce: str | None, scheme: str) -> dict[str, Any]:
    project = f"gdt-push-{secrets.token_hex(3)}"
    upstream = Upstream(tmp / "repo.git")
    upstream.commit({"compose.yaml": compose(0)})
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_SERVICE_NAME": "gitdock-bench-push",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    try:
        with OTLPReceiver() as receiver, contextlib.ExitStack() as stack:
            url = upstream.url
            if scheme == "http":
                url = f"{stack.enter_context(serve_http(tmp)).base_url}/repo.git"
            config, port = write_config(tmp, url, project, debounce)
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
            with AgentProcess(config, port, env=env) as agent:
                agent.wait_for("the first deploy", lambda: agent.status("app")["lastResult"] == "success")
                time.sleep(0.5)
                done = [push_once(agent, upstream, url, project, i) for i in range(1, pushes + 1)]
                time.sleep(1.0)  # the last batch of spans
                agent.terminate()
            spans = receiver.spans()
        per_push = [trace_steps(spans, push, project) for push in done]
        floors = [measure_floor(project, i) for i in range(pushes)]
    finally:
        remove_project(project)
    return {
        "pushes": pushes,
        "debounce": debounce or "default",
        "url": scheme,
        "steps": summarise(per_push),
        "floor": summarise(floors),
    }


def measure_floor(project: str, i: int) -> dict[str, float]:
    """The engine's own cost of one push, raw: the four snapshot lists (at once), then the
    replacement's create, the old one's stop and the new one's start; then remove and rename."""
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=docker_host().removeprefix("unix://")),
        base_url="http://docker/v1.41",
        timeout=60,
    ) as client:
        name = f"{project}-floor"
        body = {
            "Image": TEST_IMAGE,
            "Cmd": ["sh", "-c", LOOP],
            "Env": [f"VALUE={i}"],
            "HostConfig": {"NetworkMode": "bridge"},
            "Labels": {"com.docker.compose.project": project},
        }
        if i == 0:
            old = client.post("/containers/create", params={"name": name}, json=body).json()["Id"]
            client.post(f"/containers/{old}/start").raise_for_status()
        old = client.get(f"/containers/{name}/json").json()["Id"]
        t0 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            lists = ("/containers/json?all=1", "/networks", "/volumes", "/images/json")
            for job in [pool.submit(client.get, path) for path in lists]:
                job.result().raise_for_status()
        t1 = time.monotonic()
        new = client.post("/containers/create", params={"name": f"{name}-new"}, json=body).json()["Id"]
        client.post(f"/containers/{old}/stop").raise_for_status()
        client.post(f"/containers/{new}/start").raise_for_status()
        t2 = time.monotonic()
        client.delete(f"/containers/{old}", params={"force": 1}).raise_for_status()
        client.post(f"/containers/{new}/rename", params={"name": name}).raise_for_status()
    return {"lists": t1 - t0, "create, stop, start": t2 - t1, "floor: push → running": t2 - t0}


def summarise(per_push: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    values: dict[str, list[float]] = defaultdict(list)
    for steps in per_push:
        for name, seconds in steps.items():
            values[name].append(seconds)
    return {
        name: {
            "median": statistics.median(xs),
            "min": min(xs),
            "max": max(xs),
            "n": len(xs),
        }
        for name, xs in values.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pushes", type=int, default=10)
    parser.add_argument("--debounce", default=None, help="defaults.debounce (unset: the agent's default)")
    parser.add_argument("--url", choices=("file", "http"), default="file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gitdock-bench-push-") as tmp:
        results = run(Path(tmp), args.pushes, args.debounce, args.url)
    print(f"push → running, {results['pushes']} pushes, debounce {results['debounce']}, {results['url']}://")
    print(f"{'step':<40} {'median':>8} {'min':>8} {'max':>8}   starts at (median, after the POST)")
    steps = results["steps"]
    for name, s in steps.items():
        if name.startswith("@"):
            continue
        ms = " ".join(f"{s[k] * 1000:6.0f}ms" for k in ("median", "min", "max"))
        print(f"{name[:40]:<40} {ms}   {steps['@' + name]['median'] * 1000:6.0f}ms")
    for name, s in results["floor"].items():
        ms = " ".join(f"{s[k] * 1000:6.0f}ms" for k in ("median", "min", "max"))
        print(f"{'engine floor, ' + name:<40} {ms}")
    total = results["steps"]["push → running"]["median"]
    floor = results["floor"]["floor: push → running"]["median"]
    verdict = "met" if total <= TARGET_S else "not met"
    print(
        f"push → running median {total:.2f} s: {verdict} (≤ {TARGET_S:g} s); the raw engine floor "
        f"{floor:.2f} s, gitdock's own {total - floor:+.2f} s; load {os.getloadavg()[0]:.1f}"
    )
    out = ROOT / ".bench" / "push.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
