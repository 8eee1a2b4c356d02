"""Pure tests of the Swarm target: Compose → ServiceSpec mapping and golden plan text."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from gitdock.runtime.plan.model import ConflictError
from gitdock.runtime.swarm.desired import DesiredStack, SwarmInputs, SwarmSpecError, desired_stack
from gitdock.runtime.swarm.drift import detect_swarm_drift
from gitdock.runtime.swarm.observe import ObservedObject, ObservedService, ObservedStack
from gitdock.runtime.swarm.plan import plan_stack, plan_stack_down
from gitdock.specs.model import (
    Healthcheck,
    Mount,
    Network,
    NetworkAttachment,
    PortMapping,
    Project,
    Service,
    ServiceFile,
    Volume,
)

P = "shop"


def _file(kind: str, name: str, content: bytes, target: str) -> ServiceFile:
    return ServiceFile(kind, name, target, hashlib.sha256(content).hexdigest(), content=content)


def _project(app_conf: bytes = b"a=1", replicas: int = 2, image: str = "busybox:1") -> Project:
    web = Service(
        name="web",
        image=image,
        command=("httpd", "-f"),
        environment=(("MODE", "prod"), ("UNSET", None)),
        ports=(PortMapping(target=80, published="8080"), PortMapping(target=9100, published="9100")),
        mounts=(Mount(type="volume", target="/data", source="data"),),
        networks=(("back", NetworkAttachment()),),
        healthcheck=Healthcheck(test=("CMD", "true"), interval_ns=10**9),
        replicas=replicas,
        files=(
            _file("configs", "app", app_conf, "/etc/app.conf"),
            _file("secrets", "token", b"s3cret", "/run/secrets/token"),
        ),
    )
    worker = Service(name="worker", image="busybox:1", networks=(("back", NetworkAttachment()),))
    return Project(
        name=P,
        services=(web, worker),
        networks=(Network(key="back", name=f"{P}_back", driver_opts=(("encrypted", ""),)),),
        volumes=(Volume(key="data", name=f"{P}_data"),),
    )


INPUTS = SwarmInputs(
    deploy={
        "web": {
            "labels": {"tier": "front"},
            "update_config": {"order": "start-first", "failure_action": "rollback", "monitor": "5s"},
            "placement": {"constraints": ["node.role==manager"], "max_replicas_per_node": 1},
            "resources": {"limits": {"cpus": "0.5", "memory": "64m"}},
        },
        "worker": {"mode": "global"},
    },
    host_ports={"web": ((9100, "tcp"),)},
    attachable=frozenset({"back"}),
)


def _observed(desired: DesiredStack, **changes: Any) -> ObservedStack:
    """What the Swarm holds after ``desired`` was applied (``replicas``: a hand-made scale)."""
    services = {}
    for i, ds in enumerate(desired.services):
        spec = dict(ds.spec)
        if ds.service in changes:
            spec["Mode"] = {"Replicated": {"Replicas": changes[ds.service]}}
        services[ds.name] = ObservedService(f"s{i}", ds.name, 10, dict(ds.spec["Labels"]), spec)
    labels = {"io.gitdock.project": P}
    objects = {
        kind: {
            o.name: ObservedObject(
                kind, f"{kind[0]}{o.digest[:4]}", o.name, labels | {"io.gitdock.swarm.key": o.key}
            )
            for o in desired.objects
            if o.kind == kind
        }
        for kind in ("config", "secret")
    }
    networks = {n.name: ObservedObject("network", "n1", n.name, labels) for n in desired.networks}
    return ObservedStack(P, services, networks, objects["config"], objects["secret"])


EMPTY = ObservedStack(P, {}, {}, {}, {})


def test_plan_creates_networks_and_objects_before_the_services_that_use_them() -> None:
    plan = plan_stack(desired_stack(_project(), INPUTS), EMPTY)
    assert plan.render() == (
        "[] -> #1 network:back, CreateNetwork, not found\n"
        "[] -> #2 config:app, CreateConfig, not found\n"
        "[] -> #3 secret:token, CreateSecret, not found\n"
        "[#1, #2, #3] -> #4 service:web, CreateService, not found\n"
        "[#1] -> #5 service:worker, CreateService, not found"
    )


def test_plan_is_empty_when_the_swarm_matches() -> None:
    desired = desired_stack(_project(), INPUTS)
    assert plan_stack(desired, _observed(desired)).is_empty


def test_plan_versions_a_changed_config_rolls_its_services_and_removes_the_old_version() -> None:
    before = desired_stack(_project(app_conf=b"a=1"), INPUTS)
    after = desired_stack(_project(app_conf=b"a=2"), INPUTS)
    plan = plan_stack(after, _observed(before))
    assert plan.render() == (
        "[] -> #1 config:app, CreateConfig, content changed\n"
        "[#1] -> #2 service:web, UpdateService, config hash changed\n"
        "[#2] -> #3 config:app, RemoveConfig, unused"
    )
    assert plan.operations[1].target == "s0"  # updated in place, by the live id


def test_plan_updates_only_the_changed_service() -> None:
    before = desired_stack(_project(), INPUTS)
    after = desired_stack(_project(image="busybox:2"), INPUTS)
    assert (
        plan_stack(after, _observed(before)).render()
        == "[] -> #1 service:web, UpdateService, config hash changed"
    )


def test_plan_heals_replicas_scaled_by_hand() -> None:
    desired = desired_stack(_project(), INPUTS)
    observed = _observed(desired, web=5)
    assert [d.render() for d in detect_swarm_drift(desired, observed)] == [
        "service:web: replicas is 5, want 2"
    ]
    assert plan_stack(desired, observed).render() == (
        "[] -> #1 service:web, UpdateService, replicas changed by hand: 5, want 2"
    )


def test_plan_refuses_a_service_it_does_not_own() -> None:
    desired = desired_stack(_project(), INPUTS)
    foreign = ObservedService("x1", f"{P}_web", 3, {"owner": "someone"}, {})
    with pytest.raises(ConflictError, match="service 'shop_web' exists and is not owned by project 'shop'"):
        plan_stack(desired, ObservedStack(P, {foreign.name: foreign}, {}, {}, {}))


def test_plan_removes_orphan_services_then_unused_networks() -> None:
    desired = desired_stack(_project(), INPUTS)
    observed = _observed(desired)
    old = ObservedService("s9", f"{P}_old", 4, {"io.gitdock.project": P}, {})
    net = ObservedObject(
        "network", "n9", f"{P}_legacy", {"io.gitdock.project": P, "io.gitdock.network": "legacy"}
    )
    stack = ObservedStack(
        P,
        {**observed.services, old.name: old},
        {**observed.networks, net.name: net},
        observed.configs,
        observed.secrets,
    )
    assert plan_stack(desired, stack).render() == (
        "[] -> #1 service:old, RemoveService, orphan\n[#1] -> #2 network:legacy, RemoveNetwork, orphan"
    )


def test_down_removes_services_then_objects_and_networks_and_never_volumes() -> None:
    desired = desired_stack(_project(), INPUTS)
    assert plan_stack_down(_observed(desired)).render() == (
        "[] -> #1 service:web, RemoveService, down\n"
        "[] -> #2 service:worker, RemoveService, down\n"
        "[#1, #2] -> #3 config:app, RemoveConfig, down\n"
        "[#1, #2] -> #4 secret:token, RemoveSecret, down\n"
        "[#1, #2] -> #5 network:back, RemoveNetwork, down"
    )


def test_service_spec_maps_the_deploy_keys() -> None:
    web, worker = desired_stack(_project(), INPUTS).services
    spec = web.spec
    assert spec["Name"] == "shop_web" and spec["Mode"] == {"Replicated": {"Replicas": 2}}
    assert spec["UpdateConfig"] == {
        "Parallelism": 1,
        "Order": "start-first",
        "FailureAction": "rollback",
        "Monitor": 5 * 10**9,
    }
    assert spec["Labels"]["tier"] == "front" and spec["Labels"]["io.gitdock.config-hash"] == web.config_hash
    task = spec["TaskTemplate"]
    assert task["Placement"] == {"Constraints": ["node.role==manager"], "MaxReplicas": 1}
    assert task["Resources"] == {"Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 64 * 2**20}}
    container = task["ContainerSpec"]
    assert container["Args"] == ["httpd", "-f"] and container["Env"] == ["MODE=prod"]
    assert container["Configs"] == [
        {
            "ConfigName": "shop_app_" + hashlib.sha256(b"a=1").hexdigest()[:8],
            "File": {"Name": "/etc/app.conf", "UID": "0", "GID": "0", "Mode": 0o444},
        }
    ]
    assert container["Mounts"][0]["Source"] == "shop_data"
    assert spec["EndpointSpec"]["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 9100, "PublishedPort": 9100, "PublishMode": "host"},
    ]
    assert worker.spec["Mode"] == {"Global": {}} and worker.replicas is None


def test_overlay_network_is_attachable_and_encrypted() -> None:
    (net,) = desired_stack(_project(), INPUTS).networks
    assert net.body["Driver"] == "overlay" and net.body["Attachable"] is True
    assert net.body["Options"] == {"encrypted": ""} and net.body["Labels"]["io.gitdock.project"] == P


def test_secret_content_never_prints() -> None:
    desired = desired_stack(_project(), INPUTS)
    assert "s3cret" not in repr(desired) and "s3cret" not in plan_stack(desired, EMPTY).to_json()


def test_bad_update_order_names_the_field() -> None:
    inputs = SwarmInputs(deploy={"web": {"update_config": {"order": "sideways"}}})
    with pytest.raises(
        SwarmSpecError, match=r'services\.web\.deploy\.update_config\.order: "sideways" is not one of'
    ):
        desired_stack(_project(), inputs)


def test_a_bad_monitor_duration_names_the_field() -> None:
    inputs = SwarmInputs(deploy={"web": {"rollback_config": {"monitor": "soon"}}})
    with pytest.raises(
        SwarmSpecError, match=r'services\.web\.deploy\.rollback_config\.monitor: "soon" is not a duration'
    ):
        desired_stack(_project(), inputs)
