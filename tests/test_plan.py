"""The planner as pure code: literal projects and observed states in, golden rendered plans out."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gitdock.runtime.desired import desired_container, desired_network, desired_volume
from gitdock.runtime.labels import LABEL_CONFIG_FIELDS, LABEL_CONFIG_HASH, replacement_name
from gitdock.runtime.observe import (
    ObservedContainer,
    ObservedImage,
    ObservedNetwork,
    ObservedState,
    ObservedVolume,
)
from gitdock.runtime.plan import (
    ConflictError,
    Operation,
    OpKind,
    Plan,
    PlanError,
    familiar_image,
    plan_down,
    plan_project,
)
from gitdock.specs.errors import SpecError
from gitdock.specs.load import load_project_with_warnings
from gitdock.specs.model import (
    Condition,
    Dependency,
    FailureAction,
    Healthcheck,
    Mount,
    Network,
    NetworkAttachment,
    PortMapping,
    Project,
    Service,
    ServiceFile,
    UpdateConfig,
    UpdateOrder,
    Volume,
)

IMAGE = "gitdock-test/busybox:1"
IMAGE_ID = "sha256:" + "1" * 64
DEFAULT_NET = (("default", NetworkAttachment()),)


def svc(name: str, **kw: object) -> Service:
    kw.setdefault("networks", DEFAULT_NET)
    return Service(name=name, image=IMAGE, **kw)  # type: ignore[arg-type]


def project(
    *services: Service, volumes: tuple[Volume, ...] = (), networks: tuple[Network, ...] = ()
) -> Project:
    nets = networks or (Network(key="default", name="demo_default"),)
    return Project(name="demo", services=services, networks=nets, volumes=volumes)


def images() -> tuple[ObservedImage, ...]:
    return (ObservedImage(IMAGE_ID, (IMAGE,), ()),)


def applied(p: Project) -> ObservedState:
    """The observed state right after a successful apply of ``p``."""
    containers = []
    for s in p.services:
        for n in range(1, s.replicas + 1):
            dc = desired_container(p, s, n)
            containers.append(
                ObservedContainer(
                    id=f"id-{dc.name}",
                    name=dc.name,
                    image=s.image,
                    image_id=IMAGE_ID,
                    state="running",
                    status="Up 1 minute",
                    labels=dict(dc.create_body["Labels"]),
                    networks={net: "nid" for net, _ in dc.networks},
                    created=100,
                )
            )
    networks = []
    for net in p.networks:
        dn = desired_network(p, net)
        networks.append(ObservedNetwork(f"nid-{dn.name}", dn.name, "bridge", dict(dn.create_body["Labels"])))
    volumes = []
    for vol in p.volumes:
        dv = desired_volume(p, vol)
        volumes.append(ObservedVolume(dv.name, "local", dict(dv.create_body["Labels"])))
    return ObservedState(tuple(containers), tuple(networks), tuple(volumes), images())


def with_container(observed: ObservedState, name: str, **changes: object) -> ObservedState:
    containers = tuple(
        dataclasses.replace(c, **changes) if c.name == name else c  # type: ignore[arg-type]
        for c in observed.containers
    )
    return dataclasses.replace(observed, containers=containers)


def test_plan_creates_everything_on_an_empty_host() -> None:
    p = project(
        svc("db", mounts=(Mount(type="volume", source="data", target="/data"),)),
        svc("web", depends_on=(("db", Dependency()),)),
        volumes=(Volume(key="data", name="demo_data"),),
    )
    plan = plan_project(p, ObservedState(images=images()))
    assert plan.render() == "\n".join(
        [
            "[] -> #1 network:default, CreateNetwork, not found",
            "[] -> #2 volume:data, CreateVolume, not found",
            "[#1, #2] -> #3 service:db:1, CreateContainer, not found",
            "[#1, #3] -> #4 service:web:1, CreateContainer, not found",
        ]
    )


def test_plan_is_empty_when_nothing_changed() -> None:
    p = project(svc("db"), svc("web", replicas=3), volumes=(Volume(key="data", name="demo_data"),))
    plan = plan_project(p, applied(p))
    assert plan.is_empty
    assert plan.render() == ""


def test_plan_recreates_only_the_container_whose_config_hash_changed() -> None:
    before = project(svc("db"), svc("web", environment=(("A", "1"),)))
    after = project(svc("db"), svc("web", environment=(("A", "2"),)))
    plan = plan_project(after, applied(before))
    assert plan.render() == "[] -> #1 service:web:1, RecreateContainer, config changed: environment"


def test_plan_names_every_changed_field() -> None:
    before = project(svc("web", environment=(("A", "1"),)))
    after = project(svc("web", environment=(("A", "2"),), ports=(PortMapping(target=80, published="8080"),)))
    plan = plan_project(after, applied(before))
    assert plan.render() == "[] -> #1 service:web:1, RecreateContainer, config changed: environment, ports"


def test_plan_recreates_when_the_image_reference_changes() -> None:
    before = project(svc("web"))
    after = project(dataclasses.replace(svc("web"), image="gitdock-test/busybox:2"))
    observed = dataclasses.replace(
        applied(before),
        images=(*images(), ObservedImage("sha256:" + "2" * 64, ("gitdock-test/busybox:2",), ())),
    )
    assert (
        plan_project(after, observed).render() == "[] -> #1 service:web:1, RecreateContainer, image changed"
    )


def test_plan_recreates_when_the_tag_points_at_another_image() -> None:
    p = project(svc("web"))
    observed = with_container(applied(p), "demo-web-1", image_id="sha256:" + "9" * 64)
    assert plan_project(p, observed).render() == "[] -> #1 service:web:1, RecreateContainer, image changed"


def test_plan_pulls_a_missing_image_before_creating() -> None:
    p = project(dataclasses.replace(svc("web"), image="example.org/app:2"))
    plan = plan_project(p, ObservedState(images=images()))
    assert plan.render() == "\n".join(
        [
            "[#2] -> #1 network:default, CreateNetwork, not found",
            "[] -> #2 image:example.org/app:2, PullImage, not present locally",
            "[#1, #2] -> #3 service:web:1, CreateContainer, not found",
        ]
    )


def test_plan_prunes_a_removed_service_as_orphan() -> None:
    before = project(svc("web"), svc("worker"))
    after = project(svc("web"))
    plan = plan_project(after, applied(before))
    assert plan.render() == "[] -> #1 service:worker:1, RemoveContainer, orphan"


def test_plan_scales_up_and_down() -> None:
    three = project(svc("web", replicas=3))
    one = project(svc("web", replicas=1))
    assert plan_project(one, applied(three)).render() == "\n".join(
        [
            "[] -> #1 service:web:2, RemoveContainer, scaled down",
            "[] -> #2 service:web:3, RemoveContainer, scaled down",
        ]
    )
    assert plan_project(three, applied(one)).render() == "\n".join(
        [
            "[] -> #1 service:web:2, CreateContainer, not found",
            "[] -> #2 service:web:3, CreateContainer, not found",
        ]
    )


def test_plan_never_removes_a_volume_that_left_the_project() -> None:
    before = project(svc("web"), volumes=(Volume(key="data", name="demo_data"),))
    after = project(svc("web"))
    plan = plan_project(after, applied(before))
    assert plan.is_empty
    assert plan.warnings == (
        "volume:data: no longer in the project; kept, because apply never removes volumes "
        "(gitdock down --volumes does)",
    )


def test_plan_reports_a_changed_volume_instead_of_recreating_it() -> None:
    before = project(svc("web"), volumes=(Volume(key="data", name="demo_data"),))
    after = project(
        svc("web"), volumes=(Volume(key="data", name="demo_data", driver_opts=(("o", "size=1m"),)),)
    )
    plan = plan_project(after, applied(before))
    assert plan.is_empty
    assert plan.warnings[0].startswith("volume:data: config changed (driver_opts); not recreated")


def test_plan_refuses_a_container_name_held_by_an_unmanaged_container() -> None:
    p = project(svc("web"))
    stranger = ObservedContainer("x", "demo-web-1", IMAGE, IMAGE_ID, "running", "Up", {}, {})
    with pytest.raises(ConflictError, match="container 'demo-web-1' exists and it is not managed by gitdock"):
        plan_project(p, ObservedState(containers=(stranger,), images=images()))


def test_plan_refuses_a_network_owned_by_another_project() -> None:
    p = project(svc("web"))
    other = ObservedNetwork("n", "demo_default", "bridge", {"io.gitdock.project": "other"})
    with pytest.raises(ConflictError, match="belongs to gitdock project 'other'"):
        plan_project(p, ObservedState(networks=(other,), images=images()))


def test_plan_requires_external_networks_to_exist() -> None:
    p = project(svc("web"), networks=(Network(key="default", name="shared", external=True),))
    with pytest.raises(PlanError, match="external network 'shared' not found"):
        plan_project(p, ObservedState(images=images()))


def test_plan_leaves_other_projects_alone() -> None:
    mine = project(svc("web"))
    theirs = dataclasses.replace(project(svc("web"), svc("db")), name="other")
    theirs = dataclasses.replace(theirs, networks=(Network(key="default", name="other_default"),))
    both = applied(theirs)
    plan = plan_project(mine, both)
    assert all(
        op.kind is OpKind.CREATE_CONTAINER or op.kind is OpKind.CREATE_NETWORK for op in plan.operations
    )
    assert [op.resource for op in plan.operations] == ["network:default", "service:web:1"]


def test_plan_waits_for_health_before_starting_dependents() -> None:
    db = svc("db", healthcheck=Healthcheck(test=("CMD", "true")))
    p = project(db, svc("web", depends_on=(("db", Dependency(Condition.HEALTHY)),)))
    plan = plan_project(p, ObservedState(images=images()))
    assert plan.render() == "\n".join(
        [
            "[] -> #1 network:default, CreateNetwork, not found",
            "[#1] -> #2 service:db:1, CreateContainer, not found",
            "[#2] -> #3 service:db, WaitHealthy, service_healthy required by web",
            "[#1, #3] -> #4 service:web:1, CreateContainer, not found",
        ]
    )


def test_plan_waits_for_a_job_to_complete() -> None:
    p = project(svc("migrate"), svc("app", depends_on=(("migrate", Dependency(Condition.COMPLETED)),)))
    plan = plan_project(p, ObservedState(images=images()))
    assert "[#2] -> #3 service:migrate, WaitCompleted, service_completed_successfully required by app" in (
        plan.render().splitlines()
    )


def test_plan_leaves_a_finished_one_shot_job_alone() -> None:
    p = project(svc("migrate"))
    observed = with_container(applied(p), "demo-migrate-1", state="exited", status="Exited (0) 1 minute ago")
    assert plan_project(p, observed).is_empty


def test_plan_starts_a_stopped_long_running_service() -> None:
    p = project(svc("web", restart="unless-stopped"))
    observed = with_container(applied(p), "demo-web-1", state="exited", status="Exited (137) 5 seconds ago")
    assert plan_project(p, observed).render() == "[] -> #1 service:web:1, StartContainer, exited (137)"


def test_plan_removes_duplicates_left_by_an_interrupted_recreate() -> None:
    p = project(svc("web"))
    observed = applied(p)
    original = observed.containers[0]
    leftover = dataclasses.replace(original, id="id-tmp", name="abc123_demo-web-1", created=200)
    observed = dataclasses.replace(observed, containers=(original, leftover))
    assert plan_project(p, observed).render() == "[] -> #1 service:web:1, RemoveContainer, duplicate"


def test_plan_removes_orphan_networks_after_their_containers() -> None:
    before = project(
        svc("web", networks=(("default", NetworkAttachment()), ("back", NetworkAttachment()))),
        svc("worker", networks=(("back", NetworkAttachment()),)),
        networks=(Network(key="default", name="demo_default"), Network(key="back", name="demo_back")),
    )
    after = project(svc("web"))
    assert plan_project(after, applied(before)).render() == "\n".join(
        [
            "[] -> #1 service:web:1, RecreateContainer, config changed: networks",
            "[] -> #2 service:worker:1, RemoveContainer, orphan",
            "[#1, #2] -> #3 network:back, RemoveNetwork, orphan",
        ]
    )


def test_plan_recreates_a_changed_network_with_its_containers() -> None:
    before = project(svc("web"))
    after = project(svc("web"), networks=(Network(key="default", name="demo_default", internal=True),))
    assert plan_project(after, applied(before)).render() == "\n".join(
        [
            "[] -> #1 service:web:1, RemoveContainer, network default config changed",
            "[#1] -> #2 network:default, RemoveNetwork, config changed",
            "[#2] -> #3 network:default, CreateNetwork, config changed",
            "[#1, #3] -> #4 service:web:1, CreateContainer, network config changed",
        ]
    )


def test_plan_recreates_a_service_sharing_the_network_of_a_recreated_one() -> None:
    before = project(
        svc("vpn", environment=(("V", "1"),)), svc("app", networks=(), network_mode="service:vpn")
    )
    after = project(
        svc("vpn", environment=(("V", "2"),)), svc("app", networks=(), network_mode="service:vpn")
    )
    assert plan_project(after, applied(before)).render() == "\n".join(
        [
            "[] -> #1 service:vpn:1, RecreateContainer, config changed: environment",
            "[#1] -> #2 service:app:1, RecreateContainer, network_mode service:vpn recreated",
        ]
    )


def test_plan_as_json_carries_the_same_operations() -> None:
    p = project(svc("web"))
    data = json.loads(plan_project(p, ObservedState(images=images())).to_json())
    assert data["project"] == "demo"
    assert data["summary"] == {"CreateContainer": 1, "CreateNetwork": 1}
    assert data["operations"][1] == {
        "id": 2,
        "kind": "CreateContainer",
        "resource": "service:web:1",
        "cause": "not found",
        "deps": [1],
        "name": "demo-web-1",
        "image": IMAGE,
    }


def test_down_removes_containers_then_networks_and_keeps_volumes() -> None:
    p = project(svc("web"), volumes=(Volume(key="data", name="demo_data"),))
    plan = plan_down("demo", applied(p))
    assert plan.render() == "\n".join(
        [
            "[] -> #1 service:web:1, RemoveContainer, down",
            "[#1] -> #2 network:default, RemoveNetwork, down",
            "warning: volume:data: kept (demo_data); use --volumes to remove named volumes",
        ]
    )
    with_volumes = plan_down("demo", applied(p), remove_volumes=True)
    assert with_volumes.operations[-1].kind is OpKind.REMOVE_VOLUME


def test_container_labels_carry_ownership_and_hashes() -> None:
    p = project(svc("web"))
    labels = desired_container(p, p.services[0], 1).create_body["Labels"]
    assert labels["io.gitdock.project"] == "demo"
    assert labels["io.gitdock.service"] == "web"
    assert len(labels[LABEL_CONFIG_HASH]) == 64
    assert set(json.loads(labels[LABEL_CONFIG_FIELDS])) == {"image", "networks", "restart"}


@pytest.mark.parametrize(
    ("ref", "familiar"),
    [
        ("busybox", "busybox:latest"),
        ("docker.io/library/busybox:1", "busybox:1"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest"),
        ("app@sha256:abc", "app@sha256:abc"),
    ],
)
def test_familiar_image_matches_repo_tags(ref: str, familiar: str) -> None:
    assert familiar_image(ref) == familiar


def test_plan_recreates_a_container_changed_in_place_when_told() -> None:
    p = project(svc("web"))
    plan = plan_project(p, applied(p), force_recreate={"demo-web-1": "drift: changed by hand"})
    assert plan.render() == "[] -> #1 service:web:1, RecreateContainer, drift: changed by hand"


def test_plan_starts_a_finished_looking_container_stopped_by_hand_when_told() -> None:
    p = project(svc("migrate"))
    observed = with_container(applied(p), "demo-migrate-1", state="exited", status="Exited (0) 1 minute ago")
    assert plan_project(p, observed).is_empty
    forced = plan_project(p, observed, force_start={"demo-migrate-1": "drift: stopped by hand"})
    assert forced.render() == "[] -> #1 service:migrate:1, StartContainer, drift: stopped by hand"


def test_plan_does_not_start_a_running_container_it_was_told_to_start() -> None:
    p = project(svc("web"))
    assert plan_project(p, applied(p), force_start={"demo-web-1": "drift: stopped by hand"}).is_empty


# -- what an interrupted apply leaves behind ------------------------------------------------


def replacement_of(p: Project, service: str, state: str = "running") -> ObservedContainer:
    """The replacement a recreate to ``p`` builds for replica 1, as Docker lists it."""
    s = next(s for s in p.services if s.name == service)
    dc = desired_container(p, s, 1)
    return ObservedContainer(
        id=f"id-new-{dc.name}",
        name=replacement_name(dc.name, dc.config_hash),
        image=s.image,
        image_id=IMAGE_ID,
        state=state,
        status="Up 1 second" if state == "running" else "Created",
        labels=dict(dc.create_body["Labels"]),
        networks={net: "nid" for net, _ in dc.networks},
        created=200,
    )


def plus(observed: ObservedState, *containers: ObservedContainer) -> ObservedState:
    return dataclasses.replace(observed, containers=(*observed.containers, *containers))


def assert_one_order_per_container(plan: Plan) -> None:
    """No two operations act on one container (by id or name) without an order between them."""
    by_id = {op.id: op for op in plan.operations}

    def ancestors(op_id: int) -> set[int]:
        seen: set[int] = set()
        todo = list(by_id[op_id].deps)
        while todo:
            dep = todo.pop()
            if dep not in seen:
                seen.add(dep)
                todo += by_id[dep].deps
        return seen

    def objects(op: Operation) -> set[str]:
        names = {op.target, op.target_name, op.temp_name, op.replacement}
        if op.kind in (OpKind.CREATE_CONTAINER, OpKind.RECREATE_CONTAINER) and op.container:
            names.add(op.container.name)
        return {n for n in names if n} if op.kind.is_mutating else set()

    ops = plan.operations
    for i, a in enumerate(ops):
        for b in ops[i + 1 :]:
            if objects(a) & objects(b):
                assert a.id in ancestors(b.id), f"#{a.id} and #{b.id} share {objects(a) & objects(b)}"


def test_plan_adopts_a_running_replacement_an_interrupted_recreate_left() -> None:
    before = project(svc("web", environment=(("A", "1"),)))
    after = project(svc("web", environment=(("A", "2"),)))
    observed = plus(applied(before), replacement_of(after, "web"))
    plan = plan_project(after, observed)
    assert plan.render() == (
        "[] -> #1 service:web:1, RecreateContainer, config changed: environment; replacement adopted"
    )
    assert plan.operations[0].replacement == "id-new-demo-web-1"
    assert plan.operations[0].target == "id-demo-web-1"
    assert_one_order_per_container(plan)


def test_plan_removes_a_replacement_that_never_started_before_recreating() -> None:
    before = project(svc("web", environment=(("A", "1"),)))
    after = project(svc("web", environment=(("A", "2"),)))
    observed = plus(applied(before), replacement_of(after, "web", state="created"))
    plan = plan_project(after, observed)
    assert plan.render() == "\n".join(
        [
            "[] -> #1 service:web:1, RemoveContainer, duplicate",
            "[#1] -> #2 service:web:1, RecreateContainer, config changed: environment",
        ]
    )
    assert plan.operations[1].replacement is None
    assert_one_order_per_container(plan)


def test_plan_removes_a_stale_replacement_for_another_config_first() -> None:
    v1 = project(svc("web", environment=(("A", "1"),)))
    v2 = project(svc("web", environment=(("A", "2"),)))
    v3 = project(svc("web", environment=(("A", "3"),)))
    plan = plan_project(v3, plus(applied(v1), replacement_of(v2, "web")))
    assert plan.render() == "\n".join(
        [
            "[] -> #1 service:web:1, RemoveContainer, duplicate",
            "[#1] -> #2 service:web:1, RecreateContainer, config changed: environment",
        ]
    )
    assert_one_order_per_container(plan)


def test_plan_finishes_the_rename_when_the_old_container_is_already_gone() -> None:
    before = project(svc("web", environment=(("A", "1"),)))
    after = project(svc("web", environment=(("A", "2"),)))
    observed = dataclasses.replace(applied(before), containers=(replacement_of(after, "web"),))
    plan = plan_project(after, observed)
    assert plan.render() == "[] -> #1 service:web:1, RenameContainer, interrupted recreate"
    assert plan.operations[0].target == "id-new-demo-web-1"
    assert plan.operations[0].container is not None
    assert plan.operations[0].container.name == "demo-web-1"


def test_plan_renames_then_starts_a_stopped_replacement() -> None:
    before = project(svc("web", environment=(("A", "1"),)))
    after = project(svc("web", restart="always", environment=(("A", "2"),)))
    spare = dataclasses.replace(
        replacement_of(after, "web"), state="exited", status="Exited (255) 1 second ago"
    )
    observed = dataclasses.replace(applied(before), containers=(spare,))
    plan = plan_project(after, observed)
    assert plan.render() == "\n".join(
        [
            "[] -> #1 service:web:1, RenameContainer, interrupted recreate",
            "[#1] -> #2 service:web:1, StartContainer, exited (255)",
        ]
    )
    assert_one_order_per_container(plan)


def test_plan_waits_for_a_removal_in_progress_before_creating() -> None:
    p = project(svc("web"))
    observed = with_container(applied(p), "demo-web-1", state="removing", status="Removal In Progress")
    plan = plan_project(p, observed)
    assert plan.render() == "\n".join(
        [
            "[] -> #1 service:web:1, RemoveContainer, removal in progress",
            "[#1] -> #2 service:web:1, CreateContainer, not found",
        ]
    )
    assert_one_order_per_container(plan)


def test_plan_recreates_a_never_started_container_that_has_files_to_copy() -> None:
    conf = ServiceFile(kind="configs", name="app", target="/etc/app.conf", digest="d", content=b"x")
    p = project(svc("web", files=(conf,)))
    observed = with_container(applied(p), "demo-web-1", state="created", status="Created")
    assert plan_project(p, observed).render() == "[] -> #1 service:web:1, RecreateContainer, not started"


START_FIRST = UpdateConfig(order=UpdateOrder.START_FIRST)


@pytest.mark.parametrize(
    ("changes", "stop_first"),
    [
        ({}, True),
        ({"ports": (PortMapping(target=80),)}, True),
        ({"update_config": START_FIRST}, False),
        ({"update_config": START_FIRST, "ports": (PortMapping(target=80),)}, False),
        ({"update_config": UpdateConfig()}, True),
        ({"update_config": START_FIRST, "ports": (PortMapping(target=80, published="8080"),)}, True),
        ({"update_config": START_FIRST, "container_name": "fixed"}, True),
        (
            {
                "update_config": START_FIRST,
                "networks": (("default", NetworkAttachment(ipv4_address="10.5.0.9")),),
            },
            True,
        ),
    ],
)
def test_plan_stops_the_old_container_first_unless_start_first_is_asked_and_possible(
    changes: dict[str, object], stop_first: bool
) -> None:
    before = project(svc("web", environment=(("A", "1"),), **changes))
    after = project(svc("web", environment=(("A", "2"),), **changes))
    (op,) = plan_project(after, applied(before)).operations
    assert op.kind is OpKind.RECREATE_CONTAINER
    assert op.stop_first is stop_first
    assert op.gate is not stop_first
    assert op.renew_volumes is False


def test_plan_shows_start_first_replicas_one_batch_after_another() -> None:
    config = UpdateConfig(order=UpdateOrder.START_FIRST, parallelism=2, delay=5.0, monitor=2.0)
    before = project(svc("web", environment=(("A", "1"),), replicas=5, update_config=config))
    after = project(svc("web", environment=(("A", "2"),), replicas=5, update_config=config))
    plan = plan_project(after, applied(before))
    assert plan.render() == "\n".join(
        [
            "[] -> #1 service:web:1, RecreateContainer, config changed: environment (start-first)",
            "[] -> #2 service:web:2, RecreateContainer, config changed: environment (start-first)",
            "[#1, #2] -> #3 service:web:3, RecreateContainer, config changed: environment (start-first)",
            "[#1, #2] -> #4 service:web:4, RecreateContainer, config changed: environment (start-first)",
            "[#3, #4] -> #5 service:web:5, RecreateContainer, config changed: environment (start-first)",
        ]
    )
    assert [op.delay for op in plan.operations] == [0.0, 0.0, 5.0, 5.0, 5.0]
    assert {op.monitor for op in plan.operations} == {2.0}
    assert all(op.undo == () and op.after == () and op.retire_name is None for op in plan.operations)


def test_plan_keeps_old_replicas_for_a_rollback_until_every_one_is_replaced() -> None:
    config = UpdateConfig(order=UpdateOrder.START_FIRST, failure_action=FailureAction.ROLLBACK)
    before = project(svc("web", environment=(("A", "1"),), replicas=3, update_config=config))
    after = project(svc("web", environment=(("A", "2"),), replicas=3, update_config=config))
    plan = plan_project(after, applied(before))
    cause = "config changed: environment (start-first, rollback on failure)"
    kept = "replaced (kept for rollback until every replica was)"
    assert plan.render() == "\n".join(
        [
            f"[] -> #1 service:web:1, RecreateContainer, {cause}",
            f"[#1] -> #2 service:web:2, RecreateContainer, {cause}",
            f"[#2] -> #3 service:web:3, RecreateContainer, {cause}",
            f"[#1, #2, #3] -> #4 service:web:1, RemoveContainer, {kept}",
            f"[#1, #2, #3] -> #5 service:web:2, RemoveContainer, {kept}",
            f"[#1, #2, #3] -> #6 service:web:3, RemoveContainer, {kept}",
        ]
    )
    assert [op.undo for op in plan.operations[:3]] == [(), (1,), (1, 2)]
    assert [op.target for op in plan.operations[3:]] == ["id-demo-web-1", "id-demo-web-2", "id-demo-web-3"]
    assert plan.operations[0].retire_name == plan.operations[3].target_name


def test_plan_lets_later_replicas_run_after_a_failure_when_asked_to_continue() -> None:
    config = UpdateConfig(failure_action=FailureAction.CONTINUE)
    before = project(svc("web", environment=(("A", "1"),), replicas=2, update_config=config))
    after = project(svc("web", environment=(("A", "2"),), replicas=2, update_config=config))
    plan = plan_project(after, applied(before))
    assert plan.render().splitlines()[1] == (
        "[#1] -> #2 service:web:2, RecreateContainer, "
        "config changed: environment (stop-first, continue on failure)"
    )
    assert plan.operations[1].after == (1,)


def test_plan_warns_when_start_first_cannot_be_honoured_or_shares_a_writable_volume() -> None:
    data = (Mount(type="volume", source="data", target="/data"),)
    vols = (Volume(key="data", name="demo_data"),)
    fixed = {"ports": (PortMapping(target=80, published="8080"),)}
    before = project(
        svc("web", environment=(("A", "1"),), update_config=START_FIRST, **fixed),
        svc("db", environment=(("A", "1"),), update_config=START_FIRST, mounts=data),
        volumes=vols,
    )
    after = project(
        svc("web", environment=(("A", "2"),), update_config=START_FIRST, **fixed),
        svc("db", environment=(("A", "2"),), update_config=START_FIRST, mounts=data),
        volumes=vols,
    )
    plan = plan_project(after, applied(before))
    assert plan.warnings == (
        "service db: start-first runs the old and new container on the same writable volume for a moment",
        "service web: update_config.order start-first ignored: it publishes a fixed host port",
    )
    assert [
        (op.resource, op.stop_first) for op in plan.operations if op.kind is OpKind.RECREATE_CONTAINER
    ] == [
        ("service:db:1", False),
        ("service:web:1", True),
    ]


def test_update_config_is_not_part_of_the_config_hash() -> None:
    plain = project(svc("web"))
    rolled = project(svc("web", update_config=UpdateConfig(order=UpdateOrder.START_FIRST, parallelism=3)))
    assert plan_project(rolled, applied(plain)).is_empty
    assert (
        desired_container(plain, plain.services[0], 1).config_hash
        == desired_container(rolled, rolled.services[0], 1).config_hash
    )


def test_plan_does_not_restore_a_finished_job_when_its_replacement_fails() -> None:
    before = project(svc("job", container_name="job", environment=(("A", "1"),)))
    after = project(svc("job", container_name="job", environment=(("A", "2"),)))
    observed = with_container(applied(before), "job", state="exited", status="Exited (0) 1 minute ago")
    (op,) = plan_project(after, observed).operations
    assert op.restore_old is False


def test_plan_orders_every_operation_on_one_container_after_any_interruption() -> None:
    v1 = project(svc("web", environment=(("A", "1"),), replicas=2), svc("db"))
    v2 = project(svc("web", environment=(("A", "2"),), replicas=2), svc("db", environment=(("B", "1"),)))
    spare = replacement_of(v2, "web")
    stale = dataclasses.replace(replacement_of(v2, "db", state="created"), id="id-stale")
    removing = dataclasses.replace(applied(v1).containers[0], id="id-going", state="removing", created=50)
    plan = plan_project(v2, plus(applied(v1), spare, stale, removing))
    assert_one_order_per_container(plan)


def test_plan_renews_anonymous_volumes_only_when_asked() -> None:
    before = project(svc("web", environment=(("A", "1"),)))
    after = project(svc("web", environment=(("A", "2"),)))
    (kept,) = plan_project(after, applied(before)).operations
    (renewed,) = plan_project(after, applied(before), renew_anon_volumes=True).operations
    assert (kept.renew_volumes, renewed.renew_volumes) == (False, True)


def test_update_config_loads_with_only_max_failure_ratio_left_to_swarm(tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n  web:\n    image: busybox\n    deploy:\n      update_config:\n"
        "        order: start-first\n        parallelism: 2\n        delay: 1500ms\n"
        "        failure_action: rollback\n        monitor: 5s\n        max_failure_ratio: 0.5\n"
    )
    project, warnings = load_project_with_warnings([compose], environ={})
    assert project.services[0].update_config == UpdateConfig(
        order=UpdateOrder.START_FIRST,
        parallelism=2,
        delay=1.5,
        failure_action=FailureAction.ROLLBACK,
        monitor=5.0,
    )
    assert [w for w in warnings if "update_config" in w] == [
        "services.web.deploy.update_config.max_failure_ratio has no effect on a plain Docker host "
        "(Swarm only)"
    ]


def test_update_config_refuses_an_unknown_order(tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n  web:\n    image: busybox\n    deploy: {update_config: {order: sideways}}\n"
    )
    with pytest.raises(
        SpecError, match=r'update_config\.order: "sideways" is not one of stop-first, start-first'
    ):
        load_project_with_warnings([compose], environ={})
