"""A generated corpus of hostile Compose projects, each run through the real CLI (issue 12).

Every case is a project that must be refused: ``gitdock plan`` (pure: dockerd is pointed at a
socket that does not exist, so nothing can be changed) and ``gitdock apply`` (against the real
dockerd, ``@pytest.mark.docker``) run in a subprocess with a timeout and an address-space limit.
Per case: exit 1; stderr is one ``error:`` line, or the "N problems" block, naming the file,
line or field the case expects; no traceback; no hang or memory blow-up; none of the planted
secrets (file contents, environment values) in the output; and, against dockerd, no container,
network or volume of the project afterwards.

The categories follow the issue: values that crashed the loader, structures that recursed or
exploded (deep nesting, alias and merge-key bombs, long chains), special and foreign files as
sources (FIFOs, devices, /proc, paths outside the project, symlinks, NUL bytes, oversized files),
invalid values that were accepted, and references the planner only met after it had created
something (refused now before the first mutation).
"""

from __future__ import annotations

import os
import re
import resource
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.docker import docker_cli, remove_project

GITDOCK = str(Path(sys.executable).with_name("gitdock"))
TIMEOUT_S = 120  # a hang detector, not a timing assertion: a clean refusal takes well under a second
MEMORY_LIMIT = 1 << 30  # RLIMIT_AS for each run: a blow-up is a MemoryError, not a swapping host

# Planted where a leak would show: the environment, an env file outside the project, /etc files.
ENV_SECRET = "envsecret-" + "7f3c9a1e5b"
FILE_SECRET = "filesecret-" + "d41d8cd98f"

FIFO = "<fifo>"
IMAGE = "gitdock-test/busybox:1"


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class Case:
    """One hostile project: files relative to the project dir (``../x`` is outside it)."""

    id: str
    files: dict[str, str | bytes | Symlink]
    expect: str  # a substring the error must contain: the file, field or image it names
    args: tuple[str, ...] = ()
    compose: str = "compose.yaml"
    docker_only: bool = False  # refused by the plan's static checks, which need the snapshot
    # Refused when the plan runs (a pull that fails, before any network or container): apply
    # prints its operation report above the error line.
    at_execution: bool = False
    env: dict[str, str] = field(default_factory=dict)


def _svc(body: str, extra: str = "") -> dict[str, str | bytes | Symlink]:
    """A one-service project whose service ``web`` has ``body`` (YAML lines under it)."""
    indented = "".join(f"    {line}\n" for line in body.splitlines())
    return {"compose.yaml": f"services:\n  web:\n    image: {IMAGE}\n{indented}{extra}"}


# --- values ------------------------------------------------------------------------------

