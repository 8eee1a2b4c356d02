"""Images: find each service's image locally, and pull it only for a container that needs it. Pure.

A service with ``build:`` runs its content tag (``runtime.build``): it is built when that tag
is missing, before anything else in the plan, and never pulled.

References are parsed and compared by ``gitdock.specs.reference`` (Docker's rules); the
executor gets the ``(image, tag)`` it passes to the Engine, so it parses nothing.
"""

from __future__ import annotations

from dataclasses import replace

from gitdock.runtime.build import BuildMode
from gitdock.runtime.desired import desired_build
from gitdock.runtime.labels import build_resource
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
    """The id of the local image that ``ref`` names, or None when it is not present.

    A bare image id (``sha256:…``, how a rollback pins the exact image a revision ran) names
    itself when that image is still here.
    """
    if ref.startswith("sha256:"):
        return ref if any(image.id == ref for image in observed.images) else None
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
    """The PullImage a container of ``svc`` must wait for, added the first time it is needed.

    A built service waits for its BuildImage instead, when the plan has one.
    """
    if svc.build is not None:
        return [p.image_ready[svc.image]] if svc.image in p.image_ready else []
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


def reconcile_builds(p: Planning, mode: BuildMode) -> None:
    """A BuildImage for each built service whose content tag is missing (or that must build).

    ``mode``: AUTO builds what is missing, ALWAYS (``--build``) builds every one, NEVER
    (``--no-build``) builds none and refuses the plan when a content tag is missing.
    """
    for svc in sorted(p.project.services, key=lambda s: s.name):
        if svc.build is None or svc.image in p.image_ready:
            continue
        cause = _build_cause(p, svc, mode)
        if cause is None:
            continue
        if mode is BuildMode.NEVER:
            p.problems.append(f"service {svc.name}: image {svc.image} is not built and --no-build was given")
            continue
        p.image_ready[svc.image] = p.add(
            OpKind.BUILD_IMAGE,
            build_resource(svc.name),
            cause,
            image=svc.image,
            service=svc.name,
            build=desired_build(p.project, svc),
        )
        p.warnings.extend(f"{why}; apply will refuse to build it" for why in svc.build.refusals)


def _build_cause(p: Planning, svc: Service, mode: BuildMode) -> str | None:
    """Why ``svc``'s image is built: ``not found``, ``context changed``, or it was asked for."""
    if find_image_id(p.observed, svc.image) is None:
        assert svc.build is not None
        earlier = f"{svc.build.repository}:"
        built_before = any(t.startswith(earlier) for image in p.observed.images for t in image.repo_tags)
        return "context changed" if built_before else "not found"
    if mode is BuildMode.ALWAYS:
        return "build requested"
    if svc.pull_policy == "build":
        return "pull_policy build"
    return None


def build_first(p: Planning) -> None:
    """Make every other operation wait for all the builds and pulls, so an image that cannot
    be built or pulled changes nothing live (no network or container is created first).

    Only operations that wait for nothing but builds and pulls need the edges: the rest wait
    for them. A pull keeps its place in the plan's order; what waits for it may come earlier.
    """
    firsts = set(p.operations.ids_of(OpKind.BUILD_IMAGE)) | set(p.operations.ids_of(OpKind.PULL_IMAGE))
    if not firsts:
        return
    ops = p.operations.ops
    for i, op in enumerate(ops):
        if op.kind not in _IMAGE_KINDS and firsts.issuperset(op.deps):
            ops[i] = replace(op, deps=tuple(sorted(firsts)))


_IMAGE_KINDS = frozenset({OpKind.BUILD_IMAGE, OpKind.PULL_IMAGE})


def _parsed(ref: str) -> ImageReference | None:
    try:
        return parse_reference(ref)
    except ValueError:
        return None
