"""Keyless (Fulcio) verification: the real Fulcio vector, and a private Sigstore for negatives."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gitdock.runtime.trust.keyless import (
    CertificateIdentity,
    KeylessResult,
    certificate_issuer,
    verify_keyless_bundle,
    verify_keyless_signature,
)
from gitdock.runtime.trust.policy import KeylessIdentity, TrustPolicy, TrustRule
from gitdock.runtime.trust.signature import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    IdentityMode,
    LegacySignature,
    Reason,
    parse_sigstore_bundle,
    parse_sigstore_json,
    sha256_digest,
)
from gitdock.runtime.trust.trusted_root import TrustedRoot, TrustedRootError, parse_trusted_root
from support.sigstore import EMAIL, ISSUER, PrivateSigstore

VECTORS = Path(__file__).parents[1].parent / "shared" / "vectors" / "containers-image-signature-fixtures"
needs_vectors = pytest.mark.skipif(not VECTORS.is_dir(), reason=f"{VECTORS} is absent")
FULCIO_FOLDER = "dir-img-cosign-fulcio-rekor-valid"
# The public-good CT log key of 2022 (ctfe.sigstore.dev/2022), as Sigstore's trusted_root.json
# publishes it: the vector's SCT is signed by it.
CTFE_2022 = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEiPSlFi0CmFTfEjCUqF9HuCEcYXNKAaYalIJmBZ8yyezPjTqhxrKBpMnaocVtLJBI1eM3uXnQ"
    "zQGAJdJ4gs9Fyw=="
)
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
REPO = "registry.example.com/team/app"
DIGEST = "sha256:" + "ab" * 32
SIGNER = CertificateIdentity(identity=EMAIL, issuer=ISSUER)


# --- the real Fulcio vector --------------------------------------------------------------------


def _der_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def public_good_root() -> str:
    """The public-good trusted root of 2023, made from the vector's own files."""
    rekor = serialization.load_pem_public_key((VECTORS / "rekor.pub").read_bytes())
    rekor_der = rekor.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    chain = x509.load_pem_x509_certificates(vector_signature().annotations[CHAIN_ANNOTATION].encode())

    def log(der: bytes) -> dict[str, object]:
        return {
            "publicKey": {
                "rawBytes": base64.b64encode(der).decode(),
                "validFor": {"start": "2021-01-12T11:53:27Z"},
            },
            "logId": {"keyId": base64.b64encode(hashlib.sha256(der).digest()).decode()},
        }

    doc = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [log(rekor_der)],
        "ctlogs": [log(base64.b64decode(CTFE_2022))],
        "certificateAuthorities": [
            {
                "certChain": {"certificates": [{"rawBytes": _der_b64(c)} for c in chain]},
                "validFor": {"start": "2022-04-13T20:06:15Z"},
            }
        ],
    }
    return json.dumps(doc)


def vector_signature() -> LegacySignature:
    return parse_sigstore_json((VECTORS / FULCIO_FOLDER / "signature-1").read_bytes())


def vector_digest() -> str:
    return sha256_digest((VECTORS / FULCIO_FOLDER / "manifest.json").read_bytes())


def verify_vector(sig: LegacySignature, identity: CertificateIdentity) -> KeylessResult:
    return verify_keyless_signature(
        sig,
        parse_trusted_root(public_good_root()),
        [identity],
        digest=vector_digest(),
        repository_ref="192.168.64.2:5000/cosign-signed/fulcio-rekor-1",
        now=NOW,
    )


MITR = CertificateIdentity(identity="mitr@redhat.com", issuer="https://github.com/login/oauth")


@needs_vectors
def test_real_fulcio_vector_verifies_at_its_rekor_time_long_after_expiry() -> None:
    result = verify_vector(vector_signature(), MITR)
    assert result.check.ok, result.check
    assert result.signed_at == 1674247893
    assert result.signer == "mitr@redhat.com from https://github.com/login/oauth"


@needs_vectors
def test_real_fulcio_vector_issuer_comes_from_the_v1_extension() -> None:
    leaf = x509.load_pem_x509_certificate(vector_signature().annotations[CERTIFICATE_ANNOTATION].encode())
    assert certificate_issuer(leaf) == "https://github.com/login/oauth"


