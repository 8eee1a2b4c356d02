"""The loader's bounds on hostile input, one behaviour per test (issue 12).

The CLI-level corpus is tests/test_hostile_input.py; these pin the pieces: iterative graphs,
YAML depth and expansion limits, interpolation limits, bounded file reads, and messages that
show neither file contents nor values from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gitdock.specs.errors import PermanentError, SpecError
from gitdock.specs.graph import CycleError, dependency_order, find_cycles
from gitdock.specs.interpolate import InterpolationError, interpolate, parse_env_file
from gitdock.specs.load import LoadCrashed, load_project
from gitdock.specs.read import read_regular_file
from gitdock.specs.yamlpos import load_yaml


def problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    (tmp_path / "compose.yaml").write_text(text)
    with pytest.raises(SpecError) as exc:
        load_project([tmp_path / "compose.yaml"], environ=environ or {})
    return [f"{p.path}: {p.message}" for p in exc.value.problems]


def test_dependency_order_walks_a_long_chain_without_recursion() -> None:
    graph = {f"s{i}": [f"s{i + 1}"] for i in range(20_000)} | {"s20000": []}
    assert dependency_order(graph)[:2] == ["s20000", "s19999"]
    assert find_cycles(graph) == []


def test_find_cycles_finds_a_long_cycle_without_recursion() -> None:
    graph = {f"s{i}": [f"s{(i + 1) % 5000}"] for i in range(5000)}
    (cycle,) = find_cycles(graph)
    assert (len(cycle), cycle[0], cycle[-1]) == (5001, "s0", "s0")
    with pytest.raises(CycleError):
        dependency_order(graph)


def test_yaml_nested_too_deep_is_one_problem() -> None:
    doc, found = load_yaml("x: " + "[" * 500 + "]" * 500, "c.yaml")
    assert doc.data is None
    assert [str(p) for p in found] == ["c.yaml:1:103: invalid YAML: nested more than 100 levels deep"]


def test_a_merge_key_bomb_is_merged_linearly() -> None:
    lines = ["x0: &a0 {k: v}"]
    lines += [f"x{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}], k{i}: v}}" for i in range(1, 60)]
    doc, found = load_yaml("\n".join(lines), "c.yaml")
    assert found == [] and len(doc.data["x59"]) == 60


def test_a_big_anchor_aliased_many_times_is_refused() -> None:
    refs = "\n".join(f"  L{i}: *big" for i in range(100))
    _doc, found = load_yaml(f'x: &big "{"x" * (1 << 20)}"\nlabels:\n{refs}\n', "c.yaml")
    assert [p.message for p in found] == [
        "the document expands to more than 32 MiB through aliases and merges"
    ]


def test_interpolation_nested_too_deep_is_an_error() -> None:
    with pytest.raises(InterpolationError, match="nested more than 32 deep"):
        interpolate("${U:-" * 2000 + "x" + "}" * 2000, {})


def test_an_env_file_that_doubles_its_values_stops_at_the_cap() -> None:
    text = "A0=xxxxxxxx\n" + "".join(f"A{i}=${{A{i - 1}}}${{A{i - 1}}}\n" for i in range(1, 40))
    parsed = parse_env_file(text, "/p/.env", {})
    expected = "/p/.env:19:1: the value is longer than 1 MiB once interpolated"
    assert [str(p) for p in parsed.problems] == [expected]


def test_an_env_file_line_is_named_by_line_not_echoed() -> None:
    parsed = parse_env_file("A=1\nhunter2 is the password\n", "/p/w.env", {})
    (problem,) = parsed.problems
    assert str(problem).startswith("/p/w.env:2:1: not a KEY=VALUE line")
    assert "hunter2" not in str(problem)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OSError, match="pipe"):
        read_regular_file(str(tmp_path / "pipe"), 1 << 20)


def test_a_file_over_the_cap_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(OSError, match="larger than"):
        read_regular_file(str(tmp_path / "big"), 100)


@pytest.mark.parametrize("path", ["/proc/self/environ", "/dev/zero", "../outside.env", "link.env"])
def test_env_file_outside_the_project_or_under_proc_and_dev_is_refused(tmp_path: Path, path: str) -> None:
    (tmp_path / "outside.env").write_text("SECRET=topsecret\n")
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "link.env").symlink_to(tmp_path / "outside.env")
    (found,) = problems(proj, f"services:\n  web:\n    image: busybox\n    env_file: {path}\n")
    assert found.startswith("services.web.env_file: env file ")
    assert "is under /" in found or "is outside the project directory" in found
    assert "topsecret" not in found


def test_a_value_from_the_environment_is_shown_as_written() -> None:
    with pytest.raises(SpecError) as exc:
        load_project_text(
            "services:\n  web:\n    image: busybox\n    mem_limit: ${PASSWORD}\n", {"PASSWORD": "s3cr3t"}
        )
    assert exc.value.render().endswith(
        'services.web.mem_limit: expected a size like 64m, got the string "${PASSWORD}"'
    )


def load_project_text(text: str, environ: dict[str, str]) -> object:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "compose.yaml").write_text(text)
        return load_project([Path(tmp) / "compose.yaml"], environ=environ)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("cpus: .nan", "services.web.cpus: nan is not a number of CPUs"),
        ("cpus: .inf", "services.web.cpus: inf is not a number of CPUs"),
        ("mem_limit: -1", "services.web.mem_limit: a size cannot be negative, got -1"),
        ("shm_size: -1", "services.web.shm_size: a size cannot be negative, got -1"),
        (
            "mem_limit: '" + "9" * 400 + "m'",
            "services.web.mem_limit: expected a size like 64m, got the string",
        ),
        ("stop_grace_period: '" + "9" * 19 + "h'", "services.web.stop_grace_period: "),
        ("scale: true", "services.web.scale: expected a number, got a boolean"),
        ("scale: 1000000000", "services.web.scale: must be <= 1000, got 1000000000"),
        ("expose: ['abc']", 'services.web.expose[0]: "abc" is not a port mapping'),
        ("expose: [70000]", 'services.web.expose[0]: "70000" is not a port mapping: ports are 1-65535'),
        ("expose: ['1-1000000000']", 'services.web.expose[0]: "1-1000000000" is not a port mapping'),
        ("pids_limit: " + "9" * 400, "services.web.pids_limit: must be <= 9223372036854775807"),
    ],
)
def test_bad_numbers_are_problems(tmp_path: Path, body: str, expected: str) -> None:
    (found,) = problems(tmp_path, f"services:\n  web:\n    image: busybox\n    {body}\n")
    assert found.startswith(expected), found


@pytest.mark.parametrize("image", ["''", "'a b c'", "UPPER/Case", "'busybox@sha256:zzzz'"])
def test_invalid_image_references_are_problems(tmp_path: Path, image: str) -> None:
    (found,) = problems(tmp_path, f"services:\n  web:\n    image: {image}\n")
    assert found.startswith("services.web.image: ")


def test_service_healthy_on_a_disabled_healthcheck_is_a_problem(tmp_path: Path) -> None:
    """A missing healthcheck may come from the image (checked at apply); a disabled one never."""
    text = "services:\n  db: {image: x, healthcheck: {disable: true}}\n  web:\n    image: x\n"
    text += "    depends_on: {db: {condition: service_healthy}}\n"
    (found,) = problems(tmp_path, text)
    assert found.startswith(
        'services.web.depends_on.db: depends on "db" being service_healthy, but "db" has its '
        "healthcheck disabled"
    )


def test_an_included_file_with_an_unknown_top_level_key_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "inc.yaml").write_text("servics: {}\n")
    (found,) = problems(tmp_path, "include: [inc.yaml]\nservices: {}\n")
    assert found == "servics: unknown top-level key `servics`, did you mean services?"


def test_a_crash_inside_the_loader_is_permanent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gitdock.specs.load as load_module

    def crash(*_args: object) -> None:
        raise ValueError("the file said hunter2")

    monkeypatch.setattr(load_module, "check_compose", crash)
    (tmp_path / "compose.yaml").write_text("services: {}\n")
    with pytest.raises(LoadCrashed) as exc:
        load_project([tmp_path / "compose.yaml"], environ={})
    assert isinstance(exc.value, PermanentError) and "hunter2" not in str(exc.value)
