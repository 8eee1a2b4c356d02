"""The Swarm target on a three-node Swarm built on this machine (``support.swarm.MultiNodeSwarm``).

Three private dockerds in their own network namespaces, joined by veth pairs to a bridge the
test creates: placement (a node-label constraint, max_replicas_per_node) is scheduled by the
real Swarm, and the overlay network gitdock creates carries traffic between nodes (VXLAN;
the encrypted variant is tested on one node, see test_swarm_e2e).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitdock.runtime.docker import DockerClient
from gitdock.runtime.swarm.converge import converge_swarm, tear_down_swarm
from gitdock.runtime.swarm.load import load_swarm_inputs
from gitdock.specs.load import load_project
from support.docker import TEST_IMAGE
from support.dockerd import SecondDockerd
from support.swarm import MultiNodeSwarm

pytestmark = pytest.mark.docker

LOOP = ["sh", "-c", "trap exit TERM; while true; do sleep 1; done"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[MultiNodeSwarm]:
    reason = SecondDockerd.unavailable_reason()
    if reason:
        pytest.fail(f"a private Swarm cannot start here: {reason}")
    with MultiNodeSwarm(3) as swarm:
        yield swarm


def _node_ids(cluster: MultiNodeSwarm) -> list[str]:
    """Node ids in the order of ``cluster.nodes`` (each daemon reports its own)."""
    return [n.docker("info", "--format", "{{.Swarm.NodeID}}").strip() for n in cluster.nodes]


def test_placement_and_overlay_across_three_nodes(cluster: MultiNodeSwarm, tmp_path: Path) -> None:
    ids = _node_ids(cluster)
    cluster.docker("node", "update", "--label-add", "zone=b", ids[2])
    stack = f"gdm{secrets.token_hex(3)}"
    compose = {
        "services": {
            "pinned": {
                "image": TEST_IMAGE,
                "command": LOOP,
                "deploy": {"replicas": 2, "placement": {"constraints": ["node.labels.zone==b"]}},
            },
            "spread": {
                "image": TEST_IMAGE,
                "command": LOOP,
                "networks": ["mesh"],
                "deploy": {"replicas": 3, "placement": {"max_replicas_per_node": 1}},
            },
        },
        # Unencrypted: this kernel carries VXLAN between the namespaces, but not the IPsec (ESP)
        # an encrypted overlay adds (a ping to a task on another node gets no answer).
        "networks": {"mesh": {"attachable": True}},
    }
    path = tmp_path / "compose.yaml"
    path.write_text(json.dumps(compose))
    project = load_project([path], project_name=stack)
    try:
        with DockerClient(cluster.host) as docker:
            outcome = converge_swarm(project, docker, load_swarm_inputs([path], project), timeout=120)
        assert outcome.is_ok, outcome.report and [r.render() for r in outcome.report.results]

        def nodes_of(service: str) -> list[str]:
            out = cluster.docker(
                "service",
                "ps",
                f"{stack}_{service}",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.ID}}",
            )
            tasks = json.loads(cluster.docker("inspect", *out.split()))
            return sorted(t["NodeID"] for t in tasks)

        assert nodes_of("pinned") == [ids[2], ids[2]]
        assert nodes_of("spread") == sorted(ids)
        # From a container on the manager, every spread task (one per node) answers over the overlay.
        probe = cluster.nodes[0].docker(
            "run",
            "--rm",
            "--network",
            f"{stack}_mesh",
            TEST_IMAGE,
            "sh",
            "-c",
            "for ip in $(nslookup tasks.spread | awk '/^Address: /{print $2}'); do "
            "ping -c1 -W3 $ip >/dev/null && echo ok $ip || echo fail $ip; done",
        )
        assert probe.split().count("ok") == 3 and "fail" not in probe, probe
    finally:
        with DockerClient(cluster.host) as docker:
            tear_down_swarm(stack, docker)
