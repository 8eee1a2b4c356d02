"""Sigstore's `trusted_root.json`: the pinned trust anchors of keyless verification (pure).

The format is sigstore/protobuf-specs' `TrustedRoot` in its JSON form (what `cosign
trusted-root create` writes and Sigstore's TUF repository serves): `tlogs` and `ctlogs` (a
public key as base64 DER SubjectPublicKeyInfo, its log id, a validity period),
`certificateAuthorities` and `timestampAuthorities` (a certificate chain, a validity period).
Every anchor is used only inside its validity period, judged at the time it is asked about.
Parsing raises TrustedRootError; nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from gitdock.runtime.trust.errors import TrustError
from gitdock.runtime.trust.keys import PublicKey, load_public_key

__all__ = [
    "Authority",
    "LogKey",
    "TrustedRoot",
    "TrustedRootError",
    "Validity",
    "parse_trusted_root",
]

_MEDIA_TYPE_PREFIX = "application/vnd.dev.sigstore.trustedroot"


class TrustedRootError(TrustError):
    """A trusted root file is malformed."""


@dataclass(frozen=True)
class Validity:
    """A half-open-ended period: no start means since ever, no end means still valid."""

    start: datetime | None = None
    end: datetime | None = None

    def covers(self, at: datetime) -> bool:
        return (self.start is None or self.start <= at) and (self.end is None or at <= self.end)


@dataclass(frozen=True)
class LogKey:
    """A transparency log's (Rekor or CT) public key, its log id and when it may be used."""

    key: PublicKey
    key_id: bytes
    validity: Validity
    base_url: str = ""


@dataclass(frozen=True)
class Authority:
    """A certificate authority (Fulcio) or timestamp authority: its chain and validity."""

    certificates: tuple[x509.Certificate, ...]
    validity: Validity
    uri: str = ""

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """The self-issued certificates of the chain: the trust anchors."""
        return tuple(c for c in self.certificates if c.subject == c.issuer)

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        return tuple(c for c in self.certificates if c.subject != c.issuer)


@dataclass(frozen=True)
class TrustedRoot:
    """The parsed trust anchors; lookups take the time the anchor must be valid at."""

    tlogs: tuple[LogKey, ...]
    ctlogs: tuple[LogKey, ...]
    certificate_authorities: tuple[Authority, ...]
    timestamp_authorities: tuple[Authority, ...] = ()

    def tlog(self, key_id: bytes, at: datetime) -> LogKey | None:
        """The Rekor key with `key_id` valid at `at`, or None."""
        return _find_log(self.tlogs, key_id, at)

    def ctlog(self, key_id: bytes, at: datetime) -> LogKey | None:
        """The CT log key with `key_id` valid at `at`, or None."""
        return _find_log(self.ctlogs, key_id, at)

    def authorities_at(self, at: datetime) -> tuple[Authority, ...]:
        """The Fulcio CAs valid at `at`."""
        return tuple(a for a in self.certificate_authorities if a.validity.covers(at))


def _find_log(logs: tuple[LogKey, ...], key_id: bytes, at: datetime) -> LogKey | None:
    return next((log for log in logs if log.key_id == key_id and log.validity.covers(at)), None)


def _b64(node: Any, what: str) -> bytes:
    if not isinstance(node, str):
        raise TrustedRootError(f"trusted root: {what} is missing")
    try:
        return base64.b64decode(node, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TrustedRootError(f"trusted root: {what} is not base64") from exc


def _time(node: Any, what: str) -> datetime | None:
    if node is None:
        return None
    if not isinstance(node, str):
        raise TrustedRootError(f"trusted root: {what} is not an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(node)
    except ValueError as exc:
        raise TrustedRootError(f"trusted root: {what} {node!r} is not an RFC 3339 time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _validity(node: Any, what: str) -> Validity:
    node = node if isinstance(node, dict) else {}
    return Validity(
        _time(node.get("start"), f"{what}.validFor.start"), _time(node.get("end"), f"{what}.validFor.end")
    )


def _obj(node: dict[str, Any], name: str) -> dict[str, Any]:
    value = node.get(name)
    return value if isinstance(value, dict) else {}


def _log_key(node: Any, what: str) -> LogKey:
    if not isinstance(node, dict):
        raise TrustedRootError(f"trusted root: {what} is not an object")
    public = _obj(node, "publicKey")
    der = _b64(public.get("rawBytes"), f"{what}.publicKey.rawBytes")
    try:
        key = load_public_key(
            serialization.load_der_public_key(der).public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    except (ValueError, UnsupportedAlgorithm, TrustError) as exc:
        raise TrustedRootError(f"trusted root: {what}.publicKey is not a supported public key") from exc
    log_id = _obj(node, "logId")
    key_id = _b64(log_id.get("keyId"), f"{what}.logId.keyId")
    base_url = node.get("baseUrl")
    return LogKey(key, key_id, _validity(public.get("validFor"), f"{what}.publicKey"), str(base_url or ""))


def _authority(node: Any, what: str) -> Authority:
    if not isinstance(node, dict):
        raise TrustedRootError(f"trusted root: {what} is not an object")
    chain = _obj(node, "certChain")
    raw = chain.get("certificates")
    if not isinstance(raw, list) or not raw:
        raise TrustedRootError(f"trusted root: {what}.certChain.certificates is empty")
    certificates: list[x509.Certificate] = []
    for i, cert in enumerate(raw):
        der = _b64(
            cert.get("rawBytes") if isinstance(cert, dict) else None, f"{what}.certChain.certificates[{i}]"
        )
        try:
            certificates.append(x509.load_der_x509_certificate(der))
        except ValueError as exc:
            raise TrustedRootError(
                f"trusted root: {what}.certChain.certificates[{i}] is not a certificate"
            ) from exc
    authority = Authority(
        tuple(certificates), _validity(node.get("validFor"), what), str(node.get("uri") or "")
    )
    if not authority.roots:
        raise TrustedRootError(f"trusted root: {what} has no self-signed root certificate")
    return authority


def _list(doc: dict[str, Any], name: str) -> list[Any]:
    value = doc.get(name, [])
    if not isinstance(value, list):
        raise TrustedRootError(f"trusted root: {name} is not a list")
    return value


@functools.lru_cache(maxsize=16)
def parse_trusted_root(text: str) -> TrustedRoot:
    """Parse `trusted_root.json` text (cached: a policy's root is parsed once per process)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise TrustedRootError("trusted root: not valid JSON") from exc
    if not isinstance(doc, dict):
        raise TrustedRootError("trusted root: not a JSON object")
    media_type = doc.get("mediaType")
    if not isinstance(media_type, str) or not media_type.startswith(_MEDIA_TYPE_PREFIX):
        raise TrustedRootError(f"trusted root: mediaType {media_type!r} is not a Sigstore trusted root")
    root = TrustedRoot(
        tlogs=tuple(_log_key(n, f"tlogs[{i}]") for i, n in enumerate(_list(doc, "tlogs"))),
        ctlogs=tuple(_log_key(n, f"ctlogs[{i}]") for i, n in enumerate(_list(doc, "ctlogs"))),
        certificate_authorities=tuple(
            _authority(n, f"certificateAuthorities[{i}]")
            for i, n in enumerate(_list(doc, "certificateAuthorities"))
        ),
        timestamp_authorities=tuple(
            _authority(n, f"timestampAuthorities[{i}]")
            for i, n in enumerate(_list(doc, "timestampAuthorities"))
        ),
    )
    if not root.certificate_authorities:
        raise TrustedRootError("trusted root: certificateAuthorities is empty")
    return root
