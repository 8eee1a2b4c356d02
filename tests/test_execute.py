"""Executor edge cases that the real daemon shows only by chance, on httpx.MockTransport."""

from __future__ import annotations

import httpx

from gitdock.runtime.docker import DockerClient
from gitdock.runtime.execute import Executor, OpStatus, carry_anonymous_volumes
from gitdock.runtime.observe import ObservedContainer, ObservedNetwork, ObservedState
from gitdock.runtime.plan import Operation, OpKind, Plan, plan_down


def test_removing_a_network_waits_for_dockerd_to_release_its_endpoints() -> None:
    answers = [
        httpx.Response(403, json={"message": "error while removing network: network x has active endpoints"}),
        httpx.Response(403, json={"message": "error while removing network: network x has active endpoints"}),
        httpx.Response(204),
    ]
    deletes: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path in ("/_ping", "/version"):  # the API version: _ping's header, else /version
            return httpx.Response(200, json={"ApiVersion": "1.41"}, headers={"Api-Version": "1.41"})
        deletes.append(request.url.path)
        return answers.pop(0)

    observed = ObservedState(
        networks=(ObservedNetwork("nid", "demo_default", "bridge", {"io.gitdock.project": "demo"}),)
    )
    plan = plan_down("demo", observed)
    with DockerClient("unix:///nowhere.sock", transport=httpx.MockTransport(handle)) as docker:
        report = Executor(docker).execute(plan, observed)
    assert [r.status for r in report.results] == [OpStatus.DONE]
    assert deletes == ["/v1.41/networks/nid"] * 3


def test_other_network_errors_fail_at_once() -> None:
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path in ("/_ping", "/version"):  # the API version: _ping's header, else /version
            return httpx.Response(200, json={"ApiVersion": "1.41"}, headers={"Api-Version": "1.41"})
        calls.append(request.url.path)
        return httpx.Response(500, json={"message": "something else"})

    observed = ObservedState(
        networks=(ObservedNetwork("nid", "demo_default", "bridge", {"io.gitdock.project": "demo"}),)
    )
    with DockerClient("unix:///nowhere.sock", transport=httpx.MockTransport(handle)) as docker:
        report = Executor(docker).execute(plan_down("demo", observed), observed)
    assert report.failed[0].error == "Docker DELETE /networks/nid: something else"
    assert len(calls) == 1


def test_a_removal_already_in_progress_is_waited_for() -> None:
    seen: list[str] = []
    inspects = [httpx.Response(200, json={"Id": "cid", "State": {"Status": "removing"}})] * 2

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path in ("/_ping", "/version"):  # the API version: _ping's header, else /version
            return httpx.Response(200, json={"ApiVersion": "1.41"}, headers={"Api-Version": "1.41"})
        seen.append(f"{request.method} {request.url.path}")
        if request.method == "POST":  # stop
            return httpx.Response(409, json={"message": "container is marked for removal"})
        if request.method == "DELETE":
            return httpx.Response(409, json={"message": "removal of container cid is already in progress"})
        return inspects.pop(0) if inspects else httpx.Response(404, json={"message": "no such container"})

    observed = ObservedState(
        containers=(
            ObservedContainer(
                "cid",
                "demo-web-1",
                "img",
                "iid",
                "removing",
                "Removal In Progress",
                {"io.gitdock.project": "demo", "io.gitdock.service": "web"},
                {},
            ),
        )
    )
    with DockerClient("unix:///nowhere.sock", transport=httpx.MockTransport(handle)) as docker:
        report = Executor(docker).execute(plan_down("demo", observed), observed)
    assert [r.status for r in report.results] == [OpStatus.DONE]
    assert seen == [
        "POST /v1.41/containers/cid/stop",
        "DELETE /v1.41/containers/cid",
        *["GET /v1.41/containers/cid/json"] * 3,
    ]


def body(mounts: list[dict[str, object]] | None = None, **host: object) -> dict[str, object]:
    return {"Image": "img", "HostConfig": {**host, **({"Mounts": mounts} if mounts else {})}}


OLD_MOUNTS = [
    {"Type": "volume", "Name": "anon1", "Destination": "/data", "RW": True},
    {"Type": "volume", "Name": "anon2", "Destination": "/cache/", "RW": True},
    {"Type": "volume", "Name": "demo_named", "Destination": "/named", "RW": False},
    {"Type": "bind", "Source": "/srv", "Destination": "/srv", "RW": True},
]


def test_an_image_volume_gets_the_old_containers_volume() -> None:
    new = carry_anonymous_volumes(body(), OLD_MOUNTS, ["/data"])
    assert new["HostConfig"]["Mounts"] == [
        {"Type": "volume", "Source": "anon1", "Target": "/data", "ReadOnly": False}
    ]


def test_a_short_syntax_anonymous_volume_gets_the_old_containers_volume() -> None:
    mounts: list[dict[str, object]] = [{"Type": "volume", "Target": "/cache", "ReadOnly": False}]
    new = carry_anonymous_volumes(body(mounts), OLD_MOUNTS, [])
    assert new["HostConfig"]["Mounts"] == [
        {"Type": "volume", "Target": "/cache", "ReadOnly": False, "Source": "anon2"}
    ]
    assert mounts == [{"Type": "volume", "Target": "/cache", "ReadOnly": False}]  # input untouched


def test_what_the_spec_mounts_at_an_image_volume_wins() -> None:
    named = [{"Type": "volume", "Source": "demo_other", "Target": "/data", "ReadOnly": False}]
    assert carry_anonymous_volumes(body(named), OLD_MOUNTS, ["/data"])["HostConfig"]["Mounts"] == named
    bound = carry_anonymous_volumes(body(Binds=["/host:/data:ro"]), OLD_MOUNTS, ["/data"])
    assert "Mounts" not in bound["HostConfig"]


def test_nothing_is_carried_to_a_path_the_new_container_does_not_declare() -> None:
    assert "Mounts" not in carry_anonymous_volumes(body(), OLD_MOUNTS, ["/elsewhere"])["HostConfig"]


def test_an_order_only_dependency_that_failed_does_not_skip_its_dependent() -> None:
    """``failure_action: continue``: the next batch runs after a failed one; others are skipped."""
    removed: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path in ("/_ping", "/version"):  # the API version: _ping's header, else /version
            return httpx.Response(200, json={"ApiVersion": "1.41"}, headers={"Api-Version": "1.41"})
        if request.method == "POST":  # stop
            return httpx.Response(204)
        removed.append(request.url.path.rsplit("/", 1)[-1])
        return httpx.Response(500 if "bad" in request.url.path else 204, json={"message": "boom"})

    ops = (
        Operation(1, OpKind.REMOVE_CONTAINER, "service:web:1", "duplicate", target="bad"),
        Operation(2, OpKind.REMOVE_CONTAINER, "service:web:2", "duplicate", (1,), target="two", after=(1,)),
        Operation(3, OpKind.REMOVE_CONTAINER, "service:web:3", "duplicate", (1,), target="three"),
    )
    with DockerClient("unix:///nowhere.sock", transport=httpx.MockTransport(handle)) as docker:
        report = Executor(docker).execute(Plan("demo", ops))
    assert [r.status for r in report.results] == [OpStatus.FAILED, OpStatus.DONE, OpStatus.SKIPPED]
    assert removed == ["bad", "two"]
