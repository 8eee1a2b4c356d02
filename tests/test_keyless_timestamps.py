"""Keyless signing times from RFC 3161 timestamps, and Rekor v2 entries (inclusion proof + checkpoint).

A private Sigstore (tests/support/sigstore.py) makes real TSA tokens (CMS signed with its own TSA
key) and a real Merkle tree; each negative mutates one thing and names the check that failed.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from gitdock.runtime.trust.keyless import (
    TIMESTAMP_ANNOTATION,
    CertificateIdentity,
    KeylessResult,
    verify_keyless_bundle,
    verify_keyless_signature,
)
from gitdock.runtime.trust.signature import BUNDLE_ANNOTATION, LegacySignature, Reason, parse_sigstore_bundle
from gitdock.runtime.trust.transparency import hash_leaf, root_from_inclusion_proof
from gitdock.runtime.trust.trusted_root import TrustedRoot, parse_trusted_root
from support.sigstore import EMAIL, ISSUER, PrivateSigstore, Stamp, Tsa, merkle_path, merkle_root

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
REPO = "registry.example.com/team/app"
DIGEST = "sha256:" + "ab" * 32
SIGNER = CertificateIdentity(identity=EMAIL, issuer=ISSUER)


@pytest.fixture(scope="module")
def sigstore() -> PrivateSigstore:
    return PrivateSigstore()


@pytest.fixture(scope="module")
def root(sigstore: PrivateSigstore) -> TrustedRoot:
    return parse_trusted_root(sigstore.trusted_root())


def verify(bundle: bytes, root: TrustedRoot) -> KeylessResult:
    return verify_keyless_bundle(parse_sigstore_bundle(bundle), root, [SIGNER], digest=DIGEST, now=NOW)


def verify_legacy(sig: LegacySignature, root: TrustedRoot) -> KeylessResult:
    return verify_keyless_signature(sig, root, [SIGNER], digest=DIGEST, repository_ref=REPO, now=NOW)


# --- RFC 3161 timestamps ------------------------------------------------------------------------


def test_expired_certificate_verifies_with_a_timestamp_and_no_rekor_entry(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    leaf = sigstore.issue()
    bundle = sigstore.sign_bundle(DIGEST, leaf, rekor="none", stamp=Stamp())
    assert not json.loads(bundle)["verificationMaterial"]["tlogEntries"]
    assert leaf.certificate.not_valid_after_utc < NOW
    result = verify(bundle, root)
    assert result.check.ok, result.check
    assert result.signed_at == int(leaf.certificate.not_valid_before_utc.timestamp()) + 60


def test_same_bundle_without_its_timestamp_is_expired(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    doc = json.loads(sigstore.sign_bundle(DIGEST, rekor="none", stamp=Stamp()))
    del doc["verificationMaterial"]["timestampVerificationData"]
    result = verify(json.dumps(doc).encode(), root)
    assert result.check.reason is Reason.CERTIFICATE_EXPIRED
    assert "no Rekor SET or RFC 3161 timestamp proves when it signed" in result.check.detail


def test_timestamp_and_rekor_set_together_verify(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    result = verify(sigstore.sign_bundle(DIGEST, rekor="v1", stamp=Stamp()), root)
    assert result.check.ok, result.check


def test_legacy_signature_with_cosign_timestamp_annotation_verifies(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    sig = sigstore.sign_legacy(REPO, DIGEST, rekor=False, stamp=Stamp())
    assert BUNDLE_ANNOTATION not in sig.annotations and TIMESTAMP_ANNOTATION in sig.annotations
    result = verify_legacy(sig, root)
    assert result.check.ok, result.check
    assert result.signed_at is not None


def test_timestamp_from_an_untrusted_tsa_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    stranger = Tsa(sigstore.start)
    result = verify(sigstore.sign_bundle(DIGEST, rekor="none", stamp=Stamp(tsa=stranger)), root)
    assert result.check.reason is Reason.TIMESTAMP
    assert "not signed by a timestamp authority of the trusted root" in result.check.detail


def test_timestamp_over_other_bytes_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    result = verify(sigstore.sign_bundle(DIGEST, rekor="none", stamp=Stamp(over=b"another signature")), root)
    assert result.check.reason is Reason.TIMESTAMP
    assert "message imprint is not the hash of this signature" in result.check.detail


def test_legacy_timestamp_over_other_bytes_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    sig = sigstore.sign_legacy(REPO, DIGEST, rekor=False, stamp=Stamp(over=b"another signature"))
    assert verify_legacy(sig, root).check.reason is Reason.TIMESTAMP


def test_gentime_outside_the_signing_certificate_validity_is_refused(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    leaf = sigstore.issue()
    late = leaf.certificate.not_valid_after_utc + dt.timedelta(hours=1)
    result = verify(sigstore.sign_bundle(DIGEST, leaf, rekor="none", stamp=Stamp(at=late)), root)
    assert result.check.reason is Reason.CERTIFICATE_EXPIRED
    assert "not at the RFC 3161 timestamp's genTime" in result.check.detail


def test_gentime_outside_the_tsa_certificate_validity_is_refused(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    leaf = sigstore.issue(issued=sigstore.start - dt.timedelta(days=2))
    result = verify(sigstore.sign_bundle(DIGEST, leaf, rekor="none", stamp=Stamp()), root)
    assert result.check.reason is Reason.TIMESTAMP
    assert "outside its TSA certificate's validity" in result.check.detail


def test_tsa_outside_its_valid_for_period_is_refused(sigstore: PrivateSigstore) -> None:
    ended = {"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T12:00:00Z"}
    root = parse_trusted_root(sigstore.trusted_root(tsa_valid_for=ended))
    result = verify(sigstore.sign_bundle(DIGEST, rekor="none", stamp=Stamp()), root)
    assert result.check.reason is Reason.TIMESTAMP
    assert "is not valid at genTime" in result.check.detail


def test_timestamp_that_is_not_der_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    doc = json.loads(sigstore.sign_bundle(DIGEST, rekor="none", stamp=Stamp()))
    stamps = doc["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
    stamps[0]["signedTimestamp"] = base64.b64encode(b"\x30\x03garbage").decode()
    result = verify(json.dumps(doc).encode(), root)
    assert result.check.reason is Reason.TIMESTAMP
    assert "not a DER TimeStampResponse" in result.check.detail


# --- Rekor v2 -------------------------------------------------------------------------------------


def test_merkle_audit_path_leads_to_the_root_for_every_leaf_and_tree_size() -> None:
    for size in range(1, 12):
        leaves = [f"leaf-{i}".encode() for i in range(size)]
        for index in range(size):
            path = merkle_path(index, leaves)
            expected = merkle_root(leaves)
            assert root_from_inclusion_proof(hash_leaf(leaves[index]), index, size, path) == expected
            assert root_from_inclusion_proof(hash_leaf(b"other"), index, size, path) != expected
            if path:  # a path one hash short reaches no root
                assert root_from_inclusion_proof(hash_leaf(leaves[index]), index, size, path[:-1]) is None
            assert root_from_inclusion_proof(hash_leaf(leaves[index]), size, size, path) is None


def test_rekor_v2_entry_with_a_timestamp_verifies(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    bundle = sigstore.sign_bundle(DIGEST, rekor="v2", stamp=Stamp())
    entry = json.loads(bundle)["verificationMaterial"]["tlogEntries"][0]
    assert "inclusionPromise" not in entry and entry["kindVersion"]["version"] == "0.0.2"
    assert len(entry["inclusionProof"]["hashes"]) >= 2
    result = verify(bundle, root)
    assert result.check.ok, result.check
    assert result.signed_at is not None


def test_rekor_v2_entry_without_a_timestamp_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    result = verify(sigstore.sign_bundle(DIGEST, rekor="v2"), root)
    assert result.check.reason is Reason.TLOG
    assert "proves no signing time, and no RFC 3161 timestamp does" in result.check.detail


def _mutate_v2(sigstore: PrivateSigstore, change: object) -> bytes:
    doc = json.loads(sigstore.sign_bundle(DIGEST, rekor="v2", stamp=Stamp()))
    entry = doc["verificationMaterial"]["tlogEntries"][0]
    change(entry)  # type: ignore[operator]
    return json.dumps(doc).encode()


def _flip_first_hash(entry: dict[str, object]) -> None:
    proof = entry["inclusionProof"]
    assert isinstance(proof, dict)
    first = bytearray(base64.b64decode(proof["hashes"][0]))
    first[0] ^= 1
    proof["hashes"][0] = base64.b64encode(bytes(first)).decode()


def test_rekor_v2_tampered_inclusion_proof_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    result = verify(_mutate_v2(sigstore, _flip_first_hash), root)
    assert result.check.reason is Reason.TLOG
    assert "inclusion proof does not lead from the entry to the checkpoint's root hash" in result.check.detail


def test_rekor_v2_proof_for_another_index_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    def move(entry: dict[str, object]) -> None:
        index = str(int(str(entry["logIndex"])) + 1)
        entry["logIndex"] = index
        proof = entry["inclusionProof"]
        assert isinstance(proof, dict)
        proof["logIndex"] = index

    result = verify(_mutate_v2(sigstore, move), root)
    assert result.check.reason is Reason.TLOG
    assert "inclusion proof does not lead" in result.check.detail


def test_rekor_v2_checkpoint_signed_by_another_key_is_refused(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    result = verify(sigstore.sign_bundle(DIGEST, rekor="v2", stamp=Stamp(), checkpoint_key=other), root)
    assert result.check.reason is Reason.TLOG
    assert "checkpoint has no signature by the log's key" in result.check.detail


def test_rekor_v2_checkpoint_with_a_forged_signature_under_the_right_hint_is_refused(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    def forge(entry: dict[str, object]) -> None:
        proof = entry["inclusionProof"]
        assert isinstance(proof, dict)
        text, name_sig = proof["checkpoint"]["envelope"].rsplit(" ", 1)
        raw = base64.b64decode(name_sig)
        other = ec.generate_private_key(ec.SECP256R1())
        body = text.split("\n\n")[0] + "\n"
        forged = raw[:4] + other.sign(body.encode(), ec.ECDSA(hashes.SHA256()))
        proof["checkpoint"]["envelope"] = f"{text} {base64.b64encode(forged).decode()}\n"

    result = verify(_mutate_v2(sigstore, forge), root)
    assert result.check.reason is Reason.TLOG
    assert "checkpoint signature does not verify with the Rekor key" in result.check.detail


def test_rekor_v2_checkpoint_for_another_tree_is_refused(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    def grow(entry: dict[str, object]) -> None:
        proof = entry["inclusionProof"]
        assert isinstance(proof, dict)
        proof["treeSize"] = str(int(proof["treeSize"]) + 1)

    result = verify(_mutate_v2(sigstore, grow), root)
    assert result.check.reason is Reason.TLOG
    assert "checkpoint is for another tree than the inclusion proof" in result.check.detail


def test_rekor_v2_entry_for_another_signature_is_refused(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    leaf = sigstore.issue()
    elsewhere = sigstore.sign_message("sha256:" + "cd" * 32, leaf)
    result = verify(
        sigstore.sign_bundle(DIGEST, leaf, rekor="v2", stamp=Stamp(), logged_signature=elsewhere), root
    )
    assert result.check.reason is Reason.TLOG
    assert "logged entry is for another signature" in result.check.detail


def test_rekor_v2_entry_for_another_certificate_is_refused(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    bundle = sigstore.sign_bundle(DIGEST, rekor="v2", stamp=Stamp(), logged_leaf=sigstore.issue())
    result = verify(bundle, root)
    assert result.check.reason is Reason.TLOG
    assert "logged entry was made with another certificate" in result.check.detail


def test_rekor_v2_body_changed_after_logging_is_refused(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    def rewrite(entry: dict[str, object]) -> None:
        body = json.loads(base64.b64decode(str(entry["canonicalizedBody"])))
        body["spec"]["hashedRekordV002"]["data"]["digest"] = base64.b64encode(b"\xcd" * 32).decode()
        entry["canonicalizedBody"] = base64.b64encode(json.dumps(body).encode()).decode()

    result = verify(_mutate_v2(sigstore, rewrite), root)
    assert result.check.reason is Reason.TLOG
    assert "inclusion proof does not lead" in result.check.detail


def test_rekor_v2_log_not_in_the_trusted_root_is_refused(
    sigstore: PrivateSigstore, root: TrustedRoot
) -> None:
    def rename(entry: dict[str, object]) -> None:
        entry["logId"] = {"keyId": base64.b64encode(b"\x07" * 32).decode()}

    result = verify(_mutate_v2(sigstore, rename), root)
    assert result.check.reason is Reason.TLOG
    assert "is not in the trusted root" in result.check.detail


def test_rekor_v1_entry_without_its_set_is_not_read(sigstore: PrivateSigstore, root: TrustedRoot) -> None:
    doc = json.loads(sigstore.sign_bundle(DIGEST, rekor="v1", stamp=Stamp()))
    entry = doc["verificationMaterial"]["tlogEntries"][0]
    del entry["inclusionPromise"]
    entry["inclusionProof"] = {"logIndex": entry["logIndex"], "treeSize": "1", "hashes": []}
    bundle = parse_sigstore_bundle(json.dumps(doc).encode())
    assert not bundle.tlog_entries and len(bundle.proof_entries) == 1
    result = verify(json.dumps(doc).encode(), root)
    assert result.check.ok, result.check  # the timestamp alone proves the time


def test_rekor_v2_checkpoint_signed_with_ed25519_and_a_c2sp_key_hint_verifies() -> None:
    sigstore = PrivateSigstore(rekor2_ed25519=True)
    root = parse_trusted_root(sigstore.trusted_root())
    bundle = sigstore.sign_bundle(DIGEST, rekor="v2", stamp=Stamp())
    entry = json.loads(bundle)["verificationMaterial"]["tlogEntries"][0]
    hint = base64.b64decode(entry["inclusionProof"]["checkpoint"]["envelope"].rsplit(" ", 1)[1])[:4]
    assert hint != base64.b64decode(entry["logId"]["keyId"])[:4]  # the C2SP key id, not the log id
    result = verify(bundle, root)
    assert result.check.ok, result.check
