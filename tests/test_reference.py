"""Image reference parsing follows Docker's normalisation rules."""

from __future__ import annotations

import pytest

from gitdock.specs.reference import ImageReference, is_digest, parse_reference

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "canonical", "familiar"),
    [
        ("nginx", "docker.io/library/nginx:latest", "nginx:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25", "nginx:1.25"),
        ("docker.io/nginx", "docker.io/library/nginx:latest", "nginx:latest"),
        ("index.docker.io/library/nginx", "docker.io/library/nginx:latest", "nginx:latest"),
        ("gitdock-test/busybox:1", "docker.io/gitdock-test/busybox:1", "gitdock-test/busybox:1"),
        ("127.0.0.1:5000/app:1", "127.0.0.1:5000/app:1", "127.0.0.1:5000/app:1"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("ghcr.io/org/team/app:v1.2", "ghcr.io/org/team/app:v1.2", "ghcr.io/org/team/app:v1.2"),
        (f"nginx@{DIGEST}", f"docker.io/library/nginx@{DIGEST}", f"nginx@{DIGEST}"),
        (f"nginx:1@{DIGEST}", f"docker.io/library/nginx:1@{DIGEST}", f"nginx:1@{DIGEST}"),
        ("[::1]:5000/app:1", "[::1]:5000/app:1", "[::1]:5000/app:1"),
    ],
)
def test_parse_reference_normalises_like_docker(text: str, canonical: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert ref.canonical == canonical
    assert ref.familiar == familiar
    assert parse_reference(ref.canonical) == ref


def test_first_component_without_dot_or_colon_is_a_hub_namespace() -> None:
    ref = parse_reference("myorg/app")
    assert (ref.registry, ref.repository) == ("docker.io", "myorg/app")


def test_digest_only_reference_has_no_default_tag() -> None:
    ref = parse_reference(f"127.0.0.1:5000/app@{DIGEST}")
    assert ref.tag is None
    assert ref.digest == DIGEST
    assert ref.is_pinned


def test_api_host_maps_docker_hub_to_registry_1() -> None:
    assert parse_reference("nginx").api_host == "registry-1.docker.io"
    assert parse_reference("127.0.0.1:5000/app").api_host == "127.0.0.1:5000"


def test_repository_ref_and_with_digest() -> None:
    ref = parse_reference("127.0.0.1:5000/app:1")
    assert ref.repository_ref == "127.0.0.1:5000/app"
    pinned = ref.with_digest(DIGEST)
    assert pinned == ImageReference("127.0.0.1:5000", "app", "1", DIGEST)
    assert pinned.canonical == f"127.0.0.1:5000/app:1@{DIGEST}"
    assert pinned.with_tag("2").digest is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Nginx", "lowercase"),
        ("docker.io/Library/nginx", "lowercase"),
        ("nginx@sha256:abc", "not a valid digest"),
        (f"nginx@md5:{'a' * 32}", "not a valid digest"),
        ("nginx:bad tag", "not a valid tag"),
        ("", "empty"),
        (" nginx", "whitespace"),
        ("app//x", "invalid path"),
        ("bad_host.io:x/app", "not a valid registry host"),
    ],
)
def test_parse_reference_rejects_invalid_references(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_reference(text)


def test_with_digest_rejects_malformed_digest() -> None:
    with pytest.raises(ValueError, match="not a valid"):
        parse_reference("nginx").with_digest("sha256:xyz")


def test_is_digest() -> None:
    assert is_digest(DIGEST)
    assert not is_digest("sha256:" + "A" * 64)
