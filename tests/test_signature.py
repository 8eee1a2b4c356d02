"""Signature maths against real keys and the containers/image + cosign vectors.

Every negative test changes real bytes and asserts they differ from the original first.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gitdock.runtime.trust.keys import PrivateKey, PublicKey, load_public_key
from gitdock.runtime.trust.signature import (
    BUNDLE_ANNOTATION,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    IdentityMode,
    LegacySignature,
    Reason,
    RekorMode,
    SignatureFormatError,
    dsse_pae,
    is_identity_match,
    make_simple_signing_payload,
    parse_rekor_bundle,
    parse_sigstore_bundle,
    parse_sigstore_json,
    parse_simple_signing,
    sha256_digest,
    sign_payload,
    verify_bundle,
    verify_legacy_signature,
    verify_rekor_entry,
    verify_signature,
)
from gitdock.specs.reference import parse_reference

VECTORS = Path(__file__).parents[1].parent / "shared" / "vectors"
FIXTURES = VECTORS / "containers-image-signature-fixtures"
REKOR_PUB = FIXTURES / "internal-testdata" / "testdata" / "rekor.pub"
needs_vectors = pytest.mark.skipif(not VECTORS.is_dir(), reason=f"{VECTORS} is absent")

DIGEST = sha256_digest(b'{"schemaVersion":2}')
OTHER_DIGEST = sha256_digest(b'{"schemaVersion":2,"x":1}')
REPO = "127.0.0.1:5000/app"


def vector_bytes(path: Path) -> bytes | None:
    """A vector file's bytes. Git symlinks were copied as text (`../x/signature-1`): follow them.

    Returns None when the link's target was not copied into the vectors folder.
    """
    data = path.read_bytes()
    while len(data) < 200 and data.startswith(b"../") and b"\n" not in data.strip():
        target = (path.parent / data.decode().strip()).resolve()
        if not target.is_file():
            return None
        path, data = target, target.read_bytes()
    return data


def vector_signature(folder: str, n: int = 1) -> LegacySignature:
    data = vector_bytes(FIXTURES / folder / f"signature-{n}")
    assert data is not None
    return parse_sigstore_json(data)


def vector_manifest_digest(folder: str) -> str:
    data = vector_bytes(FIXTURES / folder / "manifest.json")
    assert data is not None
    return sha256_digest(data)


def vector_key(name: str) -> PublicKey:
    return load_public_key((FIXTURES / name).read_bytes())


def legacy(key: PrivateKey, *, digest: str = DIGEST, reference: str = REPO) -> LegacySignature:
    payload = make_simple_signing_payload(reference, digest)
    sig = base64.b64encode(sign_payload(key, payload)).decode()
    return LegacySignature(payload, SIMPLE_SIGNING_MEDIA_TYPE, {SIGNATURE_ANNOTATION: sig})


KEYS = [
    pytest.param(lambda: ec.generate_private_key(ec.SECP256R1()), id="p256"),
    pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="p384"),
    pytest.param(lambda: ec.generate_private_key(ec.SECP521R1()), id="p521"),
    pytest.param(lambda: rsa.generate_private_key(65537, 2048), id="rsa2048"),
    pytest.param(ed25519.Ed25519PrivateKey.generate, id="ed25519"),
]


# --- real keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make_key", KEYS)
def test_signature_made_with_each_key_type_verifies(make_key: object) -> None:
    key = make_key()  # type: ignore[operator]
    check = verify_legacy_signature(legacy(key), key.public_key(), digest=DIGEST, repository_ref=REPO)
    assert check.ok, check


def test_signature_by_another_key_is_a_bad_signature() -> None:
    signer, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    check = verify_legacy_signature(legacy(signer), other.public_key(), digest=DIGEST, repository_ref=REPO)
    assert (check.ok, check.reason) == (False, Reason.BAD_SIGNATURE)


def test_tampered_payload_is_a_bad_signature() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    good = legacy(key)
    tampered = replace(good, payload=good.payload.replace(DIGEST.encode(), OTHER_DIGEST.encode()))
    assert tampered.payload != good.payload
    check = verify_legacy_signature(tampered, key.public_key(), digest=OTHER_DIGEST, repository_ref=REPO)
    assert check.reason is Reason.BAD_SIGNATURE


def test_tampered_signature_bytes_are_a_bad_signature() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    good = legacy(key)
    raw = bytearray(base64.b64decode(good.annotations[SIGNATURE_ANNOTATION]))
    raw[10] ^= 0x01
    tampered = replace(good, annotations={SIGNATURE_ANNOTATION: base64.b64encode(bytes(raw)).decode()})
    assert tampered.annotations != good.annotations
    check = verify_legacy_signature(tampered, key.public_key(), digest=DIGEST, repository_ref=REPO)
    assert check.reason is Reason.BAD_SIGNATURE


def test_missing_signature_annotation_is_no_signature() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    good = legacy(key)
    stripped = replace(good, annotations={})
    assert stripped.annotations != good.annotations
    check = verify_legacy_signature(stripped, key.public_key(), digest=DIGEST, repository_ref=REPO)
    assert check.reason is Reason.NO_SIGNATURE


def test_valid_signature_for_another_digest_is_a_digest_mismatch() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    check = verify_legacy_signature(
        legacy(key, digest=OTHER_DIGEST), key.public_key(), digest=DIGEST, repository_ref=REPO
    )
    assert (check.reason, check.detail) == (Reason.DIGEST_MISMATCH, f"signature is for {OTHER_DIGEST}")


def test_signature_naming_another_repository_is_an_identity_mismatch_unless_ignored() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sig = legacy(key, reference="127.0.0.1:5000/other")
    check = verify_legacy_signature(sig, key.public_key(), digest=DIGEST, repository_ref=REPO)
    assert check.reason is Reason.IDENTITY_MISMATCH
    ignored = verify_legacy_signature(
        sig, key.public_key(), digest=DIGEST, repository_ref=REPO, identity=IdentityMode.IGNORE
    )
    assert ignored.ok


def test_identity_match_normalises_docker_hub_names() -> None:
    assert is_identity_match(
        "index.docker.io/library/nginx", "docker.io/library/nginx", IdentityMode.EXACT_REPOSITORY
    )
    assert is_identity_match("nginx:1.25", "docker.io/library/nginx", IdentityMode.EXACT_REPOSITORY)
    assert not is_identity_match("nginx-other", "docker.io/library/nginx", IdentityMode.EXACT_REPOSITORY)
    assert not is_identity_match("NOT A REF", "docker.io/library/nginx", IdentityMode.EXACT_REPOSITORY)


def test_payload_of_another_type_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    doc = json.loads(make_simple_signing_payload(REPO, DIGEST))
    doc["critical"]["type"] = "atomic container signature"
    payload = json.dumps(doc).encode()
    sig = LegacySignature(
        payload,
        SIMPLE_SIGNING_MEDIA_TYPE,
        {SIGNATURE_ANNOTATION: base64.b64encode(sign_payload(key, payload)).decode()},
    )
    check = verify_legacy_signature(sig, key.public_key(), digest=DIGEST, repository_ref=REPO)
    assert check.reason is Reason.BAD_SIGNATURE
    assert "not cosign's" in check.detail


def test_parse_simple_signing_rejects_garbage() -> None:
    with pytest.raises(SignatureFormatError, match="not valid JSON"):
        parse_simple_signing(b"\xff not json")
    with pytest.raises(SignatureFormatError, match="required"):
        parse_simple_signing(b'{"critical": {}}')


def test_dsse_pae_matches_the_spec_example() -> None:
    # From the DSSE protocol document.
    assert dsse_pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


# --- Sigstore bundles ----------------------------------------------------------------------------


def make_dsse_bundle(
    key: PrivateKey, digest: str = DIGEST, *, payload_type: str = "application/vnd.in-toto+json"
) -> bytes:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": REPO, "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    }
    payload = json.dumps(statement).encode()
    sig = sign_payload(key, dsse_pae(payload_type, payload))
    bundle = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "k"}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": payload_type,
            "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
        },
    }
    return json.dumps(bundle).encode()


def test_dsse_bundle_verifies_and_binds_the_digest() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    bundle = parse_sigstore_bundle(make_dsse_bundle(key))
    assert verify_bundle(bundle, key.public_key(), digest=DIGEST).ok
    assert verify_bundle(bundle, key.public_key(), digest=OTHER_DIGEST).reason is Reason.DIGEST_MISMATCH
    other = ec.generate_private_key(ec.SECP256R1())
    assert verify_bundle(bundle, other.public_key(), digest=DIGEST).reason is Reason.BAD_SIGNATURE


def test_dsse_bundle_with_tampered_payload_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    good = make_dsse_bundle(key)
    doc = json.loads(good)
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = OTHER_DIGEST.removeprefix("sha256:")
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    tampered = json.dumps(doc).encode()
    assert tampered != good
    check = verify_bundle(parse_sigstore_bundle(tampered), key.public_key(), digest=OTHER_DIGEST)
    assert check.reason is Reason.BAD_SIGNATURE


def test_message_signature_bundle_over_the_manifest_verifies() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    manifest = b'{"schemaVersion":2}'
    bundle = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "k"}},
        "messageSignature": {
            "messageDigest": {
                "algorithm": "SHA2_256",
                "digest": base64.b64encode(bytes.fromhex(DIGEST[7:])).decode(),
            },
            "signature": base64.b64encode(sign_payload(key, manifest)).decode(),
        },
    }
    parsed = parse_sigstore_bundle(json.dumps(bundle).encode())
    assert verify_bundle(parsed, key.public_key(), digest=DIGEST).ok
    assert verify_bundle(parsed, key.public_key(), digest=OTHER_DIGEST).reason is Reason.DIGEST_MISMATCH


def test_bundle_without_tlog_entry_fails_when_rekor_is_required() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    bundle = parse_sigstore_bundle(make_dsse_bundle(key))
    rekor = ec.generate_private_key(ec.SECP256R1()).public_key()
    check = verify_bundle(bundle, key.public_key(), digest=DIGEST, rekor=RekorMode.REQUIRED, rekor_key=rekor)
    assert check.reason is Reason.TLOG
    assert verify_bundle(
        bundle, key.public_key(), digest=DIGEST, rekor=RekorMode.IF_PRESENT, rekor_key=rekor
    ).ok


def test_parse_sigstore_bundle_rejects_other_documents() -> None:
    with pytest.raises(SignatureFormatError, match="not a Sigstore bundle"):
        parse_sigstore_bundle(b'{"mediaType": "text/plain"}')
    with pytest.raises(SignatureFormatError, match="neither"):
        parse_sigstore_bundle(b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}')


# --- the shared vectors ------------------------------------------------------------------------


@needs_vectors
@pytest.mark.parametrize(
    ("folder", "key_file", "signatures"),
    [
        ("dir-img-cosign-valid", "cosign.pub", [1]),
        ("dir-img-cosign-valid-2", "cosign.pub", [1, 2]),
        ("dir-img-cosign-valid-with-tag", "cosign.pub", [1]),
        ("dir-img-cosign-key-rekor-valid", "cosign2.pub", [1]),
    ],
)
def test_valid_vectors_verify(folder: str, key_file: str, signatures: list[int]) -> None:
    digest = vector_manifest_digest(folder)
    for n in signatures:
        sig = vector_signature(folder, n)
        payload = parse_simple_signing(sig.payload)
        assert payload.manifest_digest == digest
        repo = parse_reference(payload.docker_reference).repository_ref
        check = verify_legacy_signature(sig, vector_key(key_file), digest=digest, repository_ref=repo)
        assert check.ok, (folder, n, check)


@needs_vectors
def test_key_rekor_vector_set_verifies_with_the_rekor_key() -> None:
    folder = "dir-img-cosign-key-rekor-valid"
    sig = vector_signature(folder)
    check = verify_legacy_signature(
        sig,
        vector_key("cosign2.pub"),
        digest=vector_manifest_digest(folder),
        repository_ref="192.168.64.2:5000/cosign-signed/key-1",
        rekor=RekorMode.REQUIRED,
        rekor_key=load_public_key(REKOR_PUB.read_bytes()),
    )
    assert check.ok, check
    assert check.detail == "rekor log index 11608800"


@needs_vectors
def test_key_rekor_vector_with_tampered_set_is_refused() -> None:
    sig = vector_signature("dir-img-cosign-key-rekor-valid")
    doc = json.loads(sig.annotations[BUNDLE_ANNOTATION])
    doc["Payload"]["integratedTime"] += 1
    tampered = json.dumps(doc)
    assert tampered != sig.annotations[BUNDLE_ANNOTATION]
    entry = parse_rekor_bundle(tampered)
    signature = base64.b64decode(sig.annotations[SIGNATURE_ANNOTATION])
    check = verify_rekor_entry(
        entry,
        load_public_key(REKOR_PUB.read_bytes()),
        signed_hash=sha256_digest(sig.payload)[7:],
        signature=signature,
        key=vector_key("cosign2.pub"),
    )
    assert check.reason is Reason.TLOG
    assert "does not verify with the Rekor key" in check.detail


@needs_vectors
def test_key_rekor_vector_set_does_not_verify_with_another_rekor_key() -> None:
    sig = vector_signature("dir-img-cosign-key-rekor-valid")
    check = verify_legacy_signature(
        sig,
        vector_key("cosign2.pub"),
        digest=vector_manifest_digest("dir-img-cosign-key-rekor-valid"),
        repository_ref="192.168.64.2:5000/cosign-signed/key-1",
        rekor=RekorMode.REQUIRED,
        rekor_key=vector_key("cosign.pub"),
    )
    assert check.reason is Reason.TLOG


@needs_vectors
def test_rekor_entry_for_another_signature_is_refused() -> None:
    """A genuine SET copied onto another signature must not vouch for it."""
    rekor_sig = vector_signature("dir-img-cosign-key-rekor-valid")
    plain = vector_signature("dir-img-cosign-valid")
    grafted = replace(
        plain, annotations={**plain.annotations, BUNDLE_ANNOTATION: rekor_sig.annotations[BUNDLE_ANNOTATION]}
    )
    assert grafted.annotations != plain.annotations
    check = verify_legacy_signature(
        grafted,
        vector_key("cosign.pub"),
        digest=vector_manifest_digest("dir-img-cosign-valid"),
        repository_ref="192.168.64.2:5000/cosign-signed-single-sample",
        rekor=RekorMode.REQUIRED,
        rekor_key=load_public_key(REKOR_PUB.read_bytes()),
    )
    assert check.reason is Reason.TLOG
    assert "another payload" in check.detail


@needs_vectors
@pytest.mark.parametrize("folder", ["dir-img-cosign-fulcio-rekor-valid", "dir-img-cosign-pki-valid"])
def test_certificate_vectors_signature_maths_verify_with_the_leaf_key(folder: str) -> None:
    """Keyless policy is not supported; this checks only the signature (and SET) with the leaf's key."""
    sig = vector_signature(folder)
    leaf = x509.load_pem_x509_certificate(sig.annotations["dev.sigstore.cosign/certificate"].encode())
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    has_set = BUNDLE_ANNOTATION in sig.annotations
    check = verify_legacy_signature(
        sig,
        key,
        digest=vector_manifest_digest(folder),
        repository_ref="x/y",
        identity=IdentityMode.IGNORE,
        rekor=RekorMode.REQUIRED if has_set else RekorMode.IGNORE,
        rekor_key=load_public_key(REKOR_PUB.read_bytes()),
    )
    assert check.ok, check


