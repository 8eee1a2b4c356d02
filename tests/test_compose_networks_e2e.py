"""A service's second and later networks are connected with their whole endpoint config (static
addresses, aliases, link-local addresses), not only the aliases, on the real dockerd."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.docker import TEST_IMAGE, write_compose
from support.faults import docker, run_gitdock

pytestmark = pytest.mark.docker


def test_every_network_of_a_service_gets_its_endpoint_config(tmp_path: Path, project_name: str) -> None:
    f = write_compose(
        tmp_path,
        f"""
        services:
          web:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
            networks:
              front: {{priority: 10, ipv4_address: 172.31.78.10}}
              back:
                aliases: [api]
                ipv4_address: 172.31.79.20
                link_local_ips: [169.254.79.20]
        networks:
          front: {{ipam: {{config: [{{subnet: 172.31.78.0/24}}]}}}}
          back: {{ipam: {{config: [{{subnet: 172.31.79.0/24}}]}}}}
        """,
    )
    result = run_gitdock("apply", "-f", str(f), "-p", project_name)
    assert result.returncode == 0, result.stdout + result.stderr
    networks = json.loads(docker("inspect", f"{project_name}-web-1"))[0]["NetworkSettings"]["Networks"]
    back = networks[f"{project_name}_back"]
    assert back["IPAddress"] == "172.31.79.20", "the second network's static address"
    assert back["IPAMConfig"]["LinkLocalIPs"] == ["169.254.79.20"]
    assert "api" in back["Aliases"]
    assert networks[f"{project_name}_front"]["IPAddress"] == "172.31.78.10"