HUGE = "9" * 400
BAD_SIZES = ["-2", "'-1m'", HUGE, f"'{HUGE}m'", ".nan", ".inf", "-.inf", "abc", "true", "[]", "'1e400'"]
SIZE_FIELDS = {
    "mem_limit": "mem_limit: {}",
    "memswap_limit": "memswap_limit: {}",
    "mem_reservation": "mem_reservation: {}",
    "shm_size": "shm_size: {}",
    "deploy.resources.limits.memory": "deploy:\n  resources:\n    limits:\n      memory: {}",
    "deploy.resources.reservations.memory": "deploy:\n  resources:\n    reservations:\n      memory: {}",
    "volumes[0].tmpfs.size": "volumes:\n  - type: tmpfs\n    target: /t\n    tmpfs:\n      size: {}",
}
BAD_DURATIONS = [f"'{HUGE}s'", f"'{HUGE}h'", f"'1{'0' * 300}ms'", "'-1s'", "abc", ".inf", HUGE, "true"]
DURATION_FIELDS = {
    "healthcheck.interval": "healthcheck:\n  test: [CMD, 'true']\n  interval: {}",
    "healthcheck.timeout": "healthcheck:\n  test: [CMD, 'true']\n  timeout: {}",
    "healthcheck.start_period": "healthcheck:\n  test: [CMD, 'true']\n  start_period: {}",
    "stop_grace_period": "stop_grace_period: {}",
}
BAD_CPUS = [".nan", ".inf", "-.inf", "-1", "abc", "'1e400'", "true", HUGE]
CPU_FIELDS = {
    "cpus": "cpus: {}",
    "deploy.resources.limits.cpus": "deploy:\n  resources:\n    limits:\n      cpus: {}",
}
BAD_COUNTS = ["true", "1000000000", "-1", "abc", HUGE, "1.5", ".nan"]
COUNT_FIELDS = {"scale": "scale: {}", "deploy.replicas": "deploy:\n  replicas: {}"}
BAD_INTS = [HUGE, "true", ".nan", f"-{HUGE}"]
INT_FIELDS = {
    "pids_limit": "pids_limit: {}",
    "cpu_shares": "cpu_shares: {}",
    "oom_score_adj": "oom_score_adj: {}",
    "healthcheck.retries": "healthcheck:\n  test: [CMD, 'true']\n  retries: {}",
    "ulimits.nofile": "ulimits:\n  nofile: {}",
}
BAD_EXPOSE = ['"abc"', '"1-1000000000"', "70000", "0", '"-1"', '"80-"', '"90-80"', "true", '"80/xyz"']
BAD_PORTS = ['"abc"', '"70000:80"', '"1-1000000000:1-1000000000"', '"80:80:80:80"', '"0:80"', "true"]
BAD_IMAGES = ["''", "'a b c'", "UPPER/Case", "'busybox@sha256:zzzz'", "':tag'", "'busybox:'", "'busy//box'"]
BAD_IMAGES += ["'busybox:a:b'", "'-busybox'", '"busy\\0box"', f"'{'a' * 300}'", "'busybox@sha256:'"]


def value_cases() -> Iterator[Case]:
    families = [
        (SIZE_FIELDS, BAD_SIZES),
        (DURATION_FIELDS, BAD_DURATIONS),
        (CPU_FIELDS, BAD_CPUS),
        (COUNT_FIELDS, BAD_COUNTS),
        (INT_FIELDS, BAD_INTS),
    ]
    for fields, values in families:
        for name, template in fields.items():
            for i, value in enumerate(values):
                leaf = name.split(".")[-1].split("[")[0]
                yield Case(f"value-{name}-{i}", _svc(template.format(value)), leaf)
    for i, value in enumerate(BAD_EXPOSE):
        yield Case(f"expose-{i}", _svc(f"expose: [{value}]"), "expose")
        yield Case(f"expose-bare-{i}", _svc(f"expose: {value}"), "expose")
    for i, value in enumerate(BAD_PORTS):
        yield Case(f"ports-{i}", _svc(f"ports: [{value}]"), "ports")
    for i, value in enumerate(BAD_IMAGES):
        yield Case(f"image-{i}", {"compose.yaml": f"services:\n  web:\n    image: {value}\n"}, "image")
    huge_command = "sh -c " + "a " * (3 << 20)
    yield Case("command-multi-mib", _svc(f"command: {huge_command}"), "command")
    yield Case("entrypoint-multi-mib", _svc(f"entrypoint: {huge_command}"), "entrypoint")
    yield Case("healthcheck-multi-mib", _svc(f"healthcheck:\n  test: {huge_command}"), "healthcheck")


# --- structures --------------------------------------------------------------------------


def _chain(n: int, link: str) -> str:
    """``n`` services, each pointing at the next through ``link`` (a template for one service)."""
    lines = ["services:"]
    for i in range(n):
        lines.append(f"  s{i}:\n    image: {IMAGE}")
        if i + 1 < n:
            lines.append(link.format(next=f"s{i + 1}"))
    return "\n".join(lines) + "\n"


CHAIN_LINKS = {
    "depends_on": "    depends_on: [{next}]",
    "depends_on-healthy": "    healthcheck: {{test: [CMD, 'true']}}\n    depends_on:\n"
    "      {next}:\n        condition: service_healthy",
    "links": "    links: [{next}]",
    "extends": "    extends: {next}",
    "volumes_from": "    volumes_from: [{next}]",
    "network_mode": '    network_mode: "service:{next}"',
    "ipc": '    ipc: "service:{next}"',
}