@needs_vectors
def test_real_fulcio_vector_refuses_another_identity() -> None:
    result = verify_vector(vector_signature(), replace(MITR, identity="someone@redhat.com"))
    assert result.check.reason is Reason.CERTIFICATE_IDENTITY
    assert "mitr@redhat.com" in result.check.detail


@needs_vectors
def test_real_fulcio_vector_without_its_rekor_entry_is_expired() -> None:
    sig = vector_signature()
    stripped = {k: v for k, v in sig.annotations.items() if k != BUNDLE_ANNOTATION}
    assert len(stripped) == len(sig.annotations) - 1
    result = verify_vector(replace(sig, annotations=stripped), MITR)
    assert result.check.reason is Reason.CERTIFICATE_EXPIRED
    assert "no Rekor SET or RFC 3161 timestamp proves when it signed" in result.check.detail


@needs_vectors
def test_real_fulcio_vector_with_its_sct_log_missing_fails_the_sct_check() -> None:
    doc = json.loads(public_good_root())
    doc["ctlogs"] = []
    result = verify_keyless_signature(
        vector_signature(),
        parse_trusted_root(json.dumps(doc)),
        [MITR],
        digest=vector_digest(),
        repository_ref="192.168.64.2:5000/cosign-signed/fulcio-rekor-1",
        now=NOW,
    )
    assert result.check.reason is Reason.SCT


# --- a private Sigstore ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sigstore() -> PrivateSigstore:
    return PrivateSigstore()


@pytest.fixture(scope="module")
def root(sigstore: PrivateSigstore) -> TrustedRoot:
    return parse_trusted_root(sigstore.trusted_root())


def check(
    sig: LegacySignature, root: TrustedRoot, identity: CertificateIdentity = SIGNER, *, now: dt.datetime = NOW
) -> KeylessResult:
    return verify_keyless_signature(sig, root, [identity], digest=DIGEST, repository_ref=REPO, now=now)