@needs_vectors
def test_manifest_digest_error_vector_is_refused() -> None:
    # Its manifest.json links to a file not copied into the vectors; any bytes other than the
    # signed manifest must be refused, so the link text itself serves.
    folder = "dir-img-cosign-manifest-digest-error"
    digest = sha256_digest((FIXTURES / folder / "manifest.json").read_bytes())
    sig = vector_signature(folder)
    assert parse_simple_signing(sig.payload).manifest_digest != digest
    check = verify_legacy_signature(sig, vector_key("cosign.pub"), digest=digest, repository_ref="x/y")
    assert check.reason is Reason.DIGEST_MISMATCH


@needs_vectors
def test_modified_manifest_vector_is_a_digest_mismatch() -> None:
    folder = "dir-img-cosign-modified-manifest"
    sig = vector_signature(folder)
    digest = vector_manifest_digest(folder)
    assert digest != vector_manifest_digest("dir-img-cosign-valid")
    check = verify_legacy_signature(sig, vector_key("cosign.pub"), digest=digest, repository_ref="x/y")
    assert check.reason is Reason.DIGEST_MISMATCH


@needs_vectors
def test_no_manifest_vector_has_nothing_to_verify() -> None:
    assert not (FIXTURES / "dir-img-cosign-no-manifest" / "manifest.json").exists()
    # At the registry level a missing manifest is ManifestNotFound (tests/test_registry.py).


