"""Keyless signatures from a private Sigstore, through a real registry and a real converge.

Legacy `.sig` layers and Sigstore bundles (found through the referrers fallback tag), with
Rekor v1 SETs, RFC 3161 timestamps from the private TSA, and Rekor v2 inclusion proofs.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gitdock.runtime.trust.policy import KeylessIdentity, TrustPolicy, TrustRule
from gitdock.runtime.trust.registry import RegistryClient
from gitdock.runtime.trust.sign import attach_signature
from gitdock.runtime.trust.signature import (
    SIGNATURE_ANNOTATION,
    LegacySignature,
    Reason,
)
from gitdock.runtime.trust.verify import ImageRefused, VerificationCache, VerificationStatus, verify_image
from gitdock.specs.reference import parse_reference
from support.docker import TEST_IMAGE, docker_cli, write_compose
from support.registry import LocalRegistry, has_registry_binary, push_image, run_registry
from support.sigstore import EMAIL, ISSUER, PrivateSigstore, Stamp, Tsa, attach_bundle

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
SIGNER = f"keyless:{EMAIL} from {ISSUER}"


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    if not has_registry_binary():
        pytest.skip("docker-registry binary is not installed (Debian package docker-registry)")
    with run_registry() as running:
        yield running


@pytest.fixture(scope="module")
def sigstore() -> PrivateSigstore:
    return PrivateSigstore()


def push_keyless(
    registry: LocalRegistry, name: str, sign: Callable[[str, str], LegacySignature]
) -> tuple[str, str]:
    """Push TEST_IMAGE as `name`, attach the signature `sign(repository, digest)` makes."""
    target = f"{registry.host}/{name}"
    push_image(TEST_IMAGE, target)
    ref = parse_reference(target)
    with RegistryClient() as client:
        digest = client.resolve_digest(ref)
        sig = sign(ref.repository_ref, digest)
        annotations = {k: v for k, v in sig.annotations.items() if k != SIGNATURE_ANNOTATION}
        signature = base64.b64decode(sig.annotations[SIGNATURE_ANNOTATION])
        attach_signature(ref, digest, sig.payload, signature, client, annotations=annotations)
    return target, digest


def write_policy(tmp_path: Path, root_json: str) -> Path:
    (tmp_path / "trusted_root.json").write_text(root_json)
    policy = tmp_path / "trust.yaml"
    policy.write_text(
        "trusted_root_file: trusted_root.json\n"
        'rules:\n  - pattern: "127.0.0.1:*/keyless/*"\n'
        f"    keyless:\n      - identity: {EMAIL}\n        issuer: {ISSUER}\n"
        "default: require\n"
    )
    return policy


def gitdock(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitdock.agent.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ),
    )


def compose(tmp_path: Path, image: str) -> Path:
    return write_compose(
        tmp_path, f'services:\n  app:\n    image: {image}\n    command: ["sh", "-c", "{LOOP}"]\n'
    )


def keyless_policy(sigstore: PrivateSigstore) -> TrustPolicy:
    identity = KeylessIdentity(identity=EMAIL, issuer=ISSUER)
    return TrustPolicy(
        rules=(TrustRule(pattern="127.0.0.1:*", keyless=(identity,)),), trusted_root=sigstore.trusted_root()
    )


def test_keyless_image_verifies_against_the_registry(
    registry: LocalRegistry, sigstore: PrivateSigstore
) -> None:
    leaf = sigstore.issue()
    target, digest = push_keyless(registry, "keyless/verify:1", lambda r, d: sigstore.sign_legacy(r, d, leaf))
    with RegistryClient() as client:
        result = verify_image(
            parse_reference(target), keyless_policy(sigstore), client, cache=VerificationCache()
        )
    assert result.status is VerificationStatus.VERIFIED
    assert result.digest == digest
    assert result.keys == (SIGNER,)
    assert result.signed_at == int(leaf.certificate.not_valid_before_utc.timestamp()) + 60


def test_keyless_image_is_pinned_and_runs_in_a_real_converge(
    tmp_path: Path, project_name: str, registry: LocalRegistry, sigstore: PrivateSigstore
) -> None:
    target, digest = push_keyless(registry, "keyless/app:1", lambda r, d: sigstore.sign_legacy(r, d))
    policy = write_policy(tmp_path, sigstore.trusted_root())
    f = compose(tmp_path, target)
    result = gitdock("apply", "-f", str(f), "-p", project_name, "--trust-policy", str(policy))
    assert result.returncode == 0, result.stderr
    container = json.loads(docker_cli("inspect", f"{project_name}-app-1"))[0]
    assert container["Config"]["Image"] == f"{registry.host}/keyless/app@{digest}"
    record = json.loads(container["Config"]["Labels"]["io.gitdock.image.trust"])
    assert (record["status"], record["keys"]) == ("verified", [SIGNER])
    assert isinstance(record["signed_at"], int)
    again = gitdock("apply", "-f", str(f), "-p", project_name, "--trust-policy", str(policy))
    assert "nothing to change" in again.stdout


def _negatives(s: PrivateSigstore) -> dict[str, tuple[Callable[[str, str], LegacySignature], Reason, str]]:
    other_key = ec.generate_private_key(ec.SECP256R1())
    stranger = PrivateSigstore()
    stranger.rekor_key, stranger.ct_key = s.rekor_key, s.ct_key
    return {
        "identity": (
            lambda r, d: s.sign_legacy(r, d, s.issue(email="intruder@example.com")),
            Reason.CERTIFICATE_IDENTITY,
            "certificate identity: intruder@example.com",
        ),
        "issuer": (
            lambda r, d: s.sign_legacy(r, d, s.issue(issuer="https://evil.example.com")),
            Reason.ISSUER_MISMATCH,
            "certificate issuer:",
        ),
        "expired": (
            lambda r, d: s.sign_legacy(r, d, rekor=False),
            Reason.CERTIFICATE_EXPIRED,
            "no Rekor SET or RFC 3161 timestamp proves when it signed",
        ),
        "sct": (
            lambda r, d: s.sign_legacy(r, d, s.issue(sct_over=b"another precertificate")),
            Reason.SCT,
            "SCT: SCT signature does not verify",
        ),
        "set": (
            lambda r, d: s.sign_legacy(r, d, rekor_key=other_key),
            Reason.TLOG,
            "Rekor SET: signed entry timestamp does not verify",
        ),
        "root": (
            lambda r, d: stranger.sign_legacy(r, d),
            Reason.UNTRUSTED_CERTIFICATE,
            "does not lead to a trusted Fulcio root",
        ),
        "digest": (
            lambda r, d: s.sign_legacy(r, "sha256:" + "0" * 64),
            Reason.DIGEST_MISMATCH,
            "signature is for sha256:" + "0" * 64,
        ),
    }


@pytest.mark.parametrize("case", ["identity", "issuer", "expired", "sct", "set", "root", "digest"])
def test_keyless_negative_is_refused_with_its_reason_and_nothing_changes(
    case: str, tmp_path: Path, project_name: str, registry: LocalRegistry, sigstore: PrivateSigstore
) -> None:
    sign, reason, detail = _negatives(sigstore)[case]
    target, digest = push_keyless(registry, f"keyless/neg-{case}:1", sign)
    policy = write_policy(tmp_path, sigstore.trusted_root())
    result = gitdock(
        "apply", "-f", str(compose(tmp_path, target)), "-p", project_name, "--trust-policy", str(policy)
    )
    assert result.returncode == 1
    assert f"image {target} ({digest}) refused: {reason.value}: " in result.stderr
    assert detail in result.stderr
    assert "nothing was changed" in result.stderr
    assert "Traceback" not in result.stderr
    assert docker_cli("ps", "-aq", "--filter", f"label=io.gitdock.project={project_name}") == ""
    assert docker_cli("network", "ls", "-q", "--filter", f"label=io.gitdock.project={project_name}") == ""
    with RegistryClient() as client, pytest.raises(ImageRefused) as info:
        policy_model = TrustPolicy(
            rules=(
                TrustRule(pattern="127.0.0.1:*", keyless=(KeylessIdentity(identity=EMAIL, issuer=ISSUER),)),
            ),
            trusted_root=sigstore.trusted_root(),
        )
        verify_image(parse_reference(target), policy_model, client, cache=VerificationCache())
    assert info.value.reason is reason


# --- RFC 3161 timestamps and Rekor v2 entries -----------------------------------------------------


def push_bundle(registry: LocalRegistry, name: str, bundle: Callable[[str], bytes]) -> tuple[str, str]:
    """Push TEST_IMAGE as `name`, attach `bundle(digest)` through the referrers fallback tag."""
    target = f"{registry.host}/{name}"
    push_image(TEST_IMAGE, target)
    ref = parse_reference(target)
    with RegistryClient() as client:
        digest = client.resolve_digest(ref)
        attach_bundle(client, ref, digest, bundle(digest))
    return target, digest


def apply(tmp_path: Path, project_name: str, target: str, root_json: str) -> subprocess.CompletedProcess[str]:
    policy = write_policy(tmp_path, root_json)
    return gitdock(
        "apply", "-f", str(compose(tmp_path, target)), "-p", project_name, "--trust-policy", str(policy)
    )


def test_timestamped_legacy_signature_without_rekor_is_pinned_at_its_gentime(
    tmp_path: Path, project_name: str, registry: LocalRegistry, sigstore: PrivateSigstore
) -> None:
    leaf = sigstore.issue()
    target, digest = push_keyless(
        registry, "keyless/tsa:1", lambda r, d: sigstore.sign_legacy(r, d, leaf, rekor=False, stamp=Stamp())
    )
    result = apply(tmp_path, project_name, target, sigstore.trusted_root())
    assert result.returncode == 0, result.stderr
    container = json.loads(docker_cli("inspect", f"{project_name}-app-1"))[0]
    assert container["Config"]["Image"] == f"{registry.host}/keyless/tsa@{digest}"
    record = json.loads(container["Config"]["Labels"]["io.gitdock.image.trust"])
    assert (record["status"], record["keys"]) == ("verified", [SIGNER])
    assert record["signed_at"] == int(leaf.certificate.not_valid_before_utc.timestamp()) + 60


def test_rekor_v2_bundle_with_a_timestamp_is_pinned_and_runs(
    tmp_path: Path, project_name: str, registry: LocalRegistry, sigstore: PrivateSigstore
) -> None:
    target, digest = push_bundle(
        registry, "keyless/v2:1", lambda d: sigstore.sign_bundle(d, rekor="v2", stamp=Stamp())
    )
    result = apply(tmp_path, project_name, target, sigstore.trusted_root())
    assert result.returncode == 0, result.stderr
    container = json.loads(docker_cli("inspect", f"{project_name}-app-1"))[0]
    assert container["Config"]["Image"] == f"{registry.host}/keyless/v2@{digest}"
    record = json.loads(container["Config"]["Labels"]["io.gitdock.image.trust"])
    assert (record["status"], record["keys"]) == ("verified", [SIGNER])


def _flip_proof_hash(bundle: bytes) -> bytes:
    doc = json.loads(bundle)
    proof = doc["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
    first = bytearray(base64.b64decode(proof["hashes"][0]))
    first[-1] ^= 1
    proof["hashes"][0] = base64.b64encode(bytes(first)).decode()
    return json.dumps(doc).encode()


def _bundle_negatives(s: PrivateSigstore) -> dict[str, tuple[Callable[[str], bytes], Reason, str]]:
    other_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "untrusted-tsa": (
            lambda d: s.sign_bundle(d, rekor="none", stamp=Stamp(tsa=Tsa(s.start))),
            Reason.TIMESTAMP,
            "RFC 3161 timestamp: not signed by a timestamp authority of the trusted root",
        ),
        "imprint": (
            lambda d: s.sign_bundle(d, rekor="none", stamp=Stamp(over=b"other bytes")),
            Reason.TIMESTAMP,
            "message imprint is not the hash of this signature",
        ),
        "v2-no-timestamp": (
            lambda d: s.sign_bundle(d, rekor="v2"),
            Reason.TLOG,
            "Rekor v2 entry: it proves no signing time",
        ),
        "v2-proof": (
            lambda d: _flip_proof_hash(s.sign_bundle(d, rekor="v2", stamp=Stamp())),
            Reason.TLOG,
            "inclusion proof does not lead from the entry to the checkpoint's root hash",
        ),
        "v2-checkpoint": (
            lambda d: s.sign_bundle(d, rekor="v2", stamp=Stamp(), checkpoint_key=other_key),
            Reason.TLOG,
            "checkpoint has no signature by the log's key",
        ),
        "v2-signature": (
            lambda d: s.sign_bundle(
                d, rekor="v2", stamp=Stamp(), logged_signature=s.sign_message(d, s.issue())
            ),
            Reason.TLOG,
            "logged entry is for another signature",
        ),
    }


@pytest.mark.parametrize(
    "case", ["untrusted-tsa", "imprint", "v2-no-timestamp", "v2-proof", "v2-checkpoint", "v2-signature"]
)
def test_timestamp_and_rekor_v2_negatives_are_refused_and_nothing_changes(
    case: str, tmp_path: Path, project_name: str, registry: LocalRegistry, sigstore: PrivateSigstore
) -> None:
    bundle, reason, detail = _bundle_negatives(sigstore)[case]
    target, digest = push_bundle(registry, f"keyless/neg-{case}:1", bundle)
    result = apply(tmp_path, project_name, target, sigstore.trusted_root())
    assert result.returncode == 1
    assert f"image {target} ({digest}) refused: {reason.value}: " in result.stderr
    assert detail in result.stderr
    assert "nothing was changed" in result.stderr
    assert "Traceback" not in result.stderr
    assert docker_cli("ps", "-aq", "--filter", f"label=io.gitdock.project={project_name}") == ""