def _merge_bomb(levels: int) -> str:
    """Each mapping merges the previous one twice (``<<: [*a, *a]``): 2**levels merges."""
    lines = ["x0: &a0 {k: v}"]
    for i in range(1, levels + 1):
        lines.append(f"x{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}], k{i}: v}}")
    return "\n".join(lines) + f"\nservices:\n  web:\n    image: {IMAGE}\n    labels:\n      <<: *a{levels}\n"


def _laughs(levels: int, width: int) -> str:
    lines = ['x0: &a0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + f"\nservices:\n  web:\n    image: {IMAGE}\n    command: *a{levels}\n"


def _big_anchor(size: int, aliases: int) -> str:
    body = "x" * size
    refs = "\n".join(f"      L{i}: *big" for i in range(aliases))
    return f'x: &big "{body}"\nservices:\n  web:\n    image: {IMAGE}\n    labels:\n{refs}\n'


def _default_nesting(depth: int) -> str:
    value = "${U:-" * depth + "x" + "}" * depth
    return f"services:\n  web:\n    image: {IMAGE}\n    environment:\n      A: '{value}'\n"


def structure_cases() -> Iterator[Case]:
    for depth in (600, 2_000, 20_000):
        yield Case(
            f"nest-flow-seq-{depth}",
            {"compose.yaml": "x: " + "[" * depth + "]" * depth + "\n"},
            "compose.yaml",
        )
        yield Case(
            f"nest-flow-map-{depth}",
            {"compose.yaml": "x: " + "{a: " * depth + "1" + "}" * depth},
            "compose.yaml",
        )
        block = "".join(f"{'  ' * i}k:\n" for i in range(depth)) + "  " * depth + "v\n"
        yield Case(f"nest-block-{depth}", {"compose.yaml": block}, "compose.yaml")
        yield Case(f"nest-in-service-{depth}", _svc("labels: " + "[" * depth + "]" * depth), "compose.yaml")
        yield Case(f"nest-default-{depth}", {"compose.yaml": _default_nesting(depth)}, "environment")
    for name, link in CHAIN_LINKS.items():
        for n in (1_500, 5_000):
            # A valid chain made invalid at its far end: the load must walk it all, iteratively.
            broken = _chain(n, link) + "    mem_limit: -1\n"
            yield Case(f"chain-{name}-{n}", {"compose.yaml": broken}, "mem_limit")
        yield Case(f"cycle-{name}-1500", {"compose.yaml": _cycle(1_500, link)}, "s0")
    for levels in (20, 26, 32):
        yield Case(f"merge-bomb-{levels}", {"compose.yaml": _merge_bomb(levels)}, "compose.yaml")
    for levels, width in ((9, 9), (12, 10), (30, 2)):
        yield Case(f"laughs-{levels}x{width}", {"compose.yaml": _laughs(levels, width)}, "compose.yaml")
    for size, aliases in ((1 << 20, 5_000), (1 << 16, 100_000), (1 << 22, 1_000)):
        yield Case(
            f"big-anchor-{size}x{aliases}", {"compose.yaml": _big_anchor(size, aliases)}, "compose.yaml"
        )
    doubling = "A0=xxxxxxxx\n" + "".join(f"A{i}=${{A{i - 1}}}${{A{i - 1}}}\n" for i in range(1, 40))
    yield Case("dotenv-doubling", {".env": doubling, **_svc("environment:\n  X: ${A39}")}, ".env")
    yield Case("env-file-doubling", {"web.env": doubling, **_svc("env_file: web.env")}, "web.env")
    compose_doubling = _svc("environment:\n  X: " + "${A30}" * 4)
    yield Case("compose-doubling", {".env": doubling.replace("A39", "A30"), **compose_doubling}, ".env")


def _cycle(n: int, link: str) -> str:
    """A chain whose last service points back at the first."""
    return _chain(n, link) + link.format(next="s0") + "\n"


# --- files ---------------------------------------------------------------------------------

# Where a hostile path goes: a template for the project, and what the error must name.
Files = dict[str, str | bytes | Symlink]
SOURCES: dict[str, tuple[Callable[[str], Files], str]] = {
    "env_file": (lambda p: _svc(f"env_file: {p}"), "env_file"),
    "env_file-long": (lambda p: _svc(f"env_file:\n  - path: {p}\n    required: false"), "env_file"),
    "config": (
        lambda p: _svc("configs: [c]", f"configs:\n  c:\n    file: {p}\n"),
        "configs",
    ),
    "secret": (
        lambda p: _svc("secrets: [s]", f"secrets:\n  s:\n    file: {p}\n"),
        "secrets",
    ),
    "include": (
        lambda p: {"compose.yaml": f"include: [{p}]\nservices:\n  web:\n    image: {IMAGE}\n"},
        "include",
    ),
    "extends": (
        lambda p: {
            "compose.yaml": f"services:\n  web:\n    extends:\n      file: {p}\n      service: base\n"
        },
        "extends",
    ),
    "label_file": (lambda p: _svc(f"label_file: {p}"), "label_file"),
}
# Paths every source must refuse: (id, the path as written, files to create for it).
TARGETS: list[tuple[str, str, dict[str, str | bytes | Symlink]]] = [
    ("fifo", "pipe", {"pipe": FIFO}),
    ("dev-zero", "/dev/zero", {}),
    ("dev-urandom", "/dev/urandom", {}),
    ("proc-environ", "/proc/self/environ", {}),
    ("sys", "/sys/kernel/mm/transparent_hugepage/enabled", {}),
    ("etc-passwd", "/etc/passwd", {}),
    ("dotdot", "../outside.txt", {}),
    ("symlink-out", "link", {"link": Symlink("../outside.txt")}),
    ("symlink-dev", "devlink", {"devlink": Symlink("/dev/zero")}),
    ("directory", "adir", {"adir/x": "x"}),
    ("nul", '"a\\0b"', {}),
    ("oversize", "big", {"big": b"# " + b"x" * (17 << 20) + b"\n"}),
]


def file_cases() -> Iterator[Case]:
    for source, (template, expect) in SOURCES.items():
        for target, path, extra in TARGETS:
            yield Case(f"source-{source}-{target}", {**template(path), **extra}, expect)
    for target, path, extra in TARGETS:
        if path.startswith('"') or target in ("dotdot", "symlink-out", "etc-passwd"):
            continue  # -f and --env-file name a file on purpose: only its kind and size are checked
        ok = {"ok.yaml": f"services:\n  web:\n    image: {IMAGE}\n"}
        yield Case(f"cli-file-{target}", {**extra, **ok}, path, compose=path)
        yield Case(f"cli-env-file-{target}", {**extra, **_svc("")}, path, args=("--env-file", path))
    yield Case("dotenv-fifo", {".env": FIFO, **_svc("")}, ".env")
    yield Case("dotenv-oversize", {".env": b"A=" + b"x" * (2 << 20) + b"\n", **_svc("")}, ".env")
    yield Case(
        "env-file-oversize", {"w.env": b"A=" + b"x" * (2 << 20) + b"\n", **_svc("env_file: w.env")}, "w.env"
    )
    yield Case("volume-nul", _svc('volumes: ["./a\\0b:/x"]'), "volumes")
    yield Case("working-dir-nul", _svc('working_dir: "/a\\0b"'), "working_dir")
    yield Case("build-context-nul", {"compose.yaml": 'services:\n  web:\n    build: "a\\0b"\n'}, "build")


def leak_cases() -> Iterator[Case]:
    """Contents of files and values of the environment that must never be shown."""
    bad_line = f"THIS IS NOT KEY VALUE {FILE_SECRET}\n"
    yield Case("env-line-echo", {"web.env": bad_line, **_svc("env_file: web.env")}, "web.env:1")
    yield Case(
        "env-line-echo-3", {"web.env": "A=1\nB=2\n" + bad_line, **_svc("env_file: web.env")}, "web.env:3"
    )
    yield Case("dotenv-line-echo", {".env": bad_line, **_svc("")}, ".env:1")
    yield Case("dotenv-bad-key", {".env": f"{FILE_SECRET} x=1\n", **_svc("")}, ".env:1")
    yield Case("dotenv-unterminated", {".env": f"A='{FILE_SECRET}\n", **_svc("")}, ".env:1")
    yield Case("env-required", _svc("environment:\n  X: ${NOPE:?" + "must be set}"), "environment")
    yield Case(
        "env-value-in-bad-field",
        _svc("mem_limit: ${HOSTILE_SECRET}"),
        "mem_limit",
        env={"HOSTILE_SECRET": ENV_SECRET},
    )
    yield Case(
        "env-value-in-bad-port",
        _svc("ports: ['${HOSTILE_SECRET}']"),
        "ports",
        env={"HOSTILE_SECRET": ENV_SECRET},
    )
    yield Case(
        "env-value-in-image",
        {"compose.yaml": "services:\n  web:\n    image: 'x ${HOSTILE_SECRET}'\n"},
        "image",
        env={"HOSTILE_SECRET": ENV_SECRET},
    )
    yield Case("yaml-error-echo", {"compose.yaml": f"services: [\n  {FILE_SECRET}: {{\n"}, "compose.yaml")


def semantic_cases() -> Iterator[Case]:
    """Invalid projects the planner met only after it had created something, and the like."""
    two = f"services:\n  db:\n    image: {IMAGE}\n  web:\n    image: {IMAGE}\n"
    # The image may declare the healthcheck: apply inspects it, before anything is created.
    yield Case(
        "healthy-without-healthcheck",
        {"compose.yaml": two + "    depends_on:\n      db:\n        condition: service_healthy\n"},
        "service_healthy",
        docker_only=True,
        at_execution=True,
    )
    yield Case(
        "include-unknown-top-key",
        {"compose.yaml": f"include: [inc.yaml]\n{two}", "inc.yaml": "bogus: 1\nservices: {}\n"},
        "bogus",
    )
    yield Case(
        "extends-unknown-key", {"compose.yaml": two + "    extends: {service: db, bogus: 1}\n"}, "bogus"
    )
    yield Case("unknown-top-key", {"compose.yaml": two + "bogus: 1\n"}, "bogus")
    for kind in (
        "volumes_from: ['container:gitdock-nosuch-ctr']",
        "ipc: 'container:gitdock-nosuch-ctr'",
        "network_mode: 'container:gitdock-nosuch-ctr'",
        "pid: 'container:gitdock-nosuch-ctr'",
    ):
        key = kind.split(":")[0]
        yield Case(
            f"missing-container-{key}",
            {"compose.yaml": two + f"    {kind}\n"},
            "gitdock-nosuch-ctr",
            docker_only=True,
        )
    for image in ("gitdock-test/nosuch:1", "127.0.0.1:1/nosuch:1"):
        yield Case(
            f"missing-image-{image.split('/')[0]}",
            {"compose.yaml": two + f"  later:\n    image: {image}\n    pull_policy: missing\n"},
            image,
            docker_only=True,
            at_execution=True,
        )
    yield Case(
        "never-pull-missing",
        {"compose.yaml": two + "  later:\n    image: gitdock-test/nosuch:2\n    pull_policy: never\n"},
        "gitdock-test/nosuch:2",
        docker_only=True,
    )
    yield Case(
        "external-network-missing",
        {"compose.yaml": two + "networks:\n  default:\n    name: gitdock-nosuch-net\n    external: true\n"},
        "gitdock-nosuch-net",
        docker_only=True,
    )


CASES = [*value_cases(), *structure_cases(), *file_cases(), *leak_cases(), *semantic_cases()]


# --- running -------------------------------------------------------------------------------


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def write_case(case: Case, root: Path) -> Path:
    """The case's project under ``root/proj`` (with a secret-bearing file beside it)."""
    (root / "outside.txt").write_text(f"A={FILE_SECRET}\nservices: {{}}\n")
    proj = root / "proj"
    proj.mkdir()
    for rel, content in case.files.items():
        path = proj / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == FIFO:
            os.mkfifo(path)
        elif isinstance(content, Symlink):
            path.symlink_to(content.target)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return proj


def run_case(
    case: Case, root: Path, command: str, project: str, docker_host: str
) -> subprocess.CompletedProcess[str]:
    proj = write_case(case, root)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "GITDOCK_STATE_DIR": str(root / "state"),
        "DOCKER_HOST": docker_host,
        "HOSTILE_SECRET": ENV_SECRET,
        **case.env,
    }
    argv = [GITDOCK, command, "-f", case.compose, "-p", project, *case.args]
    try:
        return subprocess.run(
            argv,
            cwd=proj,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TIMEOUT_S,
            preexec_fn=_limit_memory,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case.id}: `gitdock {command}` hung (no answer in {TIMEOUT_S}s)")


