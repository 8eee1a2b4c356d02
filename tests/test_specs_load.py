"""load_project: every supported syntax, normalised into model.Project. Pure: files only."""

from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gitdock.specs import SpecError, load_project, load_project_with_warnings, normalise_project_name
from gitdock.specs.model import (
    Condition,
    Dependency,
    Healthcheck,
    Mount,
    Network,
    NetworkAttachment,
    PortMapping,
    Position,
    Project,
    Service,
    Volume,
)


def write(directory: Path, text: str, name: str = "compose.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str, **kwargs: Any) -> Project:
    kwargs.setdefault("environ", {})
    return load_project([write(tmp_path / "app", text)], **kwargs)


def service(tmp_path: Path, body: str, extra: str = "", **kwargs: Any) -> Service:
    """Load a project whose only service is ``web`` with ``image: nginx`` plus ``body``."""
    text = "services:\n  web:\n    image: nginx\n" + textwrap.indent(textwrap.dedent(body), "    ") + extra
    return load(tmp_path, text, **kwargs).service("web")


# --- project --------------------------------------------------------------------------


def test_minimal_project_is_normalised(tmp_path: Path) -> None:
    project = load(tmp_path, "services:\n  web:\n    image: nginx\n")
    compose = str(tmp_path / "app" / "compose.yaml")
    assert project == Project(
        name="app",
        services=(Service(name="web", image="nginx", networks=(("default", NetworkAttachment()),)),),
        networks=(Network(key="default", name="app_default"),),
        working_dir=str(tmp_path / "app"),
        config_files=(compose,),
    )
    assert project.service("web").position == Position(compose, 2, 3)


def test_project_name_from_argument_wins_over_file(tmp_path: Path) -> None:
    assert load(tmp_path, "name: fromfile\nservices: {}\n", project_name="given").name == "given"


def test_project_name_from_top_level_name(tmp_path: Path) -> None:
    assert load(tmp_path, "name: fromfile\nservices: {}\n").name == "fromfile"


def test_project_name_is_interpolated(tmp_path: Path) -> None:
    assert (
        load(tmp_path, "name: ${STAGE}-shop\nservices: {}\n", environ={"STAGE": "prod"}).name == "prod-shop"
    )


def test_project_name_defaults_to_normalised_directory_name(tmp_path: Path) -> None:
    path = write(tmp_path / "My.Cool App_2", "services: {}\n")
    assert load_project([path], environ={}).name == "mycoolapp_2"


@pytest.mark.parametrize(
    ("directory", "expected"),
    [("app", "app"), ("My App", "myapp"), ("__x-y", "x-y"), ("Ünï.code", "ncode"), ("...", "")],
)
def test_normalise_project_name(directory: str, expected: str) -> None:
    assert normalise_project_name(directory) == expected


def test_config_files_and_working_dir_are_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "app", "services: {}\n")
    monkeypatch.chdir(tmp_path)
    project = load_project(["app/compose.yaml"], environ={})
    assert project.working_dir == str(tmp_path / "app")
    assert project.config_files == (str(tmp_path / "app" / "compose.yaml"),)


def test_version_is_accepted_and_ignored(tmp_path: Path) -> None:
    assert load(tmp_path, "version: 3.8\nservices: {}\n").services == ()


def test_extension_keys_are_ignored_everywhere(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        """
        x-top: {anything: [1, 2]}
        services:
          web:
            image: nginx
            x-service: 1
            healthcheck: {test: "true", x-hc: 1}
            ports: [{target: 80, x-port: 1}]
        networks:
          n: {x-net: 1}
        volumes:
          v: {x-vol: 1}
        """,
    )
    assert project.service("web").ports == (PortMapping(80),)


def test_anchors_aliases_and_merge_keys(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        """
        x-base: &base
          image: base:1
          restart: always
          environment: &env {A: "1"}
        x-more: &more
          restart: "no"
          user: nobody
        services:
          one:
            <<: [*base, *more]
            image: one:1
          two:
            image: two:1
            environment: *env
        """,
    )
    one = project.service("one")
    assert (one.image, one.restart, one.user, one.environment) == ("one:1", "always", "nobody", (("A", "1"),))
    assert project.service("two").environment == (("A", "1"),)


