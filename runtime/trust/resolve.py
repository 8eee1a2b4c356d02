"""Resolve and verify: every image of a project pinned to a digest, and checked by policy.

This is the step between loading a project and planning it (Flux's idea: acquiring and
verifying the desired state is separate from applying it). Every distinct image reference
is resolved and verified (`verify.verify_image`) in parallel; if any is refused, the whole
project is refused before anything on the host changes (fail closed).

An image that is already pinned by digest, and already runs in a container that recorded
the same digest as verified under the same policy, is taken from that record: an unchanged,
pinned project makes no registry request at all.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Protocol

from gitdock.runtime.labels import LABEL_IMAGE, LABEL_IMAGE_DIGEST, LABEL_IMAGE_TRUST
from gitdock.runtime.observe import ObservedState
from gitdock.runtime.trust.errors import TrustError
from gitdock.runtime.trust.policy import TrustPolicy
from gitdock.runtime.trust.registry import RegistryClient
from gitdock.runtime.trust.verify import (
    ImageRefused,
    Platform,
    VerificationCache,
    VerificationStatus,
    host_platform,
    verify_image,
)
from gitdock.specs.errors import GitdockError, PermanentError
from gitdock.specs.model import Project
from gitdock.specs.reference import ImageReference, parse_reference

DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True)
class ResolvedImage:
    """The lock record of one image reference: what it resolved to and who vouched for it."""

    reference: str  # as the Compose file wrote it
    pinned: str  # what containers are created from: <repository>@<digest>
    digest: str
    status: str  # "verified", "unsigned-allowed"
    keys: tuple[str, ...] = ()
    signed_at: int | None = None
    warnings: tuple[str, ...] = ()
    policy: str = ""  # short hash of the policy that accepted it
    # A multi-arch index: the manifest digest of the platform this host runs.
    platform_digest: str | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "reference": self.reference,
            "pinned": self.pinned,
            "digest": self.digest,
            "status": self.status,
            "keys": list(self.keys),
            "signed_at": self.signed_at,
        }
        if self.platform_digest is not None:
            out["platform_digest"] = self.platform_digest
        return out


@dataclass
class TrustContext:
    """What resolving needs: the policy, a registry client, and a cache that outlives a reconcile."""

    policy: TrustPolicy
    registry: RegistryClient
    cache: VerificationCache = field(default_factory=VerificationCache)
    concurrency: int = DEFAULT_CONCURRENCY
    platform: Platform = field(default_factory=host_platform)  # what a multi-arch index runs as

    @property
    def policy_hash(self) -> str:
        return self.policy.policy_hash()[:16]


class ImageObserver(Protocol):
    """What an instrumentation hook learns about one image (e.g. a span)."""

    def set_digest(self, digest: str) -> None: ...

    def fail_verification(self, reason: str, message: str) -> None: ...


ImageHook = Callable[[str], AbstractContextManager[ImageObserver]]


class _Quiet:
    def set_digest(self, digest: str) -> None:
        pass

    def fail_verification(self, reason: str, message: str) -> None:
        pass


def _no_hook(_reference: str) -> AbstractContextManager[ImageObserver]:
    return nullcontext(_Quiet())


class ImagesRefused(TrustError):
    """One or more images failed policy; carries every refusal, not just the first."""

    def __init__(self, refusals: list[ImageRefused]) -> None:
        self.refusals = refusals
        if len(refusals) == 1:
            message = str(refusals[0])
        else:
            message = f"{len(refusals)} images refused: " + "; ".join(str(r) for r in refusals)
        super().__init__(message + "; nothing was changed")


class InvalidImage(PermanentError):
    """An image reference that does not parse."""


def _pinned(ref: ImageReference, digest: str) -> str:
    """``<repository>@<digest>`` without the tag: what Docker pulls and records in RepoDigests."""
    return replace(ref, tag=None).with_digest(digest).familiar


def _take_known(
    references: list[str], policy_hash: str, known: Mapping[tuple[str, str], ResolvedImage]
) -> tuple[dict[str, ResolvedImage], list[str]]:
    """Split references into those a live container's record answers and those to look up.

    Only a digest-pinned reference is taken from a record: a tag may have moved since.
    """
    results: dict[str, ResolvedImage] = {}
    todo: list[str] = []
    for reference in references:
        hit = known.get((reference, policy_hash))
        if hit is not None and "@" in reference:
            results[reference] = hit
        else:
            todo.append(reference)
    return results, todo


def _resolve_one(reference: str, trust: TrustContext) -> ResolvedImage | GitdockError:
    """Verify one reference; the error is returned, not raised, so every image gets its answer."""
    try:
        ref = parse_reference(reference)
    except ValueError as exc:
        return InvalidImage(str(exc))
    try:
        verification = verify_image(
            ref, trust.policy, trust.registry, cache=trust.cache, platform=trust.platform
        )
    except GitdockError as exc:
        return exc
    return ResolvedImage(
        reference=reference,
        pinned=_pinned(ref, verification.digest),
        digest=verification.digest,
        status=verification.status.value,
        keys=verification.keys,
        signed_at=verification.signed_at,
        policy=trust.policy_hash,
        platform_digest=verification.platform_digest,
        warnings=verification.warnings if verification.status is VerificationStatus.UNSIGNED_ALLOWED else (),
    )


def _resolve_observed(reference: str, trust: TrustContext, hook: ImageHook) -> ResolvedImage | GitdockError:
    """`_resolve_one` inside the instrumentation hook, which learns the digest and any refusal."""
    with hook(reference) as observer:
        result = _resolve_one(reference, trust)
        if isinstance(result, ResolvedImage):
            observer.set_digest(result.digest)
        elif isinstance(result, ImageRefused):
            if result.digest:
                observer.set_digest(result.digest)
            observer.fail_verification(result.reason.value, str(result))
        return result


def _resolve_parallel(
    references: list[str], trust: TrustContext, hook: ImageHook
) -> dict[str, ResolvedImage | GitdockError]:
    """Every reference's outcome, looked up `trust.concurrency` at a time."""
    with ThreadPoolExecutor(max_workers=min(trust.concurrency, len(references))) as pool:
        # Each worker runs in a copy of the caller's context, so a hook's spans nest under
        # the caller's current span.
        futures = [
            pool.submit(contextvars.copy_context().run, _resolve_observed, ref, trust, hook)
            for ref in references
        ]
        return {ref: fut.result() for ref, fut in zip(references, futures, strict=True)}


