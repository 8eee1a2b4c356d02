"""Keyless (Fulcio) signatures: a short-lived certificate, not a key, says who signed (pure).

This is a purely computational module: no I/O, the clock is passed in. `verify_certificate`
checks one signing certificate against a pinned `TrustedRoot` and the rule's identities, in
this order, and a failure names the check that failed:

1. signing time: every Rekor SET is verified with the trusted root's Rekor key for its log
   id (valid at the entry's integratedTime) and must record this signature and certificate;
   the proven time is integratedTime. Without an entry the time is `now`.
2. validity: the certificate was valid at that time, so a ten-minute Fulcio certificate still
   verifies a year later when the log proves the signature was made in time.
3. chain: up to a root of a Fulcio CA valid at that time (`cryptography.x509.verification`,
   no hostname; a CA's EKU is not held to clientAuth), and the leaf has the code-signing EKU.
4. SCT: an embedded SCT verifies with a CT log key of the trusted root valid at its time.
5. identity: a SAN (email or URI) and the OIDC issuer (extension 1.3.6.1.4.1.57264.1.8,
   falling back to the older .1.1) match one of the rule's identities; regexps must match
   the whole value.

The signature over the payload is checked by `signature`, with the certificate's key.
RFC 3161 timestamps and Rekor v2 entries are not read yet.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from gitdock.runtime.trust.keys import PublicKey, load_public_key
from gitdock.runtime.trust.signature import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    SIGNATURE_ANNOTATION,
    Check,
    IdentityMode,
    LegacySignature,
    Reason,
    RekorEntry,
    SignatureFormatError,
    SigstoreBundle,
    dsse_pae,
    parse_rekor_bundle,
    sha256_digest,
    verify_bundle,
    verify_legacy_signature,
    verify_rekor_entry,
    verify_signature,
)
from gitdock.runtime.trust.trusted_root import TrustedRoot

__all__ = [
    "OIDC_ISSUER",
    "OIDC_ISSUER_V1",
    "CertificateIdentity",
    "KeylessMaterial",
    "KeylessResult",
    "certificate_issuer",
    "certificate_key",
    "certificate_sans",
    "load_certificates",
    "verify_certificate",
    "verify_keyless_bundle",
    "verify_keyless_signature",
]

OIDC_ISSUER = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
OIDC_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
# Fulcio's intermediates carry EKU codeSigning; webpki's CA policy would demand the leaf's EKU.
_CA_POLICY = verification.ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, None
)
_EE_POLICY = verification.ExtensionPolicy.permit_all()
_ISO = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class CertificateIdentity:
    """Who may have signed: a SAN (exact or regexp) and an OIDC issuer (exact or regexp)."""

    identity: str | None = None
    identity_regexp: str | None = None
    issuer: str | None = None
    issuer_regexp: str | None = None

    def is_identity_match(self, sans: Sequence[str]) -> bool:
        if self.identity is not None:
            return self.identity in sans
        pattern = re.compile(self.identity_regexp or "")
        return any(pattern.fullmatch(san) for san in sans)

    def is_issuer_match(self, issuer: str | None) -> bool:
        if issuer is None:
            return False
        if self.issuer is not None:
            return issuer == self.issuer
        return re.fullmatch(self.issuer_regexp or "", issuer) is not None

    def describe(self) -> str:
        who = self.identity if self.identity is not None else f"/{self.identity_regexp}/"
        by = self.issuer if self.issuer is not None else f"/{self.issuer_regexp}/"
        return f"{who} from {by}"


@dataclass(frozen=True)
class KeylessMaterial:
    """What a keyless signature carries: its certificate, offered intermediates, Rekor entries."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    tlog_entries: tuple[RekorEntry, ...] = ()


@dataclass(frozen=True)
class KeylessResult:
    """The outcome: the check, the proven signing time (unix seconds) and who signed."""

    check: Check
    signed_at: int | None = None
    signer: str = ""


