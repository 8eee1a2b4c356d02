"""Verify one image: resolve it to a digest, find its signatures, and apply the trust policy.

`verify_image` asks the registry (through `registry.RegistryClient`) for the digest and the
signatures attached to it — Sigstore bundles via the referrers API or its `sha256-<hex>`
fallback tag first, then cosign's legacy `sha256-<hex>.sig` tag — checks them with the pure
`signature` module against the `policy` rule that matches, and either returns a
`Verification` or raises `ImageRefused`. Successful results are cached per (repository,
digest, policy hash); refusals are not cached, so signing an image fixes it on the next attempt.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from gitdock.runtime.trust.errors import TrustError
from gitdock.runtime.trust.keys import PublicKey
from gitdock.runtime.trust.policy import DefaultAction, KeyMatch, TrustKey, TrustPolicy, TrustRule
from gitdock.runtime.trust.registry import INDEX_TYPES, Descriptor, ManifestNotFound, RegistryClient
from gitdock.runtime.trust.signature import (
    BUNDLE_ANNOTATION,
    SIGSTORE_BUNDLE_MEDIA_TYPE,
    SIMPLE_SIGNING_MEDIA_TYPE,
    Check,
    IdentityMode,
    LegacySignature,
    Reason,
    SignatureFormatError,
    legacy_signature_tag,
    parse_rekor_bundle,
    parse_sigstore_bundle,
    parse_simple_signing,
    referrers_tag,
    verify_bundle,
    verify_legacy_signature,
)
from gitdock.specs.reference import ImageReference

__all__ = [
    "MAX_SIGNATURE_LAYERS",
    "ImageRefused",
    "Verification",
    "VerificationCache",
    "VerificationStatus",
    "verify_image",
]

MAX_SIGNATURE_LAYERS = 32
MAX_BUNDLES = 16
MAX_PAYLOAD_BYTES = 256 * 1024


class VerificationStatus(StrEnum):
    """How an accepted image was accepted: signed by the rule's keys, or unmatched and allowed."""

    VERIFIED = "verified"
    UNSIGNED_ALLOWED = "unsigned-allowed"


@dataclass(frozen=True)
class Verification:
    """A positive outcome: the pinned reference and which keys verified which signatures."""

    reference: ImageReference
    digest: str
    status: VerificationStatus
    keys: tuple[str, ...] = ()
    signatures: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    # When the accepted signature was made (unix seconds): Rekor's integratedTime, else the
    # simple-signing payload's optional.timestamp; None when the signature says neither.
    signed_at: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "image": self.reference.familiar,
            "digest": self.digest,
            "status": self.status.value,
            "keys": list(self.keys),
            "signatures": list(self.signatures),
            "signed_at": self.signed_at,
            "warnings": list(self.warnings),
        }


class ImageRefused(TrustError):
    """An image failed its signature policy. Names the image, the digest and the reason."""

    def __init__(self, image: str, digest: str | None, reason: Reason, detail: str) -> None:
        self.image = image
        self.digest = digest
        self.reason = reason
        self.detail = detail
        at = f" ({digest})" if digest else ""
        super().__init__(f"image {image}{at} refused: {reason.value}: {detail}")

    def to_json(self) -> dict[str, object]:
        return {
            "image": self.image,
            "digest": self.digest,
            "status": "refused",
            "reason": self.reason.value,
            "detail": self.detail,
        }


@dataclass
class VerificationCache:
    """A bounded, thread-safe LRU of successful verifications."""

    max_entries: int = 1024
    _entries: OrderedDict[tuple[str, str, str], Verification] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: tuple[str, str, str]) -> Verification | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
            return hit

    def put(self, key: tuple[str, str, str], value: Verification) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_DEFAULT_CACHE = VerificationCache()


# --- finding signatures --------------------------------------------------------------------------


@dataclass
class _Candidate:
    """One signature found in the registry, not yet checked."""

    label: str
    legacy: LegacySignature | None = None
    bundle_bytes: bytes | None = None


