"""Parity with docker-compose 1.29.2: the same project deployed by both gives the same containers.

Each project is deployed twice, one after the other so published ports never collide:
``docker-compose up -d`` → inspect → ``down``, then gitdock apply → inspect → down. The
containers are compared field by field after normalising what differs by design (project,
container and label names). Every other difference is either fixed or listed in
``KNOWN_DIFFERENCES`` with its reason.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gitdock.runtime.converge import converge, tear_down
from gitdock.runtime.docker import DockerClient
from gitdock.specs import load_project
from support.docker import TEST_IMAGE, docker_cli

pytestmark = [pytest.mark.docker, pytest.mark.compose]

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

# Differences between gitdock and docker-compose 1.29 that are known and accepted, as
# (field, reason). The comparison drops these fields before it compares.
KNOWN_DIFFERENCES: dict[str, str] = {
    # links: [data:store]. compose 1.29 also adds "data_1" and the container's own name as
    # link aliases; the Specification defines only SERVICE[:ALIAS], which gitdock sends.
    "Links": "compose 1.29 adds container-name link aliases beyond the one written",
}
# Fields compared only when both sides set them: compose 1.29 sends explicit defaults that
# gitdock leaves to Docker (inspect shows null or zero versus the explicit value).
DEFAULTED = ("Init", "ShmSize")

CONFIG_FIELDS = (
    "Env",
    "Cmd",
    "Entrypoint",
    "User",
    "WorkingDir",
    "ExposedPorts",
    "Healthcheck",
    "Tty",
    "OpenStdin",
    "StopSignal",
    "StopTimeout",
    "Domainname",
)
HOST_FIELDS = (
    "PortBindings",
    "RestartPolicy",
    "NetworkMode",
    "CapAdd",
    "CapDrop",
    "Privileged",
    "ReadonlyRootfs",
    "Tmpfs",
    "ShmSize",
    "Ulimits",
    "Memory",
    "NanoCpus",
    "CpuShares",
    "PidsLimit",
    "MemoryReservation",
    "LogConfig",
    "ExtraHosts",
    "Dns",
    "DnsSearch",
    "DnsOptions",
    "Sysctls",
    "Init",
    "SecurityOpt",
    "GroupAdd",
    "IpcMode",
    "PidMode",
    "VolumesFrom",
)

PARITY_PROJECT = f"""
services:
  full:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
    init: true
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    read_only: true
    shm_size: 32m
    tmpfs: [/run]
    dns: [10.0.0.53]
    dns_search: example.com
    dns_opt: [ndots:2]
    extra_hosts: ["db.local:10.0.0.2"]
    expose: ["81", "82/udp"]
    tty: true
    stdin_open: true
    stop_signal: SIGINT
    stop_grace_period: 3s
    logging: {{driver: json-file, options: {{max-size: 1m}}}}
    mem_limit: 64m
    mem_reservation: 32m
    cpus: 0.5
    cpu_shares: 512
    pids_limit: 100
    sysctls: {{net.core.somaxconn: 1024}}
    ulimits: {{nofile: {{soft: 1024, hard: 2048}}}}
    security_opt: [no-new-privileges:true]
    group_add: ["100"]
    labels: {{tier: full}}
    user: "1000:1000"
    working_dir: /tmp
    environment: {{A: "1"}}
    healthcheck: {{test: ["CMD", "true"], interval: 5s}}
    links: ["data:store"]
    volumes_from: ["data:ro"]
    secrets: [token]
    ports: ["127.0.0.1::80"]
    restart: on-failure:3
  data:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
    init: true
    volumes: [/data, "cache:/cache"]
    privileged: false
    ipc: shareable
secrets:
  token: {{file: ./token.txt}}
volumes:
  cache:
    driver_opts: {{type: tmpfs, device: tmpfs}}
