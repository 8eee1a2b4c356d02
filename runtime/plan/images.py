"""Images: find each service's image locally, and pull it only for a container that needs it. Pure.

References are parsed and compared by ``gitdock.specs.reference`` (Docker's rules); the
executor gets the ``(image, tag)`` it passes to the Engine, so it parses nothing.
"""

from __future__ import annotations

from dataclasses import replace

from gitdock.runtime.observe import ObservedState
from gitdock.runtime.plan.context import Planning
from gitdock.runtime.plan.model import OpKind
from gitdock.specs.model import Service
from gitdock.specs.reference import ImageReference, parse_reference


def familiar_image(ref: str) -> str:
    """Docker's short form of an image reference, as ``RepoTags`` lists it. Pure.

    A reference that does not parse is returned as it is.
    """
    parsed = _parsed(ref)
    return parsed.familiar if parsed is not None else ref


def find_image_id(observed: ObservedState, ref: str) -> str | None:
    """The id of the local image that ``ref`` names, or None when it is not present."""
    parsed = _parsed(ref)
    return observed.image_id(parsed) if parsed is not None else None


def pull_arguments(ref: str) -> tuple[str, str]:
    """``(image, tag)`` for the Engine's pull; the tag is the digest of a pinned reference.

    A reference that does not parse is passed on as it is, so Docker says what is wrong.
    """
    parsed = _parsed(ref)
    if parsed is None:
        return ref, "latest"
    name = replace(parsed, tag=None, digest=None).familiar
    return name, parsed.digest or parsed.tag or "latest"


def source_image(p: Planning, svc: Service) -> str:
    """What the service's containers are created from: the pinned digest when resolved."""
    return p.images[svc.image].pinned if svc.image in p.images else svc.image


def locate_images(p: Planning) -> None:
    """Look up every service's image among the local images (no operation is added)."""
    for svc in p.project.services:
        p.image_ids[svc.image] = find_image_id(p.observed, source_image(p, svc))


def pull_deps(p: Planning, svc: Service) -> list[int]:
    """The PullImage a container of ``svc`` must wait for, added the first time it is needed."""
    if p.image_ids[svc.image] is not None:
        return []
    if svc.image not in p.image_ready:
        source = source_image(p, svc)
        p.image_ready[svc.image] = p.add(
            OpKind.PULL_IMAGE,
            f"image:{svc.image}",
            "not present locally",
            image=source,
            pull=pull_arguments(source),
        )
    return [p.image_ready[svc.image]]


def _parsed(ref: str) -> ImageReference | None:
    try:
        return parse_reference(ref)
    except ValueError:
        return None
