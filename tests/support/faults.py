"""Helpers for the fault suite: run `gitdock apply` as a real process, kill it, and check that a
project converged. Everything is read through the `docker` CLI (``-H`` for a private dockerd),
never through gitdock, so a bug in gitdock cannot vouch for itself. Nothing here imports gitdock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

CLI = (sys.executable, "-m", "gitdock.agent.cli.main")
VOLUME_IMAGE = "gitdock-test/volume:1"  # busybox with `VOLUME /data`, built by build_volume_image


def docker(*args: str, host: str | None = None, input: str | None = None, timeout: float = 120) -> str:
    argv = ["docker", *(["-H", host] if host else []), *args]
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def build_volume_image(base: str, host: str | None = None) -> str:
    """Build ``VOLUME_IMAGE`` FROM ``base`` with the classic builder (no context, no network)."""
    docker("build", "-q", "-t", VOLUME_IMAGE, "-", host=host, input=f"FROM {base}\nVOLUME /data\n")
    return VOLUME_IMAGE


def gitdock_env(host: str | None = None) -> dict[str, str]:
    return {**os.environ, **({"DOCKER_HOST": host} if host else {})}


def run_gitdock(
    *args: str, host: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=gitdock_env(host), timeout=timeout, check=False
    )


def start_apply(args: list[str], host: str | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, "apply", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=gitdock_env(host)
    )


def apply_killed_after(args: list[str], delay: float, host: str | None = None) -> int | None:
    """Start `gitdock apply ARGS`, SIGKILL it after ``delay`` seconds; its exit code if it
    finished first (None when it was killed)."""
    proc = start_apply(args, host)
    try:
        return proc.wait(delay)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def timed_apply(args: list[str], host: str | None = None) -> float:
    """How long one `gitdock apply` takes here (to spread the kills over it); it must succeed."""
    started = time.monotonic()
    result = run_gitdock("apply", *args, host=host)
    if result.returncode != 0:
        raise AssertionError(f"apply failed:\n{result.stdout}\n{result.stderr}")
    return time.monotonic() - started


@dataclass(frozen=True)
class Seen:
    """One container of a project as `docker inspect` shows it."""

    id: str
    name: str
    service: str
    number: int
    state: str
    env: tuple[str, ...]
    mounts: tuple[tuple[str, str], ...]  # (destination, volume name or bind source)


def project_containers(project: str, host: str | None = None) -> list[Seen]:
    """The project's containers; listed again when one goes away between the list and the inspect."""
    for _ in range(20):
        try:
            return _project_containers(project, host)
        except RuntimeError as exc:
            if "No such object" not in str(exc):
                raise
    return _project_containers(project, host)


def _project_containers(project: str, host: str | None) -> list[Seen]:
    ids = docker(
        "ps", "-aq", "--no-trunc", "--filter", f"label=io.gitdock.project={project}", host=host
    ).split()
    if not ids:
        return []
    seen = []
    for info in json.loads(docker("inspect", *ids, host=host)):
        labels: dict[str, str] = info["Config"].get("Labels") or {}
        seen.append(
            Seen(
                id=info["Id"],
                name=info["Name"].lstrip("/"),
                service=labels.get("io.gitdock.service", ""),
                number=int(labels.get("io.gitdock.container-number", "0")),
                state=info["State"]["Status"],
                env=tuple(info["Config"].get("Env") or ()),
                mounts=tuple(
                    sorted(
                        (m["Destination"], m.get("Name") or m.get("Source", ""))
                        for m in info.get("Mounts") or []
                    )
                ),
            )
        )
    return sorted(seen, key=lambda c: c.name)


def convergence_problems(
    project: str,
    replicas: dict[str, int],
    names: dict[tuple[str, int], str],
    env: str,
    host: str | None = None,
) -> list[str]:
    """What keeps ``project`` from being converged: each replica exactly one container under its
    own name, running, with ``env`` in its environment, and no other container (no `_` leftover)."""
    seen = project_containers(project, host)
    problems = []
    wanted = {(svc, n) for svc, count in replicas.items() for n in range(1, count + 1)}
    for c in seen:
        if (c.service, c.number) not in wanted:
            problems.append(f"{c.name}: not a wanted replica")
    for slot in sorted(wanted):
        found = [c for c in seen if (c.service, c.number) == slot]
        if len(found) != 1:
            problems.append(f"{slot}: {len(found)} containers {[c.name for c in found]}")
            continue
        (c,) = found
        if c.name != names[slot]:
            problems.append(f"{slot}: named {c.name}, not {names[slot]}")
        if c.state != "running":
            problems.append(f"{c.name}: {c.state}")
        if env not in c.env:
            problems.append(f"{c.name}: {env} not in its environment")
    return problems


def read_file(container: str, path: str, host: str | None = None) -> str:
    return docker("exec", container, "cat", path, host=host).strip()


def write_file(container: str, path: str, text: str, host: str | None = None) -> None:
    docker("exec", container, "sh", "-c", f"printf %s '{text}' > {path}", host=host)


def volume_of(container: str, destination: str, host: str | None = None) -> str:
    info: list[dict[str, Any]] = json.loads(docker("inspect", container, host=host))
    return next(str(m.get("Name", "")) for m in info[0]["Mounts"] if m["Destination"] == destination)
