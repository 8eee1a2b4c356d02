"""Tracing overhead: a no-op reconcile of 100 services, traced and exported vs. untraced.

Run: .venv/bin/python tests/bench/bench_tracing.py [--services 100] [--rounds 200]

Until the lead wires spans into converge(), one "reconcile" is simulated: the SYNC span, the
fetch/load/verify/observe/plan/execute step spans with the plan event, and ``--operations``
operation spans (default 100; a real no-op plan has none: ``--operations 0``), around the
pure ``plan_project`` call on a generated Project and the ObservedState of its last apply.
The baseline is only the planning call (no Docker, no git), so the ratio overstates the cost.
"Off" runs the same helpers with telemetry not set up (OTel's no-op tracer); "on" exports
over OTLP/HTTP to a live receiver on 127.0.0.1. The on-time includes flushing every span.
Target: on costs at most 10 % more than off. Exit 1 when it does not. Not a pytest module.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from gitdock.agent.metrics import Metrics  # noqa: E402
from gitdock.agent.telemetry import (  # noqa: E402
    OperationSpans,
    Step,
    TelemetryConfig,
    add_plan_event,
    setup_telemetry,
    step_span,
    sync_span,
)
from gitdock.runtime.desired import desired_container, desired_network  # noqa: E402
from gitdock.runtime.execute import ExecEvent  # noqa: E402
from gitdock.runtime.observe import ObservedContainer, ObservedImage, ObservedNetwork, ObservedState  # noqa: E402
from gitdock.runtime.plan import Operation, OpKind, plan_project  # noqa: E402
from gitdock.specs.model import Network, NetworkAttachment, Project, Service  # noqa: E402

IMAGE = "gitdock-test/busybox:1"
IMAGE_ID = "sha256:" + "1" * 64
TARGET = 0.10


def build(services: int) -> tuple[Project, ObservedState]:
    """A project of ``services`` services and the host state right after applying it."""
    nets = (("default", NetworkAttachment()),)
    project = Project(
        name="bench",
        services=tuple(
            Service(name=f"svc{i:03d}", image=IMAGE, networks=nets, environment=(("N", str(i)),))
            for i in range(services)
        ),
        networks=(Network(key="default", name="bench_default"),),
    )
    containers = []
    for s in project.services:
        dc = desired_container(project, s, 1)
        containers.append(
            ObservedContainer(
                id=f"id-{dc.name}",
                name=dc.name,
                image=s.image,
                image_id=IMAGE_ID,
                state="running",
                status="Up 1 minute",
                labels=dict(dc.create_body["Labels"]),
                networks={"bench_default": "nid"},
                created=100,
            )
        )
    dn = desired_network(project, project.networks[0])
    network = ObservedNetwork("nid", dn.name, "bridge", dict(dn.create_body["Labels"]))
    observed = ObservedState(tuple(containers), (network,), (), (ObservedImage(IMAGE_ID, (IMAGE,), ()),))
    return project, observed


def reconcile(project: Project, observed: ObservedState, ops: list[Operation], metrics: Metrics) -> None:
    """One simulated traced reconcile; the spans go wherever the global provider sends them."""
    with sync_span(project.name, repository_url="https://git.example.com/org/bench.git", ref="main") as sync:
        with step_span(Step.FETCH):
            sync.set_revision("f" * 40)
        with step_span(Step.LOAD):
            pass
        with step_span(Step.VERIFY):
            pass
        with step_span(Step.OBSERVE):
            pass
        with step_span(Step.PLAN) as span:
            plan = plan_project(project, observed)
            add_plan_event(span, plan.render(), operations=len(plan.operations))
        assert plan.is_empty, plan.render()
        with step_span(Step.EXECUTE):
            recorder = OperationSpans(metrics=metrics)
            for op in ops:
                recorder(ExecEvent(op, "start"))
                recorder(ExecEvent(op, "done"))
        metrics.set_drift(project.name, len(plan.operations))


def timed(
    rounds: int, world: tuple[Project, ObservedState, list[Operation]], metrics: Metrics, pause: float
) -> float:
    """Median seconds of one reconcile; the untimed ``pause`` between rounds is the agent's interval."""
    project, observed, ops = world
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        reconcile(project, observed, ops, metrics)
        times.append(time.perf_counter() - started)
        time.sleep(pause)
    return statistics.median(times)


# The receiver runs in its own process, as a collector would: decoding must not take our GIL.
RECEIVER_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from support.otlp_receiver import OTLPReceiver
with OTLPReceiver() as receiver:
    print(receiver.endpoint, flush=True)
    expected = int(sys.stdin.readline())
    print(len(receiver.wait_for_spans(expected, timeout=60)), flush=True)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--operations", type=int, default=100, help="operation spans per reconcile")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--pause", type=float, default=0.05, help="untimed seconds between reconciles")
    args = parser.parse_args()
    project, observed = build(args.services)
    ops = [
        Operation(i + 1, OpKind.START_CONTAINER, f"service:{c.service}:1", "exited (0)", target=c.id)
        for i, c in enumerate(observed.containers[: args.operations])
    ]
    world = (project, observed, ops)
    noop = Metrics.noop()
    timed(20, world, noop, args.pause)  # warm caches and imports
    off = timed(args.rounds, world, noop, args.pause)

    spans_per_reconcile = 7 + len(ops)
    expected = (20 + args.rounds) * spans_per_reconcile
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER_SCRIPT, str(ROOT / "tests")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdin is not None and receiver.stdout is not None
    try:
        endpoint = receiver.stdout.readline().strip()
        telemetry = setup_telemetry(TelemetryConfig(endpoint=endpoint), env={})
        timed(20, world, telemetry.metrics, args.pause)
        on = timed(args.rounds, world, telemetry.metrics, args.pause)
        started = time.perf_counter()
        flushed = telemetry.force_flush(30)
        flush = time.perf_counter() - started
        telemetry.shutdown(10)  # before the receiver goes: the last metrics push needs it
        receiver.stdin.write(f"{expected}\n")
        receiver.stdin.flush()
        got = int(receiver.stdout.readline() or 0)
    finally:
        receiver.kill()
        receiver.wait()

    overhead = on / off - 1
    per_span = (on - off) / spans_per_reconcile
    verdict = "OK" if overhead <= TARGET and got == expected else "SLOW"
    print(
        f"no-op reconcile of {args.services} services: {spans_per_reconcile} spans each, {args.rounds} rounds"
    )
    print(f"  tracing off: {off * 1000:.2f} ms (median)")
    print(f"  tracing on:  {on * 1000:.2f} ms (median), OTLP/HTTP to a receiver process")
    print(f"  exported {got}/{expected} spans; final flush {flush * 1000:.0f} ms (ok={flushed})")
    print(f"  overhead: {overhead:+.1%} (target <= {TARGET:.0%}), {per_span * 1e6:.0f} us per span")
    print(verdict)
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
