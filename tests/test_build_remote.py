"""Remote build contexts: the Engine fetches a git or tarball URL itself (``POST /build?remote=``).

Pure: the load, the digest (the URL's, no file read), the plan and its warning; the request
the executor makes is checked on an httpx.MockTransport (its shape only: the real builds are in
``test_build_remote_e2e.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from gitdock.runtime.build import bind_builds, is_pinned_remote
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.execute import Executor, OpStatus
from gitdock.runtime.observe import ObservedState
from gitdock.runtime.plan import OpKind, Plan, plan_project
from gitdock.specs import load_project
from gitdock.specs.model import Project

SHA = "0123456789abcdef0123456789abcdef01234567"
GIT = "https://git.example.invalid/app.git"
TARBALL = "http://files.example.invalid/context.tar.gz"


def load(tmp_path: Path, build: str) -> Project:
    (tmp_path / "compose.yaml").write_text(f"services:\n  web:\n    build: {build}\n")
    return bind_builds(load_project([tmp_path / "compose.yaml"], project_name="demo", environ={}))


def test_a_remote_context_loads_and_reads_nothing_from_the_revision(tmp_path: Path) -> None:
    build = load(tmp_path, GIT).service("web").build
    assert build is not None and build.remote == GIT and build.digest.startswith("sha256:")


def test_the_digest_is_the_urls(tmp_path: Path) -> None:
    one = load(tmp_path, GIT).service("web").image
    assert load(tmp_path, GIT).service("web").image == one  # the same URL: nothing to rebuild
    assert load(tmp_path, f"{GIT}#{SHA}").service("web").image != one


def test_the_build_names_the_remote_context_and_warns_it_is_not_pinned(tmp_path: Path) -> None:
    plan = plan_project(load(tmp_path, TARBALL), ObservedState())
    assert plan.render().splitlines()[0] == (
        f"[] -> #1 build:web, BuildImage, not found, remote context {TARBALL}"
    )
    (warning,) = plan.warnings
    assert warning.startswith(f"service web: the build context {TARBALL} is fetched by the Docker Engine")
    assert "names no commit" in warning


def test_a_url_naming_a_commit_is_pinned_and_not_warned(tmp_path: Path) -> None:
    plan = plan_project(load(tmp_path, f"'{GIT}#{SHA}:docker'"), ObservedState())
    assert plan.warnings == ()


@pytest.mark.parametrize(
    ("url", "pinned"),
    [
        (f"{GIT}#{SHA}", True),
        (f"{GIT}#{SHA}:sub/dir", True),
        (f"{GIT}#{SHA[:12]}", False),  # an abbreviation may stop being unique
        (f"{GIT}#main", False),
        (f"{GIT}#v1.2.3:sub", False),
        (GIT, False),
        (TARBALL, False),
    ],
)
def test_is_pinned_remote(url: str, pinned: bool) -> None:
    assert is_pinned_remote(url) is pinned


def test_an_inline_dockerfile_with_a_remote_context_is_refused_at_the_build_step(tmp_path: Path) -> None:
    build = f"{{context: '{GIT}', dockerfile_inline: 'FROM busybox'}}"
    plan = plan_project(load(tmp_path, build), ObservedState())
    assert any("dockerfile_inline: an inline Dockerfile with a remote context" in w for w in plan.warnings)


def _engine(requests: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path in ("/_ping", "/version"):  # the API version: _ping's header, else /version
            return httpx.Response(200, json={"ApiVersion": "1.41"}, headers={"Api-Version": "1.41"})
        lines = [{"stream": "Step 1/1 : FROM busybox\n"}, {"aux": {"ID": "sha256:" + "c" * 64}}]
        return httpx.Response(200, content="\n".join(json.dumps(x) for x in lines).encode())

    return httpx.MockTransport(handle)


def test_the_executor_sends_no_tar_and_names_the_url_as_remote(tmp_path: Path) -> None:
    project = load(tmp_path, f"{{context: '{GIT}#{SHA}:docker', dockerfile: build/Dockerfile}}")
    plan = plan_project(project, ObservedState())
    build_op = next(op for op in plan.operations if op.kind is OpKind.BUILD_IMAGE)
    requests: list[httpx.Request] = []
    with DockerClient("unix:///nonexistent.sock", transport=_engine(requests)) as docker:
        report = Executor(docker).execute(Plan(plan.project, (build_op,)))
    assert [r.status for r in report.results] == [OpStatus.DONE], report.results
    (build,) = [r for r in requests if r.url.path.endswith("/build")]
    assert build.method == "POST" and build.url.path == "/v1.41/build"
    assert build.url.params["remote"] == f"{GIT}#{SHA}:docker"
    assert build.url.params["dockerfile"] == "build/Dockerfile"
    assert build.url.params.get_list("t") == [project.service("web").image, "demo-web:latest"]
    assert build.content == b""
