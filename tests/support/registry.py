"""A real Distribution registry (Debian's `docker-registry`) on 127.0.0.1 with a random port."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.gitserver import free_port

REGISTRY_BINARY = "/usr/bin/docker-registry"


@dataclass(frozen=True)
class LocalRegistry:
    host: str  # "127.0.0.1:PORT"
    root: Path


def has_registry_binary() -> bool:
    return Path(REGISTRY_BINARY).is_file() or shutil.which("docker-registry") is not None


def _wait_ready(host: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://{host}/v2/", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    raise RuntimeError(f"docker-registry at {host} did not answer within {timeout}s")


@contextlib.contextmanager
def run_registry() -> Iterator[LocalRegistry]:
    """Start a registry with filesystem storage in a temp dir and deletes enabled; stop it after."""
    binary = REGISTRY_BINARY if Path(REGISTRY_BINARY).is_file() else (shutil.which("docker-registry") or "")
    with tempfile.TemporaryDirectory(prefix="gitdock-registry-") as tmp:
        root = Path(tmp)
        port = free_port()  # outside the ephemeral range: see free_port
        host = f"127.0.0.1:{port}"
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {host}\n"
        )
        log = (root / "registry.log").open("wb")
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(host, proc)
            yield LocalRegistry(host, root)
        finally:
            _forget_images(host)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def _forget_images(host: str) -> None:
    """Remove the local references to images of the registry at ``host`` (what the tests'
    pulls left: the registry and its port are gone after the test). Only those references:
    an image that also has another name keeps it."""
    from support.docker import DockerCLIError, docker_cli

    listed = docker_cli("image", "ls", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}")
    refs: list[str] = []
    for line in listed.splitlines():
        repository, tag, digest = [*line.split(), "", "", ""][:3]
        if not repository.startswith(f"{host}/"):
            continue
        refs.append(f"{repository}:{tag}" if tag not in ("", "<none>") else f"{repository}@{digest}")
    # An image still used by a container keeps its name; the test's own cleanup reports that.
    if refs:
        with contextlib.suppress(DockerCLIError):
            docker_cli("image", "rm", *refs)


def push_image(source: str, target: str) -> None:
    """`docker tag` + `docker push`, then remove the local tag (only the tag we created)."""
    from support.docker import docker_cli

    docker_cli("tag", source, target)
    try:
        docker_cli("push", "--quiet", target, timeout=120)
    finally:
        docker_cli("rmi", target)


class CountingTransport(httpx.BaseTransport):
    """The real HTTP transport, logging every request: proof of what was (not) asked."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()