def load_certificates(data: bytes, what: str) -> tuple[x509.Certificate, ...]:
    """PEM (one or more blocks) or a single DER certificate; raise SignatureFormatError."""
    try:
        if b"-----BEGIN" in data:
            return tuple(x509.load_pem_x509_certificates(data))
        return (x509.load_der_x509_certificate(data),)
    except ValueError as exc:
        raise SignatureFormatError(f"{what}: not an X.509 certificate") from exc


def certificate_key(cert: x509.Certificate) -> PublicKey:
    """The certificate's public key, if it is a kind cosign signs with; raise SignatureFormatError."""
    pem = cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        return load_public_key(pem)
    except Exception as exc:  # KeyFileError or an unsupported key type: either way, not usable
        raise SignatureFormatError(f"certificate: public key is not supported ({exc})") from exc


def certificate_sans(cert: x509.Certificate) -> list[str]:
    """The email and URI subject alternative names."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        *san.get_values_for_type(x509.RFC822Name),
        *san.get_values_for_type(x509.UniformResourceIdentifier),
    ]


def _der_utf8(value: bytes) -> str | None:
    """The text of a DER UTF8String (tag 12), or None."""
    if len(value) < 2 or value[0] != 0x0C:
        return None
    length, start = value[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, start = int.from_bytes(value[2 : 2 + count], "big"), 2 + count
    body = value[start : start + length]
    return body.decode("utf-8", errors="replace") if len(body) == length else None


def certificate_issuer(cert: x509.Certificate) -> str | None:
    """The OIDC issuer Fulcio recorded: extension .1.8 (DER UTF8String), else .1.1 (raw text)."""
    for oid, decode in ((OIDC_ISSUER, _der_utf8), (OIDC_ISSUER_V1, lambda v: v.decode("utf-8", "replace"))):
        try:
            ext = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        if isinstance(ext, x509.UnrecognizedExtension):
            return decode(ext.value)
    return None


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _proven_time(
    material: KeylessMaterial, root: TrustedRoot, *, signed_hash: str, signature: bytes
) -> tuple[int | None, Check]:
    """The latest integratedTime every Rekor entry proves, or None when there is no entry."""
    proven: int | None = None
    key = certificate_key(material.certificate)
    for entry in material.tlog_entries:
        try:
            log_id = bytes.fromhex(entry.log_id)
        except ValueError:
            return None, Check.failed(Reason.TLOG, f"Rekor SET: log id {entry.log_id!r} is not hex")
        log = root.tlog(log_id, _at(entry.integrated_time))
        if log is None:
            return None, Check.failed(
                Reason.TLOG, f"Rekor SET: log {entry.log_id} is not in the trusted root"
            )
        check = verify_rekor_entry(entry, log.key, signed_hash=signed_hash, signature=signature, key=key)
        if not check.ok:
            return None, Check.failed(Reason.TLOG, f"Rekor SET: {check.detail}")
        proven = max(proven or 0, entry.integrated_time)
    return proven, Check.passed()


def _verify_chain(
    leaf: x509.Certificate, offered: Sequence[x509.Certificate], root: TrustedRoot, at: datetime
) -> tuple[list[x509.Certificate], Check]:
    """The verified chain (leaf first) to a Fulcio root valid at `at`, or why there is none."""
    authorities = root.authorities_at(at)
    if not authorities:
        return [], Check.failed(
            Reason.UNTRUSTED_CERTIFICATE,
            f"certificate chain: no Fulcio CA is valid at {at:%Y-%m-%dT%H:%M:%SZ}",
        )
    why = ""
    for authority in authorities:
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(list(authority.roots)))
            .time(at)
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(leaf, [*authority.intermediates, *offered])
        except verification.VerificationError as exc:
            why = str(exc)
            continue
        return list(verified.chain), Check.passed()
    return [], Check.failed(
        Reason.UNTRUSTED_CERTIFICATE, f"certificate chain: does not lead to a trusted Fulcio root ({why})"
    )


def _has_code_signing(cert: x509.Certificate) -> bool:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CODE_SIGNING in usages


def _sct_signed_data(
    sct: x509.certificate_transparency.SignedCertificateTimestamp,
    leaf: x509.Certificate,
    issuer: x509.Certificate,
) -> bytes:
    """RFC 6962 §3.2's digitally-signed struct for a precertificate entry."""
    issuer_key = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tbs = leaf.tbs_precertificate_bytes
    millis = int(sct.timestamp.replace(tzinfo=UTC).timestamp() * 1000)
    return b"".join(
        [
            b"\x00\x00",  # v1, certificate_timestamp
            millis.to_bytes(8, "big"),
            b"\x00\x01",  # precert_entry
            hashlib.sha256(issuer_key).digest(),
            len(tbs).to_bytes(3, "big"),
            tbs,
            len(sct.extension_bytes).to_bytes(2, "big"),
            sct.extension_bytes,
        ]
    )