def test_yaml_1_2_scalars_keep_compose_meaning(tmp_path: Path) -> None:
    svc = service(tmp_path, "restart: no\nports: [22:22]\nenvironment: {FLAG: on}\n")
    assert svc.restart == "no"
    assert svc.ports == (PortMapping(22, "22"),)  # not the YAML 1.1 sexagesimal 1342
    assert svc.environment == (("FLAG", "on"),)


def test_several_files_are_merged_in_order(tmp_path: Path) -> None:
    base = write(tmp_path / "app", "services:\n  web:\n    image: nginx:1\n    user: a\n")
    override = write(tmp_path / "app", "services:\n  web:\n    image: nginx:2\n", name="override.yaml")
    project = load_project([base, override], environ={})
    assert (project.service("web").image, project.service("web").user) == ("nginx:2", "a")
    assert project.config_files == (str(base), str(override))


# --- interpolation and .env -----------------------------------------------------------


def test_values_are_interpolated_but_keys_are_not(tmp_path: Path) -> None:
    svc = service(tmp_path, "environment: {'${KEY}': '${VAL}'}\n", environ={"KEY": "k", "VAL": "v"})
    assert svc.environment == (("${KEY}", "v"),)


def test_interpolated_values_are_validated_after_substitution(tmp_path: Path) -> None:
    svc = service(tmp_path, "scale: ${N}\nports: ['${PORT}:80']\n", environ={"N": "3", "PORT": "8080"})
    assert (svc.replicas, svc.ports) == (3, (PortMapping(80, "8080"),))


def test_dotenv_beside_the_compose_file_is_used(tmp_path: Path) -> None:
    write(tmp_path / "app", "TAG=from-dotenv\n", name=".env")
    assert service(tmp_path, "user: ${TAG}\n").user == "from-dotenv"


def test_environ_overrides_dotenv(tmp_path: Path) -> None:
    write(tmp_path / "app", "TAG=from-dotenv\n", name=".env")
    assert service(tmp_path, "user: ${TAG}\n", environ={"TAG": "from-environ"}).user == "from-environ"


def test_explicit_env_file_replaces_dotenv(tmp_path: Path) -> None:
    write(tmp_path / "app", "TAG=from-dotenv\n", name=".env")
    other = write(tmp_path / "elsewhere", "TAG=from-other\n", name="prod.env")
    assert service(tmp_path, "user: ${TAG}\n", env_file=other).user == "from-other"


def test_environ_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITDOCK_TEST_TAG", "from-os")
    path = write(tmp_path / "app", "services:\n  web:\n    image: nginx:${GITDOCK_TEST_TAG}\n")
    assert load_project([path]).service("web").image == "nginx:from-os"


def test_unset_variable_warns_once_and_substitutes_blank(tmp_path: Path) -> None:
    path = write(tmp_path / "app", "services:\n  web:\n    image: nginx${TAG}\n    user: ${TAG}\n")
    project, warnings = load_project_with_warnings([path], environ={})
    assert project.service("web").image == "nginx"
    assert warnings == [
        f'{path}:3:12: services.web.image: the "TAG" variable is not set, defaulting to a blank string'
    ]


def test_load_project_logs_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gitdock.specs"):
        service(tmp_path, "user: $NOPE\n")
    assert ['the "NOPE" variable is not set' in r.getMessage() for r in caplog.records] == [True]


# --- service fields -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("command: echo 'hello world'", ("echo", "hello world")),
        ("command: [echo, hello world, 1]", ("echo", "hello world", "1")),
        ("command: []", ()),
        ("command: null", None),
        ("", None),
    ],
)
def test_command(tmp_path: Path, body: str, expected: tuple[str, ...] | None) -> None:
    assert service(tmp_path, body + "\n").command == expected


