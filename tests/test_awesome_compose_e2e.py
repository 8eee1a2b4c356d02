"""docker/awesome-compose's image-only projects apply and converge on the real dockerd.

Each project stored under ``compose_corpus/real_world/awesome-compose/`` whose services all
name an ``image:`` (no ``build:``, so nothing needs the internet) is copied to a temporary
folder and rewritten to run offline: every service's image becomes the local busybox test
image with a command that stays up and stops on TERM. Everything else stays as upstream wrote
it (volumes, networks, depends_on, environment, env files, sysctls, restart, ...), but for the
few changes a shared test host needs, each said where it is made. Then ``gitdock apply`` under a
unique ``gdt-`` project: every container runs, a second apply makes 0 mutating calls, and
``gitdock down`` leaves nothing of the project behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.docker import TEST_IMAGE, docker_cli, list_project_resources

pytestmark = pytest.mark.docker

CORPUS = Path(__file__).resolve().parent / "compose_corpus" / "real_world" / "awesome-compose"
CLI = (sys.executable, "-m", "gitdock.agent.cli.main")
LOOP = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
MOUNTS = "{{range .Mounts}}{{.Type}} {{.Destination}};{{end}}"
# Where dockerd publishes a port that names no address: a port is free only if it is free there.
ANY_ADDRESS = "0.0.0.0"  # noqa: S104

# The image-only projects (the other 26 build from sources the corpus does not store).
PROJECTS = (
    "elasticsearch-logstash-kibana",
    "gitea-postgres",
    "minecraft",
    "nextcloud-postgres",
    "nextcloud-redis-mariadb",
    "odoo-postgres",
    "pihole-cloudflared-DoH",
    "plex",
    "portainer",
    "postgresql-pgadmin",
    "prometheus-grafana",
    "wireguard",
    "wordpress-mysql",
)


def compose_file(folder: Path) -> Path:
    """The project's Compose file, by the names Compose looks for."""
    for name in ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(folder)


def is_port_free(port: int, proto: str) -> bool:
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((ANY_ADDRESS, port))
        except OSError:
            return False
    return True


def free_port(proto: str) -> int:
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((ANY_ADDRESS, 0))
        return int(sock.getsockname()[1])


def remap_port(entry: Any) -> Any:
    """A short-syntax ``[ip:]host:container[/proto]`` with a host port in use here gets a free one."""
    if not isinstance(entry, str | int):
        return entry
    spec, _, proto = str(entry).partition("/")
    parts = spec.split(":")
    if len(parts) < 2 or not parts[-2].isdigit():
        return entry  # no published host port, a range, or a variable: left as written
    if is_port_free(int(parts[-2]), proto or "tcp"):
        return entry
    parts[-2] = str(free_port(proto or "tcp"))
    return ":".join(parts) + (f"/{proto}" if proto else "")


def relocate_bind(entry: Any, scratch: Path) -> Any:
    """An absolute or ``~`` bind source that does not exist here moves under ``scratch``
    (dockerd would otherwise create it as root on the shared host: wireguard's
    /usr/share/appdata/..., pihole's /etc/pihole/, minecraft's ~/minecraft_data)."""
    if not isinstance(entry, str) or not entry.startswith(("/", "~")):
        return entry
    source, _, rest = entry.partition(":")
    if Path(source).expanduser().exists():
        return entry
    return f"{scratch}/{source.lstrip('~/')}:{rest}"


def rewrite_service(service: dict[str, Any], project: str, scratch: Path) -> None:
    """Point ``service`` at the local test image; keep the rest but what a shared host needs."""
    service["image"] = TEST_IMAGE
    service["command"] = LOOP
    service.pop("entrypoint", None)
    if "container_name" in service:  # container names are host-wide: keep them, per project
        service["container_name"] = f"{project}-{service['container_name']}"
    # Healthchecks stay as written: busybox lacks curl, so elasticsearch's turns unhealthy after
    # its retries, but nothing here waits on it (depends_on is service_started) and it still runs.
    if isinstance(service.get("ports"), list):
        service["ports"] = [remap_port(p) for p in service["ports"]]
    if isinstance(service.get("volumes"), list):
        service["volumes"] = [relocate_bind(v, scratch) for v in service["volumes"]]


def prepare(project_dir: Path, project: str, scratch: Path) -> Path:
    """Copy ``project_dir`` to ``scratch`` and rewrite its Compose file; return the file."""
    copy = scratch / project_dir.name
    shutil.copytree(project_dir, copy)
    path = compose_file(copy)
    doc = yaml.safe_load(path.read_text())
    for service in doc["services"].values():
        rewrite_service(service, project, scratch / "host")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# Variables set for the run, overriding the project's .env (a host path it names, made here).
ENVIRON = {"plex": lambda scratch: {"PLEX_MEDIA_PATH": str(scratch / "host" / "media")}}


def gitdock(command: str, path: Path, project: str, environ: dict[str, str]) -> str:
    result = subprocess.run(
        [*CLI, command, "-f", str(path), "-p", project],
        capture_output=True,
        text=True,
        env={**os.environ, "TERM": "dumb", **environ},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"gitdock {command}: {result.stdout}{result.stderr}"
    return result.stdout


def states_of(project: str) -> dict[str, str]:
    """Container name -> state, for every container of ``project``."""
    out = docker_cli(
        "ps", "-a", "--filter", f"label=io.gitdock.project={project}", "--format", "{{.Names}} {{.State}}"
    )
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


@pytest.mark.parametrize("name", PROJECTS)
def test_an_image_only_project_converges_and_goes(name: str, project_name: str, tmp_path: Path) -> None:
    path = prepare(CORPUS / name, project_name, tmp_path)
    environ = ENVIRON[name](tmp_path) if name in ENVIRON else {}
    services = yaml.safe_load(path.read_text())["services"]
    gitdock("apply", path, project_name, environ)
    states = states_of(project_name)
    assert len(states) == len(services), states
    assert set(states.values()) == {"running"}, states
    if name == "prometheus-grafana":  # a bind and a volume at /prometheus: the later one stays
        mounts = docker_cli("inspect", "-f", MOUNTS, f"{project_name}-prometheus").strip()
        assert mounts == "volume /prometheus;", mounts
    again = gitdock("apply", path, project_name, environ)
    assert ", 0 mutating)" in again, again
    gitdock("down", path, project_name, environ)
    assert not any(list_project_resources(project_name).get(kind) for kind in ("containers", "networks"))
