"""Problems in Compose files: each names the field path and file:line:column, and all are reported."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gitdock.specs import SpecError, SpecProblem, load_project, load_project_with_warnings
from gitdock.specs.errors import PermanentError


def problems(tmp_path: Path, text: str, env_file: Path | None = None) -> list[str]:
    """Load ``text`` as app/compose.yaml; return the problems as "line:col: path: message"."""
    directory = tmp_path / "app"
    directory.mkdir(exist_ok=True)
    path = directory / "compose.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    with pytest.raises(SpecError) as exc:
        load_project([path], environ={}, env_file=env_file)
    return [str(p).removeprefix(f"{path}:") for p in exc.value.problems]


def one(tmp_path: Path, text: str) -> str:
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


def test_spec_error_is_permanent_and_renders_file_line_column(tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text("services:\n  web: {image: nginx, ports: ['80:80:80']}\n")
    with pytest.raises(SpecError) as exc:
        load_project([path], environ={})
    assert isinstance(exc.value, PermanentError)
    assert (
        str(exc.value)
        == f'{path}:2:31: services.web.ports[0]: "80:80:80" is not a port mapping: "80" is not an IP address'
    )


def test_yaml_parse_error_uses_the_parser_mark(tmp_path: Path) -> None:
    assert one(tmp_path, "services:\n  web:\n    image: [nginx\n") == (
        "4:1: invalid YAML: while parsing a flow sequence, did not find expected ',' or ']'"
    )


def test_yaml_bad_indentation(tmp_path: Path) -> None:
    assert one(tmp_path, "services:\n  web:\n    image: nginx\n   user: x\n").startswith("4:4: invalid YAML:")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as exc:
        load_project([missing], environ={})
    assert exc.value.problems == [
        SpecProblem(f"Compose file {missing}: not found", "", exc.value.problems[0].position)
    ]
    assert str(exc.value.problems[0].position) == f"{missing}:1:1"


def test_empty_file(tmp_path: Path) -> None:
    assert one(tmp_path, "# nothing\n") == f"1:1: Compose file {tmp_path / 'app' / 'compose.yaml'} is empty"


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    assert one(tmp_path, "- a\n- b\n").endswith("is not a mapping")


def test_duplicate_key(tmp_path: Path) -> None:
    text = """
    services:
      web:
        image: nginx
        image: httpd
    """
    assert one(tmp_path, text) == "4:5: services.web.image: duplicate key `image` (first defined on line 3)"


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    text = """
    services:
      web:
        image: nginx
        enviroment: {A: 1}
    """
    assert (
        one(tmp_path, text)
        == "4:5: services.web.enviroment: unknown key `enviroment`, did you mean `environment`?"
    )


def test_unknown_key_without_suggestion(tmp_path: Path) -> None:
    assert (
        one(tmp_path, "services:\n  web:\n    image: nginx\n    zzzz: 1\n")
        == "4:5: services.web.zzzz: unknown key `zzzz`"
    )


def test_unknown_nested_key(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: nginx\n    healthcheck: {test: x, intervall: 5s}\n"
    assert one(tmp_path, text) == (
        "4:28: services.web.healthcheck.intervall: unknown key `intervall`, did you mean `interval`?"
    )


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("gpus", 'expected "all" or a list of device requests, got a mapping'),
        ("blkio_config", "expected a mapping, got a list"),
        ("post_start", "expected a list, got a mapping"),
        ("use_api_socket", "expected true or false, got a mapping"),
    ],
)
def test_a_wrong_shape_of_a_newer_service_key_is_refused(tmp_path: Path, key: str, message: str) -> None:
    value = "[]" if key == "blkio_config" else "{x: 1}"
    found = one(tmp_path, f"services:\n  web:\n    image: nginx\n    {key}: {value}\n")
    assert found.endswith(f"services.web.{key}: {message}"), found


def warnings_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "compose.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return load_project_with_warnings([path], environ={})[1]


def test_a_swarm_only_deploy_key_loads_with_a_warning(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: nginx\n    deploy:\n      placement: {constraints: []}\n"
    assert warnings_of(tmp_path, text) == [
        "services.web.deploy.placement has no effect on a plain Docker host (Swarm only)"
    ]


def test_top_level_models_load_with_a_warning(tmp_path: Path) -> None:
    assert warnings_of(tmp_path, "services: {}\nmodels: {m: {model: ai/x}}\n") == [
        "models needs Docker Model Runner, which gitdock does not drive; it has no effect on this target"
    ]


def test_a_refused_key_names_its_reason(tmp_path: Path) -> None:
    text = (
        "services:\n  web:\n    image: nginx\n    volumes:\n"
        "      - {type: volume, source: d, target: /d, volume: {subpath: x}}\nvolumes: {d: {}}\n"
    )
    found = one(tmp_path, text)
    assert found.startswith(
        "5:56: services.web.volumes[0].volume.subpath: volume.subpath needs Docker Engine API 1.45"
    ), found


def test_build_context_outside_the_project_is_refused(tmp_path: Path) -> None:
    assert one(tmp_path, "services:\n  web:\n    build: ../other\n") == (
        "3:12: services.web.build: ../other: the build context is outside the project directory "
        f"{tmp_path}/app"
    )


def test_missing_image(tmp_path: Path) -> None:
    assert (
        one(tmp_path, "services:\n  web:\n    user: x\n")
        == "3:5: services.web: `image` or `build` is required"
    )


@pytest.mark.parametrize(
    ("port", "message"),
    [
        ('"80:80:80"', '"80:80:80" is not a port mapping: "80" is not an IP address'),
        ('"1:2:3:4"', '"1:2:3:4" is not a port mapping'),
        ('"http"', '"http" is not a port mapping'),
        ('"70000"', '"70000" is not a port mapping: ports are 1-65535'),
        ('"80/icmp"', '"80/icmp" is not a port mapping: unknown protocol "icmp"'),
        ('"8080:80-81"', '"8080:80-81" is not a port mapping: the port ranges differ in length'),
        ("true", "expected a port string or a mapping, got a boolean"),
    ],
)
def test_malformed_port(tmp_path: Path, port: str, message: str) -> None:
    text = f"services:\n  web:\n    image: nginx\n    ports:\n      - '1'\n      - {port}\n"
    assert one(tmp_path, text) == f"6:9: services.web.ports[1]: {message}"


def test_long_port_wrong_type(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: nginx\n    ports:\n      - target: http\n"
    assert (
        one(tmp_path, text)
        == '5:17: services.web.ports[0].target: expected an integer, got the string "http"'
    )


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ('"data:rel"', '"data:rel" is not a volume mapping: the container path must be absolute'),
        ('"a:/b:c:d"', '"a:/b:c:d" is not a volume mapping (expected [SOURCE:]TARGET[:MODE])'),
        ('"./x:/y:nocopy"', '"./x:/y:nocopy": volume option "nocopy" applies to volumes only'),
        ('"./x:/y:rx"', '"./x:/y:rx" is not a volume mapping: unknown mode "rx"'),
        ("{type: bind, target: /x}", "a bind mount needs a source"),
        (
            "{type: npipe, source: x, target: /x}",
            "volume type npipe is a Windows named pipe; it does not exist on a Linux Docker host",
        ),
    ],
)
def test_malformed_volume(tmp_path: Path, volume: str, message: str) -> None:
    text = f"services:\n  web:\n    image: nginx\n    volumes:\n      - {volume}\n"
    found = one(tmp_path, text)
    # The long syntax's type problem is reported at the type field; everything else at the entry.
    path = "services.web.volumes[0].type" if "npipe" in volume else "services.web.volumes[0]"
    column = 16 if "npipe" in volume else 9
    assert found == f"5:{column}: {path}: {message}"


def test_depends_on_undefined_service(tmp_path: Path) -> None:
    text = """
    services:
      web:
        image: nginx
        depends_on: [database]
      db: {image: postgres}
      datadb: {image: postgres}
    """
    assert one(tmp_path, text) == (
        '4:18: services.web.depends_on[0]: depends on undefined service "database", did you mean datadb?'
    )


def test_depends_on_undefined_service_map_form(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: nginx\n    depends_on:\n      cache: {condition: service_started}\n"
    assert one(tmp_path, text) == '5:7: services.web.depends_on.cache: depends on undefined service "cache"'


def test_depends_on_bad_condition(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: nginx\n    depends_on: {web2: {condition: ready}}\n"
    text += "  web2: {image: x}\n"
    assert one(tmp_path, text) == (
        "4:36: services.web.depends_on.web2.condition: expected 'service_started', 'service_healthy' or "
        "'service_completed_successfully', got the string \"ready\""
    )


def test_dependency_cycle_is_named(tmp_path: Path) -> None:
    text = """
    services:
      web: {image: a, depends_on: [api]}
      api: {image: b, depends_on: [db]}
      db: {image: c, depends_on: [web]}
    """
    assert one(tmp_path, text) == "3:19: services.api.depends_on: dependency cycle: api -> db -> web -> api"


def test_self_dependency(tmp_path: Path) -> None:
    text = "services:\n  web: {image: a, depends_on: [web]}\n"
    assert one(tmp_path, text) == '2:32: services.web.depends_on[0]: service "web" depends on itself'


def test_wrong_types(tmp_path: Path) -> None:
    text = """
    services:
      web:
        image: [nginx]
        environment: 5
        scale: many
        user: {name: x}
        labels: [1, {a: b}]
        healthcheck: {retries: -1}
        networks: web
    """
    assert problems(tmp_path, text) == [
        "3:12: services.web.image: expected a string, got a list",
        "4:18: services.web.environment: expected a mapping or a list of KEY=VALUE strings, got a number",
        '5:12: services.web.scale: expected an integer, got the string "many"',
        "6:11: services.web.user: expected a string, got a mapping",
        "7:17: services.web.labels[1]: expected a string, got a mapping",
        "8:28: services.web.healthcheck.retries: must be >= 0, got -1",
        '9:15: services.web.networks: expected a list of network names or a mapping, got the string "web"',
    ]


def test_service_must_be_a_mapping(tmp_path: Path) -> None:
    assert one(tmp_path, "services:\n  web:\n") == "2:7: services.web: expected a mapping, got null"


def test_network_mode_of_unknown_service(tmp_path: Path) -> None:
    text = "services:\n  web: {image: a, network_mode: 'service:vpm'}\n  vpn: {image: b}\n"
    assert one(tmp_path, text) == (
        '2:33: services.web.network_mode: network_mode refers to undefined service "vpm", did you mean vpn?'
    )


def test_network_mode_is_validated(tmp_path: Path) -> None:
    text = "services:\n  web: {image: a, network_mode: bridged}\n"
    assert one(tmp_path, text) == (
        '2:33: services.web.network_mode: "bridged" is not a network mode '
        "(bridge, host, none, service:NAME, container:NAME)"
    )


def test_network_mode_with_networks(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: a\n    network_mode: host\n    networks: [default]\n"
    assert (
        one(tmp_path, text) == "5:5: services.web.networks: network_mode and networks cannot be used together"
    )


def test_undeclared_network(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: a\n    networks: [front]\nnetworks:\n  fronts: {}\n"
    assert one(tmp_path, text) == (
        '4:16: services.web.networks[0]: service "web" refers to undefined network front, '
        "did you mean fronts?"
    )


def test_undeclared_named_volume(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: a\n    volumes: ['data:/d', './bind:/b', '/anon']\n"
    assert (
        one(tmp_path, text) == '4:15: services.web.volumes[0]: service "web" refers to undefined volume data'
    )


def test_container_name_with_several_replicas(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: a\n    container_name: web\n    deploy: {replicas: 3}\n"
    assert one(tmp_path, text) == (
        "4:21: services.web.container_name: container_name cannot be set when the service has 3 replicas"
    )


def test_scale_and_replicas_disagree(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: a\n    scale: 2\n    deploy: {replicas: 3}\n"
    assert one(tmp_path, text) == "4:12: services.web.scale: scale (2) and deploy.replicas (3) disagree"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("services:\n  'bad name!': {image: a}\n", 'services["bad name!"]'),
        ("services: {}\nnetworks:\n  'bad name!': {}\n", 'networks["bad name!"]'),
        ("services: {}\nvolumes:\n  'bad name!': {}\n", 'volumes["bad name!"]'),
    ],
)
def test_invalid_names_of_services_networks_and_volumes(tmp_path: Path, text: str, path: str) -> None:
    line = text.count("\n")
    assert (
        one(tmp_path, text)
        == f'{line}:3: {path}: "bad name!" is not a valid name (letters, digits, "_", "." and "-")'
    )


def test_invalid_project_name_in_file(tmp_path: Path) -> None:
    assert one(tmp_path, "name: My Project\nservices: {}\n") == (
        '1:7: name: "My Project" is not a valid project name: use lowercase letters, digits, "_" and "-", '
        "starting with a letter or digit"
    )


def test_required_variable_missing(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: 'nginx:${TAG:?set TAG to deploy}'\n"
    assert (
        one(tmp_path, text)
        == "3:12: services.web.image: required variable TAG is missing a value: set TAG to deploy"
    )


def test_invalid_interpolation(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: nginx\n    command: echo ${\n"
    assert one(tmp_path, text) == (
        '4:14: services.web.command: invalid interpolation format in "echo ${": you may need to escape any $ '
        "with another $"
    )


def test_missing_env_file_is_reported_at_its_entry(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: a\n    env_file: [ok.env, missing.env]\n"
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "ok.env").write_text("A=1\n")
    assert one(tmp_path, text) == (
        f"4:24: services.web.env_file[1]: env file {tmp_path / 'app' / 'missing.env'}: not found"
    )


def test_explicit_env_file_missing(tmp_path: Path) -> None:
    found = problems(tmp_path, "services: {}\n", env_file=tmp_path / "prod.env")
    assert found == [f"{tmp_path / 'prod.env'}:1:1: env file {tmp_path / 'prod.env'}: not found"]


def test_external_network_with_driver(tmp_path: Path) -> None:
    text = "services: {}\nnetworks:\n  ext: {external: true, driver: overlay}\n"
    assert one(tmp_path, text) == "3:8: networks.ext: an external network cannot set driver"


def test_ten_errors_give_ten_problems(tmp_path: Path) -> None:
    text = """
    services:
      web:
        image: nginx
        enviroment: {}
        gpus: some
        ports: ["80:80:80"]
        restart: sometimes
        depends_on: [nope]
        volumes: [undeclared:/x]
      api:
        image: [x]
        healthcheck: {interval: soon}
        network_mode: host
        networks: [default]
      cycle1: {image: x, depends_on: [cycle2]}
      cycle2: {image: x, depends_on: [cycle1]}
    """
    found = problems(tmp_path, text)
    assert len(found) == 10, "\n".join(found)
    assert [p.split(":")[0] for p in found] == ["4", "5", "6", "7", "8", "9", "11", "12", "14", "15"]