def _verify_sct(leaf: x509.Certificate, issuer: x509.Certificate, root: TrustedRoot) -> Check:
    """One embedded SCT must verify with a CT log key of the trusted root."""
    try:
        scts = leaf.extensions.get_extension_for_class(x509.PrecertificateSignedCertificateTimestamps).value
    except x509.ExtensionNotFound:
        return Check.failed(Reason.SCT, "SCT: the certificate has no embedded SCT")
    why = "no SCT"
    for sct in scts:
        log = root.ctlog(sct.log_id, sct.timestamp.replace(tzinfo=UTC))
        if log is None:
            why = f"CT log {sct.log_id.hex()} is not in the trusted root"
            continue
        if not isinstance(sct.signature_hash_algorithm, hashes.SHA256):
            why = "SCT is not signed with SHA-256"
            continue
        if verify_signature(log.key, _sct_signed_data(sct, leaf, issuer), sct.signature):
            return Check.passed()
        why = f"SCT signature does not verify with CT log {sct.log_id.hex()}"
    return Check.failed(Reason.SCT, f"SCT: {why}")


def _match_identity(cert: x509.Certificate, identities: Sequence[CertificateIdentity]) -> tuple[str, Check]:
    sans, issuer = certificate_sans(cert), certificate_issuer(cert)
    signer = f"{', '.join(sans) or '(no SAN)'} from {issuer or '(no issuer)'}"
    by_identity = [i for i in identities if i.is_identity_match(sans)]
    if not by_identity:
        wanted = "; ".join(i.describe() for i in identities)
        return signer, Check.failed(
            Reason.CERTIFICATE_IDENTITY, f"certificate identity: {signer} is not {wanted}"
        )
    if not any(i.is_issuer_match(issuer) for i in by_identity):
        wanted = "; ".join(i.describe() for i in by_identity)
        return signer, Check.failed(Reason.ISSUER_MISMATCH, f"certificate issuer: {signer} is not {wanted}")
    return signer, Check.passed()


def verify_certificate(
    material: KeylessMaterial,
    root: TrustedRoot,
    identities: Sequence[CertificateIdentity],
    *,
    signed_hash: str,
    signature: bytes,
    now: datetime,
) -> KeylessResult:
    """Checks 1-5 of the module docstring for a signature already verified with the cert's key.

    `signed_hash` (hex SHA-256 of what was signed) and `signature` tie the Rekor entries to it.
    """
    leaf = material.certificate
    try:
        proven, check = _proven_time(material, root, signed_hash=signed_hash, signature=signature)
    except SignatureFormatError as exc:
        return KeylessResult(Check.failed(Reason.TLOG, f"Rekor SET: {exc}"))
    if not check.ok:
        return KeylessResult(check)
    at = _at(proven) if proven is not None else now
    if not leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc:
        since = (
            "the Rekor SET's integrated time"
            if proven is not None
            else "now (no Rekor SET proves when it signed)"
        )
        valid = f"{leaf.not_valid_before_utc:{_ISO}} to {leaf.not_valid_after_utc:{_ISO}}"
        detail = f"certificate validity: valid {valid}, not at {since}"
        return KeylessResult(Check.failed(Reason.CERTIFICATE_EXPIRED, detail))
    chain, check = _verify_chain(leaf, material.chain, root, at)
    if not check.ok:
        return KeylessResult(check)
    if not _has_code_signing(leaf):
        return KeylessResult(
            Check.failed(Reason.UNTRUSTED_CERTIFICATE, "certificate: no code-signing extended key usage")
        )
    check = _verify_sct(leaf, chain[1], root)
    if not check.ok:
        return KeylessResult(check)
    signer, check = _match_identity(leaf, identities)
    if not check.ok:
        return KeylessResult(check, signer=signer)
    return KeylessResult(Check.passed(f"keyless {signer}"), proven, signer)


