"""Images built from the revision, as pure code: .dockerignore, the context tar, its digest,
the load of `build:` and the plan's BuildImage operations (golden text)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from gitdock.runtime.build import (
    BuildError,
    BuildMode,
    bind_builds,
    build_digest,
    context_tar,
    is_excluded,
    parse_dockerignore,
    refuse_classic_build,
    tar_digest,
)
from gitdock.runtime.desired import desired_build, desired_container, desired_network
from gitdock.runtime.docker import DockerError, _read_build_stream
from gitdock.runtime.observe import ObservedContainer, ObservedImage, ObservedNetwork, ObservedState
from gitdock.runtime.plan import PlanError, plan_project
from gitdock.specs import SpecError, load_project, load_project_with_warnings
from gitdock.specs.model import Build, Network, NetworkAttachment, Project, Service

# --- .dockerignore, by Docker's rules ----------------------------------------------------


def excluded(patterns: str, path: str) -> bool:
    return is_excluded(path, parse_dockerignore(patterns))


@pytest.mark.parametrize(
    ("patterns", "path", "expected"),
    [
        ("*.log", "debug.log", True),
        ("*.log", "logs/debug.log", False),  # * stays within one segment
        ("**/*.log", "logs/deep/debug.log", True),
        ("**/*.log", "debug.log", True),  # **/ matches zero segments too
        ("/build", "build", True),  # a leading / is ignored
        ("build", "build/out/a.o", True),  # a parent directory's match excludes its content
        ("node_modules\n!node_modules/keep.md", "node_modules/keep.md", False),
        ("node_modules\n!node_modules/keep.md", "node_modules/other.js", True),
        ("*.md\n!README.md\nREADME.md", "README.md", True),  # the last matching line wins
        ("# a comment\n\n   \n", "a", False),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),  # ? never matches /
        ("docs/**", "docs/a/b.txt", True),
        ("./tmp/", "tmp/x", True),  # cleaned like filepath.Clean
        ("[ab].txt", "a.txt", True),
        ("file\\*", "file*", True),  # \ escapes
        ("file\\*", "filex", False),
    ],
)
def test_dockerignore_follows_dockers_pattern_rules(patterns: str, path: str, expected: bool) -> None:
    assert excluded(patterns, path) is expected


# --- the context tar and its digest -------------------------------------------------------


def make_context(root: Path, files: dict[str, str]) -> Build:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return Build(context=str(root), repository="demo-web")


def names(tar: bytes) -> list[str]:
    return tarfile.open(fileobj=io.BytesIO(tar)).getnames()


CONTEXT = {
    "Dockerfile": "FROM gitdock-test/busybox:1\nCOPY . /app\n",
    ".dockerignore": "*.log\nsecret/\n",
    "src/main.sh": "echo hi\n",
    "debug.log": "noise\n",
    "secret/key": "hunter2\n",
}


def test_context_tar_leaves_out_what_dockerignore_excludes(tmp_path: Path) -> None:
    build = make_context(tmp_path, CONTEXT)
    assert names(context_tar(build)) == [".dockerignore", "Dockerfile", "src", "src/main.sh"]


def test_context_tar_always_sends_the_dockerfile_and_dockerignore(tmp_path: Path) -> None:
    build = make_context(tmp_path, {**CONTEXT, ".dockerignore": "*\n"})
    assert names(context_tar(build)) == [".dockerignore", "Dockerfile"]


def test_context_tar_is_the_same_bytes_for_the_same_content(tmp_path: Path) -> None:
    build = make_context(tmp_path, CONTEXT)
    first = context_tar(build)
    os.utime(tmp_path / "src" / "main.sh", (1, 1))  # times are not content
    assert context_tar(build) == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        entries = tar.getmembers()
    assert {(m.uid, m.gid, m.mtime) for m in entries} == {(0, 0, 0)}


def test_digest_is_unchanged_for_an_unchanged_context(tmp_path: Path) -> None:
    build = make_context(tmp_path, CONTEXT)
    assert build_digest(build) == build_digest(build) == tar_digest(build, context_tar(build))


def test_digest_changes_with_a_file_the_context_sends(tmp_path: Path) -> None:
    build = make_context(tmp_path, CONTEXT)
    before = build_digest(build)
    (tmp_path / "src" / "main.sh").write_text("echo changed\n")
    assert build_digest(build) != before


def test_digest_ignores_a_file_dockerignore_excludes(tmp_path: Path) -> None:
    build = make_context(tmp_path, CONTEXT)
    before = build_digest(build)
    (tmp_path / "debug.log").write_text("more noise\n")
    assert build_digest(build) == before


def test_digest_changes_with_a_build_arg_and_a_mode_bit(tmp_path: Path) -> None:
    build = make_context(tmp_path, CONTEXT)
    before = build_digest(build)
    assert build_digest(dataclasses.replace(build, args=(("VERSION", "2"),))) != before
    (tmp_path / "src" / "main.sh").chmod(0o755)
    assert build_digest(build) != before


def test_symlinks_are_sent_as_links_never_followed(tmp_path: Path) -> None:
    build = make_context(tmp_path / "ctx", {"Dockerfile": "FROM x\n"})
    (tmp_path / "outside").write_text("host secret\n")
    (tmp_path / "ctx" / "link").symlink_to(tmp_path / "outside")
    with tarfile.open(fileobj=io.BytesIO(context_tar(build))) as tar:
        member = tar.getmember("link")
    assert member.issym() and member.linkname == str(tmp_path / "outside")


def test_missing_dockerfile_is_a_build_error_naming_the_service(tmp_path: Path) -> None:
    build = make_context(tmp_path, {"app.sh": "x"})
    project = Project("demo", (Service(name="web", image="demo-web", build=build),))
    with pytest.raises(BuildError, match=r"service web: Dockerfile: no such Dockerfile in the build context"):
        bind_builds(project)


def test_bind_sets_the_content_tag_and_keeps_other_services(tmp_path: Path) -> None:
    build = make_context(tmp_path, CONTEXT)
    plain = Service(name="db", image="gitdock-test/busybox:1")
    bound = bind_builds(
        Project("demo", (plain, Service(name="web", image="demo-web", build=build))), revision="abc"
    )
    web = bound.service("web")
    assert web.build is not None and web.build.revision == "abc"
    assert web.image == "demo-web:" + build_digest(build).removeprefix("sha256:")[:12]
    assert bound.service("db") is plain


# --- build: in the Compose file ---------------------------------------------------------


def load(tmp_path: Path, text: str, **files: str) -> Project:
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    (tmp_path / "compose.yaml").write_text(text)
    return load_project([str(tmp_path / "compose.yaml")], project_name="demo", environ={"FROM_ENV": "e"})


def test_build_loads_with_the_compose_image_name(tmp_path: Path) -> None:
    text = """services:
  web:
    build:
      context: ./web
      dockerfile: Dockerfile.prod
      args: {VERSION: "1.4", FROM_ENV: null, UNSET: null}
      target: runtime
      labels: [team=web]
      network: host
      shm_size: 64m
