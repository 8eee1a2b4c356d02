"""What the health gate and a rollback need from a converge and from the agent's record.

Pure: which containers a converge must prove ready, the images a healthy revision ran (kept
per revision in the state store), the pins that make a rollback run exactly those images
again, and the messages a rollback leaves. The waiting itself is ``runtime.health``; the
reconcile that ties them together is ``reconcile``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from gitdock.runtime.plan import OpKind
from gitdock.specs.errors import PermanentError

if TYPE_CHECKING:
    from gitdock.runtime.converge import Outcome
    from gitdock.runtime.record import AppliedRecord
    from gitdock.runtime.trust.resolve import ResolvedImage

__all__ = [
    "PIN_STATUS",
    "RollbackFailed",
    "gated_containers",
    "pinned_images",
    "revision_images",
    "rollback_message",
]

PIN_STATUS: Final = "rollback"  # the status a re-applied image's lock record carries
_STARTS: Final = (
    OpKind.CREATE_CONTAINER,
    OpKind.RECREATE_CONTAINER,
    OpKind.START_CONTAINER,
    OpKind.RESTART_CONTAINER,  # depends_on.restart
    OpKind.RENAME_CONTAINER,  # an interrupted recreate finished: the replacement is the container now
)
# Operations on a container that exists already: its id is the operation's target.
_ON_TARGET: Final = (OpKind.START_CONTAINER, OpKind.RESTART_CONTAINER, OpKind.RENAME_CONTAINER)


class RollbackFailed(PermanentError):
    """Re-applying the last healthy revision failed: a person must act (the source is Stalled)."""


def gated_containers(outcome: Outcome, project: str, *, judged: bool) -> list[str]:
    """The ids of the containers the gate must see ready after ``outcome``. Pure.

    Those the plan created, recreated or started; with an empty plan, none when the revision
    was ``judged`` before, else every container of ``project`` (an agent that stopped
    mid-gate, or a state file from before the gate existed).
    """
    report = outcome.report
    if report is None:
        return [] if judged else [c.id for c in outcome.observed.project_containers(project)]
    ids: list[str] = []
    for result in report.results:
        if result.op.kind not in _STARTS:
            continue
        ident = result.container_id or (result.op.target if result.op.kind in _ON_TARGET else None)
        if ident:
            ids.append(ident)
    return ids


def revision_images(
    record: AppliedRecord, images: Mapping[str, ResolvedImage] | None
) -> dict[str, dict[str, str]]:
    """service -> {reference, image_id, pinned}: the images a revision ran, from its applied record.

    ``pinned`` is the verified ``<repository>@<digest>`` when trust resolved the image. Pure.
    """
    out: dict[str, dict[str, str]] = {}
    for container in sorted(record.containers, key=lambda c: (c.service, c.number)):
        if container.service in out:
            continue
        resolved = (images or {}).get(container.image)
        pinned = resolved.pinned if resolved is not None and resolved.status != PIN_STATUS else ""
        out[container.service] = {
            "reference": container.image,
            "image_id": container.image_id,
            "pinned": pinned,
        }
    return out


def pinned_images(
    images: Mapping[str, Mapping[str, str]], is_local: Callable[[str], bool]
) -> dict[str, ResolvedImage]:
    """Image reference -> the pin a rollback creates its containers from.

    The exact image id when it is still here (``is_local``), else the verified
    ``<repository>@<digest>`` it was resolved to (pulled again); an image with neither is left
    out, so its reference is used as written. Never a fresh resolve of a tag.
    """
    from gitdock.runtime.trust.resolve import ResolvedImage

    pins: dict[str, ResolvedImage] = {}
    for entry in images.values():
        reference, image_id, pinned = (
            entry.get("reference", ""),
            entry.get("image_id", ""),
            entry.get("pinned", ""),
        )
        pin = image_id if image_id and is_local(image_id) else pinned
        if reference and pin:
            digest = pin.rpartition("@")[2] if "@" in pin else pin
            pins[reference] = ResolvedImage(reference, pin, digest, PIN_STATUS)
    return pins


def rollback_message(failed: str, good: str, cause: str) -> str:
    """``rolled back from <failed> to <good>: <cause>`` with short shas."""
    return f"rolled back from {failed[:12]} to {good[:12]}: {cause}"
