"""Signature maths for cosign-compatible image signatures.

This is a purely computational module with no side-effects and no network access: it parses
simple-signing payloads, Sigstore bundles and Rekor SETs, names cosign's tags, and checks
signatures with `cryptography`. Fetching the bytes is `trust.registry`'s job; applying the
policy is `trust.verify`'s.

Every `verify_*` function returns a `Check` (ok, or a `Reason` plus a detail) rather than
raising, so the caller can try the next signature and still report why each one failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from gitdock.runtime.trust.errors import TrustError
from gitdock.runtime.trust.keys import PrivateKey, PublicKey
from gitdock.specs.reference import parse_reference

__all__ = [
    "BUNDLE_ANNOTATION",
    "CERTIFICATE_ANNOTATION",
    "CHAIN_ANNOTATION",
    "COSIGN_SIGNATURE_TYPE",
    "SIGNATURE_ANNOTATION",
    "SIGSTORE_BUNDLE_MEDIA_TYPE",
    "SIMPLE_SIGNING_MEDIA_TYPE",
    "Check",
    "DsseEnvelope",
    "IdentityMode",
    "LegacySignature",
    "Reason",
    "RekorEntry",
    "RekorMode",
    "SignatureFormatError",
    "SigstoreBundle",
    "SimpleSigningPayload",
    "dsse_pae",
    "is_identity_match",
    "is_well_formed_signature",
    "legacy_signature_tag",
    "make_simple_signing_payload",
    "parse_rekor_bundle",
    "parse_sigstore_bundle",
    "parse_sigstore_json",
    "parse_simple_signing",
    "referrers_tag",
    "sha256_digest",
    "sign_payload",
    "verify_bundle",
    "verify_legacy_signature",
    "verify_rekor_entry",
    "verify_signature",
]

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGSTORE_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
COSIGN_SIGNATURE_TYPE = "cosign container image signature"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
_IN_TOTO_STATEMENT_TYPES = frozenset({"https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"})
_SIGSTORE_JSON_PREFIX = b"\x00sigstore-json\n"
_MAX_PAYLOAD = 1024 * 1024


class SignatureFormatError(TrustError):
    """Signature data is malformed: not the JSON, base64 or structure cosign writes."""


class Reason(StrEnum):
    """Why an image was refused; the words appear in error messages."""

    NO_SIGNATURE = "no signature"
    BAD_SIGNATURE = "bad signature"
    UNKNOWN_KEY = "unknown key"
    DIGEST_MISMATCH = "digest mismatch"
    IDENTITY_MISMATCH = "identity mismatch"
    TLOG = "transparency log check failed"
    # Keyless (Fulcio certificate) signatures:
    UNTRUSTED_CERTIFICATE = "untrusted certificate"
    CERTIFICATE_EXPIRED = "certificate expired"
    SCT = "certificate transparency check failed"
    CERTIFICATE_IDENTITY = "certificate identity mismatch"
    ISSUER_MISMATCH = "issuer mismatch"
    TIMESTAMP = "timestamp check failed"


class RekorMode(StrEnum):
    """What to do with a Rekor signed entry timestamp (SET) for a key."""

    REQUIRED = "required"
    IF_PRESENT = "if-present"
    IGNORE = "ignore"


class IdentityMode(StrEnum):
    """How the payload's `docker-reference` must relate to the image being verified."""

    EXACT_REPOSITORY = "exact-repository"
    IGNORE = "ignore"


@dataclass(frozen=True)
class Check:
    """The result of checking one signature against one key."""

    ok: bool
    reason: Reason | None = None
    detail: str = ""
    # A well-formed signature that this key did not make: when no listed key made it, the
    # signer is a key the policy does not list (`unknown key`), not a broken signature.
    wrong_key: bool = False

    @classmethod
    def passed(cls, detail: str = "") -> Check:
        return cls(True, None, detail)

    @classmethod
    def failed(cls, reason: Reason, detail: str) -> Check:
        return cls(False, reason, detail)

    @classmethod
    def not_this_key(cls, key: PublicKey, signature: bytes, detail: str) -> Check:
        """BAD_SIGNATURE for `signature` not verifying with `key`; `wrong_key` when it is well-formed."""
        return cls(False, Reason.BAD_SIGNATURE, detail, is_well_formed_signature(key, signature))


