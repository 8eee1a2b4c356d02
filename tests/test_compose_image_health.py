"""``service_healthy`` on a service with no Compose healthcheck: planned as a CheckHealthcheck. Pure.

The check inspects the dependency's image once it is pulled or built, and everything live
waits for it; ``test_compose_image_health_e2e.py`` runs it against the real dockerd.
"""

from __future__ import annotations

from typing import Any

import pytest

from gitdock.runtime.execute import has_healthcheck
from gitdock.runtime.observe import ObservedImage, ObservedState
from gitdock.runtime.plan import OpKind, plan_project
from gitdock.specs.model import (
    Condition,
    Dependency,
    Healthcheck,
    Network,
    NetworkAttachment,
    Position,
    Project,
    Service,
)

IMAGE = "busybox:1"
IMAGE_ID = "sha256:" + "a" * 64
HEALTHY = (("db", Dependency(Condition.HEALTHY)),)


def svc(name: str, **kw: Any) -> Service:
    kw.setdefault("networks", (("default", NetworkAttachment()),))
    return Service(name=name, image=IMAGE, **kw)


def project(*services: Service) -> Project:
    return Project(name="demo", services=services, networks=(Network(key="default", name="demo_default"),))


def web() -> Service:
    return svc("web", depends_on=HEALTHY, position=Position("compose.yaml", 2, 3))


def test_a_local_image_is_checked_by_id_before_anything_is_created() -> None:
    plan = plan_project(
        project(svc("db"), web()), ObservedState(images=(ObservedImage(IMAGE_ID, (IMAGE,), ()),))
    )
    assert plan.render().splitlines()[:5] == [
        "[#3] -> #1 network:default, CreateNetwork, not found",
        "[#1] -> #2 service:db:1, CreateContainer, not found",
        "[] -> #3 service:db, CheckHealthcheck, no healthcheck in the Compose file",
        "[#2] -> #4 service:db, WaitHealthy, service_healthy required by web",
        "[#1, #4] -> #5 service:web:1, CreateContainer, not found",
    ]
    (check,) = [op for op in plan.operations if op.kind is OpKind.CHECK_HEALTHCHECK]
    assert check.image == IMAGE_ID
    assert check.refusal == (
        'compose.yaml:2:3: service web depends on "db" being service_healthy, but neither the Compose '
        f"file nor image {IMAGE} declares a healthcheck (add one to service db, or wait for service_started)"
    )
    assert plan.warnings == (
        'compose.yaml:2:3: services.web.depends_on.db: "db" has no healthcheck in the Compose file; '
        f"apply refuses it before anything is created unless image {IMAGE} declares one",
    )


def test_a_pulled_image_is_checked_after_the_pull() -> None:
    plan = plan_project(project(svc("db"), web()), ObservedState())
    lines = plan.render().splitlines()
    assert "[] -> #2 image:busybox:1, PullImage, not present locally" in lines
    check = next(op for op in plan.operations if op.kind is OpKind.CHECK_HEALTHCHECK)
    assert check.deps == (2,) and check.image == IMAGE
    assert all(check.id in op.deps for op in plan.operations if op.kind is OpKind.CREATE_NETWORK)


@pytest.mark.parametrize("test", [("CMD", "true"), ("CMD-SHELL", "exit 0")])
def test_a_compose_healthcheck_needs_no_check(test: tuple[str, ...]) -> None:
    db = svc("db", healthcheck=Healthcheck(test=test))
    plan = plan_project(project(db, web()), ObservedState())
    assert OpKind.CHECK_HEALTHCHECK not in {op.kind for op in plan.operations}
    assert plan.warnings == ()


def test_a_compose_healthcheck_without_a_test_inherits_the_images_and_is_checked() -> None:
    db = svc("db", healthcheck=Healthcheck(test=(), interval_ns=10**9))
    plan = plan_project(project(db, web()), ObservedState())
    assert [op.kind for op in plan.operations].count(OpKind.CHECK_HEALTHCHECK) == 1


def test_one_check_for_several_dependents() -> None:
    api = svc("api", depends_on=HEALTHY)
    plan = plan_project(project(svc("db"), web(), api), ObservedState())
    assert [op.kind for op in plan.operations].count(OpKind.CHECK_HEALTHCHECK) == 1


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 1000000000}}, True),
        ({"Healthcheck": {"Test": ["CMD", "true"]}}, True),
        ({"Healthcheck": {"Test": ["NONE"]}}, False),
        ({"Healthcheck": None}, False),
        ({"Healthcheck": {"Test": []}}, False),
        ({}, False),
    ],
)
def test_an_image_config_declares_a_healthcheck(config: dict[str, Any], expected: bool) -> None:
    assert has_healthcheck(config) is expected
