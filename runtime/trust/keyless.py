"""Keyless (Fulcio) signatures: a short-lived certificate, not a key, says who signed (pure).

This is a purely computational module: no I/O, the clock is passed in. `verify_certificate`
checks one signing certificate against a pinned `TrustedRoot` and the rule's identities, in
this order, and a failure names the check that failed:

1. signing time: every Rekor SET is verified with the trusted root's Rekor key for its log
   id (valid at the entry's integratedTime) and must record this signature and certificate;
   every RFC 3161 timestamp must be signed by a timestamp authority of the trusted root over
   the signature bytes (`timestamp`); each integratedTime and genTime is a proven time. Then
   every Rekor v2 entry (no SET: an inclusion proof to a signed checkpoint, `transparency`)
   must verify and record this signature and certificate; it proves no time, so it needs an
   RFC 3161 timestamp. Without any proven time the time is `now`.
2. validity: the certificate was valid at every proven time, so a ten-minute Fulcio
   certificate still verifies a year later when a log or a TSA proves it signed in time.
3. chain: up to a root of a Fulcio CA valid at that time (`cryptography.x509.verification`,
   no hostname; a CA's EKU is not held to clientAuth), and the leaf has the code-signing EKU.
4. SCT: an embedded SCT verifies with a CT log key of the trusted root valid at its time.
5. identity: a SAN (email or URI) and the OIDC issuer (extension 1.3.6.1.4.1.57264.1.8,
   falling back to the older .1.1) match one of the rule's identities; regexps must match
   the whole value.

The signature over the payload is checked by `signature`, with the certificate's key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
from gitdock.runtime.trust.timestamp import verify_timestamp
from gitdock.runtime.trust.transparency import parse_log_entry_v2, verify_log_entry_v2
from gitdock.runtime.trust.trusted_root import TrustedRoot

__all__ = [
    "OIDC_ISSUER",
    "OIDC_ISSUER_V1",
    "TIMESTAMP_ANNOTATION",
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
# cosign's annotation for a TSA timestamp over the raw signature bytes of a `.sig` layer.
TIMESTAMP_ANNOTATION = "dev.sigstore.cosign/rfc3161timestamp"


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
    """What a keyless signature carries: its certificate, offered intermediates, Rekor entries.

    `timestamps` are DER RFC 3161 TimeStampResponses; `proof_entries` raw Rekor v2 entries.
    """

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    tlog_entries: tuple[RekorEntry, ...] = ()
    timestamps: tuple[bytes, ...] = ()
    proof_entries: tuple[Any, ...] = ()


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


@dataclass(frozen=True)
class _Proof:
    """One proven signing time (unix seconds) and what proved it, for messages."""

    at: int
    source: str


def _set_times(
    material: KeylessMaterial, root: TrustedRoot, *, signed_hash: str, signature: bytes
) -> tuple[list[_Proof], Check]:
    """The integratedTime every Rekor SET proves."""
    proofs: list[_Proof] = []
    key = certificate_key(material.certificate)
    for entry in material.tlog_entries:
        try:
            log_id = bytes.fromhex(entry.log_id)
        except ValueError:
            return [], Check.failed(Reason.TLOG, f"Rekor SET: log id {entry.log_id!r} is not hex")
        log = root.tlog(log_id, _at(entry.integrated_time))
        if log is None:
            return [], Check.failed(Reason.TLOG, f"Rekor SET: log {entry.log_id} is not in the trusted root")
        try:
            check = verify_rekor_entry(entry, log.key, signed_hash=signed_hash, signature=signature, key=key)
        except SignatureFormatError as exc:
            return [], Check.failed(Reason.TLOG, f"Rekor SET: {exc}")
        if not check.ok:
            return [], Check.failed(Reason.TLOG, f"Rekor SET: {check.detail}")
        proofs.append(_Proof(entry.integrated_time, "the Rekor SET's integrated time"))
    return proofs, Check.passed()


def _timestamp_times(
    material: KeylessMaterial, root: TrustedRoot, signature: bytes
) -> tuple[list[_Proof], Check]:
    """The genTime every RFC 3161 timestamp proves for `signature`."""
    proofs: list[_Proof] = []
    for token in material.timestamps:
        at, check = verify_timestamp(token, signature, root)
        if at is None:
            return [], check
        proofs.append(_Proof(int(at.timestamp()), "the RFC 3161 timestamp's genTime"))
    return proofs, Check.passed()


def _is_rekor_v1(node: Any) -> bool:
    kind_version = node.get("kindVersion") if isinstance(node, dict) else None
    return isinstance(kind_version, dict) and kind_version.get("version") == "0.0.1"


def _check_v2_entries(
    material: KeylessMaterial, root: TrustedRoot, stamped: list[_Proof], *, signed_hash: str, signature: bytes
) -> Check:
    """Every Rekor v2 entry verifies at the timestamped time; it cannot prove a time itself.

    A Rekor v1 entry without its SET proves nothing here and is skipped, as it always was.
    """
    nodes = [n for n in material.proof_entries if not _is_rekor_v1(n)]
    if not nodes:
        return Check.passed()
    if not stamped:
        return Check.failed(
            Reason.TLOG, "Rekor v2 entry: it proves no signing time, and no RFC 3161 timestamp does"
        )
    at = _at(max(p.at for p in stamped))
    certificate = material.certificate.public_bytes(serialization.Encoding.DER)
    for node in nodes:
        check = verify_log_entry_v2(
            parse_log_entry_v2(node),
            root,
            signed_hash=signed_hash,
            signature=signature,
            certificate=certificate,
            at=at,
        )
        if not check.ok:
            return check
    return Check.passed()


def _proven_times(
    material: KeylessMaterial, root: TrustedRoot, *, signed_hash: str, signature: bytes
) -> tuple[list[_Proof], Check]:
    """Every proven signing time (SETs, then timestamps), after the Rekor v2 entries verify."""
    logged, check = _set_times(material, root, signed_hash=signed_hash, signature=signature)
    if not check.ok:
        return [], check
    stamped, check = _timestamp_times(material, root, signature)
    if not check.ok:
        return [], check
    check = _check_v2_entries(material, root, stamped, signed_hash=signed_hash, signature=signature)
    return ([], check) if not check.ok else ([*logged, *stamped], check)


def _check_validity(leaf: x509.Certificate, proofs: list[_Proof], now: datetime) -> Check:
    """The certificate was valid at every proven time, or now when nothing proves a time."""
    for at, since in [(_at(p.at), p.source) for p in proofs] or [
        (now, "now (no Rekor SET or RFC 3161 timestamp proves when it signed)")
    ]:
        if not leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc:
            valid = f"{leaf.not_valid_before_utc:{_ISO}} to {leaf.not_valid_after_utc:{_ISO}}"
            detail = f"certificate validity: valid {valid}, not at {since} {at:{_ISO}}"
            return Check.failed(Reason.CERTIFICATE_EXPIRED, detail)
    return Check.passed()


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
        proofs, check = _proven_times(material, root, signed_hash=signed_hash, signature=signature)
    except SignatureFormatError as exc:
        return KeylessResult(Check.failed(Reason.TLOG, str(exc)))
    if not check.ok:
        return KeylessResult(check)
    check = _check_validity(leaf, proofs, now)
    if not check.ok:
        return KeylessResult(check)
    proven = max((p.at for p in proofs), default=None)
    at = _at(proven) if proven is not None else now
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


def _parse_timestamp_annotation(text: str) -> bytes:
    """cosign's `dev.sigstore.cosign/rfc3161timestamp`: {"SignedRFC3161Timestamp": base64 DER}."""
    try:
        doc = json.loads(text)
        return base64.b64decode(doc["SignedRFC3161Timestamp"], validate=True)
    except (ValueError, TypeError, KeyError) as exc:
        raise SignatureFormatError(
            "rfc3161timestamp annotation: not {SignedRFC3161Timestamp: base64}"
        ) from exc


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
    stamp = sig.annotations.get(TIMESTAMP_ANNOTATION)
    material = KeylessMaterial(
        leaf,
        chain,
        (parse_rekor_bundle(entry),) if entry else (),
        (_parse_timestamp_annotation(stamp),) if stamp else (),
    )
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
    material = KeylessMaterial(
        certs[0],
        tuple(certs[1:]),
        tuple(bundle.tlog_entries),
        tuple(bundle.timestamps),
        tuple(bundle.proof_entries),
    )
    return verify_certificate(
        material, root, identities, signed_hash=signed_hash, signature=signature, now=now
    )