"""
    svc = load(tmp_path, text).service("web")
    assert svc.image == "demo-web"
    assert svc.build == Build(
        context=str(tmp_path / "web"),
        repository="demo-web",
        dockerfile="Dockerfile.prod",
        args=(("FROM_ENV", "e"), ("VERSION", "1.4")),  # an arg without a value takes the environment's
        target="runtime",
        labels=(("team", "web"),),
        network="host",
        shm_size=64 << 20,
        tags=("demo-web:latest",),
    )


def test_build_with_image_is_also_tagged_as_the_image(tmp_path: Path) -> None:
    svc = load(tmp_path, "services:\n  web:\n    image: registry.example/web:1\n    build: .\n").service(
        "web"
    )
    assert svc.build is not None and svc.build.tags == ("registry.example/web:1",)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load(tmp_path / "app", text)
    return [f"{p.path}: {p.message}" for p in exc.value.problems]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        ("../", "services.web.build: ../: the build context is outside the project directory"),
        (
            "{context: ., dockerfile: ../Dockerfile}",
            "services.web.build.dockerfile: ../Dockerfile: the dockerfile",
        ),
    ],
)
def test_build_outside_the_revision_is_refused(tmp_path: Path, build: str, message: str) -> None:
    (tmp_path / "app").mkdir()
    (found,) = problems(tmp_path, f"services:\n  web:\n    build: {build}\n")
    assert message in found, found


def test_symlinked_context_leaving_the_project_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "ctx").symlink_to(tmp_path)
    (found,) = problems(tmp_path, "services:\n  web:\n    build: ./ctx\n")
    assert "the build context is outside the project directory" in found


# --- BuildKit-only keys: they load and plan; the build step refuses what needs BuildKit ----

BUILDKIT = """services:
  web:
    build:
      context: .
      secrets: [token]
      ssh: [default]
      additional_contexts: {assets: ./assets}
      cache_to: ["type=local,dest=/tmp/cache"]
      entitlements: [network.host]
      privileged: true
