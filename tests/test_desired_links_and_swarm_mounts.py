"""Two Engine mappings, pure: ``links`` on every network a container joins, and Swarm's image
mount with ``ImageOptions`` as Engine API 1.48 defines the Mount object."""

from __future__ import annotations

from pathlib import Path

from gitdock.runtime.desired import desired_container
from gitdock.runtime.swarm.desired import SwarmInputs, desired_stack
from gitdock.specs import load_project
from gitdock.specs.model import Project

LINKS = """services:
  db:
    image: busybox:1
    networks: [front, back]
  web:
    image: busybox:1
    links: ["db:database"]
    networks: [front, back]
networks:
  front: {}
  back: {}
"""

IMAGE_MOUNT = """services:
  web:
    image: busybox:1
    volumes:
      - type: image
        source: nginx:alpine
        target: /mnt/html
        read_only: true
        image: {subpath: usr/share/nginx/html}
"""


def load(tmp_path: Path, text: str) -> Project:
    (tmp_path / "compose.yaml").write_text(text)
    return load_project([tmp_path / "compose.yaml"], project_name="demo", environ={})


def test_links_go_on_the_endpoint_of_every_network_the_container_joins(tmp_path: Path) -> None:
    """As Compose connects each network with the service's links (Docker ignores
    HostConfig.Links on user-defined networks)."""
    project = load(tmp_path, LINKS)
    dc = desired_container(project, project.service("web"), 1)
    (first, first_endpoint), *_ = dc.create_body["NetworkingConfig"]["EndpointsConfig"].items()
    others = [name for name, _aliases in dc.networks if name != first]
    assert first_endpoint["Links"] == ["demo-db-1:database"]
    assert others == ["demo_back" if first == "demo_front" else "demo_front"]
    assert dc.endpoint_config(others[0])["Links"] == ["demo-db-1:database"]
    assert "Links" not in dc.create_body["HostConfig"]


def test_a_service_without_links_sends_none_on_any_endpoint(tmp_path: Path) -> None:
    project = load(tmp_path, LINKS)
    dc = desired_container(project, project.service("db"), 1)
    endpoints = [dc.endpoint_config(name) for name, _aliases in dc.networks]
    assert len(endpoints) == 2 and all("Links" not in e for e in endpoints)


def test_a_swarm_image_mount_carries_its_subpath_as_image_options(tmp_path: Path) -> None:
    (web,) = desired_stack(load(tmp_path, IMAGE_MOUNT), SwarmInputs()).services
    assert web.spec["TaskTemplate"]["ContainerSpec"]["Mounts"] == [
        {
            "Type": "image",
            "Source": "nginx:alpine",
            "Target": "/mnt/html",
            "ReadOnly": True,
            "ImageOptions": {"Subpath": "usr/share/nginx/html"},
        }
    ]


def test_a_swarm_image_mount_without_a_subpath_mounts_the_whole_image(tmp_path: Path) -> None:
    text = IMAGE_MOUNT.replace("        image: {subpath: usr/share/nginx/html}\n", "")
    (web,) = desired_stack(load(tmp_path, text), SwarmInputs()).services
    assert web.spec["TaskTemplate"]["ContainerSpec"]["Mounts"] == [
        {"Type": "image", "Source": "nginx:alpine", "Target": "/mnt/html", "ReadOnly": True}
    ]
