"""Load and validate a 100-service Compose file with interpolation and extends.

Not collected by pytest. The target (issue 3) is at most 100 ms per load:

    .venv/bin/python tests/bench/bench_load.py [--services 100] [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from gitdock.specs import load_project

TARGET_MS = 100.0


def compose_text(services: int) -> str:
    lines = [
        "x-common: &common",
        "  restart: unless-stopped",
        "  logging: {driver: json-file, options: {max-size: 10m}}",
        "services:",
        "  base:",
        "    image: ${REGISTRY:-registry.local}/base:${TAG:-1}",
        "    <<: *common",
        "    environment:",
        "      LOG_LEVEL: ${LOG_LEVEL:-info}",
        "      REGION: $REGION",
        "    cap_drop: [ALL]",
        "    deploy: {resources: {limits: {cpus: '0.5', memory: 128m}}}",
    ]
    for i in range(services - 1):
        lines += [
            f"  svc{i}:",
            "    extends: base",
            f"    image: ${{REGISTRY:-registry.local}}/svc{i}:${{TAG:-1}}",
            f"    command: [serve, --port, '{8000 + i}']",
            "    environment:",
            f"      SERVICE: svc{i}",
            f"      PEER: http://svc{(i + 1) % (services - 1)}:{8000 + i}",
            "      DATA_DIR: ${DATA_DIR:-/var/lib/svc}",
            f"    ports: ['127.0.0.1:{20000 + i}:{8000 + i}']",
            f"    volumes: ['data{i % 10}:/var/lib/svc']",
            "    networks: [front, back]",
            "    healthcheck: {test: [CMD, 'true'], interval: 10s}",
            f"    depends_on: {{svc{i - 1}: {{condition: service_started}}}}"
            if i
            else "    depends_on: [base]",
        ]
    lines += ["networks:", "  front: {}", "  back: {internal: true}", "volumes:"]
    lines += [f"  data{i}: {{}}" for i in range(10)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "compose.yaml"
        path.write_text(compose_text(args.services))
        environ = {"REGION": "eu", "TAG": "2"}
        load_project([path], environ=environ)  # warm-up: imports, pydantic schema build
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            project = load_project([path], environ=environ)
            times.append((time.perf_counter() - started) * 1000)
    assert len(project.services) == args.services
    median = statistics.median(times)
    verdict = "ok" if median <= TARGET_MS else "OVER TARGET"
    print(
        f"load {args.services} services (interpolation + extends): median {median:.1f} ms, "
        f"min {min(times):.1f} ms, max {max(times):.1f} ms over {args.runs} runs "
        f"(target {TARGET_MS:.0f} ms: {verdict})"
    )


if __name__ == "__main__":
    main()