@needs_vectors
def test_mixed_vector_accepts_only_through_signature_2() -> None:
    folder = "dir-img-cosign-mixed"
    digest = vector_manifest_digest(folder)
    key = vector_key("cosign.pub")
    first = vector_bytes(FIXTURES / folder / "signature-1")
    if first is not None:  # signed by an unknown key
        check = verify_legacy_signature(parse_sigstore_json(first), key, digest=digest, repository_ref="x/y")
        assert check.reason is Reason.BAD_SIGNATURE
    else:  # the link target was not copied: its text is not a signature at all
        with pytest.raises(SignatureFormatError):
            parse_sigstore_json((FIXTURES / folder / "signature-1").read_bytes())
    second = vector_signature(folder, 2)
    check = verify_legacy_signature(
        second, key, digest=digest, repository_ref="x/y", identity=IdentityMode.IGNORE
    )
    assert check.ok, check


@needs_vectors
def test_other_attachment_vector_is_ignored_not_crashed_on() -> None:
    folder = "dir-img-cosign-other-attachment"
    sig = vector_signature(folder)
    assert sig.media_type == "text/plain"
    check = verify_legacy_signature(
        sig, vector_key("cosign.pub"), digest=vector_manifest_digest(folder), repository_ref="x/y"
    )
    assert check.reason is Reason.NO_SIGNATURE


@needs_vectors
def test_rsa_vector_key_loads() -> None:
    assert isinstance(vector_key("some-rsa-key.pub"), rsa.RSAPublicKey)


def test_verify_signature_returns_false_for_garbage() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert not verify_signature(key.public_key(), b"data", b"\x00garbage")
