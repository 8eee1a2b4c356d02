"""``type: image`` volumes on the real dockerd, which speaks an API older than 1.48.

Apply refuses in one line naming the service, the volume and both versions, before anything
is created or pulled; ``gitdock plan`` shows the mount and exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gitdock.runtime.docker import DockerClient
from support.docker import TEST_IMAGE, docker_cli, list_project_resources

pytestmark = pytest.mark.docker

CLI = (sys.executable, "-m", "gitdock.agent.cli.main")
MOUNTED = "gitdock-test/nosuch-mounted:1"  # never pulled: the refusal comes first


def cli(project_dir: Path, name: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, command, "-f", str(project_dir / "compose.yaml"), "-p", name],
        capture_output=True,
        text=True,
        env={**os.environ, "TERM": "dumb"},
        timeout=300,
        check=False,
    )


def test_an_image_mount_on_an_older_engine_is_refused_before_anything_changes(
    tmp_path: Path, project_name: str
) -> None:
    with DockerClient() as docker:
        version = docker.api_version()
    if tuple(int(p) for p in version.split(".")) >= (1, 48):
        pytest.fail(f"this test needs an engine older than API 1.48; this one speaks {version}")
    (tmp_path / "compose.yaml").write_text(
        f"services:\n  web:\n    image: {TEST_IMAGE}\n    volumes:\n"
        f"      - {{type: image, source: {MOUNTED}, target: /img, image: {{subpath: etc}}}}\n"
    )
    plan = cli(tmp_path, project_name, "plan")
    assert plan.returncode == 0, plan.stderr
    assert f"volume type image mounts image {MOUNTED} (subpath etc) at /img" in plan.stdout + plan.stderr
    result = cli(tmp_path, project_name, "apply")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: service web: volume {MOUNTED} at /img is type image, which needs Docker Engine API "
        f"1.48; this engine speaks {version}"
    ], result.stderr
    assert list_project_resources(project_name) == {"container": [], "network": [], "volume": []}
    assert docker_cli("images", "-q", MOUNTED).strip() == ""


def test_under_a_trust_policy_an_image_mount_is_refused_as_unverified(
    tmp_path: Path, project_name: str
) -> None:
    from gitdock.runtime.converge import ImageMountsUnverified, converge
    from gitdock.runtime.trust.policy import DefaultAction, TrustPolicy
    from gitdock.runtime.trust.registry import RegistryClient
    from gitdock.runtime.trust.resolve import TrustContext
    from gitdock.specs.load import load_project

    (tmp_path / "compose.yaml").write_text(
        f"services:\n  web:\n    image: {TEST_IMAGE}\n    volumes:\n"
        f"      - {{type: image, source: {MOUNTED}, target: /img}}\n"
    )
    project = load_project([str(tmp_path / "compose.yaml")], project_name=project_name, environ={})
    policy = TrustPolicy(default=DefaultAction.ALLOW_UNSIGNED)
    with DockerClient() as docker, RegistryClient() as registry:
        with pytest.raises(
            ImageMountsUnverified, match=rf"service web: {MOUNTED}: a type image volume is not verified"
        ):
            converge(project, docker, trust=TrustContext(policy, registry))
        assert docker.mutating_calls == 0
    assert list_project_resources(project_name) == {"container": [], "network": [], "volume": []}
