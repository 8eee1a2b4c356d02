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
import platform as platform_module
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

from gitdock.runtime.trust.errors import TrustError
from gitdock.runtime.trust.keyless import (
    CertificateIdentity,
    verify_keyless_bundle,
    verify_keyless_signature,
)
from gitdock.runtime.trust.keys import PublicKey
from gitdock.runtime.trust.policy import DefaultAction, KeyMatch, TrustKey, TrustPolicy, TrustRule
from gitdock.runtime.trust.registry import (
    INDEX_TYPES,
    Descriptor,
    Manifest,
    ManifestNotFound,
    RegistryClient,
    select_platform_digest,
)
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
from gitdock.runtime.trust.trusted_root import TrustedRoot
from gitdock.specs.reference import ImageReference

__all__ = [
    "MAX_SIGNATURE_LAYERS",
    "ImageRefused",
    "Platform",
    "Verification",
    "VerificationCache",
    "VerificationStatus",
    "host_platform",
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
    # When `digest` is a multi-arch index: the manifest of the platform this host runs (the
    # signature may be on either).
    platform_digest: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "image": self.reference.familiar,
            "digest": self.digest,
            "platform_digest": self.platform_digest,
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
    now: datetime


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


@dataclass(frozen=True)
class _Outcome:
    """One verifier's verdict on one candidate; `name` is who vouched when it passed."""

    check: Check
    name: str
    signed_at: int | None = None


@dataclass(frozen=True)
class _Verifier:
    """One of a rule's signers: a named key, or the rule's keyless identities."""

    name: str
    run: Callable[[_Candidate], _Outcome]
    label: str  # how failures name it: "key ci", "keyless"


def _key_verifier(name: str, trust_key: TrustKey, subject: _Subject) -> _Verifier:
    key = trust_key.load()

    def run(candidate: _Candidate) -> _Outcome:
        check = _check(candidate, key, trust_key, subject)
        return _Outcome(check, name, _signed_at(candidate) if check.ok else None)

    return _Verifier(name, run, f"key {name}")


def _keyless_verifier(
    identities: Sequence[CertificateIdentity], root: TrustedRoot, subject: _Subject
) -> _Verifier:
    def run(candidate: _Candidate) -> _Outcome:
        try:
            if candidate.legacy is not None:
                result = verify_keyless_signature(
                    candidate.legacy,
                    root,
                    identities,
                    digest=subject.digest,
                    repository_ref=subject.ref.repository_ref,
                    identity=subject.identity,
                    now=subject.now,
                )
            else:
                assert candidate.bundle_bytes is not None
                result = verify_keyless_bundle(
                    parse_sigstore_bundle(candidate.bundle_bytes),
                    root,
                    identities,
                    digest=subject.digest,
                    now=subject.now,
                )
        except SignatureFormatError as exc:
            return _Outcome(Check.failed(Reason.BAD_SIGNATURE, str(exc)), "keyless")
        return _Outcome(result.check, f"keyless:{result.signer}", result.signed_at)

    return _Verifier("keyless", run, "keyless")


def _check_verifier(
    verifier: _Verifier, candidates: Sequence[_Candidate]
) -> tuple[tuple[_Candidate, _Outcome] | None, list[tuple[str, Check]]]:
    """The first candidate `verifier` accepts (or None), and every failure before it."""
    failures: list[tuple[str, Check]] = []
    for candidate in candidates:
        outcome = verifier.run(candidate)
        if outcome.check.ok:
            return (candidate, outcome), failures
        failures.append((f"{verifier.label}, {candidate.label}", outcome.check))
    return None, failures


_REASON_RANK = {
    Reason.NO_SIGNATURE: 0,
    Reason.BAD_SIGNATURE: 1,
    Reason.UNKNOWN_KEY: 2,
    Reason.TLOG: 3,
    Reason.TIMESTAMP: 3,  # like a log entry, a timestamp proves when it was signed
    Reason.UNTRUSTED_CERTIFICATE: 4,
    Reason.CERTIFICATE_EXPIRED: 5,
    Reason.SCT: 6,
    Reason.CERTIFICATE_IDENTITY: 7,
    Reason.ISSUER_MISMATCH: 8,
    Reason.IDENTITY_MISMATCH: 9,
    Reason.DIGEST_MISMATCH: 10,
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


def _unknown_keys(
    rule: TrustRule, policy: TrustPolicy, search: _Search, subject: _Subject
) -> list[tuple[str, Check]]:
    """`unknown key` for each candidate well-formed but made by none of the rule's keys.

    Without a certificate the signer of a bare signature cannot be named; a key the policy
    knows under another rule is named.
    """
    verifiers = [_key_verifier(n, policy.keys[n], subject) for n in rule.keys]
    others = [_key_verifier(n, k, subject) for n, k in policy.keys.items() if n not in rule.keys]
    found: list[tuple[str, Check]] = []
    for candidate in search.candidates:
        if not verifiers or not all(v.run(candidate).check.wrong_key for v in verifiers):
            continue
        signer = next((v.name for v in others if not v.run(candidate).check.wrong_key), None)
        detail = (
            f"signed by key {signer}, which the rule {rule.pattern!r} does not list"
            if signer
            else f"made by none of the keys the rule {rule.pattern!r} lists ({', '.join(rule.keys)})"
        )
        found.append((candidate.label, Check.failed(Reason.UNKNOWN_KEY, detail)))
    return found


def _verifiers(rule: TrustRule, policy: TrustPolicy, subject: _Subject) -> list[_Verifier]:
    verifiers = [_key_verifier(n, policy.keys[n], subject) for n in rule.keys]
    if rule.keyless:
        root = policy.trusted_root_parsed()
        assert root is not None  # TrustPolicy's validator requires a trusted root for keyless rules
        verifiers.append(_keyless_verifier([k.matcher() for k in rule.keyless], root, subject))
    return verifiers


def _verify_rule(
    rule: TrustRule, policy: TrustPolicy, search: _Search, subject: _Subject, pinned: ImageReference
) -> Verification:
    """Check the found signatures against the rule's signers; raise ImageRefused when they fall short."""
    verified_by: dict[str, str] = {}
    signed_at: int | None = None
    failures: dict[str, list[tuple[str, Check]]] = {}
    passed: set[str] = set()
    verifiers = _verifiers(rule, policy, subject)
    for verifier in verifiers:
        accepted, failures[verifier.name] = _check_verifier(verifier, search.candidates)
        if accepted is not None:
            candidate, outcome = accepted
            passed.add(verifier.name)
            verified_by[outcome.name] = candidate.label
            signed_at = _later(signed_at, outcome.signed_at)
        if rule.match is KeyMatch.ANY_OF and passed:
            break
    if not passed or (rule.match is KeyMatch.ALL_OF and len(passed) < len(verifiers)):
        failed = [f for v in verifiers if v.name not in passed for f in failures.get(v.name, [])]
        failed += _unknown_keys(rule, policy, search, subject)
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


def _later(a: int | None, b: int | None) -> int | None:
    times = [t for t in (a, b) if t is not None]
    return max(times) if times else None


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


# --- multi-arch ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    """An OCI platform: what a multi-arch index is resolved to on this host."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


# uname machine names (and Docker's /info Architecture, which is the same) to OCI's.
_MACHINES: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", None),
    "arm64": ("arm64", None),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", None),
    "i686": ("386", None),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
}


def host_platform(machine: str | None = None, os: str = "linux") -> Platform:
    """The platform of `machine` (default: this host's `platform.machine()`), in OCI names."""
    name = (machine or platform_module.machine()).lower()
    architecture, variant = _MACHINES.get(name, (name, None))
    return Platform(os, architecture, variant)


def _platform_digest(
    client: RegistryClient, ref: ImageReference, digest: str, platform: Platform, manifest: Manifest | None
) -> str | None:
    """The host platform's manifest digest when `digest` is an index, else None."""
    manifest = (
        manifest if manifest is not None and manifest.digest == digest else client.get_manifest(ref, digest)
    )
    if not manifest.is_index:
        return None
    try:
        return select_platform_digest(
            manifest, os=platform.os, architecture=platform.architecture, variant=platform.variant
        )
    except ManifestNotFound:
        return None


def _verify_digest(
    rule: TrustRule, policy: TrustPolicy, client: RegistryClient, subject: _Subject
) -> Verification:
    search = _find_signatures(client, subject.ref, subject.digest)
    return _verify_rule(rule, policy, search, subject, subject.ref.with_digest(subject.digest))


def _verify_index_or_platform(
    rule: TrustRule,
    policy: TrustPolicy,
    client: RegistryClient,
    subject: _Subject,
    platform: Platform,
    manifest: Manifest | None,
) -> Verification:
    """A signature on the index, or else on the manifest of the platform this host runs."""
    try:
        verification = _verify_digest(rule, policy, client, subject)
    except ImageRefused as on_index:
        platform_digest = _platform_digest(client, subject.ref, subject.digest, platform, manifest)
        if platform_digest is None:
            raise
        try:
            on_platform = _verify_digest(rule, policy, client, replace(subject, digest=platform_digest))
        except ImageRefused as refused:
            worst = max(on_index, refused, key=lambda r: _REASON_RANK[r.reason])
            detail = f"index: {on_index.detail}; {platform} manifest {platform_digest}: {refused.detail}"
            raise ImageRefused(subject.ref.familiar, subject.digest, worst.reason, detail) from None
        return replace(
            on_platform,
            reference=subject.ref.with_digest(subject.digest),
            digest=subject.digest,
            platform_digest=platform_digest,
        )
    platform_digest = _platform_digest(client, subject.ref, subject.digest, platform, manifest)
    return replace(verification, platform_digest=platform_digest)


def verify_image(
    ref: ImageReference,
    policy: TrustPolicy,
    registry_client: RegistryClient,
    *,
    cache: VerificationCache | None = None,
    now: datetime | None = None,
    platform: Platform | None = None,
) -> Verification:
    """Resolve `ref` to a digest and check it against `policy`; raise ImageRefused when it fails.

    A digest-pinned `ref` is not re-resolved. Registry errors (RegistryUnavailable, ...) propagate.
    For a multi-arch index a signature on the index or on the manifest of `platform` (default:
    this host's) is accepted; the index digest is pinned and the platform's is recorded.
    `now` (default: the clock) is the time a keyless certificate is judged at when no
    transparency-log entry proves when it signed.
    """
    cache = cache if cache is not None else _DEFAULT_CACHE
    manifest = registry_client.get_manifest(ref) if ref.digest is None else None
    digest = manifest.digest if manifest is not None else registry_client.resolve_digest(ref)
    rule = policy.rule_for(ref)
    if rule is None:
        return _verify_unmatched(ref, digest, policy.default)
    pinned = ref.with_digest(digest)
    cache_key = (ref.repository_ref, digest, policy.policy_hash())
    hit = cache.get(cache_key)
    if hit is not None:
        return replace(hit, reference=pinned)
    subject = _Subject(ref, digest, rule.identity, policy.rekor_key(), now or datetime.now(UTC))
    verification = _verify_index_or_platform(
        rule, policy, registry_client, subject, platform or host_platform(), manifest
    )
    cache.put(cache_key, verification)
    return verification
