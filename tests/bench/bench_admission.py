"""What a deploy policy check adds to the plan of a 100-service project.

Not collected by pytest. Each service has binds, capabilities, sysctls and security options,
so every check of the level has something to look at; the project passes (a passing check
walks everything, a refusal can only stop early). Prints the median of ``--runs`` runs of
``check_project`` at baseline and restricted, beside the pure plan of the same project
against an empty host (``plan_project``), and the check's share of the two together:

    .venv/bin/python tests/bench/bench_admission.py [--services 100] [--runs 200]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gitdock.runtime.admission import Level, Policy, check_project
from gitdock.runtime.observe import ObservedState
from gitdock.runtime.plan import plan_project
from gitdock.specs import load_project


def compose_text(services: int) -> str:
    lines = ["services:"]
    for i in range(services):
        lines += [
            f"  svc{i}:",
            f"    image: registry.local/svc{i}:1",
            "    user: '1000:1000'",
            "    read_only: true",
            "    cap_drop: [ALL]",
            "    cap_add: [NET_BIND_SERVICE]",
            "    security_opt: ['no-new-privileges:true']",
            "    sysctls: {net.ipv4.tcp_syncookies: 1}",
            "    volumes:",
            f"      - /srv/data/svc{i}:/data",
            f"      - /srv/data/../data/shared/{i}/:/shared:ro",
            f"      - cache{i}:/cache",
            "    tmpfs: [/tmp]",
        ]
    lines.append("volumes:")
    lines += [f"  cache{i}: {{}}" for i in range(services)]
    return "\n".join(lines) + "\n"


def median_ms(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "compose.yaml"
        path.write_text(compose_text(args.services))
        project = load_project([path], environ={}, project_name="bench")
    baseline = Policy(Level.BASELINE)
    restricted = Policy(Level.RESTRICTED, bind_prefixes=("/srv/data",))
    assert check_project(project, baseline) == [] and check_project(project, restricted) == []
    empty = ObservedState()
    plan_ms = median_ms(max(args.runs // 10, 5), lambda: plan_project(project, empty))
    print(f"{args.services} services, median of {args.runs} runs")
    print(f"plan_project (empty host):  {plan_ms:8.3f} ms")
    for name, policy in (("baseline", baseline), ("restricted", restricted)):
        check_ms = median_ms(args.runs, functools.partial(check_project, project, policy))
        share = 100 * check_ms / (plan_ms + check_ms)
        print(f"check_project {name:<11} {check_ms:8.3f} ms  ({share:.1f} % of check + plan)")


if __name__ == "__main__":
    main()
