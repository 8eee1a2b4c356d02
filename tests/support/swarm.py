"""Real Swarms for tests, on private dockerds that never touch the shared one.

``SingleNodeSwarm`` is one private dockerd (``support.dockerd.SecondDockerd``: its own
network namespace, data root, exec root and socket; no ``--live-restore``, which Swarm mode
refuses) with ``docker swarm init`` on its loopback address and the test image loaded.

``MultiNodeSwarm`` is 2-3 such daemons whose namespaces are joined by veth pairs to a Linux
bridge the test creates in a namespace of its own (10.77.<n>.0/24): the first inits the
Swarm on its bridge address, the others join as workers. Nothing here imports gitdock.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time

from .docker import TEST_IMAGE
from .dockerd import SecondDockerd


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.decode().strip()}")


class SingleNodeSwarm:
    """A one-node Swarm (manager) on a private dockerd; ``host`` is its ``unix://`` address."""

    def __init__(self) -> None:
        self.node = SecondDockerd(f"gdsw{secrets.token_hex(3)}", live_restore=False)
        self.host = self.node.host

    def docker(self, *args: str, timeout: float = 120) -> str:
        return self.node.docker(*args, timeout=timeout)

    def start(self) -> SingleNodeSwarm:
        try:
            self.node.start()
            self.node.docker("swarm", "init", "--advertise-addr", "127.0.0.1")
            self.node.load_test_image(TEST_IMAGE)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.node.docker("swarm", "leave", "--force", timeout=30)
        self.node.close()

    def __enter__(self) -> SingleNodeSwarm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class MultiNodeSwarm:
    """``count`` private dockerds on a test bridge: node 0 is the manager, the rest workers."""

    def __init__(self, count: int = 3) -> None:
        self.tag = f"gdms{secrets.token_hex(2)}"
        self.subnet = f"10.77.{secrets.randbelow(200) + 20}"
        self.bridge_ns = f"{self.tag}br"
        self.nodes = [SecondDockerd(f"{self.tag}n{i}", live_restore=False) for i in range(count)]
        self.host = self.nodes[0].host
        self._bridge = False

    def address(self, i: int) -> str:
        return f"{self.subnet}.{i + 10}"

    def _wire(self, i: int, node: SecondDockerd) -> None:
        """A veth pair: one end on the bridge, the other in the node's namespace."""
        outer, inner = f"{self.tag}o{i}", f"{self.tag}i{i}"
        _ip(
            "link",
            "add",
            outer,
            "netns",
            self.bridge_ns,
            "type",
            "veth",
            "peer",
            "name",
            inner,
            "netns",
            node.netns,
        )
        _ip("link", "set", outer, "master", "br0", "up", netns=self.bridge_ns)
        _ip("addr", "add", f"{self.address(i)}/24", "dev", inner, netns=node.netns)
        _ip("link", "set", inner, "up", netns=node.netns)

    def start(self) -> MultiNodeSwarm:
        try:
            _ip("netns", "add", self.bridge_ns)
            self._bridge = True
            _ip("link", "add", "br0", "type", "bridge", netns=self.bridge_ns)
            _ip("link", "set", "br0", "up", netns=self.bridge_ns)
            for i, node in enumerate(self.nodes):
                node.start()
                self._wire(i, node)
            manager = self.nodes[0]
            manager.docker("swarm", "init", "--advertise-addr", self.address(0))
            token = manager.docker("swarm", "join-token", "-q", "worker").strip()
            for i, node in enumerate(self.nodes[1:], start=1):
                node.docker(
                    "swarm",
                    "join",
                    "--advertise-addr",
                    self.address(i),
                    "--token",
                    token,
                    f"{self.address(0)}:2377",
                )
            for node in self.nodes:
                node.load_test_image(TEST_IMAGE)
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = self.nodes[0].docker("node", "ls", "--format", "{{.Status}}").split()
            if len(states) == len(self.nodes) and all(s == "Ready" for s in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"swarm nodes not ready within {timeout}s: {states}")
            time.sleep(0.5)

    def docker(self, *args: str, timeout: float = 120) -> str:
        return self.nodes[0].docker(*args, timeout=timeout)

    def close(self) -> None:
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.docker("swarm", "leave", "--force", timeout=30)
            node.close()
        if self._bridge:
            subprocess.run(["ip", "netns", "del", self.bridge_ns], capture_output=True, check=False)
            self._bridge = False

    def __enter__(self) -> MultiNodeSwarm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