def test_entrypoint_string_is_shell_split(tmp_path: Path) -> None:
    assert service(tmp_path, 'entrypoint: /bin/sh -c "exec app"\n').entrypoint == (
        "/bin/sh",
        "-c",
        "exec app",
    )


def test_environment_map_is_sorted_and_stringified(tmp_path: Path) -> None:
    svc = service(tmp_path, "environment: {B: 2, A: true, C: 1.5, D: ''}\n")
    assert svc.environment == (("A", "true"), ("B", "2"), ("C", "1.5"), ("D", ""))


def test_environment_list_form(tmp_path: Path) -> None:
    svc = service(tmp_path, "environment: [B=x=y, A=1, EMPTY=]\n")
    assert svc.environment == (("A", "1"), ("B", "x=y"), ("EMPTY", ""))


def test_environment_without_value_is_resolved_or_none(tmp_path: Path) -> None:
    svc = service(tmp_path, "environment: [FROM_ENV, MISSING]\n", environ={"FROM_ENV": "x"})
    assert svc.environment == (("FROM_ENV", "x"), ("MISSING", None))


def test_env_files_are_merged_under_environment(tmp_path: Path) -> None:
    write(tmp_path / "app", "A=file1\nB=file1\nC=file1\n", name="one.env")
    write(tmp_path / "app" / "conf", "B=file2\nC=file2\n", name="two.env")
    svc = service(tmp_path, "env_file: [one.env, ./conf/two.env]\nenvironment: {C: environment}\n")
    assert svc.environment == (("A", "file1"), ("B", "file2"), ("C", "environment"))


def test_env_file_string_and_optional_long_form(tmp_path: Path) -> None:
    write(tmp_path / "app", "A=1\n", name="app.env")
    assert service(tmp_path, "env_file: app.env\n").environment == (("A", "1"),)
    body = "env_file: [{path: app.env}, {path: absent.env, required: false}]\n"
    assert service(tmp_path, body).environment == (("A", "1"),)


def test_labels_map_and_list(tmp_path: Path) -> None:
    assert service(tmp_path, "labels: {b: 1, a: x, c: null}\n").labels == (("a", "x"), ("b", "1"), ("c", ""))
    assert service(tmp_path, "labels: [b=2, a]\n").labels == (("a", ""), ("b", "2"))


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        ('"80"', (PortMapping(80),)),
        ("80", (PortMapping(80),)),
        ('"8080:80"', (PortMapping(80, "8080"),)),
        ('"127.0.0.1:8080:80"', (PortMapping(80, "8080", "127.0.0.1"),)),
        ('"127.0.0.1::80"', (PortMapping(80, None, "127.0.0.1"),)),
        ('"8080-8081:80-81"', (PortMapping(80, "8080"), PortMapping(81, "8081"))),
        ('"9000-9010:80"', (PortMapping(80, "9000-9010"),)),
        ('"80-81"', (PortMapping(80), PortMapping(81))),
        ('"80/udp"', (PortMapping(80, protocol="udp"),)),
        ('"[::1]:80:80"', (PortMapping(80, "80", "::1"),)),
        ('"[::1]:53:53/udp"', (PortMapping(53, "53", "::1", "udp"),)),
        ("{target: 80}", (PortMapping(80),)),
        (
            "{target: 80, published: 8080, host_ip: 10.0.0.1, protocol: udp, mode: host}",
            (PortMapping(80, "8080", "10.0.0.1", "udp"),),
        ),
        ('{target: 80, published: "8000-8010"}', (PortMapping(80, "8000-8010"),)),
    ],
)
def test_ports(tmp_path: Path, port: str, expected: tuple[PortMapping, ...]) -> None:
    assert service(tmp_path, f"ports:\n  - {port}\n").ports == expected


def test_ports_keep_file_order(tmp_path: Path) -> None:
    svc = service(tmp_path, "ports: ['9', '1', '5']\n")
    assert [p.target for p in svc.ports] == [9, 1, 5]


