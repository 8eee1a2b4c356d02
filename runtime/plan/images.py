"""Images: find each service's image locally, and pull it only for a container that needs it. Pure.

A service with ``build:`` runs its content tag (``runtime.build``): it is built when that tag
is missing, before anything else in the plan, and never pulled.

References are parsed and compared by ``gitdock.specs.reference`` (Docker's rules); the
executor gets the ``(image, tag)`` it passes to the Engine, so it parses nothing.
"""

from __future__ import annotations

from dataclasses import replace

from gitdock.runtime.build import BuildMode, is_pinned_remote
from gitdock.runtime.desired import desired_build
from gitdock.runtime.labels import build_resource
from gitdock.runtime.observe import ObservedState
from gitdock.runtime.plan.context import Planning
from gitdock.runtime.plan.model import OpKind
from gitdock.specs.model import Mount, Service
from gitdock.specs.reference import ImageReference, parse_reference

# The Engine API version that added ``type: image`` mounts (``Mount.ImageOptions``).
IMAGE_MOUNT_API = (1, 48)


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


def mount_image_deps(p: Planning, svc: Service) -> list[int]:
    """What a container of ``svc`` waits for before its ``type: image`` mounts can be made.

    The image a built service is tagged with waits for that BuildImage; another one that is
    missing is pulled (once), as Compose pulls it. Each mount is a warning in the plan: it
    needs Engine API 1.48, which apply checks (``runtime.converge``).
    """
    deps: list[int] = []
    for mount in (m for m in svc.mounts if m.type == "image"):
        _warn_image_mount(p, svc, mount)
        built = next((s for s in p.project.services if s.build and mount.source in s.build.tags), None)
        if built is not None:
            deps += [p.image_ready[built.image]] if built.image in p.image_ready else []
        elif mount.source in p.image_ready:
            deps.append(p.image_ready[mount.source])
        elif find_image_id(p.observed, mount.source) is None:
            p.image_ready[mount.source] = p.add(
                OpKind.PULL_IMAGE,
                f"image:{mount.source}",
                f"mounted by {svc.name}, not present locally",
                image=mount.source,
                pull=pull_arguments(mount.source),
            )
            deps.append(p.image_ready[mount.source])
    return deps


def _warn_image_mount(p: Planning, svc: Service, mount: Mount) -> None:
    where = f"{svc.position}: " if svc.position is not None else ""
    subpath = f" (subpath {mount.image_subpath})" if mount.image_subpath else ""
    version = ".".join(map(str, IMAGE_MOUNT_API))
    text = (
        f"{where}service {svc.name}: volume type image mounts image {mount.source}{subpath} at "
        f"{mount.target}; it needs Docker Engine API {version}, which apply checks before anything "
        "is created"
    )
    if text not in p.warnings:
        p.warnings.append(text)


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
        remote = svc.build.remote
        p.image_ready[svc.image] = p.add(
            OpKind.BUILD_IMAGE,
            build_resource(svc.name),
            cause if remote is None else f"{cause}, remote context {remote}",
            image=svc.image,
            service=svc.name,
            build=desired_build(p.project, svc),
        )
        p.warnings.extend(f"{why}; apply will refuse to build it" for why in svc.build.refusals)
        if remote is not None and not is_pinned_remote(remote):
            p.warnings.append(
                f"service {svc.name}: the build context {remote} is fetched by the Docker Engine, not "
                "taken from the deployed revision, and names no commit: what it builds can change "
                "without a commit here, and gitdock rebuilds it only when the URL changes or with --build"
            )


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
    """Make every other operation wait for all the builds, pulls and image healthcheck checks,
    so an image that cannot be built or pulled (or lacks the healthcheck a dependent waits
    for) changes nothing live (no network or container is created first).

    Only operations that wait for nothing but builds and pulls need the edges: the rest wait
    for them. A pull keeps its place in the plan's order; what waits for it may come earlier.
    """
    firsts = {op.id for op in p.operations.ops if op.kind in _IMAGE_KINDS}
    if not firsts:
        return
    ops = p.operations.ops
    for i, op in enumerate(ops):
        if op.kind not in _IMAGE_KINDS and firsts.issuperset(op.deps):
            ops[i] = replace(op, deps=tuple(sorted(firsts)))


# An image's CheckHealthcheck is one of them: nothing live is touched before it passed.
_IMAGE_KINDS = frozenset({OpKind.BUILD_IMAGE, OpKind.PULL_IMAGE, OpKind.CHECK_HEALTHCHECK})


def _parsed(ref: str) -> ImageReference | None:
    try:
        return parse_reference(ref)
    except ValueError:
        return None
