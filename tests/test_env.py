"""The environment tests rely on: local test images, docker-compose 1.29, label cleanup."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from support.docker import (
    GITDOCK_PROJECT_LABEL,
    TEST_IMAGE,
    TEST_IMAGE_2,
    docker_cli,
    docker_events,
    list_project_resources,
    remove_project,
)

pytestmark = pytest.mark.docker

APPLETS = ("sh", "httpd", "wget", "nc", "sleep")


def test_test_images_exist_and_have_different_ids() -> None:
    ids = [
        docker_cli("image", "inspect", "--format", "{{.Id}}", image).strip()
        for image in (TEST_IMAGE, TEST_IMAGE_2)
    ]
    assert all(i.startswith("sha256:") for i in ids), ids
    assert ids[0] != ids[1]


@pytest.mark.parametrize("image", [TEST_IMAGE, TEST_IMAGE_2])
def test_test_image_has_busybox_applets(image: str) -> None:
    # busybox `command -v` takes one name at a time.
    script = "; ".join(f"command -v {applet} || exit 1" for applet in APPLETS)
    out = docker_cli("run", "--rm", "--network", "none", image, "sh", "-c", script)
    assert [line.rsplit("/", 1)[-1] for line in out.split()] == list(APPLETS)


def test_docker_compose_is_1_29() -> None:
    out = subprocess.run(
        ["docker-compose", "version", "--short"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert re.fullmatch(r"1\.29\.\d+", out), out


def test_remove_project_removes_labelled_containers_networks_and_volumes(project_name: str) -> None:
    label = f"{GITDOCK_PROJECT_LABEL}={project_name}"
    since = time.time()
    docker_cli("network", "create", "--label", label, f"{project_name}-net")
    docker_cli("volume", "create", "--label", label, f"{project_name}-data")
    docker_cli(
        "create", "--label", label, "--network", f"{project_name}-net",
        "--volume", f"{project_name}-data:/data", "--name", f"{project_name}-c", TEST_IMAGE, "sleep", "60",
    )  # fmt: skip
    assert all(list_project_resources(project_name).values())

    remove_project(project_name)

    assert list_project_resources(project_name) == {"container": [], "network": [], "volume": []}
    events = docker_events(since, time.time(), label=label)
    assert {(e["Type"], e["Action"]) for e in events} >= {("container", "create"), ("container", "destroy")}