@pytest.mark.parametrize(
    ("volume", "expected"),
    [
        ("data:/var/lib/data", Mount("volume", "/var/lib/data", "data")),
        ("data:/var/lib/data:ro", Mount("volume", "/var/lib/data", "data", read_only=True)),
        ("data:/var/lib/data:rw", Mount("volume", "/var/lib/data", "data")),
        ("/anonymous", Mount("volume", "/anonymous")),
        ("./html:/usr/share/html", Mount("bind", "/usr/share/html", "{app}/html")),
        ("../shared:/shared:ro", Mount("bind", "/shared", "{tmp}/shared", read_only=True)),
        ("/etc/hosts:/etc/hosts:ro", Mount("bind", "/etc/hosts", "/etc/hosts", read_only=True)),
        ("~/cfg:/cfg", Mount("bind", "/cfg", "{home}/cfg")),
        (
            "{type: volume, source: data, target: /d, read_only: true}",
            Mount("volume", "/d", "data", read_only=True),
        ),
        ("{type: volume, target: /d}", Mount("volume", "/d")),
        ("{type: bind, source: ./x, target: /x}", Mount("bind", "/x", "{app}/x")),
        (
            "{type: bind, source: /x, target: /x, bind: {create_host_path: false}}",
            Mount("bind", "/x", "/x", create_host_path=False),
        ),
        ("{type: tmpfs, target: /t, tmpfs: {size: 64m}}", Mount("tmpfs", "/t", tmpfs_size=64 * 1024 * 1024)),
        ("{type: tmpfs, target: /t, tmpfs: {size: 1000}}", Mount("tmpfs", "/t", tmpfs_size=1000)),
    ],
)
def test_volumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, volume: str, expected: Mount) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    source = expected.source.format(app=tmp_path / "app", tmp=tmp_path, home=tmp_path / "home")
    extra = "volumes:\n  data:\n"
    assert service(tmp_path, f"volumes:\n  - {volume}\n", extra).mounts == (
        Mount(**{**expected.__dict__, "source": source}),
    )


def test_service_tmpfs(tmp_path: Path) -> None:
    assert service(tmp_path, "tmpfs: /run\n").mounts == (Mount("tmpfs", "/run"),)
    assert service(tmp_path, "tmpfs: [/run, '/tmp:size=1k']\n").mounts == (
        Mount("tmpfs", "/run"),
        Mount("tmpfs", "/tmp", tmpfs_size=1024),
    )


def test_networks_list_form(tmp_path: Path) -> None:
    svc = service(tmp_path, "networks: [front, back]\n", "networks: {front: {}, back: {}}\n")
    assert svc.networks == (("back", NetworkAttachment()), ("front", NetworkAttachment()))


def test_networks_map_form_with_aliases_address_and_null(tmp_path: Path) -> None:
    svc = service(
        tmp_path,
        "networks:\n  front: {aliases: [www, web2], ipv4_address: 10.0.0.5}\n  back:\n",
        "networks: {front: {}, back: {}}\n",
    )
    assert svc.networks == (
        ("back", NetworkAttachment()),
        ("front", NetworkAttachment(("www", "web2"), "10.0.0.5")),
    )


def test_service_without_networks_joins_default_and_no_alias_is_added(tmp_path: Path) -> None:
    assert service(tmp_path, "").networks == (("default", NetworkAttachment()),)


@pytest.mark.parametrize("mode", ["bridge", "host", "none", "container:abc123"])
def test_network_mode(tmp_path: Path, mode: str) -> None:
    project = load(tmp_path, f"services:\n  web:\n    image: nginx\n    network_mode: {mode}\n")
    assert (project.service("web").network_mode, project.service("web").networks) == (mode, ())
    assert project.networks == ()  # nothing uses the default network


def test_network_mode_service_adds_an_implicit_dependency(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        "services:\n  vpn: {image: vpn}\n  app: {image: app, network_mode: 'service:vpn'}\n",
    )
    assert project.service("app").depends_on == (("vpn", Dependency()),)


