"""A load's desired containers are kept between commands only for an equal project.

`specs.cache.load_project_fingerprinted` names a load by everything it read; the CLI keeps the
desired containers it built under that name (`runtime.desired_cache`), so a repeated no-op
apply does not build them again. An edited file, another environment or other mapping code
must never reuse them; a file someone else could have written is never read.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from gitdock.runtime import desired
from gitdock.runtime.desired_cache import recall_desired, remember_desired
from gitdock.specs.cache import load_project_fingerprinted
from gitdock.specs.model import Project

COMPOSE = """\
services:
  web:
    image: busybox:1
    environment: {GREETING: "${GREETING:-hello}"}
    ports: ["8080:80"]
  db:
    image: busybox:1
    scale: 2
    volumes: [data:/data]
volumes:
  data: {}
"""


@pytest.fixture
def compose(tmp_path: Path) -> Path:
    path = tmp_path / "app" / "compose.yaml"
    path.parent.mkdir()
    path.write_text(COMPOSE)
    return path


def build_all(project: Project) -> dict[tuple[str, int], desired.DesiredContainer]:
    return {
        (svc.name, n): desired.desired_container(project, svc, n)
        for svc in project.services
        for n in range(1, svc.replicas + 1)
    }


def test_the_same_load_gets_the_same_fingerprint_and_an_edit_another(compose: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load_project_fingerprinted([compose], cache, environ={})[1]
    again = load_project_fingerprinted([compose], cache, environ={})[1]
    other_env = load_project_fingerprinted([compose], cache, environ={"GREETING": "hi"})[1]
    compose.write_text(COMPOSE.replace("8080:80", "8081:80"))
    edited = load_project_fingerprinted([compose], cache, environ={})[1]
    assert first is not None and first == again
    assert len({first, other_env, edited}) == 3


def test_kept_answers_are_what_building_them_gives(compose: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    project, fingerprint = load_project_fingerprinted([compose], cache, environ={})
    kept = cache / f"{fingerprint}.desired"
    built = build_all(project)
    remember_desired(project, kept)
    assert kept.stat().st_mode & 0o077 == 0

    fresh, _ = load_project_fingerprinted([compose], cache, environ={})  # a new command's load
    assert fresh is not project
    assert recall_desired(fresh, kept) == 3
    recalled = build_all(fresh)
    assert recalled == built
    # They are the memo's answers: asking again builds nothing new.
    assert all(
        recalled[key] is desired.desired_container(fresh, svc, key[1])
        for key, svc in [((s.name, n), s) for s in fresh.services for n in range(1, s.replicas + 1)]
    )


def remembered(compose: Path, cache: Path) -> tuple[Project, Path]:
    """A load whose desired containers were built and kept: the project and the file."""
    project, fingerprint = load_project_fingerprinted([compose], cache, environ={})
    kept = cache / f"{fingerprint}.desired"
    build_all(project)
    remember_desired(project, kept)
    return project, kept


def test_answers_of_other_mapping_code_are_not_used(compose: Path, tmp_path: Path) -> None:
    project, kept = remembered(compose, tmp_path / "cache")
    with kept.open("rb") as fh:
        _stamp, answers = pickle.load(fh)  # noqa: S301 - the test's own file
    with kept.open("wb") as fh:
        pickle.dump(("an older gitdock", answers), fh)
    assert recall_desired(project, kept) == 0


def test_a_file_others_can_write_is_not_read(compose: Path, tmp_path: Path) -> None:
    project, kept = remembered(compose, tmp_path / "cache")
    os.chmod(kept, 0o666)  # noqa: S103 - the point of the test
    assert recall_desired(project, kept) == 0


def test_a_missing_or_broken_file_recalls_nothing(compose: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    project, fingerprint = load_project_fingerprinted([compose], cache, environ={})
    kept = cache / f"{fingerprint}.desired"
    assert recall_desired(project, kept) == 0
    kept.write_bytes(b"not a pickle")
    os.chmod(kept, 0o600)
    assert recall_desired(project, kept) == 0


def test_only_the_newest_files_are_kept(compose: Path, tmp_path: Path) -> None:
    from gitdock.runtime import desired_cache

    cache = tmp_path / "cache"
    project, _ = load_project_fingerprinted([compose], cache, environ={})
    build_all(project)
    for i in range(desired_cache.MAX_FILES + 3):
        path = cache / f"{i:04d}.desired"
        remember_desired(project, path)
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    left = sorted(p.name for p in cache.glob("*.desired"))
    assert len(left) == desired_cache.MAX_FILES
    assert left[-1] == f"{desired_cache.MAX_FILES + 2:04d}.desired"


@pytest.mark.docker
def test_an_edit_after_kept_answers_is_applied(tmp_path: Path, project_name: str) -> None:
    """The CLI against the real dockerd: a no-op reuses the kept answers, an edit does not."""
    import subprocess
    import sys

    from support.docker import TEST_IMAGE, docker_cli

    path = tmp_path / "app" / "compose.yaml"
    path.parent.mkdir()
    text = f'services:\n  web:\n    image: {TEST_IMAGE}\n    init: true\n    command: ["sleep", "600"]\n'
    path.write_text(text + "    environment: {GREETING: one}\n")
    state = tmp_path / "state"

    def apply() -> str:
        result = subprocess.run(
            [sys.executable, "-m", "gitdock.agent.cli.main", "apply", "-f", str(path), "-p", project_name],
            capture_output=True,
            text=True,
            env={**os.environ, "GITDOCK_STATE_DIR": str(state)},
            timeout=180,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    apply()
    assert "nothing to change" in apply()
    assert len(list((state / "load-cache").glob("*.desired"))) == 1
    assert "nothing to change" in apply()  # from the kept answers
    path.write_text(text + "    environment: {GREETING: two}\n")
    out = apply()
    assert "1 operation(s) done" in out, out  # the recreate
    env = docker_cli("inspect", "-f", "{{json .Config.Env}}", f"{project_name}-web-1")
    assert '"GREETING=two"' in env