@dataclass
class _Search:
    candidates: list[_Candidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _bundle_referrers(client: RegistryClient, ref: ImageReference, digest: str) -> list[Descriptor]:
    """Descriptors of the Sigstore bundles that refer to `digest` (referrers API, else its tag)."""
    referrers = client.list_referrers(ref, digest, artifact_type=SIGSTORE_BUNDLE_MEDIA_TYPE)
    if referrers is not None:
        return referrers
    try:  # no referrers API: the OCI 1.1 fallback tag
        index = client.get_manifest(ref, referrers_tag(digest))
    except ManifestNotFound:
        return []
    if index.media_type not in INDEX_TYPES:
        return []
    return [d for d in index.descriptors() if d.artifact_type == SIGSTORE_BUNDLE_MEDIA_TYPE]


def _find_bundles(client: RegistryClient, ref: ImageReference, digest: str, search: _Search) -> None:
    referrers = _bundle_referrers(client, ref, digest)
    if len(referrers) > MAX_BUNDLES:
        search.notes.append(f"only the first {MAX_BUNDLES} of {len(referrers)} bundles were considered")
    for descriptor in referrers[:MAX_BUNDLES]:
        manifest = client.get_manifest(ref, descriptor.digest)
        layers = manifest.layers()
        bundle_layer = next((d for d in layers if d.media_type == SIGSTORE_BUNDLE_MEDIA_TYPE), None)
        if bundle_layer is None or bundle_layer.size > MAX_PAYLOAD_BYTES:
            continue
        data = client.get_blob(ref, bundle_layer.digest, max_bytes=MAX_PAYLOAD_BYTES)
        search.candidates.append(_Candidate(f"bundle {descriptor.digest}", bundle_bytes=data))


def _find_legacy(client: RegistryClient, ref: ImageReference, digest: str, search: _Search) -> None:
    tag = legacy_signature_tag(digest)
    try:
        manifest = client.get_manifest(ref, tag)
    except ManifestNotFound:
        return
    total = manifest.layer_count()
    if total > MAX_SIGNATURE_LAYERS:
        search.notes.append(
            f"only the first {MAX_SIGNATURE_LAYERS} of {total} layers of the .sig manifest were considered"
        )
    raw_layers = manifest.content.get("layers")
    raw_layers = raw_layers[:MAX_SIGNATURE_LAYERS] if isinstance(raw_layers, list) else []
    for i, node in enumerate(raw_layers):
        layer = Descriptor.from_json(node)
        if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE or layer.size > MAX_PAYLOAD_BYTES:
            continue
        payload = client.get_blob(ref, layer.digest, max_bytes=MAX_PAYLOAD_BYTES)
        legacy = LegacySignature(payload, layer.media_type, layer.annotations)
        search.candidates.append(_Candidate(f"{tag} layer {i}", legacy=legacy))


def _find_signatures(client: RegistryClient, ref: ImageReference, digest: str) -> _Search:
    """Every signature attached to `digest`, bundles first; raise ImageRefused when there is none."""
    search = _Search()
    _find_bundles(client, ref, digest, search)
    _find_legacy(client, ref, digest, search)
    if not search.candidates:
        detail = f"no cosign signature or Sigstore bundle is attached to {digest}"
        raise ImageRefused(ref.familiar, digest, Reason.NO_SIGNATURE, "; ".join([detail, *search.notes]))
    return search


# --- checking them -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Subject:
    """What every signature must vouch for: this digest of this image, under one rule."""

    ref: ImageReference
    digest: str
    identity: IdentityMode
    rekor_key: PublicKey | None


def _signed_at(candidate: _Candidate) -> int | None:
    """The time a verified signature claims: its transparency-log entry, else its payload."""
    if candidate.legacy is not None:
        rekor = candidate.legacy.annotations.get(BUNDLE_ANNOTATION)
        if rekor:
            with contextlib.suppress(SignatureFormatError):
                return parse_rekor_bundle(rekor).integrated_time
        with contextlib.suppress(SignatureFormatError):
            stamp = (parse_simple_signing(candidate.legacy.payload).optional or {}).get("timestamp")
            return stamp if isinstance(stamp, int) else None
        return None
    if candidate.bundle_bytes is not None:
        with contextlib.suppress(SignatureFormatError):
            entries = parse_sigstore_bundle(candidate.bundle_bytes).tlog_entries
            if entries:
                return max(e.integrated_time for e in entries)
    return None


def _check(candidate: _Candidate, key: PublicKey, trust_key: TrustKey, subject: _Subject) -> Check:
    if candidate.legacy is not None:
        return verify_legacy_signature(
            candidate.legacy,
            key,
            digest=subject.digest,
            repository_ref=subject.ref.repository_ref,
            identity=subject.identity,
            rekor=trust_key.rekor,
            rekor_key=subject.rekor_key,
        )
    assert candidate.bundle_bytes is not None
    try:
        bundle = parse_sigstore_bundle(candidate.bundle_bytes)
    except SignatureFormatError as exc:
        return Check.failed(Reason.BAD_SIGNATURE, str(exc))
    return verify_bundle(
        bundle, key, digest=subject.digest, rekor=trust_key.rekor, rekor_key=subject.rekor_key
    )


def _check_key(
    name: str, trust_key: TrustKey, candidates: Sequence[_Candidate], subject: _Subject
) -> tuple[_Candidate | None, list[tuple[str, Check]]]:
    """The first candidate that key `name` verifies (or None), and every failure before it."""
    key = trust_key.load()
    failures: list[tuple[str, Check]] = []
    for candidate in candidates:
        result = _check(candidate, key, trust_key, subject)
        if result.ok:
            return candidate, failures
        failures.append((f"key {name}, {candidate.label}", result))
    return None, failures


_REASON_RANK = {
    Reason.NO_SIGNATURE: 0,
    Reason.BAD_SIGNATURE: 1,
    Reason.TLOG: 2,
    Reason.IDENTITY_MISMATCH: 3,
    Reason.DIGEST_MISMATCH: 4,
    Reason.UNKNOWN_KEY: 5,
}


def _refusal(
    ref: ImageReference, digest: str, failures: Sequence[tuple[str, Check]], notes: list[str]
) -> ImageRefused:
    """One refusal for many failures: the most telling reason, with up to three details."""
    worst = max((c.reason or Reason.BAD_SIGNATURE for _, c in failures), key=_REASON_RANK.__getitem__)
    details = sorted({f"{label}: {c.detail}" for label, c in failures if c.reason is worst})
    detail = "; ".join(details[:3]) + (f" (and {len(details) - 3} more)" if len(details) > 3 else "")
    if notes:
        detail += "; " + "; ".join(notes)
    return ImageRefused(ref.familiar, digest, worst, detail)


def _later(a: int | None, b: int | None) -> int | None:
    times = [t for t in (a, b) if t is not None]
    return max(times) if times else None


def _verify_rule(
    rule: TrustRule, policy: TrustPolicy, search: _Search, subject: _Subject, pinned: ImageReference
) -> Verification:
    """Check the found signatures against the rule's keys; raise ImageRefused when they fall short."""
    verified_by: dict[str, str] = {}
    signed_at: int | None = None
    failures: dict[str, list[tuple[str, Check]]] = {}
    for name in rule.keys:
        accepted, failures[name] = _check_key(name, policy.keys[name], search.candidates, subject)
        if accepted is not None:
            verified_by[name] = accepted.label
            signed_at = _later(signed_at, _signed_at(accepted))
        if rule.match is KeyMatch.ANY_OF and verified_by:
            break
    missing = [n for n in rule.keys if n not in verified_by]
    if not verified_by or (rule.match is KeyMatch.ALL_OF and missing):
        failed = [f for n in missing for f in failures.get(n, [])]
        raise _refusal(subject.ref, subject.digest, failed, search.notes)
    return Verification(
        pinned,
        subject.digest,
        VerificationStatus.VERIFIED,
        tuple(verified_by),
        tuple(verified_by.values()),
        tuple(search.notes),
        signed_at,
    )


def _verify_unmatched(ref: ImageReference, digest: str, default: DefaultAction) -> Verification:
    """An image no rule matches: allowed unsigned by the policy default, or refused."""
    if default is DefaultAction.ALLOW_UNSIGNED:
        return Verification(
            ref.with_digest(digest),
            digest,
            VerificationStatus.UNSIGNED_ALLOWED,
            warnings=(f"no trust rule matches {ref.repository_ref}; allowed unsigned by policy default",),
        )
    raise ImageRefused(
        ref.familiar, digest, Reason.UNKNOWN_KEY, f"no trust rule names a key for {ref.repository_ref}"
    )


def verify_image(
    ref: ImageReference,
    policy: TrustPolicy,
    registry_client: RegistryClient,
    *,
    cache: VerificationCache | None = None,
) -> Verification:
    """Resolve `ref` to a digest and check it against `policy`; raise ImageRefused when it fails.

    A digest-pinned `ref` is not re-resolved. Registry errors (RegistryUnavailable, ...) propagate.
    """
    cache = cache if cache is not None else _DEFAULT_CACHE
    digest = registry_client.resolve_digest(ref)
    rule = policy.rule_for(ref)
    if rule is None:
        return _verify_unmatched(ref, digest, policy.default)
    pinned = ref.with_digest(digest)
    cache_key = (ref.repository_ref, digest, policy.policy_hash())
    hit = cache.get(cache_key)
    if hit is not None:
        return replace(hit, reference=pinned)
    search = _find_signatures(registry_client, ref, digest)
    subject = _Subject(ref, digest, rule.identity, policy.rekor_key())
    verification = _verify_rule(rule, policy, search, subject, pinned)
    cache.put(cache_key, verification)
    return verification
