"""Plan a 100-service project with `build:` on 20 services whose contexts did not change.

Not collected by pytest. What is timed is what `gitdock plan` does beyond observing the host:
load the Compose file, bind every built service to its content tag (hash each context as the
tar the Engine would get, .dockerignore applied) and plan against the host as the last apply
left it (a snapshot made here, so no dockerd is needed). The plan must be empty.

    .venv/bin/python tests/bench/bench_build.py [--services 100] [--built 20] [--files 200] [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from gitdock.runtime.build import bind_builds
from gitdock.runtime.desired import desired_container, desired_network
from gitdock.runtime.observe import ObservedContainer, ObservedImage, ObservedNetwork, ObservedState
from gitdock.runtime.plan import plan_project
from gitdock.specs import load_project
from gitdock.specs.model import Project

IMAGE = "gitdock-test/busybox:1"


def write_project(root: Path, services: int, built: int, files: int) -> Path:
    """A compose.yaml with ``built`` services built from contexts of ``files`` files each."""
    lines = ["services:"]
    for i in range(services):
        lines.append(f"  svc{i}:")
        if i < built:
            context = root / f"svc{i}"
            (context / "src").mkdir(parents=True)
            (context / "Dockerfile").write_text(f"FROM {IMAGE}\nARG V=1\nRUN true\nCOPY src /src\n")
            (context / ".dockerignore").write_text("**/*.log\nnode_modules\n")
            for n in range(files):
                (context / "src" / f"file{n}.txt").write_text(f"{i}-{n}\n" * 64)
            lines += [f"    build: {{context: ./svc{i}, args: {{V: '{i}'}}}}"]
        else:
            lines += [f"    image: {IMAGE}"]
        lines += ["    command: [sleep, '3600']", f"    environment: {{N: '{i}'}}"]
    path = root / "compose.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def host_after_apply(project: Project) -> ObservedState:
    """What observe() returns right after ``project`` was applied: every container and image."""
    containers, images = [], {IMAGE: ObservedImage("sha256:" + "1" * 64, (IMAGE,), ())}
    for svc in project.services:
        image_id = "sha256:" + "1" * 64 if svc.build is None else f"sha256:{svc.name:0>64}"
        images.setdefault(svc.image, ObservedImage(image_id, (svc.image,), ()))
        dc = desired_container(project, svc, 1)
        containers.append(
            ObservedContainer(
                id=f"id-{svc.name}",
                name=dc.name,
                image=svc.image,
                image_id=image_id,
                state="running",
                status="Up",
                labels=dict(dc.create_body["Labels"]),
                networks={net: "nid" for net, _ in dc.networks},
                created=1,
            )
        )
    networks = tuple(
        ObservedNetwork(
            f"nid-{n.name}", n.name, "bridge", dict(desired_network(project, n).create_body["Labels"])
        )
        for n in project.networks
    )
    return ObservedState(tuple(containers), networks, (), tuple(images.values()))


def _labels(body: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = body["Labels"]
    return dict(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--built", type=int, default=20)
    parser.add_argument("--files", type=int, default=200, help="files in each build context")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        compose = write_project(Path(tmp), args.services, args.built, args.files)
        observed = host_after_apply(bind_builds(load_project([str(compose)], environ={})))
        timings: dict[str, list[float]] = {"load": [], "bind (hash contexts)": [], "plan": [], "total": []}
        for _ in range(args.runs):
            t0 = time.perf_counter()
            project = load_project([str(compose)], environ={})
            t1 = time.perf_counter()
            bound = bind_builds(project)
            t2 = time.perf_counter()
            plan = plan_project(bound, observed)
            t3 = time.perf_counter()
            assert plan.is_empty, plan.render()
            for key, value in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                timings[key].append(value * 1000)
    size = args.files * 64 * 8 // 1024
    print(f"{args.services} services, {args.built} built (contexts of {args.files} files, ~{size} KiB each)")
    for key, values in timings.items():
        values.sort()
        p95 = values[max(0, int(len(values) * 0.95) - 1)]
        print(f"  {key:<22} median {statistics.median(values):7.1f} ms   p95 {p95:7.1f} ms")


if __name__ == "__main__":
    main()
