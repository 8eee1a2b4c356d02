"""The wheel and the sdist (`python -m build`), installed into a clean virtualenv as a user would.

The module builds both once (the wheel from the sdist, as `build` does, so a file missing from
the sdist breaks the wheel too), installs the wheel with its dependencies only (no dev extras)
into a fresh venv, and runs that `gitdock`: `--version`, then a real apply and down against
the running dockerd.
"""

from __future__ import annotations

import email
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from support.docker import TEST_IMAGE, docker_cli

REPO = Path(__file__).resolve().parent.parent
LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def run(*argv: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(map(str, argv))}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, REPO)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("gitdock-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the wheel and its runtime dependencies; returns its bin/."""
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", wheel)
    return venv / "bin"


def test_version_is_written_once_and_names_both_artifacts(dist: Path) -> None:
    names = sorted(p.name for p in dist.iterdir())
    assert names == [f"gitdock-{version()}-py3-none-any.whl", f"gitdock-{version()}.tar.gz"]


def test_wheel_holds_the_gitdock_package_and_no_test_fixtures(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        files = whl.namelist()
        metadata = email.message_from_bytes(whl.read(f"gitdock-{version()}.dist-info/METADATA"))
        entry_points = whl.read(f"gitdock-{version()}.dist-info/entry_points.txt").decode()
    tops = {name.split("/", 1)[0] for name in files}
    assert tops == {"gitdock", f"gitdock-{version()}.dist-info"}
    assert not [f for f in files if "/tests/" in f or "/support/" in f or f.endswith("conftest.py")]
    for module in ("agent/cli/main.py", "agent/sdnotify.py", "runtime/docker.py", "specs/model.py"):
        assert f"gitdock/{module}" in files
    assert "gitdock = gitdock.agent.cli.entry:main" in entry_points
    runtime_requires = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert not [r for r in runtime_requires if r.split(">")[0].split("=")[0] in {"pytest", "ruff", "mypy"}]


def test_sdist_builds_from_the_tree_with_its_readme_and_pyproject(dist: Path) -> None:
    with tarfile.open(dist / f"gitdock-{version()}.tar.gz") as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "agent/cli/main.py"} <= names


def test_installed_wheel_prints_its_version(installed: Path) -> None:
    assert run(installed / "gitdock", "--version").stdout.strip() == f"gitdock {version()}"
    packages = run(installed / "python", "-m", "pip", "list", "--format=freeze").stdout.lower()
    assert not {"pytest", "ruff", "mypy"} & {line.split("==")[0] for line in packages.splitlines()}


@pytest.mark.docker
def test_installed_wheel_applies_and_downs_a_project(
    installed: Path, tmp_path: Path, project_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text(f'services:\n  web:\n    image: {TEST_IMAGE}\n    command: ["sh", "-c", "{LOOP}"]\n')
    monkeypatch.chdir(tmp_path)  # nothing of the repository on the path: only the venv's gitdock
    run(installed / "gitdock", "apply", "-f", compose, "-p", project_name, timeout=120)
    state = docker_cli("inspect", "-f", "{{.State.Status}}", f"{project_name}-web-1").strip()
    assert state == "running"
    run(installed / "gitdock", "down", "-p", project_name, timeout=120)
    left = docker_cli("ps", "-aq", "--filter", f"label=io.gitdock.project={project_name}")
    assert left.strip() == ""
