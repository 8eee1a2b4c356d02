"""Observe: one snapshot of the live Docker state, so planning needs no further API calls.

``observe`` makes a fixed, small number of list calls whatever the project's size (one each
for containers, networks, volumes and images) and turns the answers into plain frozen data.
The snapshot is indexed the way the planner asks: objects by Docker name, images by tag and
by repository digest, and one project's containers by service and replica number
(``ObservedState.project``). The data types here are pure; only ``observe`` touches Docker,
through the client it is given.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from gitdock.runtime.labels import (
    LABEL_CONFIG_FIELDS,
    LABEL_CONFIG_HASH,
    LABEL_NUMBER,
    LABEL_PROJECT,
    LABEL_SERVICE,
)

if TYPE_CHECKING:
    from gitdock.runtime.docker import DockerClient
    from gitdock.specs.reference import ImageReference

_EXIT_CODE = re.compile(r"Exited \((-?\d+)\)")
_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def is_one_shot(restart: str) -> bool:
    """Whether a Compose restart policy (``no``, ``on-failure[:N]``) leaves a job that exited 0 stopped."""
    return restart.split(":", 1)[0] in ("no", "on-failure")


class _Labelled:
    """An observed object whose labels say which gitdock project, if any, owns it."""

    labels: dict[str, str]

    @property
    def project(self) -> str | None:
        return self.labels.get(LABEL_PROJECT)


@dataclass(frozen=True)
class ObservedContainer(_Labelled):
    id: str
    name: str
    image: str  # the image reference the container was created from
    image_id: str
    state: str  # created, running, paused, restarting, exited, removing, dead
    status: str  # Docker's human text, e.g. "Up 3 minutes (healthy)"
    labels: dict[str, str] = field(hash=False)
    networks: dict[str, str] = field(hash=False)  # network name -> network id
    created: int = 0
    ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()  # the names of the volumes it mounts
    # The list call's Mounts (Type, Name, Source, Destination, RW), as an inspect gives them,
    # so a recreate carries anonymous volumes over without inspecting the old container.
    mounts: tuple[dict[str, Any], ...] = field(default=(), hash=False)

    @property
    def service(self) -> str | None:
        return self.labels.get(LABEL_SERVICE)

    @property
    def number(self) -> int:
        try:
            return int(self.labels.get(LABEL_NUMBER, "0"))
        except ValueError:
            return 0

    @property
    def config_hash(self) -> str | None:
        return self.labels.get(LABEL_CONFIG_HASH)

    @property
    def config_fields(self) -> str | None:
        return self.labels.get(LABEL_CONFIG_FIELDS)

    @property
    def exit_code(self) -> int | None:
        match = _EXIT_CODE.search(self.status)
        return int(match.group(1)) if match else None

    def is_finished_job(self, restart: str) -> bool:
        """Whether it is a one-shot job that is done: exited 0 under a policy that leaves it be."""
        return self.state == "exited" and self.exit_code == 0 and is_one_shot(restart)

    @property
    def health(self) -> str:
        """``healthy``, ``unhealthy``, ``starting``, or "" when there is no healthcheck."""
        match = _HEALTH.search(self.status)
        if not match:
            return ""
        return "starting" if match.group(1) == "health: starting" else match.group(1)


@dataclass(frozen=True)
class ObservedNetwork(_Labelled):
    id: str
    name: str
    driver: str
    labels: dict[str, str] = field(hash=False)


@dataclass(frozen=True)
class ObservedVolume(_Labelled):
    name: str
    driver: str
    labels: dict[str, str] = field(hash=False)


@dataclass(frozen=True)
class ObservedImage:
    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]


Slot = tuple[str, int]  # (service, replica number)


@dataclass(frozen=True)
class ObservedProject:
    """One project's containers, indexed by service and replica number (snapshot order kept)."""

    name: str
    containers: tuple[ObservedContainer, ...]

    @cached_property
    def _slots(self) -> dict[Slot, tuple[ObservedContainer, ...]]:
        slots: dict[Slot, list[ObservedContainer]] = {}
        for c in self.containers:
            slots.setdefault((c.service or "", c.number), []).append(c)
        return {slot: tuple(found) for slot, found in slots.items()}

    def slot(self, service: str, number: int) -> tuple[ObservedContainer, ...]:
        """The containers labelled as replica ``number`` of ``service`` (usually one)."""
        return self._slots.get((service, number), ())

    def leftovers(self, wanted: Collection[Slot]) -> Iterator[tuple[Slot, tuple[ObservedContainer, ...]]]:
        """Every slot not in ``wanted`` (scaled down, or its service is gone), sorted by slot."""
        for slot, found in sorted(self._slots.items()):
            if slot not in wanted:
                yield slot, found


