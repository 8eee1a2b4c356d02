"""Sign with gitdock, verify with gitdock, against a real `docker-registry` on loopback."""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gitdock.agent.cli.trust import add_trust_commands
from gitdock.runtime.trust.keys import public_key_pem
from gitdock.runtime.trust.policy import DefaultAction, KeyMatch, TrustKey, TrustPolicy, TrustRule
from gitdock.runtime.trust.registry import OCI_INDEX, OCI_MANIFEST, RegistryClient
from gitdock.runtime.trust.sign import attach_signature, sign_image
from gitdock.runtime.trust.signature import (
    SIGSTORE_BUNDLE_MEDIA_TYPE,
    IdentityMode,
    Reason,
    dsse_pae,
    legacy_signature_tag,
    make_simple_signing_payload,
    sign_payload,
)
from gitdock.runtime.trust.verify import ImageRefused, VerificationCache, VerificationStatus, verify_image
from gitdock.specs.reference import ImageReference, parse_reference
from support.docker import TEST_IMAGE
from support.registry import LocalRegistry, has_registry_binary, push_image, run_registry

pytestmark = pytest.mark.docker


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


def policy_for(
    *keys: ec.EllipticCurvePrivateKey,
    match: KeyMatch = KeyMatch.ANY_OF,
    identity: IdentityMode = IdentityMode.EXACT_REPOSITORY,
) -> TrustPolicy:
    named = {
        f"k{i}": TrustKey(public_key=public_key_pem(k.public_key()).decode()) for i, k in enumerate(keys)
    }
    return TrustPolicy(
        keys=named,
        rules=(TrustRule(pattern="127.0.0.1:*", keys=tuple(named), match=match, identity=identity),),
    )


def pushed(registry: LocalRegistry, name: str) -> ImageReference:
    push_image(TEST_IMAGE, f"{registry.host}/{name}:1")
    return parse_reference(f"{registry.host}/{name}:1")


def distinct_image(client: RegistryClient, ref: ImageReference, tag: str) -> ImageReference:
    """A second image with its own digest in the same repository (an index over `ref`)."""
    single = client.get_manifest(ref)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": single.media_type,
                "digest": single.digest,
                "size": len(single.raw),
                "platform": {"os": "linux", "architecture": "amd64"},
            }
        ],
    }
    client.put_manifest(ref, tag, json.dumps(index).encode(), OCI_INDEX)
    return ref.with_tag(tag)


