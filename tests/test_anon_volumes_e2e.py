"""Anonymous volumes survive a recreate, as Compose carries them over, on the real dockerd.

A real image that declares ``VOLUME /data`` (built here FROM the test busybox) and a
short-syntax ``- /cache`` entry: data written into each, the environment changed, `gitdock
apply` recreates the container, and the data is read back from the new one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.docker import TEST_IMAGE, write_compose
from support.faults import build_volume_image, docker, read_file, run_gitdock, volume_of, write_file

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def compose(image: str, rev: str) -> str:
    return f"""
        services:
          db:
            image: {image}
            command: ["sh", "-c", "{LOOP}"]
            environment: {{REV: "{rev}"}}
            volumes:
              - /cache
    """


def apply(f: Path, project: str, *extra: str) -> None:
    result = run_gitdock("apply", "-f", str(f), "-p", project, *extra)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"


def container_id(name: str) -> str:
    return docker("inspect", "-f", "{{.Id}}", name).strip()


def test_data_in_anonymous_volumes_survives_a_recreate(tmp_path: Path, project_name: str) -> None:
    image = build_volume_image(TEST_IMAGE)
    f = write_compose(tmp_path, compose(image, "1"))
    apply(f, project_name)
    name = f"{project_name}-db-1"
    first = container_id(name)
    write_file(name, "/data/row", "kept in the image VOLUME")
    write_file(name, "/cache/row", "kept in - /cache")

    f.write_text(f.read_text().replace('REV: "1"', 'REV: "2"'))
    apply(f, project_name)

    assert container_id(name) != first, "the environment change must recreate the container"
    assert read_file(name, "/data/row") == "kept in the image VOLUME"
    assert read_file(name, "/cache/row") == "kept in - /cache"


def test_renew_anon_volumes_starts_on_fresh_ones(tmp_path: Path, project_name: str) -> None:
    image = build_volume_image(TEST_IMAGE)
    f = write_compose(tmp_path, compose(image, "1"))
    apply(f, project_name)
    name = f"{project_name}-db-1"
    before = (volume_of(name, "/data"), volume_of(name, "/cache"))
    write_file(name, "/data/row", "old")

    f.write_text(f.read_text().replace('REV: "1"', 'REV: "2"'))
    apply(f, project_name, "--renew-anon-volumes")

    after = (volume_of(name, "/data"), volume_of(name, "/cache"))
    assert set(before).isdisjoint(after)
    result = run_gitdock("ps", "-p", project_name)
    assert result.returncode == 0
    assert docker("exec", name, "ls", "/data").strip() == ""
    docker("volume", "rm", *before)  # the old ones are left, as Compose leaves them
