"""Real-world Compose files nobody here wrote: every valid one loads and plans, in-process.

The documents are compose-go's loader testdata, docker/compose's e2e fixtures and
docker/awesome-compose's projects (their Compose files, with the small files they read), stored
under ``compose_corpus/real_world/<source>/`` as they are upstream (``SOURCES.md`` names the
repository, commit and license of each; the few files an upstream test writes before it runs a
document are stand-ins marked ``written here`` there, and a test below shows that without one
the load fails naming the file). Each YAML file is one document, loaded alone and
planned against an empty host (the external networks and volumes it names taken as present),
except:

- ``FRAGMENTS``: files that are not a project on their own (a file another one includes or
  extends, an override), each with why; they are loaded through the document that uses them;
- ``INVALID``: documents Compose refuses too; gitdock must refuse them naming the problem;
- ``REFUSED``: valid documents gitdock refuses, each with the reason it names (the allow-list
  the 98 % bar allows), and ``GAPS``: the ones where gitdock is wrong, kept visible here.

No Docker; no traceback may escape. ``pytest -s`` prints the shares.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitdock.runtime.observe import (
    ObservedContainer,
    ObservedImage,
    ObservedNetwork,
    ObservedState,
    ObservedVolume,
)
from gitdock.runtime.plan import plan_project
from gitdock.specs import SpecError, load_project_with_warnings
from gitdock.specs.errors import GitdockError

ROOT = Path(__file__).resolve().parent / "compose_corpus" / "real_world"
SOURCES = ("compose-go", "compose", "awesome-compose")

# Not a project on their own: loaded through the document named, or not at all (why).
FRAGMENTS = {
    "compose-go/extends/base.yaml": "services other files extend; with-build extends sibling.yaml, "
    "which the testdata does not hold",
    "compose-go/extends/nested.yaml": "extends sibling.yaml, which the testdata does not hold",
    "compose-go/include/dir/compose.yaml": "included by include/project-directory.yaml",
    "compose-go/include/env_file/sub/compose.yaml": "included by include/env_file/compose.yaml",
    "compose-go/include/secret_env/sub/compose.yaml": "included by include/secret_env/compose.yaml, "
    "whose env_file sets MY_SECRET",
    "compose-go/remote/compose.yaml": "read through compose-go's test-only `remote:` loader",
    "compose-go/remote/cycle/compose.yaml": "read through compose-go's test-only `remote:` loader",
    "compose-go/remote/cycle/compose-cycle.yaml": "read through compose-go's test-only `remote:` loader",
    "compose-go/remote/nested/compose.yaml": "read through compose-go's test-only `remote:` loader",
    "compose-go/remote/nested/compose-nested.yaml": "read through compose-go's test-only `remote:` loader",
    "compose/env-secret/child/compose.yaml": "included by env-secret/compose.yaml, "
    "whose env_file sets MY_SECRET",
    "compose/interpolation/compose.override.yaml": "the override Compose loads with "
    "interpolation/compose.yaml",
}

# Further files a document is loaded with, as Compose loads them (compose.override.yaml).
WITH_FILES = {"compose/interpolation/compose.yaml": ("compose.override.yaml",)}

# The variables the upstream test sets when it runs the document.
ENVIRON = {
    "compose/configs/compose.yaml": {"CONFIG": "config"},
    "compose/env-secret/compose.yaml": {"SECRET": "a-secret"},
    "compose/logs-test/cat.yaml": {"FILE": "./cat.yaml"},
    "compose-go/golden/web-stack.yaml": {"GOLDEN_TAG": "1.0", "GOLDEN_PORT": "8080"},
}

# Images the upstream test builds or pulls, and containers it starts, before it runs the document.
PRESENT_IMAGES = {"compose/images-removed/compose.yaml": ("compose-e2e-images-removed:v1",)}
PRESENT_CONTAINERS = {"compose/ipc-test/compose.yaml": ("ipc_e2e-src",)}

# Invalid documents (Compose refuses them too) -> what gitdock's refusal must name.
INVALID = {
    "compose/wrong-composefile/compose.yaml": "unknown key `wrongField`",
    "compose/env_file/compose.yaml": "env file /doesnotexist/.env",
    "compose-go/compose-depends-on-self.yaml": 'service "service1" depends on itself',
    "compose-go/compose-depends-on-profile-no-cycle.yaml": "dependency cycle: service1 -> service2",
    "compose-go/compose-include-cycle.yaml": "include cycle",
    # Docker holds one container per name ("container name is already in use").
    "compose/container_name/compose.yaml": "is also the container_name of service",
}

# Valid documents gitdock refuses -> the reason its refusal names (the allow-list).
REFUSED = {
    # The including file redefines the service its include brings (to add an env_file).
    # docker compose builds on compose-go v2 (go.mod at 0094ece2: compose-go/v2 v2.11.0), whose
    # loader/include.go (at 0761c331) refuses that too: `services.app conflicts with imported
    # resource`. This fixture is from compose-go's v3 refactoring, which merges it instead.
    "compose-go/include/env_file/compose.yaml": "is defined here and in the included file",
}

# Where gitdock is wrong (reported; a fix moves the entry out): refused -> what it says.
GAPS: dict[str, str] = {}
# Invalid documents gitdock accepts (a gap too).
ACCEPTED_INVALID: set[str] = set()


def documents() -> list[str]:
    """Every stored YAML document, by ``<source>/<path>``, fragments left out."""
    found = sorted(
        str(path.relative_to(ROOT))
        for source in SOURCES
        for pattern in ("*.yaml", "*.yml")
        for path in (ROOT / source).rglob(pattern)
    )
    return [doc for doc in found if doc not in FRAGMENTS]


def load_and_plan(doc: str) -> Any:
    """Load ``doc`` (with the files Compose loads beside it) and plan it on an empty host."""
    path = ROOT / doc
    files = [path, *(path.parent / name for name in WITH_FILES.get(doc, ()))]
    # The source's folder is the checkout the agent would load it from (its root).
    root = ROOT / doc.split("/", 1)[0]
    project, _warnings = load_project_with_warnings(files, environ=ENVIRON.get(doc, {}), root=root)
    present = PRESENT_IMAGES.get(doc, ()), PRESENT_CONTAINERS.get(doc, ())
    return plan_project(project, _observed(project, *present))


def _observed(project: Any, images: tuple[str, ...], containers: tuple[str, ...]) -> ObservedState:
    """An empty host, but for the external networks and volumes, images and containers named."""
    networks = tuple(
        ObservedNetwork(labels={}, id=f"id-{n.name}", name=n.name, driver=n.driver)
        for n in project.networks
        if n.external
    )
    volumes = tuple(
        ObservedVolume(labels={}, name=v.name, driver=v.driver) for v in project.volumes if v.external
    )
    present = tuple(ObservedImage(f"sha256:{i:064x}", (ref,), ()) for i, ref in enumerate(images, 1))
    running = tuple(
        ObservedContainer(
            id=f"id-{name}",
            name=name,
            image="alpine",
            image_id="sha256:" + "0" * 64,
            state="running",
            status="Up",
            labels={},
            networks={},
            created=1,
        )
        for name in containers
    )
    return ObservedState(containers=running, networks=networks, volumes=volumes, images=present)


def refusal(doc: str) -> str | None:
    """What gitdock says when it refuses ``doc`` (load or plan), or None when it plans."""
    try:
        load_and_plan(doc)
    except SpecError as exc:
        return "; ".join(str(p) for p in exc.problems)
    except GitdockError as exc:
        return str(exc)
    return None


def _outcomes() -> Iterator[tuple[str, str | None]]:
    for doc in documents():
        yield doc, refusal(doc)


OUTCOMES = dict(_outcomes())


def test_the_corpus_is_all_there() -> None:
    """Every name the lists hold is a stored document (a renamed file cannot hide)."""
    stored = set(documents()) | set(FRAGMENTS)
    named = set(INVALID) | set(REFUSED) | set(GAPS) | ACCEPTED_INVALID | set(FRAGMENTS)
    assert named <= stored, sorted(named - stored)
    assert len(documents()) >= 100


@pytest.mark.parametrize("doc", [d for d in documents() if d not in {*INVALID, *REFUSED, *GAPS}])
def test_every_valid_document_loads_and_plans(doc: str) -> None:
    assert OUTCOMES[doc] is None, OUTCOMES[doc]


@pytest.mark.parametrize("doc", sorted(INVALID))
def test_every_invalid_document_is_refused_naming_the_problem(doc: str) -> None:
    said = OUTCOMES[doc]
    assert said is not None and INVALID[doc] in said, said


@pytest.mark.parametrize("doc", sorted({**REFUSED, **GAPS}))
def test_a_refused_document_is_refused_for_the_reason_listed(doc: str) -> None:
    said, expected = OUTCOMES[doc], {**REFUSED, **GAPS}[doc]
    assert said is not None and expected in said, said


def test_the_shares_of_each_source(capsys: pytest.CaptureFixture[str]) -> None:
    """Print, per source, how many valid documents plan and how many invalid ones are refused."""
    lines = []
    for source in SOURCES:
        docs = [d for d in OUTCOMES if d.startswith(source + "/")]
        invalid = [d for d in docs if d in INVALID or d in ACCEPTED_INVALID]
        valid = [d for d in docs if d not in invalid]
        planned = [d for d in valid if OUTCOMES[d] is None]
        refused = [d for d in invalid if OUTCOMES[d] is not None]
        lines.append(
            f"{source}: {len(planned)} of {len(valid)} valid documents plan "
            f"({100 * len(planned) / len(valid):.1f} %), {len(refused)} of {len(invalid)} invalid refused"
        )
    valid_all = [d for d in OUTCOMES if d not in INVALID and d not in ACCEPTED_INVALID]
    planned_all = [d for d in valid_all if OUTCOMES[d] is None]
    lines.append(
        f"all: {len(planned_all)} of {len(valid_all)} valid documents plan "
        f"({100 * len(planned_all) / len(valid_all):.1f} %); "
        f"{len(REFUSED)} refused with a named reason, {len(GAPS)} gaps, "
        f"{len(ACCEPTED_INVALID)} invalid accepted"
    )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert all(OUTCOMES[d] is None for d in ACCEPTED_INVALID)  # a fix moves it to INVALID


def test_two_volumes_at_one_target_keep_the_later_one() -> None:
    """As compose-go's EnforceUnicity: prometheus-grafana mounts a bind, then a volume, at one path."""
    path = ROOT / "awesome-compose" / "prometheus-grafana" / "compose.yaml"
    project, _warnings = load_project_with_warnings([path], environ={}, root=ROOT / "awesome-compose")
    (prometheus,) = [s for s in project.services if s.name == "prometheus"]
    mounts = [(m.type, m.target, m.source) for m in prometheus.mounts]
    assert mounts == [("volume", "/prometheus", "prom_data")]


