"""Issue 3, Compose compatibility: the rest of the service attributes, configs and secrets,
profiles, extends, include and the Specification's merge rules for several files."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from gitdock.runtime.desired import desired_container
from gitdock.specs import SpecError, load_project
from gitdock.specs.model import Project, Service


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def load(tmp_path: Path, text: str, *more: str, **kwargs: Any) -> Project:
    files = [write(tmp_path / "app" / "compose.yaml", text)]
    files += [write(tmp_path / "app" / f"override{i}.yaml", t) for i, t in enumerate(more)]
    kwargs.setdefault("environ", {})
    return load_project(files, **kwargs)


def web(tmp_path: Path, body: str, **kwargs: Any) -> Service:
    text = "services:\n  web:\n    image: nginx\n" + textwrap.indent(textwrap.dedent(body), "    ")
    return load(tmp_path, text, **kwargs).service("web")


def problems(tmp_path: Path, text: str, **kwargs: Any) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load(tmp_path, text, **kwargs)
    return [f"{p.path}: {p.message}" for p in exc.value.problems]


def body(tmp_path: Path, text: str) -> dict[str, Any]:
    project = load(tmp_path, text)
    return desired_container(project, project.services[0], 1).create_body


# --- plain Docker settings --------------------------------------------------------------


def test_security_settings_reach_the_host_config(tmp_path: Path) -> None:
    host = body(
        tmp_path,
        """
        services:
          web:
            image: nginx
            cap_add: [NET_ADMIN]
            cap_drop: [ALL]
            privileged: true
            read_only: true
            security_opt: ["no-new-privileges:true"]
        """,
    )["HostConfig"]
    assert (host["CapAdd"], host["CapDrop"], host["Privileged"], host["ReadonlyRootfs"]) == (
        ["NET_ADMIN"],
        ["ALL"],
        True,
        True,
    )
    assert host["SecurityOpt"] == ["no-new-privileges:true"]


def test_process_settings_reach_config_and_host_config(tmp_path: Path) -> None:
    created = body(
        tmp_path,
        """
        services:
          web:
            image: nginx
            init: true
            tty: true
            stdin_open: true
            stop_signal: SIGINT
            stop_grace_period: 1m30s
            shm_size: 64m
        """,
    )
    assert (created["Tty"], created["OpenStdin"], created["StopSignal"], created["StopTimeout"]) == (
        True,
        True,
        "SIGINT",
        90,
    )
    assert (created["HostConfig"]["Init"], created["HostConfig"]["ShmSize"]) == (True, 64 << 20)


def test_stop_grace_period_is_the_stop_timeout(tmp_path: Path) -> None:
    project = load(tmp_path, "services:\n  web:\n    image: nginx\n    stop_grace_period: 45s\n")
    assert desired_container(project, project.services[0], 1).stop_timeout == 45


def test_dns_hosts_and_expose(tmp_path: Path) -> None:
    created = body(
        tmp_path,
        """
        services:
          web:
            image: nginx
            dns: 10.0.0.53
            dns_search: [example.com]
            dns_opt: [ndots:2]
            extra_hosts: {db: 10.0.0.2}
            expose: ["81", 82/udp, "90-91"]
        """,
    )
    host = created["HostConfig"]
    assert (host["Dns"], host["DnsSearch"], host["DnsOptions"]) == (
        ["10.0.0.53"],
        ["example.com"],
        ["ndots:2"],
    )
    assert host["ExtraHosts"] == ["db:10.0.0.2"]
    assert set(created["ExposedPorts"]) == {"81/tcp", "82/udp", "90/tcp", "91/tcp"}


def test_extra_hosts_list_accepts_both_separators(tmp_path: Path) -> None:
    svc = web(tmp_path, 'extra_hosts: ["a=10.0.0.1", "b:10.0.0.2", "c=::1"]\n')
    assert dict(svc.extra)["extra_hosts"] == ["a:10.0.0.1", "b:10.0.0.2", "c:::1"]


def test_resources_from_deploy_and_legacy_keys(tmp_path: Path) -> None:
    host = body(
        tmp_path,
        """
        services:
          web:
            image: nginx
            cpu_shares: 512
            deploy:
              resources:
                limits: {cpus: "0.5", memory: 64m, pids: 100}
                reservations: {memory: 32m}
        """,
    )["HostConfig"]
    assert (host["NanoCpus"], host["Memory"], host["PidsLimit"], host["MemoryReservation"]) == (
        500_000_000,
        64 << 20,
        100,
        32 << 20,
    )
    assert host["CpuShares"] == 512


def test_legacy_and_deploy_limits_that_disagree_are_a_problem(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: nginx\n    mem_limit: 1g\n"
    text += "    deploy: {resources: {limits: {memory: 2g}}}\n"
    (found,) = problems(tmp_path, text)
    assert found == (
        "services.web.mem_limit: mem_limit (1073741824) and deploy.resources.limits.memory (2147483648) "
        "disagree"
    )


@pytest.mark.parametrize(
    ("policy", "restart"),
    [
        ("{condition: none}", "no"),
        ("{condition: on-failure, max_attempts: 3}", "on-failure:3"),
        ("{}", "always"),
    ],
)
def test_deploy_restart_policy_wins_over_restart(tmp_path: Path, policy: str, restart: str) -> None:
    assert (
        web(tmp_path, f"restart: unless-stopped\ndeploy: {{restart_policy: {policy}}}\n").restart == restart
    )


def test_logging_ulimits_and_sysctls(tmp_path: Path) -> None:
    host = body(
        tmp_path,
        """
        services:
          web:
            image: nginx
            logging: {driver: json-file, options: {max-size: 1m}}
            ulimits: {nproc: 512, nofile: {soft: 1024, hard: 2048}}
            sysctls: [net.core.somaxconn=1024]
        """,
    )["HostConfig"]
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m"}}
    assert host["Ulimits"] == [
        {"Name": "nofile", "Soft": 1024, "Hard": 2048},
        {"Name": "nproc", "Soft": 512, "Hard": 512},
    ]
    assert host["Sysctls"] == {"net.core.somaxconn": "1024"}


def test_volumes_from_and_links_name_the_containers_and_add_dependencies(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        """
        services:
          web:
            image: nginx
            volumes_from: ["data:ro"]
            links: ["db:database"]
          data: {image: busybox}
          db: {image: postgres, container_name: the-db}
        """,
        project_name="shop",
    )
    svc = project.service("web")
    created = desired_container(project, svc, 1).create_body
    assert created["HostConfig"]["VolumesFrom"] == ["shop-data-1:ro"]
    assert created["NetworkingConfig"]["EndpointsConfig"]["shop_default"]["Links"] == ["the-db:database"]
    assert [name for name, _ in svc.depends_on] == ["data", "db"]


def test_namespace_sharing_with_an_undefined_service_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, "services:\n  web:\n    image: nginx\n    pid: service:db\n") == [
        'services.web.pid: pid refers to undefined service "db"'
    ]


def test_field_hashes_name_the_compose_key_not_the_api_path(tmp_path: Path) -> None:
    project = load(tmp_path, "services:\n  web:\n    image: nginx\n    cap_add: [ALL]\n    cpus: 1\n")
    fields = dict(desired_container(project, project.services[0], 1).field_hashes)
    assert {"cap_add", "cpus"} <= set(fields)
    assert "HostConfig" not in fields


def test_pull_policy_platform_and_profiles_are_kept(tmp_path: Path) -> None:
    svc = web(tmp_path, "pull_policy: never\nplatform: linux/amd64\nprofiles: [debug]\n", profiles=["debug"])
    assert (svc.pull_policy, svc.platform, svc.profiles) == ("never", "linux/amd64", ("debug",))


def test_pull_policy_build_needs_build(tmp_path: Path) -> None:
    (found,) = problems(tmp_path, "services:\n  web:\n    image: nginx\n    pull_policy: build\n")
    assert "pull_policy build needs build:" in found


# --- configs and secrets ----------------------------------------------------------------

FILES = """
services:
  web:
    image: nginx
    configs:
      - app
      - {source: motd, target: etc/motd, mode: 0440, uid: "1000", gid: "1000"}
    secrets: [token, {source: key, target: api}]