def verify_keyless_signature(
    sig: LegacySignature,
    root: TrustedRoot,
    identities: Sequence[CertificateIdentity],
    *,
    digest: str,
    repository_ref: str,
    identity: IdentityMode = IdentityMode.EXACT_REPOSITORY,
    now: datetime,
) -> KeylessResult:
    """A cosign keyless `.sig` layer: certificate/chain/bundle annotations, then the payload.

    Raises SignatureFormatError when an annotation is malformed.
    """
    pem = sig.annotations.get(CERTIFICATE_ANNOTATION)
    if not pem:
        return KeylessResult(Check.failed(Reason.NO_SIGNATURE, "no certificate: not a keyless signature"))
    leaf = load_certificates(pem.encode(), "certificate annotation")[0]
    chain_pem = sig.annotations.get(CHAIN_ANNOTATION)
    chain = load_certificates(chain_pem.encode(), "chain annotation") if chain_pem else ()
    check = verify_legacy_signature(
        sig, certificate_key(leaf), digest=digest, repository_ref=repository_ref, identity=identity
    )
    if not check.ok:
        return KeylessResult(check)
    entry = sig.annotations.get(BUNDLE_ANNOTATION)
    material = KeylessMaterial(leaf, chain, (parse_rekor_bundle(entry),) if entry else ())
    signature = base64.b64decode(sig.annotations.get(SIGNATURE_ANNOTATION, ""))
    signed_hash = sha256_digest(sig.payload).removeprefix("sha256:")
    return verify_certificate(
        material, root, identities, signed_hash=signed_hash, signature=signature, now=now
    )


def verify_keyless_bundle(
    bundle: SigstoreBundle,
    root: TrustedRoot,
    identities: Sequence[CertificateIdentity],
    *,
    digest: str,
    now: datetime,
) -> KeylessResult:
    """A Sigstore bundle (v0.1-v0.3) whose verification material is a certificate."""
    if not bundle.certificates:
        return KeylessResult(Check.failed(Reason.NO_SIGNATURE, "no certificate: not a keyless bundle"))
    certs = [load_certificates(der, "bundle certificate")[0] for der in bundle.certificates]
    key = certificate_key(certs[0])
    check = verify_bundle(bundle, key, digest=digest)
    if not check.ok:
        return KeylessResult(check)
    if bundle.dsse is not None:
        signed = dsse_pae(bundle.dsse.payload_type, bundle.dsse.payload)
        signature = next(s for s in bundle.dsse.signatures if verify_signature(key, signed, s))
        signed_hash = sha256_digest(bundle.dsse.payload).removeprefix("sha256:")
    else:
        assert bundle.message_digest is not None and bundle.message_signature is not None
        signature, signed_hash = bundle.message_signature, bundle.message_digest.hex()
    material = KeylessMaterial(certs[0], tuple(certs[1:]), tuple(bundle.tlog_entries))
    return verify_certificate(
        material, root, identities, signed_hash=signed_hash, signature=signature, now=now
    )
