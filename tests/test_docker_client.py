"""The Docker seam's protocol edge cases, against httpx.MockTransport (the real daemon is in *_e2e)."""

from __future__ import annotations

import json

import httpx
import pytest

from gitdock.runtime.contexts import TargetError
from gitdock.runtime.docker import Conflict, DockerClient, DockerError, DockerUnavailable, NotFound


def engine(api_version: str, routes: dict[str, httpx.Response]) -> tuple[DockerClient, list[str]]:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path == "/version":
            return httpx.Response(200, json={"ApiVersion": api_version, "Version": "x"})
        path = request.url.path.split("/", 2)[2]  # drop the /vX.Y prefix
        return routes.get(f"{request.method} /{path}", httpx.Response(404, json={"message": "no route"}))

    return DockerClient("unix:///nowhere.sock", transport=httpx.MockTransport(handle)), seen


def test_api_version_is_the_lower_of_the_servers_and_ours() -> None:
    old, seen = engine("1.41", {"GET /images/json": httpx.Response(200, json=[])})
    old.list_images()
    assert seen == ["GET /version", "GET /v1.41/images/json"]
    new, seen = engine("1.99", {"GET /images/json": httpx.Response(200, json=[])})
    new.list_images()
    new.list_images()
    assert seen == ["GET /version", "GET /v1.45/images/json", "GET /v1.45/images/json"]  # negotiated once


def test_an_engine_older_than_supported_is_refused_clearly() -> None:
    client, _ = engine("1.24", {})
    with pytest.raises(DockerUnavailable, match=r"speaks API 1\.24; gitdock needs 1\.41 or newer"):
        client.list_images()


def test_pull_errors_inside_the_200_stream_are_raised() -> None:
    stream = b"\n".join(
        json.dumps(line).encode()
        for line in [
            {"status": "Pulling from app", "id": "1"},
            {"errorDetail": {"message": "manifest unknown"}, "error": "manifest unknown"},
        ]
    )
    client, _ = engine("1.41", {"POST /images/create": httpx.Response(200, content=stream)})
    with pytest.raises(DockerError, match=r"pulling registry\.example/app:1: manifest unknown"):
        client.pull_image("registry.example/app", "1")


def test_a_clean_pull_stream_reports_progress() -> None:
    stream = b'{"status":"Pulling fs layer","id":"a"}\n{"status":"Download complete","id":"a"}\n'
    client, _ = engine("1.41", {"POST /images/create": httpx.Response(200, content=stream)})
    events: list[dict[str, object]] = []
    client.pull_image("app", "1", on_progress=events.append)
    assert [e["status"] for e in events] == ["Pulling fs layer", "Download complete"]


def test_api_errors_map_to_the_error_tree_and_count_as_mutations() -> None:
    client, _ = engine(
        "1.41",
        {
            "POST /containers/create": httpx.Response(409, json={"message": "name in use"}),
            "DELETE /networks/x": httpx.Response(404, json={"message": "network x not found"}),
        },
    )
    with pytest.raises(Conflict, match="Docker POST /containers/create: name in use"):
        client.create_container("web", {})
    with pytest.raises(NotFound, match="network x not found"):
        client.remove_network("x")
    assert client.mutating_calls == 2


def test_unsupported_docker_host_is_a_clear_error() -> None:
    with pytest.raises(TargetError, match=r"Docker host 'npipe:////\./pipe/docker' is not supported"):
        DockerClient("npipe:////./pipe/docker")