def test_private_keyless_signature_verifies_years_after_its_certificate_expired(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    leaf = sigstore.issue()
    sig = sigstore.sign_legacy(REPO, DIGEST, leaf)
    result = check(sig, root)
    assert result.check.ok, result.check
    assert result.signed_at == int(leaf.certificate.not_valid_before_utc.timestamp()) + 60
    assert leaf.certificate.not_valid_after_utc < NOW
    assert result.signer == f"{EMAIL} from {ISSUER}"


def test_wrong_identity_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    sig = sigstore.sign_legacy(REPO, DIGEST, sigstore.issue(email="intruder@example.com"))
    result = check(sig, root)
    assert result.check.reason is Reason.CERTIFICATE_IDENTITY
    assert "intruder@example.com" in result.check.detail


def test_wrong_issuer_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    sig = sigstore.sign_legacy(REPO, DIGEST, sigstore.issue(issuer="https://evil.example.com"))
    result = check(sig, root)
    assert result.check.reason is Reason.ISSUER_MISMATCH
    assert "https://evil.example.com" in result.check.detail


def test_issuer_falls_back_to_the_v1_extension(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    sig = sigstore.sign_legacy(REPO, DIGEST, sigstore.issue(issuer_v1=True))
    assert check(sig, root).check.ok


def test_uri_san_matches_a_whole_value_regexp(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    workflow = "https://git.example.com/team/app/.ci/release.yml@refs/heads/main"
    sig = sigstore.sign_legacy(REPO, DIGEST, sigstore.issue(email=None, uri=workflow))
    good = CertificateIdentity(
        identity_regexp=r"https://git\.example\.com/team/.*", issuer_regexp=r"https://.*"
    )
    assert check(sig, root, good).check.ok
    partial = CertificateIdentity(identity_regexp=r"git\.example\.com", issuer=ISSUER)
    assert check(sig, root, partial).check.reason is Reason.CERTIFICATE_IDENTITY


def test_expired_certificate_without_a_timestamp_is_refused(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    leaf = sigstore.issue()
    sig = sigstore.sign_legacy(REPO, DIGEST, leaf, rekor=False)
    assert BUNDLE_ANNOTATION not in sig.annotations
    result = check(sig, root)
    assert result.check.reason is Reason.CERTIFICATE_EXPIRED
    during = leaf.certificate.not_valid_before_utc + dt.timedelta(minutes=5)
    assert check(sig, root, now=during).check.ok  # still valid: no proof of time needed


def test_sct_signed_by_another_log_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    sig = sigstore.sign_legacy(REPO, DIGEST, sigstore.issue(sct_key=ec.generate_private_key(ec.SECP256R1())))
    result = check(sig, root)
    assert result.check.reason is Reason.SCT
    assert "is not in the trusted root" in result.check.detail


def test_sct_over_another_precertificate_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    sig = sigstore.sign_legacy(REPO, DIGEST, sigstore.issue(sct_over=b"another precertificate"))
    result = check(sig, root)
    assert result.check.reason is Reason.SCT
    assert "SCT signature does not verify with CT log" in result.check.detail


def test_certificate_without_sct_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    result = check(sigstore.sign_legacy(REPO, DIGEST, sigstore.issue(sct=False)), root)
    assert result.check.reason is Reason.SCT
    assert "no embedded SCT" in result.check.detail


def test_set_signed_by_another_rekor_key_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    sig = sigstore.sign_legacy(REPO, DIGEST, rekor_key=ec.generate_private_key(ec.SECP256R1()))
    result = check(sig, root)
    assert result.check.reason is Reason.TLOG
    assert "Rekor SET: signed entry timestamp does not verify" in result.check.detail


def test_set_moved_outside_the_certificate_validity_is_refused(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    leaf = sigstore.issue()
    late = int(leaf.certificate.not_valid_after_utc.timestamp()) + 3600
    result = check(sigstore.sign_legacy(REPO, DIGEST, leaf, integrated=late), root)
    assert result.check.reason is Reason.CERTIFICATE_EXPIRED


def test_certificate_from_an_untrusted_root_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    # Same Rekor and CT log, another CA: only the chain check can fail.
    stranger = PrivateSigstore()
    stranger.rekor_key, stranger.ct_key = sigstore.rekor_key, sigstore.ct_key
    sig = stranger.sign_legacy(REPO, DIGEST)
    assert check(sig, parse_trusted_root(stranger.trusted_root())).check.ok
    result = check(sig, root)
    assert result.check.reason is Reason.UNTRUSTED_CERTIFICATE
    assert result.check.detail.startswith("certificate chain: does not lead to a trusted Fulcio root")


def test_certificate_without_code_signing_eku_is_refused(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    result = check(sigstore.sign_legacy(REPO, DIGEST, sigstore.issue(code_signing=False)), root)
    assert result.check.reason is Reason.UNTRUSTED_CERTIFICATE
    assert "code-signing" in result.check.detail


def test_valid_certificate_but_signature_over_another_digest_is_refused(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    sig = sigstore.sign_legacy(REPO, "sha256:" + "cd" * 32)
    result = check(sig, root)
    assert result.check.reason is Reason.DIGEST_MISMATCH


def test_signature_naming_another_repository_is_an_identity_mismatch(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    sig = sigstore.sign_legacy("registry.example.com/other", DIGEST)
    assert check(sig, root).check.reason is Reason.IDENTITY_MISMATCH
    ignored = verify_keyless_signature(
        sig, root, [SIGNER], digest=DIGEST, repository_ref=REPO, identity=IdentityMode.IGNORE, now=NOW
    )
    assert ignored.check.ok


def test_payload_tampered_after_signing_is_a_bad_signature(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    sig = sigstore.sign_legacy(REPO, DIGEST)
    tampered = replace(sig, payload=sig.payload.replace(b'"optional":null', b'"optional":{}'))
    assert tampered.payload != sig.payload
    assert check(tampered, root).check.reason is Reason.BAD_SIGNATURE


def test_chain_annotation_is_optional_when_the_root_holds_the_intermediate(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    sig = sigstore.sign_legacy(REPO, DIGEST, chain=False)
    assert CHAIN_ANNOTATION not in sig.annotations
    assert check(sig, root).check.ok


@pytest.mark.parametrize("version", ["0.1", "0.2", "0.3"])
def test_keyless_bundle_verifies(sigstore: PrivateSigstore, root: TrustedRoot, version: str) -> None:
    bundle = parse_sigstore_bundle(sigstore.sign_bundle(DIGEST, version=version))
    assert bundle.certificates
    result = verify_keyless_bundle(bundle, root, [SIGNER], digest=DIGEST, now=NOW)
    assert result.check.ok, result.check
    assert result.signed_at is not None


def test_keyless_bundle_for_another_digest_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    bundle = parse_sigstore_bundle(sigstore.sign_bundle("sha256:" + "cd" * 32))
    result = verify_keyless_bundle(bundle, root, [SIGNER], digest=DIGEST, now=NOW)
    assert result.check.reason is Reason.DIGEST_MISMATCH


def test_keyless_bundle_with_a_bad_set_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    doc = json.loads(sigstore.sign_bundle(DIGEST))
    entry = doc["verificationMaterial"]["tlogEntries"][0]
    entry["integratedTime"] = str(int(entry["integratedTime"]) + 1)
    result = verify_keyless_bundle(
        parse_sigstore_bundle(json.dumps(doc).encode()), root, [SIGNER], digest=DIGEST, now=NOW
    )
    assert result.check.reason is Reason.TLOG


# --- the trusted root and the policy ------------------------------------------------------------


def test_trusted_root_without_a_ca_is_refused() -> None:
    with pytest.raises(TrustedRootError, match="certificateAuthorities is empty"):
        parse_trusted_root(
            json.dumps({"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"})
        )


def test_trusted_root_of_another_format_is_refused() -> None:
    with pytest.raises(TrustedRootError, match="is not a Sigstore trusted root"):
        parse_trusted_root(json.dumps({"mediaType": "application/json"}))


def test_ca_outside_its_validity_period_is_not_used(sigstore: PrivateSigstore) -> None:
    doc = json.loads(sigstore.trusted_root())
    doc["certificateAuthorities"][0]["validFor"] = {
        "start": "2020-01-01T00:00:00Z",
        "end": "2020-12-31T00:00:00Z",
    }
    result = check(sigstore.sign_legacy(REPO, DIGEST), parse_trusted_root(json.dumps(doc)))
    assert result.check.reason is Reason.UNTRUSTED_CERTIFICATE
    assert "no Fulcio CA is valid at" in result.check.detail


def test_policy_keyless_rule_needs_a_trusted_root() -> None:
    rule = TrustRule(pattern="*", keyless=(KeylessIdentity(identity=EMAIL, issuer=ISSUER),))
    with pytest.raises(ValueError, match="trusted_root is unset"):
        TrustPolicy(rules=(rule,))


def test_policy_keyless_identity_needs_one_identity_and_one_issuer() -> None:
    with pytest.raises(ValueError, match="exactly one of identity and identity_regexp"):
        KeylessIdentity(issuer=ISSUER)
    with pytest.raises(ValueError, match="exactly one of issuer and issuer_regexp"):
        KeylessIdentity(identity=EMAIL, issuer=ISSUER, issuer_regexp=".*")
    with pytest.raises(ValueError, match="is not a regular expression"):
        KeylessIdentity(identity_regexp="(", issuer=ISSUER)


def test_rule_needs_keys_or_keyless() -> None:
    with pytest.raises(ValueError, match="list keys, keyless identities, or both"):
        TrustRule(pattern="*")


def test_rekor_bundle_with_a_malformed_log_id_is_a_tlog_failure(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    sig = sigstore.sign_legacy(REPO, DIGEST)
    bundle = json.loads(sig.annotations[BUNDLE_ANNOTATION])
    bundle["Payload"]["logID"] = "not hex"
    broken = replace(sig, annotations={**sig.annotations, BUNDLE_ANNOTATION: json.dumps(bundle)})
    result = check(broken, root)
    assert result.check.reason is Reason.TLOG
    assert "is not hex" in result.check.detail
