"""The agent's configuration file: validation names file:line and field; secrets never show."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitdock.agent.config import ConfigError, DriftPolicy, load_config, parse_config
from gitdock.agent.git import SourceAuthError, TokenAuth
from gitdock.agent.webhooks import Provider

GOOD = """\
state_dir: state
listen: 127.0.0.1:9100
api_token: {file: api.token}
defaults: {interval: 30s, jitter: 2s}
webhooks:
  github: {secret: {env: GH_HOOK_SECRET}}
  generic: {secret: {file: hook.secret}, header: X-My-Signature}
sources:
  - name: web
    url: https://git.example.com/org/deploy.git
    ref: main
    path: prod/web
    files: [compose.yaml, compose.prod.yaml]
    interval: 5m
    variables: {DB_PASSWORD: hunter2, REPLICAS: 3, DEBUG: false}
    auth:
      token: {token: {file: /run/secrets/git-token}}
  - name: api
    url: git@git.example.com:org/api.git
    project: api-prod
    drift: report
    auth:
      ssh: {private_key: keys/id_ed25519, known_hosts: keys/known_hosts, passphrase: {env: KEY_PASS}}
"""


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/gitdock/agent.yaml", environ or {})
    return str(info.value).splitlines()


def test_valid_config_loads_with_defaults_and_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(GOOD)
    config = load_config(path, environ={})
    assert config.state_dir == tmp_path / "state"
    assert config.listen_address == ("127.0.0.1", 9100)
    assert config.docker_host is None
    assert config.api_token is not None and config.api_token.file == tmp_path / "api.token"
    web, api = config.sources
    assert (web.ref, web.path, web.files, web.project_name) == (
        "main",
        "prod/web",
        ("compose.yaml", "compose.prod.yaml"),
        "web",
    )
    assert config.interval(web) == 300.0 and config.jitter(web) == 2.0
    assert config.interval(api) == 30.0
    assert web.variables == {"DB_PASSWORD": "hunter2", "REPLICAS": "3", "DEBUG": "false"}
    assert api.project_name == "api-prod" and api.drift is DriftPolicy.REPORT
    assert api.auth is not None and api.auth.ssh is not None
    assert api.auth.ssh.private_key == tmp_path / "keys/id_ed25519"
    assert config.webhooks[Provider.GENERIC].header == "X-My-Signature"
    assert isinstance(web.remote().auth, TokenAuth)


def test_minimal_config_uses_documented_defaults() -> None:
    config = parse_config("sources:\n  - {name: web, url: 'file:///srv/repo.git'}\n", "a.yaml", {})
    (web,) = config.sources
    assert config.listen == "127.0.0.1:9000"
    assert str(config.state_dir) == "/var/lib/gitdock"
    assert (web.ref, web.files, web.path, web.drift) == ("main", ("compose.yaml",), "", DriftPolicy.HEAL)
    assert config.interval(web) == 60.0 and config.jitter(web) == 6.0


def test_unknown_key_names_file_line_and_field() -> None:
    text = "sources:\n  - name: web\n    url: file:///srv/r.git\n    intervall: 5s\n"
    assert problems(text) == ["/etc/gitdock/agent.yaml:4:5: sources[0].intervall: unknown key `intervall`"]


def test_every_problem_is_reported_with_its_position() -> None:
    text = "listen: nowhere\nsources:\n  - name: Web!\n    url: ftp://example.com/x\n    interval: soon\n"
    found = problems(text)
    assert "/etc/gitdock/agent.yaml:1:9: listen: 'nowhere' is not HOST:PORT" in found
    assert any(
        p.startswith("/etc/gitdock/agent.yaml:3:11: sources[0].name: 'Web!' is not a valid name")
        for p in found
    )
    assert any(
        p.startswith("/etc/gitdock/agent.yaml:5:15: sources[0].interval: 'soon' is not a duration")
        for p in found
    )


def test_invalid_git_url_and_ref_are_config_errors() -> None:
    found = problems("sources:\n  - {name: web, url: 'ftp://example.com/x', ref: 'a..b'}\n")
    assert len(found) == 1 and "sources[0]" in found[0] and "unsupported scheme 'ftp'" in found[0]


def test_two_sources_deploying_one_project_are_refused() -> None:
    text = (
        "sources:\n"
        "  - {name: a, url: 'file:///r', project: shop}\n"
        "  - {name: b, url: 'file:///s', project: shop}\n"
    )
    (line,) = problems(text)
    assert "both deploy project 'shop'" in line


def test_yaml_syntax_error_names_the_line() -> None:
    (line,) = problems("sources:\n  - name: [web\n")
    assert line.startswith("/etc/gitdock/agent.yaml:3:")
    assert "invalid YAML" in line


def test_inline_secret_is_refused_without_echoing_it() -> None:
    text = (
        "webhooks:\n  github: {secret: s3cr3t-hook-value}\n"
        "sources:\n  - name: web\n    url: https://git.example.com/x.git\n"
        "    auth: {basic: {username: bob, password: pa55w0rd-value}}\n"
    )
    found = problems(text)
    joined = "\n".join(found)
    assert "s3cr3t-hook-value" not in joined and "pa55w0rd-value" not in joined
    assert (
        "/etc/gitdock/agent.yaml:2:20: webhooks.github.secret: a secret must be {file: PATH} or {env: NAME}"
        in joined
    )
    assert "sources[0].auth.basic.password: a secret must be {file: PATH} or {env: NAME}" in joined


def test_password_in_url_is_refused_and_redacted() -> None:
    (line,) = problems("sources:\n  - {name: web, url: 'https://bob:hunter2@git.example.com/x.git'}\n")
    assert "hunter2" not in line
    assert "credentials in the URL are not allowed" in line
    assert line.startswith("/etc/gitdock/agent.yaml:2:")


def test_repr_never_shows_variables_or_secret_values(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("ghp_supersecrettoken\n")
    text = (
        "sources:\n  - name: web\n    url: https://git.example.com/x.git\n"
        f"    variables: {{DB_PASSWORD: hunter2}}\n    auth: {{token: {{token: {{file: {token}}}}}}}\n"
    )
    config = parse_config(text, str(tmp_path / "agent.yaml"), {})
    (web,) = config.sources
    assert web.auth is not None and web.auth.token is not None
    assert web.auth.token.token.read() == "ghp_supersecrettoken"  # read at use time only
    for shown in (repr(config), str(config), repr(web.remote()), repr(web), config.model_dump_json()):
        assert "ghp_supersecrettoken" not in shown
    assert "hunter2" not in repr(config) and "hunter2" not in repr(web)


def test_missing_secret_file_error_names_the_file_only(tmp_path: Path) -> None:
    config = parse_config("api_token: {file: nothere}\n", str(tmp_path / "agent.yaml"), {})
    assert config.api_token is not None
    with pytest.raises(SourceAuthError, match=f"secret file {tmp_path / 'nothere'}: No such file"):
        config.api_token.read()


def test_environment_overrides_win_over_the_file() -> None:
    env = {
        "GITDOCK_LISTEN": "127.0.0.1:9555",
        "GITDOCK_STATE_DIR": "/srv/gitdock",
        "GITDOCK_DOCKER_HOST": "tcp://10.0.0.1:2375",
        "GITDOCK_API_TOKEN_FILE": "/run/secrets/api",
        "GITDOCK_INTERVAL": "15s",
    }
    config = parse_config(
        "listen: 127.0.0.1:9000\nstate_dir: /x\ndefaults: {jitter: 1s}\n", "/a/agent.yaml", env
    )
    assert config.listen == "127.0.0.1:9555"
    assert str(config.state_dir) == "/srv/gitdock"
    assert config.docker_host == "tcp://10.0.0.1:2375"
    assert config.api_token is not None and str(config.api_token.file) == "/run/secrets/api"
    assert config.defaults.interval == 15.0 and config.defaults.jitter == 1.0


def test_bad_environment_override_is_named_as_such() -> None:
    (line,) = problems("listen: 127.0.0.1:9000\n", {"GITDOCK_LISTEN": "bogus"})
    assert line == "$GITDOCK_LISTEN: listen: 'bogus' is not HOST:PORT"


def test_variables_see_pass_env_but_not_the_agent_environment() -> None:
    text = "sources:\n  - {name: web, url: 'file:///r', variables: {A: '1'}, pass_env: [TZ, MISSING]}\n"
    (web,) = parse_config(text, "a.yaml", {}).sources
    assert web.environ({"TZ": "UTC", "GITDOCK_API_TOKEN": "x", "A": "from-env"}) == {"TZ": "UTC", "A": "1"}


def test_the_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "agent" / "agent.yaml"
    config = load_config(example, environ={})
    (webapp,) = config.sources
    assert (webapp.name, webapp.path, webapp.url) == ("webapp", "webapp", "file:///srv/git/deploy.git")
    assert config.state_dir == example.parent / "state"
