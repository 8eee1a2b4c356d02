"""Time drift detection and healing against the real dockerd.

Run: .venv/bin/python tests/bench/bench_drift.py [--services 100] [--rounds 20] [--stops 5]
     .venv/bin/python tests/bench/bench_drift.py --existing PROJECT --state-dir DIR [--rounds 20]
     (only 1., against a project `gitdock apply --state-dir DIR` already applied, e.g. the
     1,000 services of tests/bench/bench_floor.py's generator: nothing is created or removed)
     .venv/bin/python tests/bench/bench_drift.py --agent PROJECT --compose FILE [--rounds 20]
     (the agent's own scheduled polls of that project, deployed from a git repository holding
     FILE: a real Reconciler and events watcher; the quiet polls reuse the last look)

1. A drift check of an N-service project, the cheap path (the four list calls of a no-op
   reconcile, events from the watcher): median and max wall time, and its API calls.
2. A container stopped by hand with the watcher running: time from `docker stop` returning to
   the drift item (event delivered + check), and to running again (heal_project).
Writes a table to stdout and JSON to .bench/drift.json. Not a pytest module.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from gitdock.agent.healing import heal_project  # noqa: E402
from gitdock.runtime.converge import converge  # noqa: E402
from gitdock.runtime.docker import DockerClient  # noqa: E402
from gitdock.runtime.drift.detect import DockerEvent, detect_drift  # noqa: E402
from gitdock.runtime.drift.watch import EventWatcher, check_drift  # noqa: E402
from gitdock.runtime.observe import observe  # noqa: E402
from gitdock.runtime.record import applied_record  # noqa: E402
from gitdock.specs import load_project  # noqa: E402
from support.docker import TEST_IMAGE, docker_cli, remove_project  # noqa: E402  (tests/ on sys.path first)

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def render_compose(services: int) -> str:
    lines = ["services:"]
    for i in range(services):
        lines += [
            f"  svc{i:03d}:",
            f"    image: {TEST_IMAGE}",
            f'    command: ["sh", "-c", "{LOOP}"]',
            "    environment:",
            f'      INDEX: "{i}"',
        ]
    return "\n".join(lines) + "\n"


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def check_existing(project: str, state_dir: Path, rounds: int) -> int:
    """The cheap check (1.) of a project already applied with its record in `state_dir`."""
    from gitdock.agent.applied_store import AppliedStore

    with AppliedStore.open(state_dir) as store:
        record = store.load(project)
    if record is None:
        print(f"no applied record of {project} in {state_dir}", file=sys.stderr)
        return 1
    with DockerClient() as docker:
        check_drift(docker, record, events=[])  # warm the version
        calls0, times, listed, pure = sum(docker.calls.values()), [], [], []
        for _ in range(rounds):
            t = time.perf_counter()
            report = check_drift(docker, record, events=[])
            times.append(time.perf_counter() - t)
            assert not report.has_drift, report.render_text()
        calls = (sum(docker.calls.values()) - calls0) / rounds
        for _ in range(rounds):
            t = time.perf_counter()
            snapshot = observe(docker)
            listed.append(time.perf_counter() - t)
            t = time.perf_counter()
            detect_drift(record, snapshot, now=time.time())
            pure.append(time.perf_counter() - t)

    def spread(xs: list[float]) -> str:
        return f"median {ms(statistics.median(xs))} ms, min {ms(min(xs))} ms, max {ms(max(xs))} ms"

    print(
        f"drift check of {project}: {len(record.containers)} recorded, {len(snapshot.containers)} on the host"
    )
    print(f"  check_drift ({calls:.0f} API calls, no inspect): {spread(times)}")
    print(f"  its observe alone: {spread(listed)}; detect_drift alone (pure): {spread(pure)}")
    return 0


def agent_polls(project: str, compose: Path, rounds: int) -> int:
    """The agent's scheduled polls of an unmoved revision of ``project`` (already running):
    each poll's wall time, its drift check (the observe step with the check) and its calls."""
    from gitdock.agent.config import parse_config
    from gitdock.agent.git import GitCache
    from gitdock.agent.reconcile import DEEP_CHECK_EVERY, Reconciler
    from gitdock.agent.state import StateStore, Trigger
    from support.gitserver import Upstream

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        upstream = Upstream(tmp / "app.git")
        upstream.commit({"compose.yaml": compose.read_text()}, "the project")
        source_line = f"  - {{name: app, url: '{upstream.url}', project: {project}}}\n"
        text = f"state_dir: {tmp / 'state'}\nsources:\n{source_line}"
        config = parse_config(text, str(tmp / "agent.yaml"))
        store = StateStore(tmp / "state.db")
        with DockerClient() as docker:
            watcher = EventWatcher(docker, [project], on_event=lambda e: None)
            reconciler = Reconciler(config, store, GitCache(tmp / "cache"), docker)
            reconciler.watcher = watcher
            source = config.sources[0]
            looks: list[float] = []  # the observe + drift check part of each poll
            look_unmoved = reconciler._look_unmoved

            def timed(*args: Any) -> Any:
                t = time.perf_counter()
                try:
                    return look_unmoved(*args)
                finally:
                    looks.append(time.perf_counter() - t)

            reconciler._look_unmoved = timed  # type: ignore[method-assign,assignment]
            with watcher:
                while watcher.quiet_token() is None:
                    time.sleep(0.05)
                first = reconciler.reconcile(source, Trigger.MANUAL)
                print(
                    f"first reconcile (adopts the running project): {first.reason} in {ms(first.duration)} ms"
                )
                rows: list[tuple[bool, float, int, float]] = []
                looks.clear()
                for _ in range(rounds):
                    memo = reconciler.memo("app")
                    deep = (memo.drift_checks + 1) % DEEP_CHECK_EVERY == 1
                    calls0 = sum(docker.calls.values())
                    t = time.perf_counter()
                    result = reconciler.reconcile(source, Trigger.SCHEDULE)
                    took = time.perf_counter() - t
                    rows.append((deep, took, sum(docker.calls.values()) - calls0, looks[-1]))
                    assert result.reason == "UpToDate", result
            reconciler.close()
        store.close()
    for label, pick in (("quiet (reused look)", False), ("resync (deep check)", True)):
        times = [t for deep, t, _, _ in rows if deep is pick]
        calls = [c for deep, _, c, _ in rows if deep is pick]
        checks = [d for deep, _, _, d in rows if deep is pick]
        if times:
            print(
                f"  {label}: {len(times)} polls, median {ms(statistics.median(times))} ms "
                f"(max {ms(max(times))} ms), of which observe + drift check median "
                f"{ms(statistics.median(checks))} ms (max {ms(max(checks))} ms), "
                f"calls {statistics.median(calls):.0f}"
            )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--stops", type=int, default=5)
    parser.add_argument("--existing", metavar="PROJECT", help="only time the check of this applied project")
    parser.add_argument("--state-dir", type=Path, help="with --existing: where its apply recorded it")
    parser.add_argument("--agent", metavar="PROJECT", help="time the agent's polls of this running project")
    parser.add_argument("--compose", type=Path, help="with --agent: the project's Compose file")
    args = parser.parse_args()
    if args.agent:
        return agent_polls(args.agent, args.compose, args.rounds)
    if args.existing:
        return check_existing(args.existing, args.state_dir or Path("."), args.rounds)

    name = f"gdbench-drift-{secrets.token_hex(3)}"
    results: dict[str, Any] = {"services": args.services, "project": name}
    with tempfile.TemporaryDirectory() as tmp:
        compose = Path(tmp) / "compose.yaml"
        compose.write_text(render_compose(args.services))
        project = load_project([compose], project_name=name)
        docker = DockerClient()
        try:
            started = time.monotonic()
            outcome = converge(project, docker, concurrency=8)
            assert outcome.report is not None and outcome.report.ok, "cold apply failed"
            results["cold_apply_s"] = round(time.monotonic() - started, 1)
            record = applied_record(project, observe(docker), applied_at=time.time())
            assert len(record.containers) == args.services

            # 1. The cheap check: four list calls, no inspect, events from the watcher.
            check_drift(docker, record, events=[])  # warm the connection and version
            times, pure = [], []
            calls0 = sum(docker.calls.values())
            for _ in range(args.rounds):
                t = time.perf_counter()
                report = check_drift(docker, record, events=[])
                times.append(time.perf_counter() - t)
                assert not report.has_drift, report.render_text()
            calls = (sum(docker.calls.values()) - calls0) / args.rounds
            snapshot = observe(docker)
            for _ in range(args.rounds):
                t = time.perf_counter()
                detect_drift(record, snapshot, now=time.time())
                pure.append(time.perf_counter() - t)
            results["check_ms"] = {"median": ms(statistics.median(times)), "max": ms(max(times))}
            results["check_api_calls"] = calls
            results["detect_pure_ms"] = {"median": ms(statistics.median(pure)), "max": ms(max(pure))}
            results["containers_on_host"] = len(snapshot.containers)

            # 2. Stopped by hand -> noticed -> healed.
            events: list[DockerEvent] = []
            arrived = threading.Condition()

            def on_event(event: DockerEvent) -> None:
                with arrived:
                    events.append(event)
                    arrived.notify_all()

            noticed, healed = [], []
            with EventWatcher(docker, name, on_event) as watcher:
                assert watcher.connected.wait(10)
                for k in range(args.stops):
                    target = f"{name}-svc{k:03d}-1"
                    with arrived:
                        events.clear()
                    docker_cli("stop", target)
                    t0 = time.monotonic()
                    with arrived:
                        arrived.wait_for(lambda: any(e.action == "stop" for e in events), timeout=10)
                        seen = list(events)
                    report = check_drift(docker, record, events=seen)
                    assert [i.resource for i in report.items] == [f"service:svc{k:03d}:1"], (
                        report.render_text()
                    )
                    noticed.append(time.monotonic() - t0)
                    watcher.pause(name)
                    heal_project(project, docker, report, record)
                    while json.loads(docker_cli("inspect", target))[0]["State"]["Running"] is not True:
                        time.sleep(0.01)
                    healed.append(time.monotonic() - t0)
                    watcher.resume(name)
            results["stop_to_drift_item_ms"] = {
                "median": ms(statistics.median(noticed)),
                "max": ms(max(noticed)),
            }
            results["stop_to_running_ms"] = {"median": ms(statistics.median(healed)), "max": ms(max(healed))}
        finally:
            docker.close()
            remove_project(name)

    out = ROOT / ".bench"
    out.mkdir(exist_ok=True)
    (out / "drift.json").write_text(json.dumps(results, indent=2))
    print(f"drift check, {args.services} services ({results['containers_on_host']} containers on the host):")
    print(
        f"  check_drift (4 list calls, no inspect): median {results['check_ms']['median']} ms, "
        f"max {results['check_ms']['max']} ms, {results['check_api_calls']:.0f} API calls"
    )
    print(f"  detect_drift alone (pure):             median {results['detect_pure_ms']['median']} ms")
    print(
        f"  docker stop -> drift item:             median {results['stop_to_drift_item_ms']['median']} ms, "
        f"max {results['stop_to_drift_item_ms']['max']} ms"
    )
    print(
        f"  docker stop -> running again (heal):   median {results['stop_to_running_ms']['median']} ms, "
        f"max {results['stop_to_running_ms']['max']} ms"
    )
    print(f"  (cold apply of the project: {results['cold_apply_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
