"""When a recreate needs the image's VOLUMEs: only at a path the old container had a volume at
and the new body mounts nothing at (else the image is not inspected). Pure."""

from __future__ import annotations

from typing import Any

from gitdock.runtime.execute import carry_anonymous_volumes, uncovered_volume_paths

OLD = [
    {"Type": "volume", "Name": "anon1", "Destination": "/data", "RW": True},
    {"Type": "volume", "Name": "demo_named", "Destination": "/named/", "RW": True},
    {"Type": "bind", "Source": "/srv", "Destination": "/srv", "RW": True},
]


def body(**host: Any) -> dict[str, Any]:
    return {"Image": "busybox", "HostConfig": host}


def test_a_body_that_mounts_every_old_volume_path_needs_no_image_volumes() -> None:
    new = body(
        Binds=["demo_named:/named"],
        Mounts=[{"Type": "volume", "Target": "/data", "ReadOnly": False}],
    )
    assert uncovered_volume_paths(new, OLD) == set()


def test_an_old_volume_path_the_body_leaves_bare_needs_the_image_volumes() -> None:
    new = body(Binds=["demo_named:/named"])
    assert uncovered_volume_paths(new, OLD) == {"/data"}
    # and carrying it over is what the image's VOLUME at that path is for
    carried = carry_anonymous_volumes(new, OLD, ["/data"])
    assert carried["HostConfig"]["Mounts"] == [
        {"Type": "volume", "Source": "anon1", "Target": "/data", "ReadOnly": False}
    ]


def test_binds_and_tmpfs_cover_a_path_and_old_binds_never_count() -> None:
    assert uncovered_volume_paths(body(Binds=["/h:/data:ro"], Tmpfs={"/named": ""}), OLD) == set()
    assert uncovered_volume_paths(body(), [OLD[2]]) == set()
