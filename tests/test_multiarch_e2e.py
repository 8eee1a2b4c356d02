"""Multi-arch images: `sign --recursive`, and a signature on the index or the host's platform.

Each test pushes two real images to the real registry and an OCI index over them: this host's
platform points at TEST_IMAGE, another platform at TEST_IMAGE_2.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gitdock.agent.cli.trust import add_trust_commands
from gitdock.runtime.converge import converge
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.trust.keys import encrypt_private_key, public_key_pem
from gitdock.runtime.trust.policy import TrustKey, TrustPolicy, TrustRule
from gitdock.runtime.trust.registry import OCI_INDEX, RegistryClient
from gitdock.runtime.trust.resolve import TrustContext
from gitdock.runtime.trust.sign import sign_image, sign_image_recursive
from gitdock.runtime.trust.signature import Reason, legacy_signature_tag, parse_simple_signing
from gitdock.runtime.trust.verify import (
    ImageRefused,
    Platform,
    VerificationCache,
    host_platform,
    verify_image,
)
from gitdock.specs import load_project
from gitdock.specs.reference import ImageReference, parse_reference
from support.docker import TEST_IMAGE, TEST_IMAGE_2, docker_cli, write_compose
from support.registry import LocalRegistry, has_registry_binary, push_image, run_registry

pytestmark = pytest.mark.docker

HOST = host_platform()
OTHER = Platform("linux", "arm64" if HOST.architecture != "arm64" else "amd64")


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    if not has_registry_binary():
        pytest.skip("docker-registry binary is not installed (Debian package docker-registry)")
    with run_registry() as running:
        yield running


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    with RegistryClient() as c:
        yield c


def _entry(client: RegistryClient, ref: ImageReference, platform: Platform) -> tuple[dict[str, object], str]:
    manifest = client.get_manifest(ref)
    node: dict[str, object] = {
        "mediaType": manifest.media_type,
        "digest": manifest.digest,
        "size": len(manifest.raw),
        "platform": {"os": platform.os, "architecture": platform.architecture},
    }
    return node, manifest.digest


def push_index(
    registry: LocalRegistry, client: RegistryClient, name: str
) -> tuple[ImageReference, str, str, str]:
    """Push `name:host` and `name:other`, then `name:multi` as an index; (ref, index, host, other)."""
    repo = f"{registry.host}/{name}"
    push_image(TEST_IMAGE, f"{repo}:host")
    push_image(TEST_IMAGE_2, f"{repo}:other")
    host_node, host_digest = _entry(client, parse_reference(f"{repo}:host"), HOST)
    other_node, other_digest = _entry(client, parse_reference(f"{repo}:other"), OTHER)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [host_node, other_node]}
    ref = parse_reference(f"{repo}:multi")
    index_digest = client.put_manifest(ref, "multi", json.dumps(index).encode(), OCI_INDEX)
    assert client.get_manifest(ref).is_index
    return ref, index_digest, host_digest, other_digest


def policy_for(key: ec.EllipticCurvePrivateKey) -> TrustPolicy:
    return TrustPolicy(
        keys={"ci": TrustKey(public_key=public_key_pem(key.public_key()).decode())},
        rules=(TrustRule(pattern="127.0.0.1:*", keys=("ci",)),),
    )


def test_sign_recursive_signs_the_index_and_every_platform_manifest(
    registry: LocalRegistry, client: RegistryClient
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ref, index, host, other = push_index(registry, client, "multi/recursive")
    assert sign_image_recursive(ref, key, client) == [index, host, other]
    for digest in (index, host, other):
        sig_manifest = client.get_manifest(ref, legacy_signature_tag(digest))
        (layer,) = sig_manifest.layers()
        payload = parse_simple_signing(client.get_blob(ref, layer.digest))
        assert (payload.manifest_digest, payload.docker_reference) == (digest, ref.repository_ref)
    result = verify_image(ref, policy_for(key), client, cache=VerificationCache())
    assert (result.digest, result.platform_digest) == (index, host)
    assert result.signatures == (f"{legacy_signature_tag(index)} layer 0",)


def test_signature_on_the_host_platform_manifest_alone_is_accepted(
    registry: LocalRegistry, client: RegistryClient
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ref, index, host, _ = push_index(registry, client, "multi/platform-only")
    sign_image(ref.with_digest(host), key, client)
    result = verify_image(ref, policy_for(key), client, cache=VerificationCache())
    assert result.reference == ref.with_digest(index)
    assert (result.digest, result.platform_digest) == (index, host)
    assert result.signatures == (f"{legacy_signature_tag(host)} layer 0",)
    assert result.to_json()["platform_digest"] == host


def test_signature_on_another_platform_only_is_refused_naming_both(
    registry: LocalRegistry, client: RegistryClient
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ref, index, host, other = push_index(registry, client, "multi/other-only")
    sign_image(ref.with_digest(other), key, client)
    with pytest.raises(ImageRefused) as info:
        verify_image(ref, policy_for(key), client, cache=VerificationCache())
    assert info.value.reason is Reason.NO_SIGNATURE
    assert info.value.digest == index
    assert f"index: no cosign signature or Sigstore bundle is attached to {index}" in str(info.value)
    assert f"{HOST} manifest {host}: no cosign signature" in str(info.value)
    # The same index verifies on the other platform's host.
    other_host = verify_image(ref, policy_for(key), client, cache=VerificationCache(), platform=OTHER)
    assert other_host.platform_digest == other


def test_a_bad_platform_signature_reports_its_reason(registry: LocalRegistry, client: RegistryClient) -> None:
    key, stranger = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ref, _, host, _ = push_index(registry, client, "multi/stranger")
    sign_image(ref.with_digest(host), stranger, client)
    with pytest.raises(ImageRefused) as info:
        verify_image(ref, policy_for(key), client, cache=VerificationCache())
    assert info.value.reason is Reason.UNKNOWN_KEY


def test_single_platform_image_records_no_platform_digest(
    registry: LocalRegistry, client: RegistryClient
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    push_image(TEST_IMAGE, f"{registry.host}/multi/single:1")
    ref = parse_reference(f"{registry.host}/multi/single:1")
    assert sign_image_recursive(ref, key, client) == [client.resolve_digest(ref)]
    assert verify_image(ref, policy_for(key), client, cache=VerificationCache()).platform_digest is None


def test_cli_sign_recursive(
    registry: LocalRegistry,
    client: RegistryClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ci.key").write_bytes(encrypt_private_key(key, b"pw", scrypt_n=1024))
    (tmp_path / "ci.pub").write_bytes(public_key_pem(key.public_key()))
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    ref, index, host, other = push_index(registry, client, "multi/cli")
    parser = argparse.ArgumentParser(prog="gitdock")
    add_trust_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sign", ref.familiar, "--key", str(tmp_path / "ci.key"), "--recursive"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"Signed {ref.familiar}@{d}" for d in (index, host, other)]
    args = parser.parse_args(["verify", f"{ref.repository_ref}@{other}", "--key", str(tmp_path / "ci.pub")])
    assert args.func(args) == 0


def test_converge_pins_the_index_and_records_the_platform_digest(
    tmp_path: Path, project_name: str, registry: LocalRegistry, client: RegistryClient
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ref, index, host, _ = push_index(registry, client, "multi/converge")
    sign_image(ref.with_digest(host), key, client)
    loop = "trap 'exit 0' TERM; while :; do sleep 1; done"
    f = write_compose(
        tmp_path, f'services:\n  app:\n    image: {ref.familiar}\n    command: ["sh", "-c", "{loop}"]\n'
    )
    project = load_project([f], project_name=project_name)
    with DockerClient() as docker:
        outcome = converge(project, docker, trust=TrustContext(policy_for(key), client))
    assert outcome.report is not None and outcome.report.ok
    assert outcome.images is not None
    record = outcome.images[ref.familiar].to_dict()
    assert (record["digest"], record["platform_digest"]) == (index, host)
    container = json.loads(docker_cli("inspect", f"{project_name}-app-1"))[0]
    assert container["Config"]["Image"] == f"{ref.repository_ref}@{index}"
    assert docker_cli("exec", f"{project_name}-app-1", "cat", "/etc/gitdock-test-version").strip() == "1"
