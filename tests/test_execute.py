"""Executor edge cases that the real daemon shows only by chance, on httpx.MockTransport."""

from __future__ import annotations

import httpx

from gitdock.runtime.docker import DockerClient
from gitdock.runtime.execute import Executor, OpStatus
from gitdock.runtime.observe import ObservedNetwork, ObservedState
from gitdock.runtime.plan import plan_down


def test_removing_a_network_waits_for_dockerd_to_release_its_endpoints() -> None:
    answers = [
        httpx.Response(403, json={"message": "error while removing network: network x has active endpoints"}),
        httpx.Response(403, json={"message": "error while removing network: network x has active endpoints"}),
        httpx.Response(204),
    ]
    deletes: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/version":
            return httpx.Response(200, json={"ApiVersion": "1.41"})
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
        if request.url.path == "/version":
            return httpx.Response(200, json={"ApiVersion": "1.41"})
        calls.append(request.url.path)
        return httpx.Response(500, json={"message": "something else"})

    observed = ObservedState(
        networks=(ObservedNetwork("nid", "demo_default", "bridge", {"io.gitdock.project": "demo"}),)
    )
    with DockerClient("unix:///nowhere.sock", transport=httpx.MockTransport(handle)) as docker:
        report = Executor(docker).execute(plan_down("demo", observed), observed)
    assert report.failed[0].error == "Docker DELETE /networks/nid: something else"
    assert len(calls) == 1