def check_refusal(case: Case, result: subprocess.CompletedProcess[str]) -> None:
    """Exit 1, one error line (or the problems block) naming what the case expects, nothing leaked."""
    out = result.stderr
    assert "Traceback" not in out, f"{case.id}: traceback\n{out[-3000:]}"
    assert "MemoryError" not in out, f"{case.id}: memory blow-up\n{out[-3000:]}"
    assert "internal error" not in out, f"{case.id}: the loader crashed\n{out[-3000:]}"
    assert result.returncode == 1, f"{case.id}: exit {result.returncode}\n{out[-3000:]}"
    for secret in (ENV_SECRET, FILE_SECRET, "root:x:0:0"):
        assert secret not in out and secret not in result.stdout, (
            f"{case.id}: leaked {secret!r}\n{out[-2000:]}"
        )
    lines = out.splitlines()
    if case.at_execution:
        report = [i for i, line in enumerate(lines) if line.startswith("error: ")]
        assert report, f"{case.id}: no error line\n{out[-2000:]}"
        progress = lines[: report[0]]  # the executor's lines, and the plan's warnings
        assert all(re.search(r"skipped|failed|^warning: ", line) for line in progress), out[-2000:]
        lines = lines[report[0] :]
    assert lines and lines[0].startswith("error: "), f"{case.id}: not an error line\n{out[-2000:]}"
    if re.match(r"error: \d+ problems", lines[0]):
        assert all(line.startswith("  ") for line in lines[1:]), f"{case.id}: stray lines\n{out[-2000:]}"
    else:
        assert len(lines) == 1, f"{case.id}: more than one line\n{out[-2000:]}"
    assert len(out) < 20_000, f"{case.id}: {len(out)} bytes of error output"
    assert case.expect in out, f"{case.id}: does not name {case.expect!r}\n{out[-2000:]}"
    assert re.search(r"[\w.-]+(:\d+)+: |\bimage\b|\bcontainer\b|\bnetwork\b", out), (
        f"{case.id}: no file:line\n{out}"
    )