configs:
  app: {file: ./app.conf}
  motd: {content: "hello ${WHO}"}
secrets:
  token: {environment: TOKEN}
  key: {file: ./key.txt}
"""


def load_files(tmp_path: Path, env_value: str = "t0", app: str = "a=1\n") -> Service:
    return load_files_project(tmp_path, env_value, app).service("web")


def load_files_project(tmp_path: Path, env_value: str = "t0", app: str = "a=1\n") -> Project:
    write(tmp_path / "app" / "app.conf", app)
    write(tmp_path / "app" / "key.txt", "k\n")
    return load(tmp_path, FILES, environ={"TOKEN": env_value, "WHO": "you"})


def test_configs_and_secrets_get_compose_default_targets(tmp_path: Path) -> None:
    files = {f.name: f for f in load_files(tmp_path).files}
    assert {n: f.target for n, f in files.items()} == {
        "app": "/app",
        "motd": "/etc/motd",
        "token": "/run/secrets/token",
        "key": "/run/secrets/api",
    }


def test_file_sources_are_bind_mounted_and_others_carry_content(tmp_path: Path) -> None:
    files = {f.name: f for f in load_files(tmp_path).files}
    assert files["app"].source == str(tmp_path / "app" / "app.conf") and files["app"].content is None
    assert files["motd"].content == b"hello you"
    assert (files["motd"].mode, files["motd"].uid, files["motd"].gid) == (0o440, "1000", "1000")
    assert files["token"].content == b"t0"
    assert (files["token"].mode, files["token"].uid) == (0o444, "0")


def test_file_sources_become_read_only_binds(tmp_path: Path) -> None:
    write(tmp_path / "app" / "app.conf", "a=1\n")
    write(tmp_path / "app" / "key.txt", "k\n")
    project = load(tmp_path, FILES, environ={"TOKEN": "t", "WHO": "w"})
    binds = desired_container(project, project.services[0], 1).create_body["HostConfig"]["Binds"]
    assert binds == [f"{tmp_path}/app/app.conf:/app:ro", f"{tmp_path}/app/key.txt:/run/secrets/api:ro"]


@pytest.mark.parametrize(
    ("changed", "field"), [({"env_value": "t1"}, "secrets"), ({"app": "a=2\n"}, "configs")]
)
def test_a_changed_content_changes_the_config_hash(
    tmp_path: Path, changed: dict[str, str], field: str
) -> None:
    before = load_files_project(tmp_path)
    after = load_files_project(tmp_path, **changed)
    old = dict(desired_container(before, before.services[0], 1).field_hashes)
    new = dict(desired_container(after, after.services[0], 1).field_hashes)
    assert [k for k in new if new[k] != old.get(k)] == [field]


def test_config_and_secret_problems_are_all_reported(tmp_path: Path) -> None:
    text = """
    services:
      web:
        image: nginx
        configs: [nope]
        secrets: [gone, unset]
    configs:
      both: {file: ./x, content: y}
    secrets:
      gone: {file: ./missing.txt}
      unset: {environment: NOT_SET}
    """
    found = problems(tmp_path, text)
    assert (
        "configs.both: a config needs exactly one of file, environment or content (found content, file)"
        in found
    )
    assert 'services.web.configs[0]: service "web" refers to undefined config nope' in found
    assert any(
        p.startswith("secrets.gone.file: secret file ") and p.endswith("missing.txt: not found")
        for p in found
    )
    assert "secrets.unset.environment: the variable NOT_SET is not set" in found


def test_secrets_have_no_content_source(tmp_path: Path) -> None:
    text = "services: {}\nsecrets:\n  s: {content: x}\n"
    assert "secrets.s.content: unknown key `content`" in problems(tmp_path, text)


# --- profiles ---------------------------------------------------------------------------

PROFILES = """
services:
  web: {image: nginx}
  test_lib: {image: t, profiles: [test]}
  coverage_lib: {image: c, depends_on: [test_lib], profiles: [test]}
  debug_lib: {image: d, depends_on: [test_lib], profiles: [debug]}