@pytest.mark.parametrize("policy", ["no", "always", "on-failure", "on-failure:3", "unless-stopped"])
def test_restart(tmp_path: Path, policy: str) -> None:
    assert service(tmp_path, f"restart: '{policy}'\n").restart == policy


def test_depends_on_list_and_map_are_sorted(tmp_path: Path) -> None:
    text = """
    services:
      web:
        image: nginx
        depends_on:
          db: {condition: service_healthy}
          cache: {condition: service_started, required: false}
          migrate: {condition: service_completed_successfully}
      api: {image: api, depends_on: [db, cache]}
      db: {image: db, healthcheck: {test: [CMD, pg_isready]}}
      cache: {image: cache}
      migrate: {image: migrate}
    """
    project = load(tmp_path, text)
    assert project.service("web").depends_on == (
        ("cache", Dependency(Condition.STARTED, required=False)),
        ("db", Dependency(Condition.HEALTHY)),
        ("migrate", Dependency(Condition.COMPLETED)),
    )
    assert project.service("api").depends_on == (("cache", Dependency()), ("db", Dependency()))


def test_healthcheck_string_test_is_cmd_shell_and_durations_are_nanoseconds(tmp_path: Path) -> None:
    body = "healthcheck:\n  test: curl -f http://x\n  interval: 1m30s\n  timeout: 500ms\n"
    body += "  start_period: 1.5s\n  retries: 3\n"
    assert service(tmp_path, body).healthcheck == Healthcheck(
        test=("CMD-SHELL", "curl -f http://x"),
        interval_ns=90 * 10**9,
        timeout_ns=500 * 10**6,
        retries=3,
        start_period_ns=1_500_000_000,
    )


def test_healthcheck_list_test_is_kept(tmp_path: Path) -> None:
    svc = service(tmp_path, "healthcheck: {test: [CMD, pg_isready, -U, app]}\n")
    assert svc.healthcheck == Healthcheck(test=("CMD", "pg_isready", "-U", "app"))


def test_healthcheck_disable_is_test_none(tmp_path: Path) -> None:
    assert service(tmp_path, "healthcheck: {disable: true}\n").healthcheck == Healthcheck(test=("NONE",))


def test_healthcheck_without_test_inherits_the_image_test(tmp_path: Path) -> None:
    assert service(tmp_path, "healthcheck: {interval: 10s}\n").healthcheck == Healthcheck(
        test=(), interval_ns=10**10
    )


def test_plain_string_fields(tmp_path: Path) -> None:
    svc = service(tmp_path, "user: '1000:1000'\nworking_dir: /srv\nhostname: web1\ncontainer_name: my-web\n")
    assert (svc.user, svc.working_dir, svc.hostname, svc.container_name) == (
        "1000:1000",
        "/srv",
        "web1",
        "my-web",
    )


@pytest.mark.parametrize(
    ("body", "replicas"),
    [
        ("", 1),
        ("scale: 3\n", 3),
        ("deploy: {replicas: 2}\n", 2),
        ("scale: 0\n", 0),
        ("scale: 2\ndeploy: {replicas: 2}\n", 2),
    ],
)
def test_replicas(tmp_path: Path, body: str, replicas: int) -> None:
    assert service(tmp_path, body).replicas == replicas


# --- top-level networks and volumes ---------------------------------------------------


def test_top_level_networks(tmp_path: Path) -> None:
    text = """
    services:
      web: {image: nginx, networks: [front, back, ext, named]}
    networks:
      front:
        driver: bridge
        labels: {team: web}
        ipam: {driver: default, config: [{subnet: 10.5.0.0/16}, {subnet: "fd00::/64"}]}
      back: {internal: true}
      ext: {external: true, name: shared_net}
      named: {name: exactly-this}
      unused:
    """
    project = load(tmp_path, text)
    compose = str(tmp_path / "app" / "compose.yaml")
    assert project.networks == (
        Network("back", "app_back", internal=True),
        Network("ext", "shared_net", external=True),
        Network("front", "app_front", subnets=("10.5.0.0/16", "fd00::/64"), labels=(("team", "web"),)),
        Network("named", "exactly-this"),
        Network("unused", "app_unused"),
    )
    assert project.network("front").position == Position(compose, 5, 3)