@dataclass(frozen=True)
class ObservedState:
    """Everything the planner may look at. Built by ``observe``, or by hand in tests.

    Lookups by name return the first object of that name in snapshot order.
    """

    containers: tuple[ObservedContainer, ...] = ()
    networks: tuple[ObservedNetwork, ...] = ()
    volumes: tuple[ObservedVolume, ...] = ()
    images: tuple[ObservedImage, ...] = ()

    def project_containers(self, project: str) -> list[ObservedContainer]:
        return [c for c in self.containers if c.project == project]

    def project(self, name: str) -> ObservedProject:
        """The containers labelled with project ``name``, indexed by service and replica."""
        return ObservedProject(name, tuple(self.project_containers(name)))

    def container_named(self, name: str) -> ObservedContainer | None:
        return self._containers_by_name.get(name)

    def container_with_id(self, ident: str) -> ObservedContainer | None:
        return self._containers_by_id.get(ident)

    def network_named(self, name: str) -> ObservedNetwork | None:
        return self._networks_by_name.get(name)

    def volume_named(self, name: str) -> ObservedVolume | None:
        return self._volumes_by_name.get(name)

    def image_id(self, ref: ImageReference) -> str | None:
        """The id of the local image ``ref`` names: by digest when it has one, else by tag."""
        if ref.digest is not None:
            return self._images_by_digest.get((ref.repository_ref, ref.digest))
        return self._images_by_tag.get(ref.familiar)

    @cached_property
    def _containers_by_name(self) -> dict[str, ObservedContainer]:
        return {c.name: c for c in reversed(self.containers)}

    @cached_property
    def _containers_by_id(self) -> dict[str, ObservedContainer]:
        return {c.id: c for c in self.containers}

    @cached_property
    def _networks_by_name(self) -> dict[str, ObservedNetwork]:
        return {n.name: n for n in reversed(self.networks)}

    @cached_property
    def _volumes_by_name(self) -> dict[str, ObservedVolume]:
        return {v.name: v for v in reversed(self.volumes)}

    @cached_property
    def _images_by_tag(self) -> dict[str, str]:
        return {tag: i.id for i in reversed(self.images) for tag in i.repo_tags}

    @cached_property
    def _images_by_digest(self) -> dict[tuple[str, str | None], str]:
        index: dict[tuple[str, str | None], str] = {}
        for image in reversed(self.images):
            for text in image.repo_digests:
                ref = _parsed(text)
                if ref is not None:
                    index[(ref.repository_ref, ref.digest)] = image.id
        return index


def _parsed(text: str) -> ImageReference | None:
    """``parse_reference``, or None for what Docker lists but is no reference (``<none>@<none>``)."""
    from gitdock.specs.reference import parse_reference  # after the early look's calls are out (cli.early)

    try:
        return parse_reference(text)
    except ValueError:
        return None


def _is_volume(mount: dict[str, Any]) -> bool:
    return mount.get("Type") == "volume" and bool(mount.get("Name"))


def _container(raw: dict[str, Any]) -> ObservedContainer:
    names = raw.get("Names") or ["/" + str(raw.get("Id", ""))[:12]]
    settings = (raw.get("NetworkSettings") or {}).get("Networks") or {}
    ports = []
    for p in raw.get("Ports") or []:
        if p.get("PublicPort"):
            ports.append(f"{p.get('IP', '')}:{p['PublicPort']}->{p['PrivatePort']}/{p.get('Type', 'tcp')}")
    return ObservedContainer(
        id=str(raw["Id"]),
        name=str(names[0]).lstrip("/"),
        image=str(raw.get("Image", "")),
        image_id=str(raw.get("ImageID", "")),
        state=str(raw.get("State", "")),
        status=str(raw.get("Status", "")),
        labels=dict(raw.get("Labels") or {}),
        networks={str(k): str((v or {}).get("NetworkID", "")) for k, v in settings.items()},
        created=int(raw.get("Created") or 0),
        ports=tuple(sorted(set(ports))),
        volumes=tuple(sorted({str(m["Name"]) for m in raw.get("Mounts") or [] if _is_volume(m)})),
        mounts=tuple(dict(m) for m in raw.get("Mounts") or [] if isinstance(m, dict)),
    )


