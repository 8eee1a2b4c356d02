"""Remote build contexts built by the real dockerd from servers on 127.0.0.1.

A tarball context over plain HTTP, and a git context over smart HTTP (git http-backend, from a
real repository): dockerd fetches each itself (``POST /build?remote=``), gitdock sends no tar.
"""

from __future__ import annotations

import io
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gitdock.runtime.converge import Outcome, converge
from gitdock.runtime.docker import DockerClient
from gitdock.specs import load_project
from support.docker import TEST_IMAGE, docker_cli, remove_project
from support.gitserver import Upstream, serve_http

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
DOCKERFILE = f'FROM {TEST_IMAGE}\nCOPY hello.txt /hello.txt\nCMD ["sh", "-c", "{LOOP}"]\n'


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def built_images(project_name: str) -> Iterator[None]:
    """Remove the images the test builds (they carry the project's label), containers first."""
    yield
    remove_project(project_name)
    images = docker_cli("images", "-q", "--filter", f"label=io.gitdock.project={project_name}").split()
    if images:
        docker_cli("rmi", "-f", *sorted(set(images)))


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1, and its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def tarball(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def apply(tmp_path: Path, name: str, build: str) -> Outcome:
    (tmp_path / "compose.yaml").write_text(f"services:\n  web:\n    build: '{build}'\n")
    project = load_project([str(tmp_path / "compose.yaml")], project_name=name, environ={})
    with DockerClient() as docker:
        return converge(project, docker, revision="d" * 40)


def test_a_tarball_url_is_built_by_the_engine(
    tmp_path: Path, project_name: str, built_images: None, file_server: tuple[Path, str]
) -> None:
    root, base = file_server
    (root / "ctx.tar.gz").write_bytes(tarball({"Dockerfile": DOCKERFILE, "hello.txt": "from a tarball\n"}))
    url = f"{base}/ctx.tar.gz"
    outcome = apply(tmp_path, project_name, url)
    assert outcome.report is not None and outcome.report.ok, outcome.report
    assert outcome.plan.operations[0].cause == f"not found, remote context {url}"
    assert any("names no commit" in w for w in outcome.plan.warnings)
    web = f"{project_name}-web-1"
    assert docker_cli("exec", web, "cat", "/hello.txt") == "from a tarball\n"
    again = apply(tmp_path, project_name, url)  # the same URL: built once
    assert again.plan.is_empty and again.mutating_calls == 0


def test_a_git_url_naming_a_commit_is_built_by_the_engine(
    tmp_path: Path, project_name: str, built_images: None
) -> None:
    upstream = Upstream(tmp_path / "git" / "app.git")
    commit = upstream.commit({"docker/Dockerfile": DOCKERFILE, "docker/hello.txt": "from git\n"})
    with serve_http(tmp_path / "git") as server:
        url = f"{server.base_url}/app.git#{commit}:docker"
        outcome = apply(tmp_path, project_name, url)
    assert outcome.report is not None and outcome.report.ok, outcome.report
    assert outcome.plan.warnings == ()  # pinned: the URL names the commit
    assert docker_cli("exec", f"{project_name}-web-1", "cat", "/hello.txt") == "from git\n"
