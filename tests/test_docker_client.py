"""The Docker seam's protocol edge cases, against httpx.MockTransport and, for the plain GETs
that skip httpx, a real unix socket with canned answers (the real daemon is in *_e2e)."""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from gitdock.runtime.contexts import TargetError
from gitdock.runtime.docker import (
    Conflict,
    DockerBusy,
    DockerClient,
    DockerError,
    DockerUnavailable,
    NotFound,
)


def engine(api_version: str, routes: dict[str, httpx.Response]) -> tuple[DockerClient, list[str]]:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path in ("/_ping", "/version"):  # the API version: _ping's header, else /version
            return httpx.Response(
                200, json={"ApiVersion": api_version, "Version": "x"}, headers={"Api-Version": api_version}
            )
        path = request.url.path.split("/", 2)[2]  # drop the /vX.Y prefix
        return routes.get(f"{request.method} /{path}", httpx.Response(404, json={"message": "no route"}))

    return DockerClient("unix:///nowhere.sock", transport=httpx.MockTransport(handle)), seen


def test_api_version_is_the_lower_of_the_servers_and_ours() -> None:
    old, seen = engine("1.41", {"GET /images/json": httpx.Response(200, json=[])})
    old.list_images()
    assert seen == ["GET /_ping", "GET /v1.41/images/json"]
    new, seen = engine("1.99", {"GET /images/json": httpx.Response(200, json=[])})
    new.list_images()
    new.list_images()
    assert seen == ["GET /_ping", "GET /v1.45/images/json", "GET /v1.45/images/json"]  # negotiated once


@pytest.mark.parametrize(
    "ping", [httpx.Response(200, text="OK"), httpx.Response(200, headers={"Api-Version": "x"})]
)
def test_without_a_version_in_the_ping_the_version_endpoint_says_it(ping: httpx.Response) -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path == "/_ping":
            return ping
        if request.url.path == "/version":
            return httpx.Response(200, json={"ApiVersion": "1.43"})
        return httpx.Response(200, json=[])

    client = DockerClient("unix:///nowhere.sock", transport=httpx.MockTransport(handle))
    client.list_images()
    assert seen == ["GET /_ping", "GET /version", "GET /v1.43/images/json"]
    assert client.calls["GET"] == 3


def test_a_create_mounting_an_image_is_sent_at_1_48_and_everything_else_as_negotiated() -> None:
    created = httpx.Response(201, json={"Id": "c1"})
    client, seen = engine("1.48", {"POST /containers/create": created})
    assert (client.api_version(), client.server_api_version()) == ("1.45", "1.48")
    image_mount = {"Type": "image", "Source": "app:1", "Target": "/data"}
    client.create_container("a", {"Image": "x", "HostConfig": {"Mounts": [image_mount]}})
    client.create_container("b", {"Image": "x", "HostConfig": {"Mounts": [{"Type": "volume"}]}})
    client.create_container("c", {"Image": "x"})
    posts = [line for line in seen if line.startswith("POST")]
    assert posts == ["POST /v1.48/containers/create", *["POST /v1.45/containers/create"] * 2]
    old, _ = engine("1.41", {})
    assert (old.api_version(), old.server_api_version()) == ("1.41", "1.41")


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


# --- plain GETs over a unix socket: runtime.docker's own HTTP/1.0 reader, no httpx ----------


def unix_engine(tmp_path: Path, answer: bytes) -> tuple[DockerClient, list[bytes]]:
    """A unix socket that answers every request with `answer` (after /_ping, with its Api-Version
    header), then closes."""
    path = str(tmp_path / "d.sock")
    requests: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(65536)
                requests.append(request)
                canned = (
                    b"HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK"
                    if request.startswith(b"GET /_ping ")
                    else answer
                )
                conn.sendall(canned)

    threading.Thread(target=serve, daemon=True).start()
    return DockerClient(f"unix://{path}"), requests


def test_a_get_over_the_unix_socket_sends_its_filters_and_decodes_a_chunked_answer(tmp_path: Path) -> None:
    body = json.dumps([{"Id": "abc"}]).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    client, requests = unix_engine(
        tmp_path, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    )
    assert client.list_containers({"label": ["a=b c"]}) == [{"Id": "abc"}]
    target = requests[-1].split(b" ")[1].decode()
    assert target.startswith("/v1.41/containers/json?")
    assert parse_qs(urlsplit(target).query) == {"all": ["1"], "filters": ['{"label": ["a=b c"]}']}
    assert client.calls == {"GET": 2}


def test_an_error_status_over_the_unix_socket_maps_to_the_error_tree(tmp_path: Path) -> None:
    message = b'{"message": "no such container: x"}'
    client, _ = unix_engine(tmp_path, b"HTTP/1.0 404 Not Found\r\nContent-Length: 35\r\n\r\n" + message)
    with pytest.raises(NotFound, match="no such container: x"):
        client.inspect_container("x")


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\n[]", b"garbage", b""],
    ids=["cut short", "not HTTP", "closed at once"],
)
def test_a_broken_answer_over_the_unix_socket_is_docker_unavailable(tmp_path: Path, answer: bytes) -> None:
    client, _ = unix_engine(tmp_path, answer)
    client.api_version()
    with pytest.raises(DockerUnavailable, match=r"cannot reach Docker at unix://"):
        client.list_images()