def test_signed_image_verifies_and_result_is_pinned_and_cached(
    registry: LocalRegistry, client: RegistryClient
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ref = pushed(registry, "e2e/signed")
    digest = sign_image(ref, key, client)
    cache = VerificationCache()
    result = verify_image(ref, policy_for(key), client, cache=cache)
    assert result.status is VerificationStatus.VERIFIED
    assert result.digest == digest
    assert result.reference == ref.with_digest(digest)
    assert result.signatures == (f"{legacy_signature_tag(digest)} layer 0",)
    assert verify_image(ref, policy_for(key), client, cache=cache) is not None
    assert len(cache._entries) == 1


def test_wrong_key_is_refused(registry: LocalRegistry, client: RegistryClient) -> None:
    signer, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ref = pushed(registry, "e2e/wrongkey")
    digest = sign_image(ref, signer, client)
    with pytest.raises(ImageRefused) as info:
        verify_image(ref, policy_for(other), client, cache=VerificationCache())
    assert info.value.reason is Reason.UNKNOWN_KEY
    assert info.value.digest == digest
    assert str(info.value).startswith(f"image {ref.familiar} ({digest}) refused: unknown key: ")
    assert "made by none of the keys the rule '127.0.0.1:*' lists (k0)" in str(info.value)


def test_signature_by_a_key_only_another_rule_lists_is_an_unknown_key_named(
    registry: LocalRegistry, client: RegistryClient
) -> None:
    signer, listed = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ref = pushed(registry, "e2e/otherrule")
    sign_image(ref, signer, client)
    pem = {name: public_key_pem(k.public_key()).decode() for name, k in (("team", signer), ("ci", listed))}
    policy = TrustPolicy(
        keys={name: TrustKey(public_key=p) for name, p in pem.items()},
        rules=(TrustRule(pattern="*/team/*", keys=("team",)), TrustRule(pattern="127.0.0.1:*", keys=("ci",))),
    )
    with pytest.raises(ImageRefused) as info:
        verify_image(ref, policy, client, cache=VerificationCache())
    assert info.value.reason is Reason.UNKNOWN_KEY
    assert "signed by key team, which the rule '127.0.0.1:*' does not list" in str(info.value)


def test_unsigned_image_is_refused_or_allowed_by_default_action(
    registry: LocalRegistry, client: RegistryClient
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ref = pushed(registry, "e2e/unsigned")
    with pytest.raises(ImageRefused) as info:
        verify_image(ref, policy_for(key), client, cache=VerificationCache())
    assert info.value.reason is Reason.NO_SIGNATURE
    with pytest.raises(ImageRefused, match="no trust rule names a key") as unmatched:
        verify_image(ref, TrustPolicy(), client, cache=VerificationCache())
    assert unmatched.value.reason is Reason.UNKNOWN_KEY
    allowed = verify_image(ref, TrustPolicy(default=DefaultAction.ALLOW_UNSIGNED), client)
    assert allowed.status is VerificationStatus.UNSIGNED_ALLOWED
    assert allowed.warnings


def test_signature_made_for_another_image_is_a_digest_mismatch(
    registry: LocalRegistry, client: RegistryClient
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ref_a = pushed(registry, "e2e/other")
    ref_b = distinct_image(client, ref_a, "b")
    digest_a, digest_b = client.resolve_digest(ref_a), client.resolve_digest(ref_b)
    assert digest_a != digest_b
    payload = make_simple_signing_payload(ref_a.repository_ref, digest_a)  # genuinely signed, for A
    attach_signature(ref_b, digest_b, payload, sign_payload(key, payload), client)
    with pytest.raises(ImageRefused) as info:
        verify_image(ref_b, policy_for(key), client, cache=VerificationCache())
    assert info.value.reason is Reason.DIGEST_MISMATCH
    assert digest_a in str(info.value)


def test_signature_naming_another_repository_is_an_identity_mismatch(
    registry: LocalRegistry, client: RegistryClient
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ref = pushed(registry, "e2e/identity")
    digest = client.resolve_digest(ref)
    payload = make_simple_signing_payload(f"{registry.host}/e2e/somewhere-else", digest)
    attach_signature(ref, digest, payload, sign_payload(key, payload), client)
    with pytest.raises(ImageRefused) as info:
        verify_image(ref, policy_for(key), client, cache=VerificationCache())
    assert info.value.reason is Reason.IDENTITY_MISMATCH
    relaxed = verify_image(
        ref, policy_for(key, identity=IdentityMode.IGNORE), client, cache=VerificationCache()
    )
    assert relaxed.status is VerificationStatus.VERIFIED


def test_second_signature_is_appended_and_all_of_needs_both(
    registry: LocalRegistry, client: RegistryClient
) -> None:
    first, second = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ref = pushed(registry, "e2e/allof")
    sign_image(ref, first, client)
    with pytest.raises(ImageRefused, match="key k1"):
        verify_image(ref, policy_for(first, second, match=KeyMatch.ALL_OF), client, cache=VerificationCache())
    digest = sign_image(ref, second, client)
    assert len(client.get_manifest(ref, legacy_signature_tag(digest)).layers()) == 2
    result = verify_image(
        ref, policy_for(first, second, match=KeyMatch.ALL_OF), client, cache=VerificationCache()
    )
    assert result.keys == ("k0", "k1")


def test_dsse_bundle_found_through_the_referrers_fallback_tag(
    registry: LocalRegistry, client: RegistryClient
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ref = pushed(registry, "e2e/bundle")
    digest = client.resolve_digest(ref)
    statement = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": ref.repository_ref, "digest": {"sha256": digest.removeprefix("sha256:")}}],
            "predicateType": "https://sigstore.dev/cosign/sign/v1",
            "predicate": {},
        }
    ).encode()
    payload_type = "application/vnd.in-toto+json"
    bundle = json.dumps(
        {
            "mediaType": SIGSTORE_BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": "k0"}},
            "dsseEnvelope": {
                "payload": base64.b64encode(statement).decode(),
                "payloadType": payload_type,
                "signatures": [
                    {"sig": base64.b64encode(sign_payload(key, dsse_pae(payload_type, statement))).decode()}
                ],
            },
        }
    ).encode()
    empty = b"{}"
    layer_digest = client.push_blob(ref, bundle)
    config_digest = client.push_blob(ref, empty)
    artifact = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SIGSTORE_BUNDLE_MEDIA_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config_digest, "size": 2},
            "layers": [
                {"mediaType": SIGSTORE_BUNDLE_MEDIA_TYPE, "digest": layer_digest, "size": len(bundle)}
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": 0},
        }
    ).encode()
    artifact_digest = client.put_manifest(ref, "bundle-artifact", artifact, OCI_MANIFEST)
    fallback = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": artifact_digest,
                    "size": len(artifact),
                    "artifactType": SIGSTORE_BUNDLE_MEDIA_TYPE,
                }
            ],
        }
    ).encode()
    client.put_manifest(ref, digest.replace(":", "-"), fallback, OCI_INDEX)
    result = verify_image(ref, policy_for(key), client, cache=VerificationCache())
    assert result.signatures == (f"bundle {artifact_digest}",)


# --- the CLI -------------------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gitdock")
    add_trust_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    assert isinstance(code, int)
    return code


def test_cli_keygen_sign_verify(
    registry: LocalRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "correct horse")
    prefix = str(tmp_path / "cosign")
    assert run_cli("keygen", "--output-key-prefix", prefix) == 0
    assert (tmp_path / "cosign.key").stat().st_mode & 0o777 == 0o600
    assert run_cli("keygen", "--output-key-prefix", str(tmp_path / "other")) == 0
    image = str(pushed(registry, "e2e/cli").familiar)
    assert run_cli("sign", image, "--key", f"{prefix}.key") == 0
    capsys.readouterr()
    assert run_cli("verify", image, "--key", f"{prefix}.pub", "--output", "json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "verified"
    assert run_cli("verify", image, "--key", str(tmp_path / "other.pub"), "--output", "json") == 1
    refused = json.loads(capsys.readouterr().out)
    assert (refused["status"], refused["reason"]) == ("refused", "unknown key")
    monkeypatch.setenv("COSIGN_PASSWORD", "wrong")
    assert run_cli("sign", image, "--key", f"{prefix}.key") == 1
    assert "correct horse" not in capsys.readouterr().err