def _case_id(case: Case) -> str:
    return case.id


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 300
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [c for c in CASES if not c.docker_only], ids=_case_id)
def test_plan_refuses_hostile_input(case: Case, tmp_path: Path) -> None:
    result = run_case(case, tmp_path, "plan", "hostile", "unix:///nonexistent/gitdock-no-docker.sock")
    check_refusal(case, result)


def live_objects(project: str) -> list[str]:
    """Every container, network and volume that carries ``project``'s label or name: three
    docker calls, so the corpus stays quick (``support.docker`` asks nine times)."""
    found: list[str] = []
    listings = {
        "container": ["ps", "--all", "--format", "{{.Names}} {{.Labels}}"],
        "network": ["network", "ls", "--format", "{{.Name}} {{.Labels}}"],
        "volume": ["volume", "ls", "--format", "{{.Name}} {{.Labels}}"],
    }
    for kind, argv in listings.items():
        for line in docker_cli(*argv).splitlines():
            if project in line:
                found.append(f"{kind} {line.split()[0]}")
    return found


@pytest.mark.docker
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_apply_refuses_hostile_input_and_changes_nothing(case: Case, tmp_path: Path) -> None:
    project = f"gdt-hostile-{secrets.token_hex(4)}"
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert live_objects(project) == []
    result = run_case(case, tmp_path, "apply", project, host)
    left = live_objects(project)
    if left:
        remove_project(project)
    check_refusal(case, result)
    assert left == [], f"{case.id}: live changes: {left}"