"""


def _rewrite(value: Any, rewrite: Any) -> Any:
    if isinstance(value, str):
        return rewrite(value)
    if isinstance(value, list | tuple):
        return [_rewrite(v, rewrite) for v in value]
    if isinstance(value, dict):
        return {rewrite(k): _rewrite(v, rewrite) for k, v in value.items()}
    return value


def _strip_project(value: Any, project: str) -> Any:
    """Project-prefixed names (``<project>_default``) as ``<p>_default``, and container names
    in either form (compose 1.29's ``<p>_web_1``, gitdock's ``<p>-web-1``) as ``<c:web:1>``."""
    prefix = re.compile(rf"{re.escape(project)}[-_]")
    container = re.compile(r"<p>_([\w.-]+?)[_-]([0-9]+)(?=$|:)")
    return _rewrite(value, lambda s: container.sub(r"<c:\1:\2>", prefix.sub("<p>_", s)))


def _mount(m: dict[str, Any]) -> tuple[str, str, str, bool]:
    source = m.get("Name") if m["Type"] == "volume" else m["Source"]
    if m["Type"] == "volume" and re.fullmatch(r"[0-9a-f]{64}", source or ""):
        source = "<anonymous>"
    return (m["Type"], source or "", m["Destination"], m["RW"])


def normalise(inspect: dict[str, Any], project: str) -> dict[str, Any]:
    """The fields parity compares, with project names and container ids normalised."""
    config, host = inspect["Config"], inspect["HostConfig"]
    out: dict[str, Any] = {f"Config.{k}": config.get(k) for k in CONFIG_FIELDS}
    out["Config.Labels"] = {
        k: v
        for k, v in (config.get("Labels") or {}).items()
        if not k.startswith(("com.docker.compose.", "io.gitdock."))
    }
    out.update({f"HostConfig.{k}": host.get(k) for k in HOST_FIELDS})
    # compose 1.29 sends tmpfs as HostConfig.Tmpfs, gitdock as tmpfs Mounts: the same mounts.
    out["HostConfig.Tmpfs"] = sorted(
        [*(host.get("Tmpfs") or {}), *(m["Target"] for m in host.get("Mounts") or [] if m["Type"] == "tmpfs")]
    )
    out["Mounts"] = sorted(_mount(m) for m in inspect["Mounts"] if m["Type"] != "tmpfs")
    short_id = inspect["Id"][:12]
    networks = inspect["NetworkSettings"]["Networks"]
    out["Networks"] = {
        name: sorted(a for a in (ep.get("Aliases") or []) if a != short_id) for name, ep in networks.items()
    }
    out["Links"] = {name: sorted(ep.get("Links") or []) for name, ep in networks.items()}
    # Static addresses (issue 11: ipv4_address, link_local_ips reach the endpoint).
    out["IPAMConfig"] = {name: ep.get("IPAMConfig") or None for name, ep in networks.items()}
    # Order and emptiness carry no meaning here: gitdock sorts environment entries (compose
    # keeps file order), and Docker reports an empty setting as {} or null by who sent it.
    out["Config.Env"] = sorted(out["Config.Env"] or [])
    out = {k: v if v not in ({}, []) else None for k, v in out.items()}
    return _strip_project(out, project)  # type: ignore[no-any-return]


def inspect_project(label: str, project: str) -> dict[str, dict[str, Any]]:
    """Inspect every container of the project, keyed by service name."""
    out = docker_cli("ps", "-aq", "--filter", f"label={label}={project}")
    ids = out.split()
    found = json.loads(docker_cli("inspect", *ids)) if ids else []
    names = {c["Id"]: c["Name"].lstrip("/") for c in found}
    for c in found:
        # compose 1.29 resolves volumes_from to container ids; gitdock sends names.
        volumes_from = c["HostConfig"].get("VolumesFrom") or []
        c["HostConfig"]["VolumesFrom"] = [
            ":".join([names.get(v.split(":")[0], v.split(":")[0]), *v.split(":")[1:]]) for v in volumes_from
        ] or None
    service_label = "com.docker.compose.service" if label.startswith("com.") else "io.gitdock.service"
    return {c["Config"]["Labels"][service_label]: normalise(c, project) for c in found}


def resources(project: str, declared_subnets: set[str]) -> dict[str, Any]:
    """Networks (IPAM, Internal) and volumes (driver, options) of the project, normalised.

    Subnets are compared for the networks in ``declared_subnets`` (keys); Docker picks the
    others from its pools, so they differ between any two deployments.
    """
    net_ids = docker_cli("network", "ls", "-q", "--filter", f"name={project}_").split()
    nets = json.loads(docker_cli("network", "inspect", *net_ids)) if net_ids else []
    vol_names = docker_cli("volume", "ls", "-q", "--filter", f"name={project}_").split()
    vols = json.loads(docker_cli("volume", "inspect", *vol_names)) if vol_names else []
    data = {
        "networks": {
            n["Name"]: {
                "Internal": n["Internal"],
                "Driver": n["Driver"],
                "Subnets": sorted(c.get("Subnet", "") for c in n["IPAM"]["Config"] or [])
                if n["Name"].split("_", 1)[-1] in declared_subnets
                else "<auto>",
            }
            for n in nets
        },
        "volumes": {v["Name"]: {"Driver": v["Driver"], "Options": v["Options"] or {}} for v in vols},
    }
    return _strip_project(data, project)  # type: ignore[no-any-return]


def compose(project: str, compose_file: Path, *args: str) -> None:
    proc = subprocess.run(
        ["docker-compose", "-p", project, "-f", str(compose_file), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def deploy_both(compose_file: Path, project: str) -> tuple[Any, Any]:
    """(compose's view, gitdock's view) of the same file, deployed one after the other."""
    theirs_name = f"{project}-dc"
    loaded = load_project([compose_file], project_name=project)
    declared = {n.key for n in loaded.networks if n.subnets}
    try:
        compose(theirs_name, compose_file, "up", "-d")
        theirs = (
            inspect_project("com.docker.compose.project", theirs_name),
            resources(theirs_name, declared),
        )
    finally:
        compose(theirs_name, compose_file, "down", "--volumes")
    with DockerClient() as docker:
        try:
            outcome = converge(loaded, docker)
            assert outcome.report is None or outcome.report.ok
            ours = (inspect_project("io.gitdock.project", project), resources(project, declared))
        finally:
            tear_down(project, docker, remove_volumes=True)
    return theirs, ours


def assert_same(theirs: Any, ours: Any) -> None:
    (their_containers, their_resources), (our_containers, our_resources) = theirs, ours
    assert sorted(our_containers) == sorted(their_containers)
    for service, mine in our_containers.items():
        other = their_containers[service]
        for field in list(mine):
            name = field.split(".")[-1]
            unset = not mine[field] or not other.get(field)
            if name in KNOWN_DIFFERENCES or (name in DEFAULTED and unset):
                mine.pop(field), other.pop(field, None)
        differing = {
            k: {"gitdock": mine.get(k), "compose": other.get(k)} for k in mine if mine[k] != other.get(k)
        }
        assert not differing, f"{service}: {json.dumps(differing, indent=1)}"
    assert our_resources == their_resources


def parity_variant(example: Path, tmp_path: Path) -> Path:
    """The example with published host ports made random, so nothing collides."""
    text = example.read_text()
    text = re.sub(r'"127\.0\.0\.1:(?:[0-9]+|\$\{[A-Z_]+:-[0-9]+\}):', '"127.0.0.1::', text)
    path = tmp_path / example.parent.name / "compose.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


# hostnet binds 127.0.0.1:18082 inside the host namespace; configs-secrets uses the content
# and environment sources compose 1.29 does not know (see the README's list).
PARITY_EXAMPLES = ["webapp", "proxy", "migrate", "scaled"]


@pytest.mark.parametrize("example", PARITY_EXAMPLES)
def test_example_matches_docker_compose(example: str, tmp_path: Path, project_name: str) -> None:
    path = parity_variant(EXAMPLES / example / "compose.yaml", tmp_path)
    # The examples set name:, which would win over -p for compose; drop it.
    path.write_text(re.sub(r"(?m)^name: .*$", "", path.read_text()))
    theirs, ours = deploy_both(path, project_name)
    assert_same(theirs, ours)


def test_every_supported_attribute_matches_docker_compose(tmp_path: Path, project_name: str) -> None:
    (tmp_path / "token.txt").write_text("s3cret\n")
    path = tmp_path / "compose.yaml"
    path.write_text(PARITY_PROJECT)
    theirs, ours = deploy_both(path, project_name)
    assert_same(theirs, ours)


# Issue 11's keys that docker-compose 1.29 also knows: static and link-local addresses,
# network priority, nocopy volumes, bind propagation, extra hosts as a mapping.
PARITY_ISSUE_11 = f"""
services:
  addressed:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
    extra_hosts: {{one: 10.0.0.1, two: 10.0.0.2}}
    networks:
      low: {{priority: 1}}
      high:
        priority: 10
        ipv4_address: 172.31.77.10
        link_local_ips: [169.254.77.10]
    volumes:
      - type: volume
        source: data
        target: /data
        volume: {{nocopy: true}}
      - ./conf:/conf:ro,rprivate
networks:
  low: {{}}
  high:
    ipam:
      config: [{{subnet: 172.31.77.0/24}}]
volumes:
  data: {{}}
"""


def test_issue_11_keys_match_docker_compose(tmp_path: Path, project_name: str) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "compose.yaml"
    path.write_text(PARITY_ISSUE_11)
    theirs, ours = deploy_both(path, project_name)
    assert_same(theirs, ours)