def is_well_formed_signature(key: PublicKey, signature: bytes) -> bool:
    """Whether `signature` has the shape `key`'s algorithm makes (DER ECDSA, RSA modulus size, 64 bytes)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        try:
            utils.decode_dss_signature(signature)
        except ValueError:
            return False
        return True
    if isinstance(key, rsa.RSAPublicKey):
        return len(signature) == (key.key_size + 7) // 8
    return len(signature) == 64


def sha256_digest(data: bytes) -> str:
    """`sha256:<hex>` of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureFormatError(f"{what}: not valid base64") from exc


def _load_json(data: bytes | str, what: str) -> Any:
    if len(data) > _MAX_PAYLOAD:
        raise SignatureFormatError(f"{what}: larger than {_MAX_PAYLOAD} bytes")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignatureFormatError(f"{what}: not valid JSON") from exc


def _get(node: Any, *path: str) -> Any:
    for name in path:
        node = node.get(name) if isinstance(node, dict) else None
    return node


# --- the cryptography --------------------------------------------------------------------------

_EC_HASHES: Mapping[str, tuple[type[hashes.HashAlgorithm], ...]] = {
    # cosign hashes with SHA-256 whatever the curve; Sigstore bundles use the curve's own hash.
    "secp256r1": (hashes.SHA256,),
    "secp384r1": (hashes.SHA256, hashes.SHA384),
    "secp521r1": (hashes.SHA256, hashes.SHA512),
}


def verify_signature(key: PublicKey, data: bytes, signature: bytes) -> bool:
    """True when `signature` is `key`'s signature over `data` the way cosign makes it.

    ECDSA (DER-encoded, SHA-256 or the curve's hash), RSA PKCS#1 v1.5 with SHA-256, Ed25519.
    """
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            for algorithm in _EC_HASHES.get(key.curve.name, ()):
                try:
                    key.verify(signature, data, ec.ECDSA(algorithm()))
                    return True
                except InvalidSignature:
                    continue
            return False
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            return True
        key.verify(signature, data)
        return True
    except (InvalidSignature, ValueError):
        return False


def sign_payload(key: PrivateKey, data: bytes) -> bytes:
    """Sign `data` as cosign does: ECDSA/SHA-256 (DER), RSA PKCS#1 v1.5/SHA-256, or Ed25519."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data)


def _verify_prehashed(key: PublicKey, digest: bytes, signature: bytes) -> bool:
    """Signature over a message known only by its SHA-256 digest (Sigstore message signatures)."""
    prehashed = utils.Prehashed(hashes.SHA256())
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(prehashed))
            return True
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, padding.PKCS1v15(), prehashed)
            return True
        return False  # Ed25519 signs the whole message; a digest alone cannot be checked
    except (InvalidSignature, ValueError):
        return False


def dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding: the bytes a DSSE signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _public_der(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- simple signing payloads ---------------------------------------------------------------------


@dataclass(frozen=True)
class SimpleSigningPayload:
    """The `critical` section of a cosign simple-signing payload."""

    docker_reference: str
    manifest_digest: str
    signature_type: str
    optional: Mapping[str, Any] = field(default_factory=dict)


def parse_simple_signing(payload: bytes) -> SimpleSigningPayload:
    """Parse cosign's simple-signing JSON; raise SignatureFormatError when a field is missing."""
    doc = _load_json(payload, "simple-signing payload")
    reference = _get(doc, "critical", "identity", "docker-reference")
    digest = _get(doc, "critical", "image", "docker-manifest-digest")
    kind = _get(doc, "critical", "type")
    if not isinstance(reference, str) or not isinstance(digest, str) or not isinstance(kind, str):
        raise SignatureFormatError(
            "simple-signing payload: critical.identity.docker-reference, "
            "critical.image.docker-manifest-digest and critical.type are required"
        )
    optional = _get(doc, "optional")
    return SimpleSigningPayload(reference, digest, kind, optional if isinstance(optional, dict) else {})


