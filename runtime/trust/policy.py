"""Image trust: the signature policy model and `verify_image`, which applies it.

`TrustPolicy` is pure data (pydantic). `verify_image` resolves a reference to a digest, finds
signatures (Sigstore bundles via the referrers API or its `sha256-<hex>` fallback tag first,
then cosign's legacy `sha256-<hex>.sig` tag), checks them with `runtime.signature` and either
returns a `Verification` or raises `ImageRefused`. Successful results are cached per
(repository, digest, policy hash); refusals are not cached, so signing an image fixes it on
the next attempt.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gitdock.runtime.trust.errors import TrustError
from gitdock.runtime.trust.keys import PrivateKey, PublicKey, load_public_key
from gitdock.runtime.trust.registry import (
    INDEX_TYPES,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    ManifestNotFound,
    RegistryClient,
)
from gitdock.runtime.trust.signature import (
    BUNDLE_ANNOTATION,
    SIGNATURE_ANNOTATION,
    SIGSTORE_BUNDLE_MEDIA_TYPE,
    SIMPLE_SIGNING_MEDIA_TYPE,
    Check,
    IdentityMode,
    LegacySignature,
    Reason,
    RekorMode,
    SignatureFormatError,
    make_simple_signing_payload,
    parse_rekor_bundle,
    parse_sigstore_bundle,
    parse_simple_signing,
    sign_payload,
    verify_bundle,
    verify_legacy_signature,
)
from gitdock.specs.reference import ImageReference

__all__ = [
    "MAX_SIGNATURE_LAYERS",
    "DefaultAction",
    "ImageRefused",
    "KeyMatch",
    "TrustKey",
    "TrustPolicy",
    "TrustRule",
    "Verification",
    "VerificationCache",
    "VerificationStatus",
    "attach_signature",
    "legacy_signature_tag",
    "sign_image",
    "verify_image",
]

MAX_SIGNATURE_LAYERS = 32
MAX_BUNDLES = 16
MAX_PAYLOAD_BYTES = 256 * 1024


class DefaultAction(StrEnum):
    """What happens to an image that no rule matches."""

    REQUIRE = "require"
    ALLOW_UNSIGNED = "allow-unsigned"


class KeyMatch(StrEnum):
    """Whether one of a rule's keys is enough, or all are needed."""

    ANY_OF = "any-of"
    ALL_OF = "all-of"


class VerificationStatus(StrEnum):
    VERIFIED = "verified"
    UNSIGNED_ALLOWED = "unsigned-allowed"


class TrustKey(BaseModel):
    """A trusted public key (PKIX PEM) and how its Rekor entries are treated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    public_key: str
    rekor: RekorMode = RekorMode.IGNORE

    @field_validator("public_key")
    @classmethod
    def _loads(cls, value: str) -> str:
        load_public_key(value.encode())
        return value

    def load(self) -> PublicKey:
        return load_public_key(self.public_key.encode())


class TrustRule(BaseModel):
    """Images whose `registry/repository` matches `pattern` (fnmatch; `*` crosses `/`) need `keys`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: str
    keys: tuple[str, ...] = Field(min_length=1)
    match: KeyMatch = KeyMatch.ANY_OF
    identity: IdentityMode = IdentityMode.EXACT_REPOSITORY

    def matches(self, ref: ImageReference) -> bool:
        return fnmatch.fnmatchcase(ref.repository_ref, self.pattern)


class TrustPolicy(BaseModel):
    """Named keys, ordered rules (first match wins), and the default for unmatched images."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keys: dict[str, TrustKey] = Field(default_factory=dict)
    rules: tuple[TrustRule, ...] = ()
    default: DefaultAction = DefaultAction.REQUIRE
    rekor_public_key: str | None = None

    @field_validator("rekor_public_key")
    @classmethod
    def _rekor_loads(cls, value: str | None) -> str | None:
        if value is not None:
            load_public_key(value.encode())
        return value

    @model_validator(mode="after")
    def _rules_name_known_keys(self) -> TrustPolicy:
        for i, rule in enumerate(self.rules):
            unknown = sorted(set(rule.keys) - set(self.keys))
            if unknown:
                raise ValueError(f"rules[{i}] ({rule.pattern}): unknown key(s) {', '.join(unknown)}")
        needs_rekor = [n for n, k in self.keys.items() if k.rekor is not RekorMode.IGNORE]
        if needs_rekor and self.rekor_public_key is None:
            raise ValueError(
                f"keys {', '.join(needs_rekor)} check Rekor entries but rekor_public_key is unset"
            )
        return self

    def rule_for(self, ref: ImageReference) -> TrustRule | None:
        return next((rule for rule in self.rules if rule.matches(ref)), None)

    def policy_hash(self) -> str:
        """Stable hash of the whole policy, part of the verification cache key."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


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


def legacy_signature_tag(digest: str) -> str:
    """cosign's `.sig` tag for a digest: `sha256-<hex>.sig`."""
    return digest.replace(":", "-", 1) + ".sig"


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


def _find_bundles(client: RegistryClient, ref: ImageReference, digest: str, search: _Search) -> None:
    referrers = client.list_referrers(ref, digest, artifact_type=SIGSTORE_BUNDLE_MEDIA_TYPE)
    if referrers is None:  # no referrers API: the OCI 1.1 fallback tag
        try:
            index = client.get_manifest(ref, digest.replace(":", "-", 1))
        except ManifestNotFound:
            return
        if index.media_type not in INDEX_TYPES:
            return
        referrers = [d for d in index.descriptors() if d.artifact_type == SIGSTORE_BUNDLE_MEDIA_TYPE]
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
    try:
        manifest: Manifest = client.get_manifest(ref, legacy_signature_tag(digest))
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
        search.candidates.append(
            _Candidate(
                f"{legacy_signature_tag(digest)} layer {i}",
                legacy=LegacySignature(payload, layer.media_type, layer.annotations),
            )
        )


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