def _accept_all(outcomes: Mapping[str, ResolvedImage | GitdockError]) -> dict[str, ResolvedImage]:
    """The outcomes when every image resolved; else raise the first error, or every refusal."""
    refusals = [o for o in outcomes.values() if isinstance(o, ImageRefused)]
    errors = [o for o in outcomes.values() if isinstance(o, GitdockError) and not isinstance(o, ImageRefused)]
    if errors:
        # A registry outage wins over refusals: retrying may fix it, and then the refusals
        # are reported with their full reasons.
        raise errors[0]
    if refusals:
        raise ImagesRefused(refusals)
    accepted: dict[str, ResolvedImage] = {}
    for reference, outcome in outcomes.items():
        assert isinstance(outcome, ResolvedImage)
        accepted[reference] = outcome
    return accepted


def resolve_images(
    project: Project,
    trust: TrustContext,
    *,
    known: Mapping[tuple[str, str], ResolvedImage] | None = None,
    image_hook: ImageHook | None = None,
) -> dict[str, ResolvedImage]:
    """Map every image reference of ``project`` to its ResolvedImage, or raise.

    ``known`` maps (image reference, policy hash) to records that live containers carry; a
    digest-pinned reference found there is not looked up again. Raises ImagesRefused (a
    PermanentError: a new commit or a signature must fix it) or RegistryUnavailable.
    """
    references = sorted({s.image for s in project.services})
    results, todo = _take_known(references, trust.policy_hash, known or {})
    if todo:
        results.update(_accept_all(_resolve_parallel(todo, trust, image_hook or _no_hook)))
    return results


def known_images(observed: ObservedState, project: str) -> dict[tuple[str, str], ResolvedImage]:
    """The lock records the project's live containers carry, keyed by (reference, policy)."""
    known: dict[tuple[str, str], ResolvedImage] = {}
    for c in observed.project_containers(project):
        digest = c.labels.get(LABEL_IMAGE_DIGEST)
        reference = c.labels.get(LABEL_IMAGE)
        if not digest or not reference:
            continue
        try:
            record = json.loads(c.labels.get(LABEL_IMAGE_TRUST, ""))
        except ValueError:
            continue
        if not isinstance(record, dict) or not record.get("policy"):
            continue
        known[(reference, str(record["policy"]))] = ResolvedImage(
            reference=reference,
            pinned=c.image,
            digest=digest,
            status=str(record.get("status", "")),
            keys=tuple(str(k) for k in record.get("keys") or ()),
            signed_at=record.get("signed_at") if isinstance(record.get("signed_at"), int) else None,
            policy=str(record["policy"]),
            platform_digest=str(record["platform_digest"]) if record.get("platform_digest") else None,
        )
    return known