def make_simple_signing_payload(
    docker_reference: str, manifest_digest: str, *, timestamp: int | None = None
) -> bytes:
    """The payload `cosign sign` writes: compact JSON, keys in cosign's order.

    ``timestamp`` fills the format's ``optional.timestamp`` (unix seconds), which cosign leaves
    null; verifiers ignore it, gitdock records it as the signature's time.
    """
    doc = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": COSIGN_SIGNATURE_TYPE,
        },
        "optional": {"timestamp": timestamp} if timestamp is not None else None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def is_identity_match(docker_reference: str, repository_ref: str, mode: IdentityMode) -> bool:
    """Whether a payload's `docker-reference` names the repository `repository_ref` (registry/repo)."""
    if mode is IdentityMode.IGNORE:
        return True
    try:
        signed = parse_reference(docker_reference)
    except ValueError:
        return False
    return signed.repository_ref == repository_ref


# --- Rekor ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RekorEntry:
    """A Rekor entry with its signed entry timestamp, as cosign stores it in the bundle annotation."""

    signed_entry_timestamp: bytes
    body: str  # base64 of the canonicalised entry, exactly as logged
    integrated_time: int
    log_index: int
    log_id: str  # hex SHA-256 of the log's public key

    def canonical_payload(self) -> bytes:
        """Canonical JSON the SET signs: sorted keys, no whitespace."""
        doc = {
            "body": self.body,
            "integratedTime": self.integrated_time,
            "logID": self.log_id,
            "logIndex": self.log_index,
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def parse_rekor_bundle(text: str) -> RekorEntry:
    """Parse the `dev.sigstore.cosign/bundle` annotation."""
    doc = _load_json(text, "rekor bundle")
    payload = _get(doc, "Payload")
    set_b64 = _get(doc, "SignedEntryTimestamp")
    body = _get(payload, "body")
    integrated = _get(payload, "integratedTime")
    index = _get(payload, "logIndex")
    log_id = _get(payload, "logID")
    if not (
        isinstance(set_b64, str)
        and isinstance(body, str)
        and isinstance(integrated, int)
        and isinstance(index, int)
        and isinstance(log_id, str)
    ):
        raise SignatureFormatError("rekor bundle: SignedEntryTimestamp and Payload fields are required")
    return RekorEntry(_b64decode(set_b64, "rekor SET"), body, integrated, index, log_id)


def _entry_binds(entry: RekorEntry, signed_hash: str, signature: bytes, key: PublicKey) -> str:
    """Empty when the logged entry records this signature, payload and key; else why not."""
    doc = _load_json(_b64decode(entry.body, "rekor body"), "rekor body")
    kind = _get(doc, "kind")
    if kind == "hashedrekord":
        logged_hash = _get(doc, "spec", "data", "hash", "value")
        logged_sig = _get(doc, "spec", "signature", "content")
        logged_key = _get(doc, "spec", "signature", "publicKey", "content")
        if logged_hash != signed_hash:
            return "logged entry is for another payload"
    elif kind == "dsse":
        sigs = _get(doc, "spec", "signatures")
        first = sigs[0] if isinstance(sigs, list) and sigs else None
        logged_sig, logged_key = _get(first, "signature"), _get(first, "verifier")
        if _get(doc, "spec", "payloadHash", "value") != signed_hash:
            return "logged entry is for another payload"
    else:
        return f"logged entry kind {kind!r} is not supported"
    if not isinstance(logged_sig, str) or _b64decode(logged_sig, "rekor signature") != signature:
        return "logged entry is for another signature"
    if not isinstance(logged_key, str):
        return "logged entry has no public key"
    logged_pem = _b64decode(logged_key, "rekor public key")
    try:
        if b"CERTIFICATE" in logged_pem:
            logged_der = (
                x509.load_pem_x509_certificate(logged_pem)
                .public_key()
                .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            )
        else:
            logged_der = serialization.load_pem_public_key(logged_pem).public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
    except ValueError:
        return "logged public key cannot be parsed"
    if logged_der != _public_der(key):
        return "logged entry was made with another key"
    return ""


def verify_rekor_entry(
    entry: RekorEntry, rekor_key: PublicKey, *, signed_hash: str, signature: bytes, key: PublicKey
) -> Check:
    """Check the SET with the Rekor key, then that the entry records this very signature."""
    if not verify_signature(rekor_key, entry.canonical_payload(), entry.signed_entry_timestamp):
        return Check.failed(Reason.TLOG, "signed entry timestamp does not verify with the Rekor key")
    why = _entry_binds(entry, signed_hash, signature, key)
    if why:
        return Check.failed(Reason.TLOG, why)
    return Check.passed(f"rekor log index {entry.log_index}")


def _check_rekor(
    entry: RekorEntry | None,
    mode: RekorMode,
    rekor_key: PublicKey | None,
    *,
    signed_hash: str,
    signature: bytes,
    key: PublicKey,
) -> Check:
    if mode is RekorMode.IGNORE or (entry is None and mode is RekorMode.IF_PRESENT):
        return Check.passed()
    if entry is None:
        return Check.failed(Reason.TLOG, "no Rekor entry, and the policy requires one")
    if rekor_key is None:
        return Check.failed(Reason.TLOG, "a Rekor entry must be checked but no Rekor public key is set")
    return verify_rekor_entry(entry, rekor_key, signed_hash=signed_hash, signature=signature, key=key)


# --- legacy `.sig` attachments -----------------------------------------------------------------


def referrers_tag(digest: str) -> str:
    """The OCI 1.1 referrers fallback tag for a digest: `sha256-<hex>`."""
    return digest.replace(":", "-", 1)


def legacy_signature_tag(digest: str) -> str:
    """cosign's `.sig` tag for a digest: `sha256-<hex>.sig`."""
    return referrers_tag(digest) + ".sig"


@dataclass(frozen=True)
class LegacySignature:
    """One layer of a cosign `.sig` manifest: payload blob, its media type and annotations."""

    payload: bytes
    media_type: str
    annotations: Mapping[str, str]


def parse_sigstore_json(blob: bytes) -> LegacySignature:
    """Parse containers/image's on-disk form: `\\0sigstore-json\\n` + {mimeType, payload, annotations}."""
    if not blob.startswith(_SIGSTORE_JSON_PREFIX):
        raise SignatureFormatError("signature file: missing the sigstore-json prefix")
    doc = _load_json(blob[len(_SIGSTORE_JSON_PREFIX) :], "signature file")
    mime, payload, annotations = _get(doc, "mimeType"), _get(doc, "payload"), _get(doc, "annotations")
    if not isinstance(mime, str) or not isinstance(payload, str) or not isinstance(annotations, dict):
        raise SignatureFormatError("signature file: mimeType, payload and annotations are required")
    clean = {str(k): v for k, v in annotations.items() if isinstance(v, str)}
    return LegacySignature(_b64decode(payload, "signature payload"), mime, clean)


def verify_legacy_signature(
    sig: LegacySignature,
    key: PublicKey,
    *,
    digest: str,
    repository_ref: str,
    identity: IdentityMode = IdentityMode.EXACT_REPOSITORY,
    rekor: RekorMode = RekorMode.IGNORE,
    rekor_key: PublicKey | None = None,
) -> Check:
    """Check one simple-signing layer: signature by `key`, then digest, type, identity and Rekor."""
    if sig.media_type != SIMPLE_SIGNING_MEDIA_TYPE:
        return Check.failed(Reason.NO_SIGNATURE, f"layer media type {sig.media_type!r} is not simple-signing")
    encoded = sig.annotations.get(SIGNATURE_ANNOTATION)
    if encoded is None:
        return Check.failed(Reason.NO_SIGNATURE, f"layer has no {SIGNATURE_ANNOTATION} annotation")
    try:
        signature = _b64decode(encoded, "signature annotation")
    except SignatureFormatError as exc:
        return Check.failed(Reason.BAD_SIGNATURE, str(exc))
    if not verify_signature(key, sig.payload, signature):
        return Check.not_this_key(key, signature, "signature does not verify with the key")
    try:
        payload = parse_simple_signing(sig.payload)
        entry = (
            parse_rekor_bundle(sig.annotations[BUNDLE_ANNOTATION])
            if BUNDLE_ANNOTATION in sig.annotations
            else None
        )
    except SignatureFormatError as exc:
        return Check.failed(Reason.BAD_SIGNATURE, str(exc))
    if payload.signature_type != COSIGN_SIGNATURE_TYPE:
        return Check.failed(Reason.BAD_SIGNATURE, f"payload type {payload.signature_type!r} is not cosign's")
    if payload.manifest_digest != digest:
        return Check.failed(Reason.DIGEST_MISMATCH, f"signature is for {payload.manifest_digest}")
    if not is_identity_match(payload.docker_reference, repository_ref, identity):
        return Check.failed(Reason.IDENTITY_MISMATCH, f"signature names {payload.docker_reference!r}")
    try:
        tlog = _check_rekor(
            entry, rekor, rekor_key, signed_hash=_sha256_hex(sig.payload), signature=signature, key=key
        )
    except SignatureFormatError as exc:
        return Check.failed(Reason.TLOG, str(exc))
    if not tlog.ok:
        return tlog
    return Check.passed(tlog.detail)


# --- Sigstore bundles (cosign v3) ----------------------------------------------------------------


@dataclass(frozen=True)
class DsseEnvelope:
    """A DSSE envelope: payload, its type, and signatures (base64-decoded)."""

    payload_type: str
    payload: bytes
    signatures: Sequence[bytes]


@dataclass(frozen=True)
class SigstoreBundle:
    """The parts of a Sigstore bundle v0.3 that key-based verification uses."""

    media_type: str
    dsse: DsseEnvelope | None
    message_digest: bytes | None  # SHA-256 of the signed artifact, for message signatures
    message_signature: bytes | None
    tlog_entries: Sequence[RekorEntry]
    # DER certificates, leaf first: verificationMaterial.certificate (v0.3) or
    # x509CertificateChain (v0.1, v0.2). Empty for a bundle signed by a key.
    certificates: Sequence[bytes] = ()
    # DER RFC 3161 TimeStampResponses (timestampVerificationData.rfc3161Timestamps), and the
    # tlogEntries without an inclusionPromise (Rekor v2) as raw JSON; runtime.trust.keyless reads both.
    timestamps: Sequence[bytes] = ()
    proof_entries: Sequence[Any] = ()


def _bundle_timestamps(material: Any) -> tuple[bytes, ...]:
    stamps = _get(material, "timestampVerificationData", "rfc3161Timestamps")
    return tuple(
        _b64decode(s["signedTimestamp"], "bundle RFC 3161 timestamp")
        for s in (stamps if isinstance(stamps, list) else [])
        if isinstance(_get(s, "signedTimestamp"), str)
    )


def _parse_tlog_entry(node: Any) -> RekorEntry | None:
    promise = _get(node, "inclusionPromise", "signedEntryTimestamp")
    body = _get(node, "canonicalizedBody")
    key_id = _get(node, "logId", "keyId")
    if not isinstance(promise, str) or not isinstance(body, str) or not isinstance(key_id, str):
        return None
    try:
        integrated = int(_get(node, "integratedTime"))
        index = int(_get(node, "logIndex"))
    except (TypeError, ValueError) as exc:
        raise SignatureFormatError("bundle: tlog entry integratedTime/logIndex are not integers") from exc
    return RekorEntry(
        _b64decode(promise, "bundle SET"), body, integrated, index, _b64decode(key_id, "bundle logId").hex()
    )


def _bundle_certificates(material: Any) -> tuple[bytes, ...]:
    single = _get(material, "certificate", "rawBytes")
    if isinstance(single, str):
        return (_b64decode(single, "bundle certificate"),)
    chain = _get(material, "x509CertificateChain", "certificates")
    if not isinstance(chain, list):
        return ()
    return tuple(
        _b64decode(c["rawBytes"], "bundle certificate chain")
        for c in chain
        if isinstance(_get(c, "rawBytes"), str)
    )


def parse_sigstore_bundle(data: bytes) -> SigstoreBundle:
    """Parse a Sigstore bundle (v0.1-v0.3 JSON); raise SignatureFormatError when malformed."""
    doc = _load_json(data, "sigstore bundle")
    media_type = _get(doc, "mediaType")
    if not isinstance(media_type, str) or not media_type.startswith("application/vnd.dev.sigstore.bundle"):
        raise SignatureFormatError("sigstore bundle: mediaType is not a Sigstore bundle")
    entries_raw = _get(doc, "verificationMaterial", "tlogEntries")
    entries_list = entries_raw if isinstance(entries_raw, list) else []
    entries = [e for e in map(_parse_tlog_entry, entries_list) if e]
    dsse: DsseEnvelope | None = None
    envelope = _get(doc, "dsseEnvelope")
    if isinstance(envelope, dict):
        payload, payload_type, sigs = (
            envelope.get("payload"),
            envelope.get("payloadType"),
            envelope.get("signatures"),
        )
        if not isinstance(payload, str) or not isinstance(payload_type, str) or not isinstance(sigs, list):
            raise SignatureFormatError("sigstore bundle: dsseEnvelope needs payload, payloadType, signatures")
        decoded = [_b64decode(s["sig"], "DSSE signature") for s in sigs if isinstance(_get(s, "sig"), str)]
        dsse = DsseEnvelope(payload_type, _b64decode(payload, "DSSE payload"), decoded)
    message = _get(doc, "messageSignature")
    digest_b64 = _get(message, "messageDigest", "digest")
    sig_b64 = _get(message, "signature")
    if isinstance(message, dict):
        if _get(message, "messageDigest", "algorithm") != "SHA2_256" or not isinstance(digest_b64, str):
            raise SignatureFormatError("sigstore bundle: messageSignature needs a SHA2_256 messageDigest")
        if not isinstance(sig_b64, str):
            raise SignatureFormatError("sigstore bundle: messageSignature has no signature")
    if dsse is None and not isinstance(message, dict):
        raise SignatureFormatError("sigstore bundle: neither dsseEnvelope nor messageSignature")
    return SigstoreBundle(
        media_type,
        dsse,
        _b64decode(digest_b64, "message digest") if isinstance(digest_b64, str) else None,
        _b64decode(sig_b64, "message signature") if isinstance(sig_b64, str) else None,
        entries,
        _bundle_certificates(_get(doc, "verificationMaterial")),
        _bundle_timestamps(_get(doc, "verificationMaterial")),
        [e for e in entries_list if _get(e, "inclusionPromise") is None],
    )


def _statement_subject_digests(payload: bytes) -> list[str]:
    doc = _load_json(payload, "in-toto statement")
    if _get(doc, "_type") not in _IN_TOTO_STATEMENT_TYPES:
        raise SignatureFormatError("in-toto statement: unknown _type")
    subjects = _get(doc, "subject")
    out: list[str] = []
    for subject in subjects if isinstance(subjects, list) else []:
        value = _get(subject, "digest", "sha256")
        if isinstance(value, str):
            out.append(f"sha256:{value}")
    return out


def verify_bundle(
    bundle: SigstoreBundle,
    key: PublicKey,
    *,
    digest: str,
    rekor: RekorMode = RekorMode.IGNORE,
    rekor_key: PublicKey | None = None,
) -> Check:
    """Check a Sigstore bundle attached to the image `digest` with `key`.

    DSSE: a signature over PAE(payloadType, payload) by `key`, and an in-toto statement whose
    subject has `digest`. Message signature: the signed message must be the image manifest
    itself (messageDigest == digest).
    """
    entry = bundle.tlog_entries[0] if bundle.tlog_entries else None
    try:
        if bundle.dsse is not None:
            envelope = bundle.dsse
            signed = dsse_pae(envelope.payload_type, envelope.payload)
            good = next((s for s in envelope.signatures if verify_signature(key, signed, s)), None)
            if good is None:
                return Check.not_this_key(
                    key,
                    envelope.signatures[0] if envelope.signatures else b"",
                    "DSSE signature does not verify with the key",
                )
            if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
                return Check.failed(Reason.BAD_SIGNATURE, f"DSSE payload type {envelope.payload_type!r}")
            subjects = _statement_subject_digests(envelope.payload)
            if digest not in subjects:
                return Check.failed(Reason.DIGEST_MISMATCH, f"statement subjects are {subjects}")
            tlog = _check_rekor(
                entry, rekor, rekor_key, signed_hash=_sha256_hex(envelope.payload), signature=good, key=key
            )
        else:
            message, signature = bundle.message_digest, bundle.message_signature
            assert message is not None and signature is not None  # parse_sigstore_bundle guarantees it
            if not _verify_prehashed(key, message, signature):
                return Check.not_this_key(key, signature, "message signature does not verify with the key")
            if "sha256:" + message.hex() != digest:
                return Check.failed(Reason.DIGEST_MISMATCH, "message signature is for another manifest")
            tlog = _check_rekor(
                entry, rekor, rekor_key, signed_hash=message.hex(), signature=signature, key=key
            )
    except SignatureFormatError as exc:
        return Check.failed(Reason.BAD_SIGNATURE, str(exc))
    return tlog if not tlog.ok else Check.passed(tlog.detail)