@pytest.mark.parametrize(
    ("doc", "missing"),
    [
        ("compose/volume-test/compose.yaml", "static/index.html"),
        ("compose/environment/env-priority/compose-with-env-file.yaml", ".env.override"),
        ("compose/watch/rebuild-config.yaml", "watch.env"),
    ],
)
def test_a_referenced_file_that_is_missing_is_refused_in_one_line_naming_it(
    tmp_path: Path, doc: str, missing: str
) -> None:
    """The stand-ins above only fill in files upstream's tests write: without one, the load fails."""
    path = tmp_path / Path(doc).name
    path.write_text((ROOT / doc).read_text())
    assert not (tmp_path / missing).exists()
    with pytest.raises(SpecError) as raised:
        load_project_with_warnings([path], environ={}, root=tmp_path)
    said = "; ".join(str(p) for p in raised.value.problems)
    assert missing in said and "not found" in said and "\n" not in said, said


def test_top_level_jobs_are_accepted_with_a_warning_and_deploy_nothing() -> None:
    """docker/compose runs `jobs:` on `compose run` or on a schedule (pkg/e2e/jobs_test.go)."""
    doc = "compose/run-test/jobs.yaml"
    project, warnings = load_project_with_warnings([ROOT / doc], environ={}, root=ROOT / "compose")
    assert [s.name for s in project.services] == ["db"]
    (warning,) = [w for w in warnings if w.startswith("jobs ")]
    assert "no effect on this target" in warning, warning
    rendered = plan_project(project, _observed(project, (), ())).render()
    assert "service:db:1" in rendered and "with-deps" not in rendered and "simple" not in rendered
