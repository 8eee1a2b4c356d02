"""The checks of one merged Compose document, and what no single field can say.

``check_compose`` runs the three passes: keys and types (``validate.py``), then meaning here:
names, references between services, networks, volumes, configs and secrets, conflicting
settings and dependency cycles (``graph.find_cycles``). Only the parts that validated are
checked; every problem is collected.

This module is pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gitdock.specs.errors import SpecProblem
from gitdock.specs.graph import find_cycles
from gitdock.specs.model import Condition
from gitdock.specs.schema import (
    BUILD_MESSAGE,
    NAME_RE,
    ServiceSpec,
    file_ref,
    resource_settings,
    service_dependencies,
    service_network_keys,
    shared_mode_service,
    suggest,
    volumes_from_services,
)
from gitdock.specs.validate import Validated, check_keys, validate_compose
from gitdock.specs.yamlpos import Document, format_path

# add(message, *path, key=False): report a problem at a path of the document.
Add = Callable[..., None]


def check_compose(data: Any, doc: Document) -> tuple[Validated, list[SpecProblem]]:
    """Run all three passes over one (merged) document; returns what validated and every problem."""
    cleaned, problems, warnings = check_keys(data, doc)
    top, type_problems = validate_compose(cleaned, doc)
    top.warnings += warnings
    # A service with build: and no image: gets one problem (which says "set image:"), not two.
    built = {p.path.removesuffix(".build") for p in problems if p.message == BUILD_MESSAGE}
    problems += [
        p
        for p in type_problems
        if not (p.message == "`image` is required" and p.path.removesuffix(".image") in built)
    ]
    problems += check_semantics(top, doc)
    return top, problems


def check_semantics(top: Validated, doc: Document) -> list[SpecProblem]:
    """Cross-field checks. Only the parts that validated are checked."""
    problems: list[SpecProblem] = []

    def add(message: str, *path: str | int, key: bool = False) -> None:
        problems.append(SpecProblem(message, format_path(path), doc.locate(path, prefer_key=key)))

    _check_names(top, add)
    _check_container_names(top, add)
    services = set(top.service_names)
    for name, spec in top.services.items():
        _check_dependencies(name, spec, services, add)
        _check_health_conditions(name, spec, top, add)
        _check_networking(name, spec, services, top, add)
        _check_volumes(name, spec, top, add)
        _check_service_refs(name, spec, services, add)
        _check_files(name, spec, top, add)
        _check_resources(name, spec, add)
        _check_replicas(name, spec, add)
    for cycle in find_cycles({n: service_dependencies(s) for n, s in top.services.items()}):
        add("dependency cycle: " + " -> ".join(cycle), "services", cycle[0], "depends_on", key=True)
    return problems


def _check_container_names(top: Validated, add: Add) -> None:
    """Two services cannot share a ``container_name`` (Docker holds one container per name)."""
    owners: dict[str, str] = {}
    for name, spec in top.services.items():
        if not spec.container_name:
            continue
        other = owners.setdefault(spec.container_name, name)
        if other != name:
            add(
                f'container_name "{spec.container_name}" is also the container_name of service "{other}"',
                "services",
                name,
                "container_name",
            )


def _check_names(top: Validated, add: Add) -> None:
    for section, keys in (
        ("services", top.service_names),
        ("networks", top.network_keys),
        ("volumes", top.volume_keys),
    ):
        for key in keys:
            if not NAME_RE.fullmatch(key):
                add(
                    f'"{key}" is not a valid name (letters, digits, "_", "." and "-")', section, key, key=True
                )


def _check_dependencies(name: str, spec: ServiceSpec, services: set[str], add: Add) -> None:
    deps = spec.depends_on
    entries: Iterable[tuple[str | int, str]] = []
    if isinstance(deps, list):
        entries = enumerate(deps)
    elif isinstance(deps, dict):
        entries = ((k, k) for k in deps)
    for where, target in entries:
        if target == name:
            add(f'service "{name}" depends on itself', "services", name, "depends_on", where, key=True)
        elif target not in services:
            add(
                f'depends on undefined service "{target}"{suggest(target, services)}',
                "services",
                name,
                "depends_on",
                where,
                key=True,
            )


def _check_health_conditions(name: str, spec: ServiceSpec, top: Validated, add: Add) -> None:
    """``service_healthy`` on a service whose healthcheck is disabled can never be met.

    A service with no healthcheck in the Compose file may still get one from its image's
    HEALTHCHECK, which is only known once the image is here: the plan warns, and apply
    inspects the image before anything is created (``runtime.plan.containers``).
    """
    for target, dep in service_dependencies(spec).items():
        base = top.services.get(target)
        if dep.condition is not Condition.HEALTHY or base is None:
            continue
        if not dep.required and base.profiles:
            continue  # an optional dependency whose profile may be off: Compose skips it
        check = base.healthcheck
        disabled = check is not None and (check.disable or list(check.test or [])[:1] == ["NONE"])
        if disabled:
            add(
                f'depends on "{target}" being service_healthy, but "{target}" has its healthcheck disabled '
                "(enable it, or wait for service_started)",
                "services",
                name,
                "depends_on",
                target,
                key=True,
            )


def _check_networking(name: str, spec: ServiceSpec, services: set[str], top: Validated, add: Add) -> None:
    """network_mode's service, networks against network_mode, and undefined networks."""
    svc = ("services", name)
    for key in ("ipc", "pid"):
        target = shared_mode_service(getattr(spec, key))
        if target is not None and target not in services:
            add(f'{key} refers to undefined service "{target}"{suggest(target, services)}', *svc, key)
    if spec.network_mode:
        mode_kind, _, target = spec.network_mode.partition(":")
        if mode_kind == "service" and target not in services:
            hint = suggest(target, services)
            add(f'network_mode refers to undefined service "{target}"{hint}', *svc, "network_mode")
        if spec.networks is not None:
            add("network_mode and networks cannot be used together", *svc, "networks", key=True)
    for index, net in enumerate(service_network_keys(spec)):
        if net != "default" and net not in top.network_keys:
            where = index if isinstance(spec.networks, list) else net
            hint = suggest(net, top.network_keys)
            add(
                f'service "{name}" refers to undefined network {net}{hint}', *svc, "networks", where, key=True
            )