def test_a_missing_socket_is_docker_unavailable(tmp_path: Path) -> None:
    client = DockerClient(f"unix://{tmp_path}/none.sock")
    with pytest.raises(DockerUnavailable, match=f"cannot reach Docker at unix://{tmp_path}/none.sock: "):
        client.list_images()


def test_a_post_over_the_unix_socket_sends_its_json_body_with_its_length(tmp_path: Path) -> None:
    answer = json.dumps({"Id": "c1", "Warnings": []}).encode()
    client, requests = unix_engine(
        tmp_path, b"HTTP/1.0 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)
    )
    assert client.create_container("web-1", {"Image": "busybox", "Env": ["A=é"]}) == "c1"
    head, _, body = requests[-1].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1.41/containers/create?name=web-1 HTTP/1.0"
    assert "Content-Type: application/json" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body) == {"Image": "busybox", "Env": ["A=é"]}
    assert client.mutating_calls == 1


def test_a_bodiless_post_over_the_unix_socket_says_its_length_is_zero(tmp_path: Path) -> None:
    client, requests = unix_engine(tmp_path, b"HTTP/1.0 204 No Content\r\n\r\n")
    client.start_container("c1")
    assert requests[-1].startswith(b"POST /v1.41/containers/c1/start HTTP/1.0\r\n")
    assert b"\r\nContent-Length: 0\r\n" in requests[-1]


def silent_engine(tmp_path: Path, *, accept: bool = True) -> str:
    """A unix socket that answers /_ping and then, for every other request, never answers
    (``accept=False``: never even accepts the connection, its backlog full)."""
    path = str(tmp_path / "silent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(0 if not accept else 8)
    held: list[socket.socket] = []

    def serve() -> None:
        while accept:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            if conn.recv(65536).startswith(b"GET /_ping "):
                conn.sendall(b"HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK")
                conn.close()
            else:
                held.append(conn)  # taken, never answered

    threading.Thread(target=serve, daemon=True).start()
    return path


def test_a_call_dockerd_takes_and_does_not_answer_is_busy_not_unreachable(tmp_path: Path) -> None:
    client = DockerClient(f"unix://{silent_engine(tmp_path)}", timeout=0.3)
    with pytest.raises(DockerBusy) as caught:
        client.create_container("web-1", {"Image": "busybox"})
    assert str(caught.value) == (
        f"Docker at unix://{tmp_path}/silent.sock did not answer POST /v1.41/containers/create within 0.3 s"
    )
    assert isinstance(caught.value, DockerUnavailable)  # still transient: a retry may fix it


@pytest.mark.parametrize(
    ("failure", "error", "message"),
    [
        (httpx.ConnectTimeout, DockerBusy, "Docker at {host} did not accept a connection in time"),
        (httpx.ReadTimeout, DockerBusy, "Docker at {host} did not answer in time"),
        (httpx.RemoteProtocolError, DockerUnavailable, "cannot reach Docker at {host}"),
    ],
)
def test_httpx_failures_say_whether_the_engine_was_busy_or_unreachable(
    failure: type[httpx.TransportError], error: type[DockerUnavailable], message: str
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/_ping":
            return httpx.Response(200, headers={"Api-Version": "1.41"})
        raise failure("it broke", request=request)

    client = DockerClient("unix:///nowhere.sock", transport=httpx.MockTransport(handle))
    with pytest.raises(DockerUnavailable) as caught:
        client.start_container("c1")
    assert type(caught.value) is error
    assert str(caught.value) == message.format(host="unix:///nowhere.sock") + ": it broke"


class HeldEngine:
    """A unix socket engine that holds each non-ping request until ``release`` and records
    which requests are in it at once."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = str(tmp_path / "held.sock")
        self.arrived: list[str] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(64)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            line = conn.recv(65536).split(b"\r\n", 1)[0].decode()
            if line.startswith("GET /_ping "):
                conn.sendall(b"HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK")
                return
            with self.lock:
                self.arrived.append(line.rsplit(" ", 1)[0].split("?")[0])
            self.release.wait(10)
            if line.startswith("GET "):
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            else:
                conn.sendall(b"HTTP/1.0 204 No Content\r\n\r\n")


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_capped_client_keeps_its_mutating_calls_to_the_cap_but_not_its_stops_or_reads(
    tmp_path: Path,
) -> None:
    engine = HeldEngine(tmp_path)
    client = DockerClient(f"unix://{engine.path}", max_in_flight=2)
    client.api_version()
    calls: list[Callable[[], object]] = [functools.partial(client.start_container, f"c{i}") for i in range(5)]
    calls += [functools.partial(client.stop_container, "old"), functools.partial(client.inspect_exec, "e1")]
    threads = [threading.Thread(target=call, daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: len(engine.arrived) == 4, f"two starts, the stop and the read arrive: {engine.arrived}"
    )
    time.sleep(0.2)  # the other three starts wait for a turn, whatever the scheduling
    starts = [line for line in engine.arrived if line.endswith("/start")]
    assert len(starts) == 2, engine.arrived
    assert sorted(set(engine.arrived) - set(starts)) == [
        "GET /v1.41/exec/e1/json",
        "POST /v1.41/containers/old/stop",
    ]
    engine.release.set()
    for thread in threads:
        thread.join(5)
    assert sum(line.endswith("/start") for line in engine.arrived) == 5
    assert client.waited > 0


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_in_flight must be at least 1, not 0"):
        DockerClient("unix:///nowhere.sock", max_in_flight=0)