def observe(docker: DockerClient) -> ObservedState:
    """Snapshot the host: all containers, networks, volumes and images, in four list calls.

    Everything is listed, not just what carries the project's label, because the planner must
    see objects that collide with the names it wants to use. The four calls are made at once
    (the client is thread-safe): dockerd answers them in parallel, so a no-op apply waits for
    the slowest (``/images/json``), not for their sum.
    """
    return observe_later(docker)()


def observe_later(docker: DockerClient) -> Callable[[], ObservedState]:
    """``observe``, started now: the four list calls go out at once, and the function returned
    waits for them and builds the snapshot (raising what a call raised). The caller computes
    meanwhile: with 1,000 containers dockerd takes ~0.1 s to list them. The calls run on
    daemon threads: a caller that fails before waiting (a bad spec) exits at once."""
    calls = (docker.list_containers, docker.list_networks, docker.list_volumes, docker.list_images)
    listed = [_Call(call) for call in calls]

    def snapshot() -> ObservedState:
        raw_containers, raw_networks, raw_volumes, raw_images = (call.result() for call in listed)
        return _snapshot(raw_containers, raw_networks, raw_volumes, raw_images)

    return snapshot


class _Call:
    """One list call on a daemon thread of its own; ``result`` waits and returns or raises."""

    def __init__(self, call: Callable[[], list[Any]]) -> None:
        self._call = call
        self._value: list[Any] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gitdock-observe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self) -> list[Any]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def refresh_project(
    docker: DockerClient,
    before: ObservedState,
    project: str,
    *,
    networks: bool = False,
    volumes: bool = False,
) -> ObservedState:
    """``before`` with the project's containers listed again, in one label-filtered call.

    With ``networks`` / ``volumes`` (an apply created or removed some) those are listed again
    too, at once. What an applied record needs after an apply, at a fraction of an observe:
    the other containers and the images are kept as ``before`` had them.
    """
    calls: list[Callable[[], list[Any]]] = [
        lambda: docker.list_containers({"label": [f"{LABEL_PROJECT}={project}"]})
    ]
    if networks:
        calls.append(docker.list_networks)
    if volumes:
        calls.append(docker.list_volumes)
    if len(calls) == 1:
        answers = [calls[0]()]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(calls), thread_name_prefix="observe") as pool:
            jobs = [pool.submit(call) for call in calls]
        answers = [job.result() for job in jobs]
    ours = tuple(c for c in (_container(raw) for raw in answers.pop(0)) if c.project == project)
    fresh = _snapshot([], answers.pop(0) if networks else [], answers.pop(0) if volumes else [], [])
    return ObservedState(
        containers=tuple(c for c in before.containers if c.project != project) + ours,
        networks=fresh.networks if networks else before.networks,
        volumes=fresh.volumes if volumes else before.volumes,
        images=before.images,
    )


def _snapshot(
    raw_containers: list[Any], raw_networks: list[Any], raw_volumes: list[Any], raw_images: list[Any]
) -> ObservedState:
    """The ObservedState of the four list answers. Pure."""
    return ObservedState(
        containers=tuple(_container(c) for c in raw_containers),
        networks=tuple(
            ObservedNetwork(
                id=str(n["Id"]),
                name=str(n["Name"]),
                driver=str(n.get("Driver", "")),
                labels=dict(n.get("Labels") or {}),
            )
            for n in raw_networks
        ),
        volumes=tuple(
            ObservedVolume(
                name=str(v["Name"]), driver=str(v.get("Driver", "")), labels=dict(v.get("Labels") or {})
            )
            for v in raw_volumes
        ),
        images=tuple(
            ObservedImage(
                id=str(i["Id"]),
                repo_tags=tuple(i.get("RepoTags") or ()),
                repo_digests=tuple(i.get("RepoDigests") or ()),
            )
            for i in raw_images
        ),
    )