def test_external_network_without_name_uses_its_key(tmp_path: Path) -> None:
    project = load(tmp_path, "services: {}\nnetworks:\n  proxy: {external: true}\n")
    assert project.networks == (Network("proxy", "proxy", external=True),)


def test_file_defined_default_network_is_used(tmp_path: Path) -> None:
    project = load(
        tmp_path, "services:\n  web: {image: nginx}\nnetworks:\n  default: {name: shared, driver: macvlan}\n"
    )
    assert project.networks == (Network("default", "shared", driver="macvlan"),)


def test_top_level_volumes(tmp_path: Path) -> None:
    text = """
    services:
      web: {image: nginx, volumes: ["data:/d", "ext:/e"]}
    volumes:
      data:
        driver: local
        driver_opts: {type: nfs, o: "addr=10.0.0.1", size: 5}
        labels: [backup=daily]
      ext: {external: true}
      named: {name: my-volume}
    """
    project = load(tmp_path, text)
    assert project.volumes == (
        Volume(
            "data",
            "app_data",
            driver_opts=(("o", "addr=10.0.0.1"), ("size", "5"), ("type", "nfs")),
            labels=(("backup", "daily"),),
        ),
        Volume("ext", "ext", external=True),
        Volume("named", "my-volume"),
    )


def test_services_are_sorted_by_name(tmp_path: Path) -> None:
    project = load(tmp_path, "services:\n  b: {image: b}\n  a: {image: a}\n  c: {image: c}\n")
    assert [s.name for s in project.services] == ["a", "b", "c"]


def test_loading_is_pure_apart_from_reading_files(tmp_path: Path) -> None:
    before = set(os.listdir(tmp_path))
    load(tmp_path, "services:\n  web: {image: nginx, volumes: ['./not-created:/x']}\n")
    assert set(os.listdir(tmp_path)) == before | {"app"}
    assert os.listdir(tmp_path / "app") == ["compose.yaml"]


def test_spec_error_is_raised_not_a_pydantic_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError):
        load(tmp_path, "services:\n  web: {image: [1]}\n")


# -- Compose's own fixtures showed these (tests/test_compose_real_world.py) -----------------------


def test_an_env_file_takes_key_colon_value_lines_as_compose_does(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "app.env").write_text("A=1\nB: two\nC=http://x:1\n")
    project = load(tmp_path, "services:\n  web:\n    image: busybox\n    env_file: app.env\n")
    env = dict(project.services[0].environment)
    assert (env["A"], env["B"], env["C"]) == ("1", "two", "http://x:1")


def test_selinux_relabel_on_a_named_volume_is_accepted(tmp_path: Path) -> None:
    project = load(
        tmp_path, "services:\n  web:\n    image: busybox\n    volumes: [data:/data:z]\nvolumes:\n  data: {}\n"
    )
    (mount,) = project.services[0].mounts
    assert (mount.type, mount.source.endswith("data"), mount.target) == ("volume", True, "/data")


def test_two_services_with_one_container_name_are_refused(tmp_path: Path) -> None:
    text = """
        services:
          a: {image: busybox, container_name: same}
          b: {image: busybox, container_name: same}
    """
    with pytest.raises(SpecError) as caught:
        load(tmp_path, text)
    assert (
        'services.b.container_name: container_name "same" is also the container_name of service "a"'
        in str(caught.value)
    )


def test_an_optional_healthy_dependency_on_a_profiled_service_is_not_checked(tmp_path: Path) -> None:
    text = """
        services:
          web:
            image: busybox
            depends_on: {db: {condition: service_healthy, required: false}}
          db: {image: busybox, profiles: [later]}
    """
    project = load(tmp_path, text)
    assert [s.name for s in project.services] == ["web"]
