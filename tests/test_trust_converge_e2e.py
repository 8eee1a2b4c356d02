"""Images resolved to digests and verified before anything runs, against a real registry and dockerd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gitdock.runtime.converge import converge
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.trust.keys import public_key_pem
from gitdock.runtime.trust.policy import TrustKey, TrustPolicy, TrustRule
from gitdock.runtime.trust.registry import RegistryClient
from gitdock.runtime.trust.resolve import TrustContext
from gitdock.runtime.trust.sign import sign_image
from gitdock.specs import load_project
from gitdock.specs.reference import parse_reference
from support.docker import TEST_IMAGE, TEST_IMAGE_2, docker_cli, write_compose
from support.registry import CountingTransport, LocalRegistry, has_registry_binary, push_image, run_registry

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    if not has_registry_binary():
        pytest.skip("docker-registry binary is not installed (Debian package docker-registry)")
    with run_registry() as running:
        yield running


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def push_signed(
    registry: LocalRegistry, key: ec.EllipticCurvePrivateKey | None, name: str, source: str
) -> str:
    target = f"{registry.host}/{name}"
    push_image(source, target)
    if key is not None:
        with RegistryClient() as client:
            sign_image(parse_reference(target), key, client)
    with RegistryClient() as client:
        return client.resolve_digest(parse_reference(target))


def write_policy(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    (tmp_path / "ci.pub").write_bytes(public_key_pem(key.public_key()))
    policy = tmp_path / "trust.yaml"
    policy.write_text(
        "keys:\n  ci:\n    public_key_file: ci.pub\n"
        'rules:\n  - pattern: "127.0.0.1:*/signed/*"\n    keys: [ci]\n'
        "default: require\n"
    )
    return policy


def service(name: str, image: str) -> str:
    return f'  {name}:\n    image: {image}\n    command: ["sh", "-c", "{LOOP}"]\n'


def gitdock(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitdock.agent.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ),
    )


def inspect(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads(docker_cli("inspect", name))[0]  # type: ignore[no-any-return]


def test_signed_image_runs_by_digest_with_its_lock_record(
    tmp_path: Path, project_name: str, registry: LocalRegistry, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    digest = push_signed(registry, signing_key, "signed/app:1", TEST_IMAGE)
    policy = write_policy(tmp_path, signing_key)
    f = write_compose(tmp_path, "services:\n" + service("app", f"{registry.host}/signed/app:1"))
    plan = gitdock("plan", "-f", str(f), "-p", project_name, "--trust-policy", str(policy))
    assert plan.returncode == 0, plan.stderr
    assert f"image app: {registry.host}/signed/app:1 -> {digest}, verified by ci, signed " in plan.stdout
    result = gitdock("apply", "-f", str(f), "-p", project_name, "--trust-policy", str(policy))
    assert result.returncode == 0, result.stderr
    container = inspect(f"{project_name}-app-1")
    assert container["Config"]["Image"] == f"{registry.host}/signed/app@{digest}"
    labels = container["Config"]["Labels"]
    assert labels["io.gitdock.image.digest"] == digest
    record = json.loads(labels["io.gitdock.image.trust"])
    assert record["status"] == "verified"
    assert record["keys"] == ["ci"]
    assert isinstance(record["signed_at"], int)
    again = gitdock("apply", "-f", str(f), "-p", project_name, "--trust-policy", str(policy))
    assert "nothing to change" in again.stdout
    assert ", 0 mutating)" in again.stdout


def test_one_unsigned_image_leaves_the_whole_project_untouched(
    tmp_path: Path, project_name: str, registry: LocalRegistry, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    push_signed(registry, signing_key, "signed/good:1", TEST_IMAGE)
    bad_digest = push_signed(registry, None, "signed/bad:1", TEST_IMAGE_2)
    policy = write_policy(tmp_path, signing_key)
    f = write_compose(
        tmp_path,
        "services:\n"
        + service("good", f"{registry.host}/signed/good:1")
        + service("bad", f"{registry.host}/signed/bad:1"),
    )
    result = gitdock("apply", "-f", str(f), "-p", project_name, "--trust-policy", str(policy))
    assert result.returncode == 1
    assert f"image {registry.host}/signed/bad:1 ({bad_digest}) refused: no signature" in result.stderr
    assert "nothing was changed" in result.stderr
    assert docker_cli("ps", "-aq", "--filter", f"label=io.gitdock.project={project_name}") == ""
    assert docker_cli("network", "ls", "-q", "--filter", f"label=io.gitdock.project={project_name}") == ""


def test_a_moved_tag_is_an_image_change_in_the_plan(
    tmp_path: Path, project_name: str, registry: LocalRegistry, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    first = push_signed(registry, signing_key, "signed/moving:1", TEST_IMAGE)
    policy = write_policy(tmp_path, signing_key)
    f = write_compose(tmp_path, "services:\n" + service("app", f"{registry.host}/signed/moving:1"))
    assert gitdock("apply", "-f", str(f), "-p", project_name, "--trust-policy", str(policy)).returncode == 0
    second = push_signed(registry, signing_key, "signed/moving:1", TEST_IMAGE_2)
    assert second != first
    plan = gitdock("plan", "-f", str(f), "-p", project_name, "--trust-policy", str(policy))
    assert plan.stdout.splitlines()[:2] == [
        f"[] -> #1 image:{registry.host}/signed/moving:1, PullImage, not present locally",
        "[#1] -> #2 service:app:1, RecreateContainer, image changed: tag moved",
    ]
    assert gitdock("apply", "-f", str(f), "-p", project_name, "--trust-policy", str(policy)).returncode == 0
    container = inspect(f"{project_name}-app-1")
    assert container["Config"]["Labels"]["io.gitdock.image.digest"] == second
    assert docker_cli("exec", f"{project_name}-app-1", "cat", "/etc/gitdock-test-version").strip() == "2"


def test_unchanged_pinned_services_make_no_registry_request(
    tmp_path: Path, project_name: str, registry: LocalRegistry, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    digest = push_signed(registry, signing_key, "signed/pinned:1", TEST_IMAGE)
    pinned = f"{registry.host}/signed/pinned@{digest}"
    f = write_compose(tmp_path, "services:\n" + service("a", pinned) + service("b", pinned))
    policy = TrustPolicy(
        keys={"ci": TrustKey(public_key=public_key_pem(signing_key.public_key()).decode())},
        rules=(TrustRule(pattern="127.0.0.1:*/signed/*", keys=("ci",)),),
    )
    project = load_project([f], project_name=project_name)

    first = CountingTransport()
    with DockerClient() as docker, RegistryClient(transport=first) as client:
        outcome = converge(project, docker, trust=TrustContext(policy, client))
    assert outcome.report is not None and outcome.report.ok
    assert first.requests  # the signature had to be fetched once

    # A new process has an empty cache: the record on the running containers is what it trusts.
    second = CountingTransport()
    with DockerClient() as docker, RegistryClient(transport=second) as client:
        outcome = converge(project, docker, trust=TrustContext(policy, client))
    assert outcome.plan.is_empty
    assert outcome.mutating_calls == 0
    assert second.requests == []
