"""Include, as Compose applies it: per file, before a later ``-f`` file merges over it; and an
include's env files merged in order. Pure loader tests on real files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gitdock.specs import SpecError, load_project


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def included(tmp_path: Path) -> Path:
    """compose.yaml includes db/compose.yaml, which defines the service ``db``."""
    write(
        tmp_path / "db" / "compose.yaml",
        """
        services:
          db:
            image: postgres:16
            environment: {PGUSER: app}
            ports: ["5432:5432"]
        """,
    )
    return write(tmp_path / "compose.yaml", "include: [db/compose.yaml]\nservices:\n  web: {image: nginx}\n")


def test_a_later_file_overrides_an_included_service(tmp_path: Path, included: Path) -> None:
    override = write(
        tmp_path / "override.yaml",
        """
        services:
          db:
            image: postgres:17
            environment: {PGPASSWORD_FILE: /run/secrets/pg}
        """,
    )
    db = load_project([included, override], environ={}).service("db")
    assert db.image == "postgres:17"
    assert dict(db.environment) == {"PGUSER": "app", "PGPASSWORD_FILE": "/run/secrets/pg"}
    assert [p.published for p in db.ports] == ["5432"], "the included definition is kept under the override"


def test_a_later_file_can_reset_a_key_of_an_included_service(tmp_path: Path, included: Path) -> None:
    override = write(tmp_path / "override.yaml", "services:\n  db:\n    ports: !reset []\n")
    assert load_project([included, override], environ={}).service("db").ports == ()


def test_the_including_file_itself_still_may_not_redefine_an_included_service(
    tmp_path: Path, included: Path
) -> None:
    included.write_text(included.read_text() + "  db: {image: other}\n")
    with pytest.raises(SpecError, match="service db is defined here and in the included file"):
        load_project([included], environ={})


def test_an_include_in_the_override_file_adds_its_services(tmp_path: Path, included: Path) -> None:
    write(tmp_path / "cache" / "compose.yaml", "services:\n  cache: {image: redis}\n")
    override = write(tmp_path / "override.yaml", "include: [cache/compose.yaml]\n")
    project = load_project([included, override], environ={})
    assert sorted(s.name for s in project.services) == ["cache", "db", "web"]


def test_include_env_files_merge_in_order_and_the_later_wins(tmp_path: Path) -> None:
    write(tmp_path / "sub" / "compose.yaml", "services:\n  s:\n    image: busybox:${TAG}-${FLAVOUR}\n")
    write(tmp_path / "one.env", "TAG=1\nFLAVOUR=glibc\n")
    write(tmp_path / "two.env", "FLAVOUR=musl\n")
    main = write(
        tmp_path / "compose.yaml",
        "include:\n  - path: sub/compose.yaml\n    env_file: [one.env, two.env]\n",
    )
    assert load_project([main], environ={}).service("s").image == "busybox:1-musl"


def test_include_env_files_sit_under_the_process_environment(tmp_path: Path) -> None:
    write(tmp_path / "sub" / "compose.yaml", "services:\n  s:\n    image: busybox:${TAG}\n")
    write(tmp_path / "one.env", "TAG=1\n")
    main = write(tmp_path / "compose.yaml", "include:\n  - path: sub/compose.yaml\n    env_file: one.env\n")
    assert load_project([main], environ={"TAG": "9"}).service("s").image == "busybox:9"