"""


@pytest.mark.parametrize(
    ("active", "services"),
    [
        ([], ["web"]),
        (["test"], ["coverage_lib", "test_lib", "web"]),
        (["*"], ["coverage_lib", "debug_lib", "test_lib", "web"]),
    ],
)
def test_profiles_enable_services(tmp_path: Path, active: list[str], services: list[str]) -> None:
    assert [s.name for s in load(tmp_path, PROFILES, profiles=active).services] == services


def test_compose_profiles_variable_is_read(tmp_path: Path) -> None:
    project = load(tmp_path, PROFILES, environ={"COMPOSE_PROFILES": "test,other"})
    assert [s.name for s in project.services] == ["coverage_lib", "test_lib", "web"]


def test_depending_on_a_disabled_service_is_a_problem(tmp_path: Path) -> None:
    assert problems(tmp_path, PROFILES, profiles=["debug"]) == [
        'services.debug_lib: needs service "test_lib", which is not enabled (activate profile test)'
    ]


# --- several files ----------------------------------------------------------------------


def test_override_files_follow_the_merge_rules(tmp_path: Path) -> None:
    base = """
    services:
      web:
        image: nginx
        command: [a, b]
        environment: [A=1, B=2]
        ports: ["8080:80"]
        volumes: ["./a:/data", "./x:/x"]
        dns: [1.1.1.1]
    """
    override = """
    services:
      web:
        command: [c]
        environment: {B: "3", C: "4"}
        ports: ["8080:80", "9090:90"]
        volumes: ["./b:/data"]
        dns: [1.1.1.1, 8.8.8.8]
    """
    svc = load(tmp_path, base, override).service("web")
    assert svc.command == ("c",)
    assert svc.environment == (("A", "1"), ("B", "3"), ("C", "4"))
    assert [(p.published, p.target) for p in svc.ports] == [("8080", 80), ("9090", 90)]
    assert {m.target: m.source.rsplit("/", 1)[-1] for m in svc.mounts} == {"/data": "b", "/x": "x"}
    assert dict(svc.extra)["dns"] == ["1.1.1.1", "8.8.8.8"]


def test_reset_tag_removes_a_value(tmp_path: Path) -> None:
    base = "services:\n  web:\n    image: nginx\n    ports: ['80:80']\n    user: a\n"
    override = "services:\n  web:\n    ports: !reset []\n    user: !reset null\n"
    svc = load(tmp_path, base, override).service("web")
    assert (svc.ports, svc.user) == ((), None)


def test_override_tag_replaces_instead_of_merging(tmp_path: Path) -> None:
    base = "services:\n  web:\n    image: nginx\n    environment: {A: '1'}\n    ports: ['80:80']\n"
    override = "services:\n  web:\n    environment: !override {B: '2'}\n    ports: !override ['81:81']\n"
    svc = load(tmp_path, base, override).service("web")
    assert svc.environment == (("B", "2"),)
    assert [p.target for p in svc.ports] == [81]


def test_a_problem_in_an_override_file_names_that_file(tmp_path: Path) -> None:
    base = "services:\n  web:\n    image: nginx\n    ports: ['80:80']\n"
    override = "services:\n  web:\n    ports: ['99999:80']\n"
    with pytest.raises(SpecError) as exc:
        load(tmp_path, base, override)
    (problem,) = exc.value.problems
    assert problem.path == "services.web.ports[1]"
    assert problem.position is not None
    assert (Path(problem.position.file).name, problem.position.line) == ("override0.yaml", 3)


# --- extends and include ------------------------------------------------------------------


def test_extends_a_service_of_the_same_file(tmp_path: Path) -> None:
    text = """
    services:
      base: {image: nginx, environment: {A: "1"}, cap_add: [NET_ADMIN]}
      web:
        extends: base
        environment: {B: "2"}
    """
    svc = load(tmp_path, text).service("web")
    assert (svc.image, svc.environment) == ("nginx", (("A", "1"), ("B", "2")))
    assert dict(svc.extra)["cap_add"] == ["NET_ADMIN"]


def test_extends_another_file_resolves_its_paths_against_that_file(tmp_path: Path) -> None:
    write(
        tmp_path / "common" / "base.yaml",
        "services:\n  app:\n    image: nginx\n    volumes: ['./data:/data']\n",
    )
    text = "services:\n  web:\n    extends: {file: ../common/base.yaml, service: app}\n"
    svc = load(tmp_path, text, root=tmp_path).service("web")
    assert svc.mounts[0].source == str(tmp_path / "common" / "data")


def test_extends_cycle_and_undefined_base_are_problems(tmp_path: Path) -> None:
    text = """
    services:
      a: {image: x, extends: b}
      b: {image: x, extends: a}
      c: {image: x, extends: nope}
    """
    found = problems(tmp_path, text)
    assert any(p.endswith(".extends: extends cycle: a -> b -> a") for p in found)
    assert 'services.c.extends: extends undefined service "nope"' in found


def test_include_adds_the_included_resources(tmp_path: Path) -> None:
    write(
        tmp_path / "db" / "compose.yaml",
        "services:\n  db:\n    image: postgres\n    env_file: db.env\nvolumes:\n  pg: {}\n",
    )
    write(tmp_path / "db" / "db.env", "PGUSER=app\n")
    project = load(
        tmp_path,
        "include: [../db/compose.yaml]\nservices:\n  web: {image: nginx, depends_on: [db]}\n",
        root=tmp_path,
    )
    assert [s.name for s in project.services] == ["db", "web"]
    assert project.service("db").environment == (("PGUSER", "app"),)
    assert [v.key for v in project.volumes] == ["pg"]


def test_include_conflict_is_a_problem(tmp_path: Path) -> None:
    write(tmp_path / "db" / "compose.yaml", "services:\n  web:\n    image: other\n")
    (found,) = problems(
        tmp_path, "include: [../db/compose.yaml]\nservices:\n  web: {image: nginx}\n", root=tmp_path
    )
    assert found.startswith("services.web: service web is defined here and in the included file ")


# --- build ------------------------------------------------------------------------------


def test_ignore_build_deploys_the_image(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: nginx\n    build: .\n"
    assert load(tmp_path, text, ignore_build=True).service("web").image == "nginx"


def test_ignore_build_still_builds_a_service_without_an_image(tmp_path: Path) -> None:
    svc = load(tmp_path, "services:\n  web:\n    build: .\n", ignore_build=True).service("web")
    assert svc.build is not None and svc.image == f"{svc.build.repository}"