secrets:
  token:
    file: ./token.txt
"""
REFUSED_KEYS = "`{0}` needs BuildKit, which the Engine API offers only over its session protocol"


def load_buildkit(tmp_path: Path, text: str = BUILDKIT) -> tuple[Project, list[str]]:
    (tmp_path / "Dockerfile").write_text("FROM gitdock-test/busybox:1\n")
    (tmp_path / "token.txt").write_text("hunter2-token\n")
    (tmp_path / "compose.yaml").write_text(text)
    return load_project_with_warnings([str(tmp_path / "compose.yaml")], project_name="demo", environ={})


def test_buildkit_keys_are_kept_with_why_the_classic_builder_cannot_build_them(tmp_path: Path) -> None:
    project, warnings = load_buildkit(tmp_path)
    build = project.service("web").build
    assert build is not None
    assert (build.secrets, build.ssh, build.additional_contexts) == (
        ("token",),
        ("default",),
        (("assets", "./assets"),),
    )
    assert (build.cache_to, build.entitlements, build.privileged) == (
        ("type=local,dest=/tmp/cache",),
        ("network.host",),
        True,
    )
    where = f"{tmp_path / 'compose.yaml'}"
    assert build.refusals == (
        f"{where}:7:28: services.web.build.additional_contexts: "
        f"{REFUSED_KEYS.format('additional_contexts')}; "
        "gitdock builds with the classic builder",
        f"{where}:5:16: services.web.build.secrets: {REFUSED_KEYS.format('secrets')}; "
        "gitdock builds with the classic builder",
        f"{where}:6:12: services.web.build.ssh: {REFUSED_KEYS.format('ssh')}; "
        "gitdock builds with the classic builder",
    )
    assert warnings == [
        "services.web.build.cache_to: skipped: the classic builder exports no cache",
        "services.web.build.entitlements: the classic builder grants none; the build runs without it",
        "services.web.build.privileged: the classic builder grants none; the build runs without it",
    ]
    assert not any("hunter2" in line for line in (*build.refusals, *warnings))


def test_a_build_that_only_skips_a_cache_export_or_a_grant_is_built(tmp_path: Path) -> None:
    text = "services:\n  web:\n    build: {context: ., cache_to: [type=inline], privileged: true}\n"
    project, _warnings = load_buildkit(tmp_path, text)
    build = bind_builds(project).service("web").build
    assert build is not None and build.refusals == ()
    refuse_classic_build(build)  # the build step lets it through
    assert context_tar(build)  # and sends it


def test_the_build_step_refuses_several_platforms(tmp_path: Path) -> None:
    text = "services:\n  web:\n    build: {context: ., platforms: [linux/amd64, linux/arm64]}\n"
    build = bind_builds(load_buildkit(tmp_path, text)[0]).service("web").build
    assert build is not None
    with pytest.raises(BuildError, match=r"services\.web\.build\.platforms: several platforms need BuildKit"):
        refuse_classic_build(build)


def test_the_build_step_refuses_a_buildkit_build_naming_each_key(tmp_path: Path) -> None:
    build = bind_builds(load_buildkit(tmp_path)[0]).service("web").build
    assert build is not None and build.digest  # it binds: the refusal waits for the build step
    with pytest.raises(BuildError) as exc:
        refuse_classic_build(build)
    for key in ("additional_contexts", "secrets", "ssh"):
        assert f"services.web.build.{key}: `{key}` needs BuildKit" in str(exc.value)


def test_buildkit_keys_leave_the_content_digest_as_it_was(tmp_path: Path) -> None:
    build = load_buildkit(tmp_path)[0].service("web").build
    assert build is not None
    plain = dataclasses.replace(
        build,
        secrets=(),
        ssh=(),
        additional_contexts=(),
        cache_to=(),
        entitlements=(),
        privileged=False,
        refusals=(),
    )
    assert build_digest(build) == build_digest(plain)


def test_plan_shows_the_build_and_warns_that_apply_will_refuse_it(tmp_path: Path) -> None:
    text = "services:\n  web:\n    build:\n      context: .\n      secrets: [token]\n"
    text += "secrets:\n  token:\n    file: ./token.txt\n"
    project = bind_builds(load_buildkit(tmp_path, text)[0])
    assert plan_project(project, ObservedState()).render() == "\n".join(
        [
            "[] -> #1 build:web, BuildImage, not found",
            "[#1] -> #2 network:default, CreateNetwork, not found",
            "[#1, #2] -> #3 service:web:1, CreateContainer, not found",
            f"warning: {tmp_path / 'compose.yaml'}:5:16: services.web.build.secrets: "
            f"{REFUSED_KEYS.format('secrets')}; gitdock builds with the classic builder; "
            "apply will refuse to build it",
        ]
    )


# --- the plan ------------------------------------------------------------------------------

NET = Network(key="default", name="demo_default")
ATTACH = (("default", NetworkAttachment()),)
BASE_ID = "sha256:" + "1" * 64


def built_project(tmp_path: Path, *extra: Service) -> Project:
    build = make_context(tmp_path, CONTEXT)
    web = Service(name="web", image="demo-web", build=build, networks=ATTACH)
    return bind_builds(Project("demo", (web, *extra), networks=(NET,)))


def host_after_apply(p: Project, built: bool = True) -> ObservedState:
    containers = []
    for s in p.services:
        dc = desired_container(p, s, 1)
        containers.append(
            ObservedContainer(
                id=f"id-{s.name}",
                name=dc.name,
                image=s.image,
                image_id=f"sha256:{s.name:0>64}",
                state="running",
                status="Up",
                labels=dict(dc.create_body["Labels"]),
                networks={"demo_default": "nid"},
                created=1,
            )
        )
    images = [
        ObservedImage(f"sha256:{s.name:0>64}", (s.image,), ()) for s in p.services if built or not s.build
    ]
    dn = desired_network(p, NET)
    network = ObservedNetwork("nid", dn.name, "bridge", dict(dn.create_body["Labels"]))
    return ObservedState(tuple(containers), (network,), (), tuple(images))


def test_plan_builds_first_when_the_image_was_never_built(tmp_path: Path) -> None:
    p = built_project(tmp_path)
    plan = plan_project(p, ObservedState())
    assert plan.render() == "\n".join(
        [
            "[] -> #1 build:web, BuildImage, not found",
            "[#1] -> #2 network:default, CreateNetwork, not found",
            "[#1, #2] -> #3 service:web:1, CreateContainer, not found",
        ]
    )


def test_plan_is_empty_when_the_context_did_not_change(tmp_path: Path) -> None:
    p = built_project(tmp_path)
    assert plan_project(p, host_after_apply(p)).render() == ""


def test_plan_rebuilds_and_recreates_exactly_the_changed_service(tmp_path: Path) -> None:
    db = Service(name="db", image="gitdock-test/busybox:1", networks=ATTACH)
    p = built_project(tmp_path, db)
    observed = host_after_apply(p)
    (tmp_path / "src" / "main.sh").write_text("echo changed\n")
    changed = bind_builds(p)
    assert plan_project(changed, observed).render() == "\n".join(
        [
            "[] -> #1 build:web, BuildImage, context changed",
            "[#1] -> #2 service:web:1, RecreateContainer, image changed",
        ]
    )


def test_every_other_operation_waits_for_every_build(tmp_path: Path) -> None:
    other = make_context(tmp_path / "api", {"Dockerfile": "FROM x\n"})
    api = Service(name="api", image="demo-api", build=dataclasses.replace(other, repository="demo-api"))
    p = built_project(tmp_path, dataclasses.replace(api, networks=ATTACH))
    lines = plan_project(bind_builds(p), ObservedState()).render().splitlines()
    assert lines[:3] == [
        "[] -> #1 build:api, BuildImage, not found",
        "[] -> #2 build:web, BuildImage, not found",
        "[#1, #2] -> #3 network:default, CreateNetwork, not found",
    ]
    assert lines[3:] == [
        "[#1, #3] -> #4 service:api:1, CreateContainer, not found",  # #3 waits for #2 too
        "[#2, #3] -> #5 service:web:1, CreateContainer, not found",
    ]


def test_build_requested_rebuilds_without_recreating(tmp_path: Path) -> None:
    p = built_project(tmp_path)
    plan = plan_project(p, host_after_apply(p), build=BuildMode.ALWAYS)
    assert plan.render() == "[] -> #1 build:web, BuildImage, build requested"


def test_pull_policy_build_always_builds(tmp_path: Path) -> None:
    p = built_project(tmp_path)
    p = dataclasses.replace(p, services=(dataclasses.replace(p.services[0], pull_policy="build"),))
    assert (
        plan_project(p, host_after_apply(p)).render() == "[] -> #1 build:web, BuildImage, pull_policy build"
    )


def test_no_build_refuses_a_plan_whose_image_is_not_built(tmp_path: Path) -> None:
    p = built_project(tmp_path)
    with pytest.raises(
        PlanError, match=r"service web: image demo-web:[0-9a-f]{12} is not built and --no-build"
    ):
        plan_project(p, host_after_apply(p, built=False), build=BuildMode.NEVER)
    assert plan_project(p, host_after_apply(p), build=BuildMode.NEVER).is_empty


def test_build_query_names_the_image_and_labels_the_revision(tmp_path: Path) -> None:
    p = built_project(tmp_path)
    p = bind_builds(p, revision="3f2a" * 10)
    svc = p.service("web")
    params = desired_build(p, svc).params
    assert params["t"] == [svc.image]
    assert params["dockerfile"] == "Dockerfile"
    labels = json.loads(str(params["labels"]))
    assert labels["io.gitdock.build.revision"] == "3f2a" * 10
    assert labels["io.gitdock.image.source"] == "build@" + "3f2a" * 10
    container_labels = desired_container(p, svc, 1).create_body["Labels"]
    assert container_labels["io.gitdock.image.source"] == "build@" + "3f2a" * 10


def test_revision_alone_does_not_recreate(tmp_path: Path) -> None:
    p = built_project(tmp_path)
    observed = host_after_apply(bind_builds(p, revision="a" * 40))
    assert plan_project(bind_builds(p, revision="b" * 40), observed).is_empty


# --- the builder's output stream -----------------------------------------------------------


def test_build_stream_error_names_the_step() -> None:
    lines = [
        json.dumps({"stream": "Step 1/2 : FROM gitdock-test/busybox:1\n"}),
        json.dumps({"stream": "Step 2/2 : RUN false\n"}),
        json.dumps(
            {
                "errorDetail": {
                    "code": 1,
                    "message": "The command '/bin/sh -c false' returned a non-zero code: 1",
                }
            }
        ),
    ]
    seen: list[str] = []
    with pytest.raises(DockerError) as exc:
        _read_build_stream(iter(lines), seen.append)
    assert (
        str(exc.value) == "Step 2/2 : RUN false: The command '/bin/sh -c false' returned a non-zero code: 1"
    )
    assert seen == ["Step 1/2 : FROM gitdock-test/busybox:1", "Step 2/2 : RUN false"]


def test_build_stream_returns_the_image_id() -> None:
    lines = [json.dumps({"aux": {"ID": "sha256:abc"}}), json.dumps({"stream": "Successfully built abc\n"})]
    assert _read_build_stream(iter(lines), None) == "sha256:abc"


def test_inline_and_outside_dockerfiles_travel_in_the_tar(tmp_path: Path) -> None:
    build = make_context(tmp_path / "ctx", {"app.sh": "x"})
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile.web").write_text("FROM y\n")
    outside = dataclasses.replace(build, dockerfile="../docker/Dockerfile.web")
    inline = dataclasses.replace(build, dockerfile_inline="FROM z\n")
    for b, content in ((outside, b"FROM y\n"), (inline, b"FROM z\n")):
        with tarfile.open(fileobj=io.BytesIO(context_tar(b))) as tar:
            member = tar.extractfile(".gitdock.Dockerfile")
            assert member is not None and member.read() == content
    assert build_digest(outside) != build_digest(inline)
