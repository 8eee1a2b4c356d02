"""RFC 3161 timestamps: a timestamp authority's signed word for when a signature existed (pure).

A Sigstore bundle carries DER TimeStampResponses in `verificationMaterial.
timestampVerificationData.rfc3161Timestamps[].signedTimestamp`. `verify_timestamp` accepts
one when, in this order: it parses; its message imprint is the hash of the signature bytes;
its signer chains to a timestamp authority of the trusted root, every certificate valid at
the token's genTime (CMS parsing and verification are `rfc3161-client`'s, as in
sigstore-python); and that authority's `validFor` covers genTime. The genTime is then a
proven signing time. Nothing here does I/O; the library's errors become a failed Check.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from cryptography import x509
from rfc3161_client import TimeStampResponse, VerificationError, VerifierBuilder, decode_timestamp_response

from gitdock.runtime.trust.signature import Check, Reason
from gitdock.runtime.trust.trusted_root import Authority, TrustedRoot

__all__ = ["verify_timestamp"]

_ISO = "%Y-%m-%dT%H:%M:%SZ"
_HASHES = {
    "2.16.840.1.101.3.4.2.1": hashlib.sha256,
    "2.16.840.1.101.3.4.2.2": hashlib.sha384,
    "2.16.840.1.101.3.4.2.3": hashlib.sha512,
}


def _failed(detail: str) -> tuple[datetime | None, Check]:
    return None, Check.failed(Reason.TIMESTAMP, f"RFC 3161 timestamp: {detail}")


def _is_imprint_of(response: TimeStampResponse, signature: bytes) -> bool | None:
    """Whether the token's message imprint hashes `signature`; None for an unknown hash."""
    imprint = response.tst_info.message_imprint
    digest = _HASHES.get(imprint.hash_algorithm.dotted_string)
    return None if digest is None else digest(signature).digest() == imprint.message


def _verify_with(response: TimeStampResponse, authority: Authority, signature: bytes) -> str:
    """Empty when `authority` signed the token; else why not."""
    leaf = authority.intermediates[0] if authority.intermediates else None
    builder = VerifierBuilder(
        tsa_certificate=leaf, intermediates=list(authority.intermediates[1:]), roots=list(authority.roots)
    )
    try:
        builder.build().verify_message(response, signature)
    except VerificationError as exc:
        # The library appends OpenSSL's error stack; its first clause says enough.
        return str(exc).split(": ErrorStack", 1)[0]
    except ValueError as exc:
        return str(exc)
    return ""


def _embedded_signer(response: TimeStampResponse) -> x509.Certificate | None:
    signers = list(response.signed_data.signer_infos)
    for der in response.signed_data.certificates:
        cert = x509.load_der_x509_certificate(der)
        if signers and cert.issuer == signers[0].issuer and cert.serial_number == signers[0].serial_number:
            return cert
    return None


def _check_signer_validity(response: TimeStampResponse, authority: Authority, at: datetime) -> str:
    """Empty when the TSA's signing certificate was valid at genTime; else why not."""
    leaf = _embedded_signer(response) or (authority.intermediates[:1] or authority.roots)[0]
    if leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc:
        return ""
    valid = f"{leaf.not_valid_before_utc:{_ISO}} to {leaf.not_valid_after_utc:{_ISO}}"
    return f"genTime {at:{_ISO}} is outside its TSA certificate's validity ({valid})"


def verify_timestamp(token: bytes, signature: bytes, root: TrustedRoot) -> tuple[datetime | None, Check]:
    """The genTime `token` (a DER TimeStampResponse) proves for `signature`, or why it proves none."""
    try:
        response = decode_timestamp_response(token)
        at = response.tst_info.gen_time.astimezone(UTC)
        is_imprint = _is_imprint_of(response, signature)
    except ValueError as exc:
        return _failed(f"not a DER TimeStampResponse ({exc})")
    if is_imprint is None:
        return _failed("message imprint uses an unsupported hash algorithm")
    if not is_imprint:
        return _failed("message imprint is not the hash of this signature")
    if not root.timestamp_authorities:
        return _failed("the trusted root has no timestamp authority")
    why = "not signed by a timestamp authority of the trusted root"
    for authority in root.timestamp_authorities:
        reason = _verify_with(response, authority, signature)
        if reason:
            expired = _check_signer_validity(response, authority, at)
            why = expired or f"{why} ({reason})"
            continue
        if not authority.validity.covers(at):
            name = authority.uri or "(unnamed)"
            return _failed(f"timestamp authority {name} is not valid at genTime {at:{_ISO}}")
        return at, Check.passed(f"timestamp {at:{_ISO}}")
    return _failed(why)
