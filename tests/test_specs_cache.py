"""specs.cache: a validated load is reused only while everything it depended on is unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gitdock.specs import SpecError
from gitdock.specs.cache import load_project_cached


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    d = tmp_path / "app"
    d.mkdir()
    write(d / "compose.yaml", "services:\n  web:\n    image: busybox:${TAG:-1}\n")
    return d


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.pickle"))


def test_a_second_load_of_unchanged_files_reuses_the_first(project_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load_project_cached([project_dir / "compose.yaml"], cache, environ={})
    assert len(entries(cache)) == 1
    # Poison the loader: a reuse must not call it.
    import gitdock.specs.load as load_module

    original = load_module.load_project_with_inputs
    load_module.load_project_with_inputs = None  # type: ignore[assignment]
    try:
        again = load_project_cached([project_dir / "compose.yaml"], cache, environ={})
    finally:
        load_module.load_project_with_inputs = original
    assert again == first
    assert again.services[0].image == "busybox:1"


def test_an_edited_file_is_loaded_again(project_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_project_cached([project_dir / "compose.yaml"], cache, environ={})
    write(project_dir / "compose.yaml", "services:\n  web:\n    image: busybox:2\n")
    assert (
        load_project_cached([project_dir / "compose.yaml"], cache, environ={}).services[0].image
        == "busybox:2"
    )


def test_a_new_dotenv_file_is_noticed(project_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_project_cached([project_dir / "compose.yaml"], cache, environ={})
    write(project_dir / ".env", "TAG=3\n")
    assert (
        load_project_cached([project_dir / "compose.yaml"], cache, environ={}).services[0].image
        == "busybox:3"
    )


def test_a_changed_variable_the_files_use_is_loaded_afresh(project_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    compose = [project_dir / "compose.yaml"]
    assert load_project_cached(compose, cache, environ={"TAG": "4"}).services[0].image == "busybox:4"
    assert load_project_cached(compose, cache, environ={"TAG": "5"}).services[0].image == "busybox:5"
    assert load_project_cached(compose, cache, environ={}).services[0].image == "busybox:1"  # unset
    assert load_project_cached(compose, cache, environ={"TAG": "4"}).services[0].image == "busybox:4"


def test_a_variable_no_file_names_does_not_cost_a_load(project_dir: Path, tmp_path: Path) -> None:
    """``OLDPWD`` or bash's ``$_`` change between commands: the load is reused all the same."""
    cache = tmp_path / "cache"
    compose = [project_dir / "compose.yaml"]
    load_project_cached(compose, cache, environ={"TAG": "4", "_": "/usr/bin/env", "OLDPWD": "/a"})
    import gitdock.specs.load as load_module

    original = load_module.load_project_with_inputs
    load_module.load_project_with_inputs = None  # type: ignore[assignment]
    try:
        again = load_project_cached(compose, cache, environ={"TAG": "4", "_": "/bin/gitdock", "OLDPWD": "/b"})
    finally:
        load_module.load_project_with_inputs = original
    assert again.services[0].image == "busybox:4"


@pytest.mark.parametrize("variable", ["COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME", "HOME"])
def test_variables_the_loader_reads_itself_count(project_dir: Path, tmp_path: Path, variable: str) -> None:
    cache = tmp_path / "cache"
    compose = [project_dir / "compose.yaml"]
    load_project_cached(compose, cache, environ={variable: "one"})
    import gitdock.specs.load as load_module

    calls: list[object] = []
    original = load_module.load_project_with_inputs

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    load_module.load_project_with_inputs = counting  # type: ignore[assignment]
    try:
        load_project_cached(compose, cache, environ={variable: "two"})
    finally:
        load_module.load_project_with_inputs = original
    assert len(calls) == 1


def test_a_bare_environment_entry_takes_the_variable_into_account(tmp_path: Path) -> None:
    """``environment: [TOKEN]`` reads TOKEN from the environment without a ``$``."""
    d = tmp_path / "app"
    d.mkdir()
    write(d / "compose.yaml", "services:\n  web:\n    image: busybox:1\n    environment: [TOKEN]\n")
    cache = tmp_path / "cache"
    first = load_project_cached([d / "compose.yaml"], cache, environ={"TOKEN": "a"})
    second = load_project_cached([d / "compose.yaml"], cache, environ={"TOKEN": "b"})
    assert dict(first.services[0].environment)["TOKEN"] == "a"
    assert dict(second.services[0].environment)["TOKEN"] == "b"


def test_an_entry_others_can_write_is_not_trusted(project_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_project_cached([project_dir / "compose.yaml"], cache, environ={})
    (entry,) = entries(cache)
    entry.write_bytes(b"not a pickle")  # would raise if it were read
    os.chmod(entry, 0o666)  # noqa: S103 - the point of the test
    assert (
        load_project_cached([project_dir / "compose.yaml"], cache, environ={}).services[0].image
        == "busybox:1"
    )


def test_a_bad_spec_is_never_cached(project_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    write(project_dir / "compose.yaml", "services:\n  web:\n    imag: busybox\n")
    for _ in range(2):
        with pytest.raises(SpecError, match="did you mean `image`"):
            load_project_cached([project_dir / "compose.yaml"], cache, environ={})
    assert entries(cache) == []