def _check_volumes(name: str, spec: ServiceSpec, top: Validated, add: Add) -> None:
    for i, volume in enumerate(spec.volumes):
        if volume.type == "volume" and volume.source and volume.source not in top.volume_keys:
            hint = suggest(volume.source, top.volume_keys)
            add(
                f'service "{name}" refers to undefined volume {volume.source}{hint}',
                "services",
                name,
                "volumes",
                i,
            )


def _check_service_refs(name: str, spec: ServiceSpec, services: set[str], add: Add) -> None:
    """volumes_from and links name defined services."""
    svc = ("services", name)
    for i, target in enumerate(volumes_from_services(spec)):
        if target not in services:
            add(
                f'volumes_from refers to undefined service "{target}"{suggest(target, services)}',
                *svc,
                "volumes_from",
                i,
            )
    for i, link in enumerate(spec.links):
        target = link.partition(":")[0]
        if target not in services:
            add(f'links refers to undefined service "{target}"{suggest(target, services)}', *svc, "links", i)


def _check_files(name: str, spec: ServiceSpec, top: Validated, add: Add) -> None:
    """configs and secrets name defined objects, each target once."""
    svc = ("services", name)
    for kind, keys in (("configs", top.config_keys), ("secrets", top.secret_keys)):
        seen: dict[str, int] = {}
        for i, entry in enumerate(getattr(spec, kind)):
            source, target = file_ref(kind, entry)
            if source not in keys:
                add(
                    f'service "{name}" refers to undefined {kind[:-1]} {source}{suggest(source, keys)}',
                    *svc,
                    kind,
                    i,
                )
            if target in seen:
                add(f"{target} is already the target of {kind}[{seen[target]}]", *svc, kind, i)
            seen.setdefault(target, i)


def _check_resources(name: str, spec: ServiceSpec, add: Add) -> None:
    """A resource set both as a service key and under deploy.resources must agree."""
    for key, value, deploy_path, deploy_value in resource_settings(spec):
        if value is not None and deploy_value is not None and value != deploy_value:
            add(
                f"{key} ({value}) and deploy.resources.{deploy_path} ({deploy_value}) disagree",
                "services",
                name,
                key,
            )


def _check_replicas(name: str, spec: ServiceSpec, add: Add) -> None:
    svc = ("services", name)
    replicas = spec.deploy.replicas if spec.deploy and spec.deploy.replicas is not None else None
    if replicas is not None and spec.scale is not None and replicas != spec.scale:
        add(f"scale ({spec.scale}) and deploy.replicas ({replicas}) disagree", *svc, "scale")
    count = replicas if replicas is not None else spec.scale if spec.scale is not None else 1
    if spec.container_name and count > 1:
        add(f"container_name cannot be set when the service has {count} replicas", *svc, "container_name")