def _check(
    candidate: _Candidate,
    key: PublicKey,
    trust_key: TrustKey,
    rekor_key: PublicKey | None,
    *,
    digest: str,
    ref: ImageReference,
    identity: IdentityMode,
) -> Check:
    if candidate.legacy is not None:
        return verify_legacy_signature(
            candidate.legacy,
            key,
            digest=digest,
            repository_ref=ref.repository_ref,
            identity=identity,
            rekor=trust_key.rekor,
            rekor_key=rekor_key,
        )
    assert candidate.bundle_bytes is not None
    try:
        bundle = parse_sigstore_bundle(candidate.bundle_bytes)
    except SignatureFormatError as exc:
        return Check.failed(Reason.BAD_SIGNATURE, str(exc))
    return verify_bundle(bundle, key, digest=digest, rekor=trust_key.rekor, rekor_key=rekor_key)


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
    worst = max((c.reason or Reason.BAD_SIGNATURE for _, c in failures), key=_REASON_RANK.__getitem__)
    details = sorted({f"{label}: {c.detail}" for label, c in failures if c.reason is worst})
    detail = "; ".join(details[:3]) + (f" (and {len(details) - 3} more)" if len(details) > 3 else "")
    if notes:
        detail += "; " + "; ".join(notes)
    return ImageRefused(ref.familiar, digest, worst, detail)


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
    pinned = ref.with_digest(digest)
    rule = policy.rule_for(ref)
    if rule is None:
        if policy.default is DefaultAction.ALLOW_UNSIGNED:
            return Verification(
                pinned,
                digest,
                VerificationStatus.UNSIGNED_ALLOWED,
                warnings=(f"no trust rule matches {ref.repository_ref}; allowed unsigned by policy default",),
            )
        raise ImageRefused(
            ref.familiar, digest, Reason.UNKNOWN_KEY, f"no trust rule names a key for {ref.repository_ref}"
        )
    cache_key = (ref.repository_ref, digest, policy.policy_hash())
    hit = cache.get(cache_key)
    if hit is not None:
        return replace(hit, reference=pinned)

    search = _Search()
    _find_bundles(registry_client, ref, digest, search)
    _find_legacy(registry_client, ref, digest, search)
    if not search.candidates:
        detail = f"no cosign signature or Sigstore bundle is attached to {digest}"
        raise ImageRefused(ref.familiar, digest, Reason.NO_SIGNATURE, "; ".join([detail, *search.notes]))

    rekor_key = load_public_key(policy.rekor_public_key.encode()) if policy.rekor_public_key else None
    verified_by: dict[str, str] = {}
    signed_at: int | None = None
    failures: dict[str, list[tuple[str, Check]]] = {}
    for name in rule.keys:
        trust_key = policy.keys[name]
        key = trust_key.load()
        for candidate in search.candidates:
            result = _check(
                candidate, key, trust_key, rekor_key, digest=digest, ref=ref, identity=rule.identity
            )
            if result.ok:
                verified_by[name] = candidate.label
                times = [t for t in (signed_at, _signed_at(candidate)) if t is not None]
                signed_at = max(times) if times else None
                break
            failures.setdefault(name, []).append((f"key {name}, {candidate.label}", result))
        if rule.match is KeyMatch.ANY_OF and verified_by:
            break
    missing = [n for n in rule.keys if n not in verified_by]
    if not verified_by or (rule.match is KeyMatch.ALL_OF and missing):
        raise _refusal(ref, digest, [f for n in missing for f in failures.get(n, [])], search.notes)
    result_ok = Verification(
        pinned,
        digest,
        VerificationStatus.VERIFIED,
        tuple(verified_by),
        tuple(verified_by.values()),
        tuple(search.notes),
        signed_at,
    )
    cache.put(cache_key, result_ok)
    return result_ok


OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def _signature_config(layer_digests: Sequence[str]) -> bytes:
    """The config blob cosign writes for a `.sig` image (diff_ids are the payload digests)."""
    doc = {
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": list(layer_digests)},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def attach_signature(
    ref: ImageReference, digest: str, payload: bytes, signature: bytes, registry_client: RegistryClient
) -> None:
    """Append one simple-signing layer (payload + signature) to `digest`'s `.sig` manifest."""
    tag = legacy_signature_tag(digest)
    try:
        existing = registry_client.get_manifest(ref, tag).layers()
    except ManifestNotFound:
        existing = []
    payload_digest = registry_client.push_blob(ref, payload)
    annotations = {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()}
    layers = [*existing, Descriptor(SIMPLE_SIGNING_MEDIA_TYPE, payload_digest, len(payload), annotations)]
    config = _signature_config([d.digest for d in layers])
    config_digest = registry_client.push_blob(ref, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": config_digest},
        "layers": [d.to_json() for d in layers],
    }
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    registry_client.put_manifest(ref, tag, raw, OCI_MANIFEST)


def sign_image(ref: ImageReference, private_key: PrivateKey, registry_client: RegistryClient) -> str:
    """Attach a cosign-compatible legacy signature to `ref`'s digest; returns the signed digest.

    Pushes the simple-signing payload blob, a config blob and the manifest at the
    `sha256-<hex>.sig` tag, appending to the layers already there.
    """
    digest = registry_client.resolve_digest(ref)
    payload = make_simple_signing_payload(ref.repository_ref, digest, timestamp=int(time.time()))
    attach_signature(ref, digest, payload, sign_payload(private_key, payload), registry_client)
    return digest
