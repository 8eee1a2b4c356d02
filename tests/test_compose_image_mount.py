"""``type: image`` volumes: loaded, planned, mapped as Engine API 1.48 defines them. Pure.

An engine older than 1.48 refuses them at apply, before anything live
(``test_compose_image_mount_e2e.py`` runs that against the real dockerd).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gitdock.runtime.converge import EngineTooOld, refuse_image_mounts
from gitdock.runtime.desired import desired_container
from gitdock.runtime.observe import ObservedImage, ObservedState
from gitdock.runtime.plan import plan_project
from gitdock.specs import SpecError, load_project
from gitdock.specs.model import Project

COMPOSE = """services:
  web:
    image: busybox:1
    volumes:
      - type: image
        source: nginx:alpine
        target: /mnt/html
        read_only: true
        image: {subpath: usr/share/nginx/html}
"""


def load(tmp_path: Path, text: str = COMPOSE) -> Project:
    (tmp_path / "compose.yaml").write_text(text)
    return load_project([tmp_path / "compose.yaml"], project_name="demo", environ={})


def test_an_image_mount_is_sent_as_the_engine_api_defines_it(tmp_path: Path) -> None:
    project = load(tmp_path)
    body = desired_container(project, project.service("web"), 1).create_body
    assert body["HostConfig"]["Mounts"] == [
        {
            "Type": "image",
            "Source": "nginx:alpine",
            "Target": "/mnt/html",
            "ReadOnly": True,
            "ImageOptions": {"Subpath": "usr/share/nginx/html"},
        }
    ]


def test_without_a_subpath_the_whole_image_is_mounted(tmp_path: Path) -> None:
    project = load(tmp_path, COMPOSE.replace("        image: {subpath: usr/share/nginx/html}\n", ""))
    body = desired_container(project, project.service("web"), 1).create_body
    assert body["HostConfig"]["Mounts"] == [
        {"Type": "image", "Source": "nginx:alpine", "Target": "/mnt/html", "ReadOnly": True}
    ]


def test_the_plan_pulls_a_missing_mounted_image_and_shows_the_mount(tmp_path: Path) -> None:
    project = load(tmp_path)
    local = ObservedState(images=(ObservedImage("sha256:" + "b" * 64, ("busybox:1",), ()),))
    plan = plan_project(project, local)
    assert plan.render().splitlines()[:3] == [
        "[#2] -> #1 network:default, CreateNetwork, not found",
        "[] -> #2 image:nginx:alpine, PullImage, mounted by web, not present locally",
        "[#1, #2] -> #3 service:web:1, CreateContainer, not found",
    ]
    (warning,) = plan.warnings
    assert warning.endswith(
        "service web: volume type image mounts image nginx:alpine (subpath usr/share/nginx/html) at "
        "/mnt/html; it needs Docker Engine API 1.48, which apply checks before anything is created"
    )


def test_an_image_a_service_builds_is_mounted_after_the_build(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Dockerfile").write_text("FROM busybox:1\n")
    text = "services:\n  src:\n    build: ./src\n    image: demo-src\n" + COMPOSE.removeprefix(
        "services:\n"
    ).replace("nginx:alpine", "demo-src")
    plan = plan_project(load(tmp_path, text), ObservedState())
    web = next(op for op in plan.operations if op.resource == "service:web:1")
    assert 1 in web.deps and plan.operations[0].resource == "build:src"
    assert not any(op.resource == "image:demo-src" for op in plan.operations)


@pytest.mark.parametrize("version", ["1.41", "1.45", "1.47"])
def test_an_engine_older_than_1_48_refuses_the_mount(tmp_path: Path, version: str) -> None:
    plan = plan_project(load(tmp_path), ObservedState())
    with pytest.raises(EngineTooOld) as caught:
        refuse_image_mounts(plan, version)
    assert str(caught.value) == (
        "service web: volume nginx:alpine at /mnt/html is type image, which needs Docker Engine "
        f"API 1.48; this engine speaks {version}"
    )


@pytest.mark.parametrize("version", ["1.48", "1.51"])
def test_an_engine_of_1_48_or_newer_takes_the_mount(tmp_path: Path, version: str) -> None:
    refuse_image_mounts(plan_project(load(tmp_path), ObservedState()), version)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{type: image, target: /x}", "an image mount needs a source"),
        ("{type: volume, source: v, target: /x, image: {subpath: a}}", "image options need type image"),
    ],
)
def test_a_bad_image_mount_is_refused(tmp_path: Path, entry: str, expected: str) -> None:
    text = f"services:\n  web:\n    image: busybox:1\n    volumes:\n      - {entry}\nvolumes: {{v: {{}}}}\n"
    with pytest.raises(SpecError) as caught:
        load(tmp_path, text)
    assert any(expected in str(p) for p in caught.value.problems), caught.value.problems
