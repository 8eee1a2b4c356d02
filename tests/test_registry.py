"""The registry client against a real `docker-registry`, and protocol edge cases via MockTransport."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gitdock.runtime.trust.keys import public_key_pem
from gitdock.runtime.trust.policy import TrustKey, TrustPolicy, TrustRule
from gitdock.runtime.trust.registry import (
    DOCKER_MANIFEST,
    MANIFEST_ACCEPT,
    OCI_INDEX,
    ManifestNotFound,
    RegistryAuthError,
    RegistryClient,
    RegistryIntegrityError,
    RegistryUnavailable,
    select_platform_digest,
)
from gitdock.runtime.trust.signature import SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, Reason
from gitdock.runtime.trust.verify import MAX_SIGNATURE_LAYERS, ImageRefused, VerificationCache, verify_image
from gitdock.specs.reference import parse_reference
from support.docker import TEST_IMAGE
from support.registry import CountingTransport, LocalRegistry, has_registry_binary, push_image, run_registry


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    if not has_registry_binary():
        pytest.skip("docker-registry binary is not installed (Debian package docker-registry)")
    with run_registry() as running:
        yield running


# --- the real registry ---------------------------------------------------------------------------


@pytest.mark.docker
def test_resolve_tag_to_digest_and_fetch_by_digest(registry: LocalRegistry) -> None:
    push_image(TEST_IMAGE, f"{registry.host}/resolve/app:1")
    ref = parse_reference(f"{registry.host}/resolve/app:1")
    with RegistryClient() as client:
        digest = client.resolve_digest(ref)
        manifest = client.get_manifest(ref.with_digest(digest))
    assert manifest.digest == digest == sha(manifest.raw)
    assert manifest.media_type in MANIFEST_ACCEPT
    assert not manifest.is_index


@pytest.mark.docker
def test_digest_pinned_reference_is_not_re_resolved(registry: LocalRegistry) -> None:
    push_image(TEST_IMAGE, f"{registry.host}/pinned/app:1")
    transport = CountingTransport()
    with RegistryClient(transport=transport) as client:
        digest = client.resolve_digest(parse_reference(f"{registry.host}/pinned/app:1"))
        transport.requests.clear()
        assert client.resolve_digest(parse_reference(f"{registry.host}/pinned/app@{digest}")) == digest
    assert transport.requests == []


@pytest.mark.docker
def test_multi_arch_tag_resolves_to_the_index_and_platform_is_selectable(registry: LocalRegistry) -> None:
    push_image(TEST_IMAGE, f"{registry.host}/multi/app:single")
    ref = parse_reference(f"{registry.host}/multi/app:single")
    with RegistryClient() as client:
        single = client.get_manifest(ref)
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": single.media_type,
                    "digest": single.digest,
                    "size": len(single.raw),
                    "platform": {"os": "linux", "architecture": arch},
                }
                for arch in ("arm64", "amd64")
            ],
        }
        raw = json.dumps(index).encode()
        client.put_manifest(ref, "multi", raw, OCI_INDEX)
        resolved = client.get_manifest(ref.with_tag("multi"))
    assert resolved.digest == sha(raw)
    assert resolved.is_index
    assert select_platform_digest(resolved, os="linux", architecture="amd64") == single.digest
    with pytest.raises(ManifestNotFound, match="no manifest for platform linux/s390x"):
        select_platform_digest(resolved, architecture="s390x")


@pytest.mark.docker
def test_unknown_tag_is_manifest_not_found(registry: LocalRegistry) -> None:
    with RegistryClient() as client, pytest.raises(ManifestNotFound, match="not found"):
        client.resolve_digest(parse_reference(f"{registry.host}/nothing/here:1"))


@pytest.mark.docker
def test_blob_push_and_fetch_round_trip(registry: LocalRegistry) -> None:
    ref = parse_reference(f"{registry.host}/blobs/x:1")
    with RegistryClient() as client:
        digest = client.push_blob(ref, b"hello blob")
        assert client.push_blob(ref, b"hello blob") == digest  # already there: no second upload
        assert client.get_blob(ref, digest) == b"hello blob"
        assert client.list_referrers(ref, digest) is None  # distribution 2.8 has no referrers API


def test_registry_unreachable_is_transient() -> None:
    with (
        socket_closed_port() as port,
        RegistryClient(timeout=2) as client,
        pytest.raises(RegistryUnavailable, match="ConnectError"),
    ):
        client.resolve_digest(parse_reference(f"127.0.0.1:{port}/app:1"))


class socket_closed_port:
    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


# --- protocol edge cases (MockTransport) --------------------------------------------------------

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 2,
            "digest": sha(b"{}"),
        },
        "layers": [],
    }
).encode()
Handler = Callable[[httpx.Request], httpx.Response]


def mock_client(
    handler: Handler, *, credentials: dict[str, tuple[str, str]] | None = None, insecure: tuple[str, ...] = ()
) -> RegistryClient:
    return RegistryClient(
        transport=httpx.MockTransport(handler), credentials=credentials or {}, insecure=insecure
    )


def manifest_response(
    body: bytes, digest: str | None = None, media_type: str = DOCKER_MANIFEST
) -> httpx.Response:
    headers = {"Content-Type": media_type}
    if digest != "":
        headers["Docker-Content-Digest"] = digest or sha(body)
    return httpx.Response(200, headers=headers, content=body)


def test_manifest_request_sends_the_full_accept_list() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Accept"])
        return manifest_response(MANIFEST)

    with mock_client(handler) as client:
        client.resolve_digest(parse_reference("127.0.0.1:5000/app:1"))
    assert [s.strip() for s in seen[0].split(",")] == list(MANIFEST_ACCEPT)


def test_bearer_challenge_fetches_a_token_once_per_scope() -> None:
    token_requests: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            token_requests.append(request.url)
            assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"alice:pw").decode()
            return httpx.Response(200, json={"token": "T-" + request.url.params["scope"], "expires_in": 300})
        scope = f"repository:{request.url.path.split('/')[2]}:pull"
        if request.headers.get("Authorization") != f"Bearer T-{scope}":
            challenge = f'Bearer realm="https://auth.example/token",service="reg.example",scope="{scope}"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return manifest_response(MANIFEST)

    with mock_client(handler, credentials={"reg.example": ("alice", "pw")}) as client:
        for _ in range(3):
            client.resolve_digest(parse_reference("reg.example/app:1"))
        client.resolve_digest(parse_reference("reg.example/other:1"))
    assert [u.params["scope"] for u in token_requests] == ["repository:app:pull", "repository:other:pull"]
    assert token_requests[0].params["service"] == "reg.example"


def test_docker_config_auths_are_used_for_basic_challenges(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {"reg.example": {"auth": base64.b64encode(b"bob:s3").decode()}}}))

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != "Basic " + base64.b64encode(b"bob:s3").decode():
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        return manifest_response(MANIFEST)

    with RegistryClient(transport=httpx.MockTransport(handler), auth_file=config) as client:
        assert client.resolve_digest(parse_reference("reg.example/app:1")) == sha(MANIFEST)


def test_refused_credentials_are_an_auth_error_without_the_password() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})

    with (
        mock_client(handler, credentials={"reg.example": ("bob", "hunter2")}) as client,
        pytest.raises(RegistryAuthError, match="refused") as info,
    ):
        client.resolve_digest(parse_reference("reg.example/app:1"))
    assert "hunter2" not in str(info.value)


def test_non_loopback_registry_uses_https_and_loopback_uses_http() -> None:
    schemes: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        schemes.append(request.url.scheme)
        return manifest_response(MANIFEST)

    with mock_client(handler, insecure=("insecure.example:5000",)) as client:
        for text in (
            "reg.example/app:1",
            "127.0.0.1:5000/app:1",
            "localhost:5000/a",
            "insecure.example:5000/a",
        ):
            client.resolve_digest(parse_reference(text))
    assert schemes == ["https", "http", "http", "http"]


def test_docker_hub_names_go_to_registry_1() -> None:
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        return manifest_response(MANIFEST)

    with mock_client(handler) as client:
        client.resolve_digest(parse_reference("nginx"))
    assert urls == ["https://registry-1.docker.io/v2/library/nginx/manifests/latest"]


def test_wrong_docker_content_digest_is_refused() -> None:
    lie = sha(b"something else")
    assert lie != sha(MANIFEST)
    with (
        mock_client(lambda r: manifest_response(MANIFEST, lie)) as client,
        pytest.raises(RegistryIntegrityError, match=r"Docker-Content-Digest .* does not match"),
    ):
        client.resolve_digest(parse_reference("127.0.0.1:5000/app:1"))


def test_content_not_matching_the_requested_digest_is_refused() -> None:
    asked = sha(MANIFEST)
    tampered = MANIFEST.replace(b'"layers": []', b'"layers": [] ')
    assert tampered != MANIFEST
    with (
        mock_client(lambda r: manifest_response(tampered, "")) as client,
        pytest.raises(RegistryIntegrityError, match="not the digest asked for"),
    ):
        client.get_manifest(parse_reference(f"127.0.0.1:5000/app@{asked}"))


@pytest.mark.parametrize("body", [b"\x00\x01garbage", MANIFEST[: len(MANIFEST) // 2], b"[1, 2]"])
def test_garbage_or_truncated_manifest_is_refused(body: bytes) -> None:
    with (
        mock_client(lambda r: manifest_response(body)) as client,
        pytest.raises(RegistryIntegrityError, match=r"not valid JSON|not a JSON object"),
    ):
        client.resolve_digest(parse_reference("127.0.0.1:5000/app:1"))


def test_oversized_manifest_is_refused_without_reading_it_all() -> None:
    def stream() -> Iterator[bytes]:
        for _ in range(10_000):
            yield b" " * 65536

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": DOCKER_MANIFEST}, content=stream())

    with (
        mock_client(handler) as client,
        pytest.raises(RegistryIntegrityError, match="larger than the 4194304-byte limit"),
    ):
        client.resolve_digest(parse_reference("127.0.0.1:5000/app:1"))


def test_server_errors_are_transient() -> None:
    with (
        mock_client(lambda r: httpx.Response(503)) as client,
        pytest.raises(RegistryUnavailable, match="503"),
    ):
        client.resolve_digest(parse_reference("127.0.0.1:5000/app:1"))


def test_blob_not_matching_its_digest_is_refused() -> None:
    digest = sha(b"the real blob")
    with (
        mock_client(lambda r: httpx.Response(200, content=b"an impostor")) as client,
        pytest.raises(RegistryIntegrityError, match="does not hash to its digest"),
    ):
        client.get_blob(parse_reference("127.0.0.1:5000/app:1"), digest)


def test_sig_manifest_with_10000_layers_does_bounded_work() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    manifest_digest = sha(MANIFEST)
    payload = b'{"critical":{}}'
    layers = [
        {
            "mediaType": SIMPLE_SIGNING_MEDIA_TYPE,
            "digest": sha(payload),
            "size": len(payload),
            "annotations": {SIGNATURE_ANNOTATION: base64.b64encode(b"x" * 70).decode()},
        }
        for _ in range(10_000)
    ]
    sig_manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "layers": layers}).encode()
    assert len(sig_manifest) < 4 * 1024 * 1024
    blob_fetches: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/manifests/1"):
            return manifest_response(MANIFEST)
        if path.endswith(".sig"):
            return manifest_response(sig_manifest)
        if "/blobs/" in path:
            blob_fetches.append(path)
            return httpx.Response(200, content=payload)
        return httpx.Response(404)

    policy = TrustPolicy(
        keys={"k": TrustKey(public_key=public_key_pem(key.public_key()).decode())},
        rules=(TrustRule(pattern="*", keys=("k",)),),
    )
    with mock_client(handler) as client, pytest.raises(ImageRefused) as info:
        verify_image(parse_reference("127.0.0.1:5000/app:1"), policy, client, cache=VerificationCache())
    assert len(blob_fetches) <= MAX_SIGNATURE_LAYERS
    assert info.value.reason is Reason.BAD_SIGNATURE
    assert info.value.digest == manifest_digest
    assert f"only the first {MAX_SIGNATURE_LAYERS} of 10000 layers" in str(info.value)


def test_image_with_no_manifest_is_not_found_before_any_signature_work() -> None:
    # Like the vector dir-img-cosign-no-manifest: signatures but no image manifest.
    requested: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append(request.url.path)
        return httpx.Response(404)

    policy = TrustPolicy()
    with mock_client(handler) as client, pytest.raises(ManifestNotFound):
        verify_image(parse_reference("127.0.0.1:5000/app:1"), policy, client, cache=VerificationCache())
    assert requested == ["/v2/app/manifests/1"]


def test_blob_redirect_is_followed_without_sending_registry_credentials() -> None:
    blob = b"blob on a cdn"
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("Authorization")))
        if request.url.host == "cdn.example":
            return httpx.Response(200, content=blob)
        if request.url.path == "/token":
            return httpx.Response(200, json={"token": "T"})
        if request.headers.get("Authorization") != "Bearer T":
            return httpx.Response(
                401, headers={"WWW-Authenticate": 'Bearer realm="https://reg.example/token"'}
            )
        return httpx.Response(307, headers={"Location": "https://cdn.example/b?sig=1"})

    with mock_client(handler) as client:
        assert client.get_blob(parse_reference("reg.example/app:1"), sha(blob)) == blob
    assert seen[-2] == ("reg.example", "Bearer T")
    assert seen[-1] == ("cdn.example", None)
