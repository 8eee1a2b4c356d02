"""Targets, without an engine: host parsing, the Docker CLI's context store, the ssh argv, TLS
files, the timeout as a duration, and the engine named on the SYNC span, in metrics and history."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from gitdock.agent.config import ConfigError, parse_config
from gitdock.agent.metrics import Metrics, create_metrics
from gitdock.agent.state import Result, StateStore, Trigger
from gitdock.agent.targets import TargetConfig, Targets, display_host
from gitdock.agent.telemetry import sync_span
from gitdock.runtime.contexts import (
    DEFAULT_HOST,
    Endpoint,
    HostAddress,
    Scheme,
    SshOptions,
    TargetError,
    TlsFiles,
    parse_host,
    read_context,
    resolve_endpoint,
    ssl_context,
)
from gitdock.runtime.dial import ssh_command
from gitdock.runtime.docker import DockerClient
from support.spans import capture_spans
from support.tlsdockerd import make_certs

# -- host parsing ------------------------------------------------------------------------------


def test_unix_host_is_a_socket_path() -> None:
    assert parse_host("unix:///run/docker.sock") == HostAddress(Scheme.UNIX, path="/run/docker.sock")


def test_tcp_host_defaults_to_port_2375() -> None:
    assert parse_host("tcp://10.0.0.5") == HostAddress(Scheme.TCP, hostname="10.0.0.5", port=2375)


def test_tcp_host_keeps_its_port_and_brackets_ipv6_in_netloc() -> None:
    address = parse_host("tcp://[fd00::1]:2376")
    assert (address.hostname, address.port, address.netloc) == ("fd00::1", 2376, "[fd00::1]:2376")


def test_ssh_host_has_user_host_and_optional_port() -> None:
    assert parse_host("ssh://deploy@edge-1:2222") == HostAddress(
        Scheme.SSH, hostname="edge-1", port=2222, user="deploy"
    )
    assert parse_host("ssh://edge-1") == HostAddress(Scheme.SSH, hostname="edge-1")


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("npipe:////./pipe/docker_engine", "is not supported"),
        ("docker.example.com:2376", "not a URL"),
        ("unix://relative.sock", "needs an absolute path"),
        ("tcp://box:notaport", "the port is not a number"),
        ("tcp://:2376", "no host name"),
        ("tcp://box:2376/v1.41", "nothing may follow host:port"),
        ("tcp://me@box:2376", "a tcp host takes no user"),
    ],
)
def test_bad_host_is_one_line_naming_it_and_why(host: str, reason: str) -> None:
    with pytest.raises(TargetError) as caught:
        parse_host(host)
    message = str(caught.value)
    assert host in message and reason in message and "\n" not in message


@pytest.mark.parametrize("host", ["ssh://me:hunter2@box", "tcp://me:hunter2@box:2376"])
def test_password_in_the_url_is_refused_and_never_repeated(host: str) -> None:
    with pytest.raises(TargetError) as caught:
        parse_host(host)
    message = str(caught.value)
    assert "no password in the URL" in message and "me:***@box" in message
    assert "hunter2" not in message


def test_endpoint_names_the_server_address_for_traces() -> None:
    assert Endpoint("tcp://10.0.0.5:2376").server_address == "10.0.0.5"
    assert Endpoint("ssh://deploy@edge-1").server_address == "edge-1"
    assert Endpoint("unix:///run/docker.sock").server_address == "/run/docker.sock"
    assert Endpoint("tcp://10.0.0.5:2376", context="edge").name == "edge"


# -- the ssh command ---------------------------------------------------------------------------


def test_ssh_command_checks_host_keys_strictly_against_the_configured_file() -> None:
    address = parse_host("ssh://deploy@edge-1:2222")
    argv = ssh_command(address, SshOptions(Path("/etc/gitdock/known_hosts"), Path("/keys/id")), 10)
    assert argv[0] == "ssh"
    text = " ".join(argv)
    assert "-o StrictHostKeyChecking=yes" in text
    assert "-o BatchMode=yes" in text
    assert "-o UserKnownHostsFile=/etc/gitdock/known_hosts" in text
    assert "-o GlobalKnownHostsFile=/dev/null" in text
    assert "-i /keys/id -o IdentitiesOnly=yes" in text
    assert "-p 2222" in text and "-l deploy" in text
    assert argv[-5:] == ["--", "edge-1", "docker", "system", "dial-stdio"]


def test_ssh_command_without_options_still_refuses_unknown_hosts() -> None:
    argv = ssh_command(parse_host("ssh://edge-1"), None, 30)
    assert "StrictHostKeyChecking=yes" in argv and "ConnectTimeout=30" in argv
    assert not any(a.startswith("UserKnownHostsFile") for a in argv) and "-p" not in argv


# -- the context store -------------------------------------------------------------------------


def write_context(config_dir: Path, name: str, endpoint: dict[str, object], tls: bool = False) -> Path:
    """A context as ``docker context create`` stores it."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config_dir / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": endpoint}})
    )
    tls_dir = config_dir / "contexts" / "tls" / digest / "docker"
    if tls:
        make_certs(tls_dir, "127.0.0.1")
    return tls_dir


def test_context_is_read_by_the_sha256_of_its_name_with_its_tls_files(tmp_path: Path) -> None:
    tls_dir = write_context(
        tmp_path, "edge", {"Host": "tcp://10.1.2.3:2376", "SkipTLSVerify": False}, tls=True
    )
    endpoint = read_context("edge", tmp_path)
    assert endpoint == Endpoint(
        "tcp://10.1.2.3:2376",
        tls=TlsFiles(tls_dir / "ca.pem", tls_dir / "cert.pem", tls_dir / "key.pem"),
        context="edge",
    )


def test_context_without_tls_dir_has_no_tls(tmp_path: Path) -> None:
    write_context(tmp_path, "box", {"Host": "ssh://deploy@box"})
    assert read_context("box", tmp_path) == Endpoint("ssh://deploy@box", context="box")


def test_unknown_context_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=r"Docker context 'nope': not found \(no .*meta\.json\)"):
        read_context("nope", tmp_path)


def test_context_that_skips_tls_verification_is_refused(tmp_path: Path) -> None:
    write_context(tmp_path, "lax", {"Host": "tcp://10.1.2.3:2376", "SkipTLSVerify": True})
    with pytest.raises(TargetError, match="SkipTLSVerify is set"):
        read_context("lax", tmp_path)


def test_context_without_a_docker_endpoint_is_refused(tmp_path: Path) -> None:
    write_context(tmp_path, "k8s", {})
    with pytest.raises(TargetError, match="names no docker endpoint host"):
        read_context("k8s", tmp_path)


def test_context_with_malformed_meta_is_refused(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"broken").hexdigest()
    (tmp_path / "contexts" / "meta" / digest).mkdir(parents=True)
    (tmp_path / "contexts" / "meta" / digest / "meta.json").write_text("{")
    with pytest.raises(TargetError, match="Docker context 'broken': cannot read"):
        read_context("broken", tmp_path)


# -- resolution, as the Docker CLI does it -----------------------------------------------------


def test_host_flag_wins_and_with_context_is_refused(tmp_path: Path) -> None:
    env = {"DOCKER_CONFIG": str(tmp_path), "DOCKER_HOST": "tcp://ignored:1"}
    assert resolve_endpoint("unix:///x.sock", None, env) == Endpoint("unix:///x.sock")
    with pytest.raises(TargetError, match="--host and --context cannot be used together"):
        resolve_endpoint("unix:///x.sock", "edge", env)


def test_context_flag_beats_docker_host(tmp_path: Path) -> None:
    write_context(tmp_path, "edge", {"Host": "tcp://10.1.2.3:2375"})
    env = {"DOCKER_CONFIG": str(tmp_path), "DOCKER_HOST": "unix:///other.sock"}
    assert resolve_endpoint(None, "edge", env).host == "tcp://10.1.2.3:2375"


def test_docker_host_beats_docker_context(tmp_path: Path) -> None:
    write_context(tmp_path, "edge", {"Host": "tcp://10.1.2.3:2375"})
    env = {"DOCKER_CONFIG": str(tmp_path), "DOCKER_HOST": "unix:///other.sock", "DOCKER_CONTEXT": "edge"}
    assert resolve_endpoint(None, None, env) == Endpoint("unix:///other.sock")


def test_docker_context_then_current_context_then_the_default_socket(tmp_path: Path) -> None:
    write_context(tmp_path, "edge", {"Host": "tcp://10.1.2.3:2375"})
    write_context(tmp_path, "lab", {"Host": "tcp://10.9.9.9:2375"})
    env = {"DOCKER_CONFIG": str(tmp_path)}
    assert resolve_endpoint(None, None, env) == Endpoint(DEFAULT_HOST)
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "lab"}))
    assert resolve_endpoint(None, None, env).context == "lab"
    assert resolve_endpoint(None, None, {**env, "DOCKER_CONTEXT": "edge"}).context == "edge"
    assert resolve_endpoint(None, None, {**env, "DOCKER_CONTEXT": "default"}) == Endpoint(DEFAULT_HOST)


def test_docker_tls_verify_reads_the_cert_path(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs", "127.0.0.1")
    env = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path / "certs")}
    endpoint = resolve_endpoint("tcp://10.1.2.3:2376", None, env)
    assert endpoint.tls == TlsFiles(certs.ca, certs.cert, certs.key)
    # A unix socket is not TLS, whatever the environment says.
    assert resolve_endpoint("unix:///x.sock", None, env).tls is None


def test_docker_tls_verify_with_no_certs_is_refused(tmp_path: Path) -> None:
    env = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)}
    with pytest.raises(TargetError, match=r"DOCKER_TLS_VERIFY is set but .* holds no ca\.pem"):
        resolve_endpoint("tcp://10.1.2.3:2376", None, env)


# -- TLS files ---------------------------------------------------------------------------------


def test_tls_files_load_into_a_verifying_context(tmp_path: Path) -> None:
    certs = make_certs(tmp_path, "127.0.0.1")
    context = ssl_context(TlsFiles(certs.ca, certs.cert, certs.key), "target edge")
    assert context.check_hostname and context.verify_mode.name == "CERT_REQUIRED"


def test_missing_tls_file_names_the_field_and_file(tmp_path: Path) -> None:
    certs = make_certs(tmp_path, "127.0.0.1")
    missing = tmp_path / "gone.pem"
    with pytest.raises(TargetError, match=rf"target edge: tls.ca {missing}: no such file"):
        ssl_context(TlsFiles(missing, certs.cert, certs.key), "target edge")
    with pytest.raises(TargetError, match=r"tls.cert .* / tls.key .*gone.pem: no such file"):
        ssl_context(TlsFiles(certs.ca, certs.cert, missing), "target edge")


def test_cert_without_key_is_refused(tmp_path: Path) -> None:
    certs = make_certs(tmp_path, "127.0.0.1")
    with pytest.raises(TargetError, match="tls needs both cert and key"):
        ssl_context(TlsFiles(certs.ca, certs.cert, None), "target edge")


def test_a_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    certs = make_certs(tmp_path, "127.0.0.1")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TargetError, match=r"tls.cert .*junk.pem / tls.key .*: "):
        ssl_context(TlsFiles(certs.ca, junk, certs.key), "target edge")


def test_client_for_a_tls_endpoint_speaks_https_and_sends_nothing_yet(tmp_path: Path) -> None:
    certs = make_certs(tmp_path, "127.0.0.1")
    with DockerClient(Endpoint("tcp://127.0.0.1:1", tls=TlsFiles(certs.ca, certs.cert, certs.key))) as client:
        assert str(client._http.base_url) == "https://127.0.0.1:1"
        assert client.calls == {}


# -- traces name the engine --------------------------------------------------------------------


def test_sync_span_names_the_engine_it_deploys_to() -> None:
    with capture_spans() as exporter, sync_span("p", metrics=Metrics.noop(), server=("10.0.0.5", 2376)):
        pass
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert (attributes["server.address"], attributes["server.port"]) == ("10.0.0.5", 2376)


def test_sync_span_for_a_unix_socket_has_its_path_and_no_port() -> None:
    endpoint = Endpoint("unix:///run/docker.sock")
    server = (endpoint.server_address, endpoint.address.port)
    with capture_spans() as exporter, sync_span("p", metrics=Metrics.noop(), server=server):
        pass
    attributes = dict(exporter.get_finished_spans()[0].attributes or {})
    assert attributes["server.address"] == "/run/docker.sock" and "server.port" not in attributes


# -- the agent's target: block -----------------------------------------------------------------


def test_target_config_resolves_relative_files_from_the_config_directory(tmp_path: Path) -> None:
    target = TargetConfig.model_validate(
        {
            "host": "tcp://10.1.2.3:2376",
            "tls": {"ca": "certs/ca.pem", "cert": "/abs/cert.pem", "key": "k.pem"},
        }
    )
    endpoint = target.endpoint(tmp_path, {})
    assert endpoint.tls == TlsFiles(tmp_path / "certs/ca.pem", Path("/abs/cert.pem"), tmp_path / "k.pem")
    ssh = TargetConfig.model_validate({"host": "ssh://deploy@box", "ssh": {"known_hosts": "kh"}})
    assert ssh.endpoint(tmp_path, {}).ssh == SshOptions(tmp_path / "kh", None)


def test_target_config_reads_a_context_from_the_docker_config_dir(tmp_path: Path) -> None:
    write_context(tmp_path, "edge", {"Host": "ssh://deploy@edge"})
    target = TargetConfig.model_validate({"context": "edge"})
    assert target.endpoint(Path("/unused"), {"DOCKER_CONFIG": str(tmp_path)}).host == "ssh://deploy@edge"


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ({}, "either host: or context:, exactly one"),
        ({"host": "tcp://box:2376", "context": "edge"}, "either host: or context:, exactly one"),
        ({"host": "ssh://box", "tls": {"ca": "ca.pem"}}, "tls: applies to a tcp:// host only"),
        ({"host": "tcp://box:2376", "ssh": {"identity": "id"}}, "ssh: applies to an ssh:// host only"),
        ({"host": "tcp://box:2376", "tls": {"cert": "c.pem"}}, "tls needs both cert and key"),
        ({"host": "npipe:////./pipe/docker"}, "is not supported"),
        ({"host": "tcp://box:2376", "timeout": 0}, "'0' is not a timeout: it must be more than 0 (e.g. 30s)"),
        ({"host": "tcp://box:2376", "timeout": "0s"}, "'0s' is not a timeout"),
        (
            {"host": "tcp://box:2376", "timeout": "ten"},
            '"ten" is not a duration (expected something like 10s',
        ),
        ({"host": "tcp://box:2376", "timeout": "30 s"}, '"30 s" is not a duration'),
        ({"host": "tcp://box:2376", "timeout": True}, "expected a duration like 30s, 2m or 1m30s"),
        ({"host": "tcp://box:2376", "tsl": {}}, "Extra inputs are not permitted"),
    ],
)
def test_bad_target_config_says_why(target: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(reason)):
        TargetConfig.model_validate(target)


# -- target.timeout as a duration --------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [("30s", 30.0), ("2m", 120.0), ("1m30s", 90.0), ("500ms", 0.5), (10, 10.0), (2.5, 2.5), ("45", 45.0)],
)
def test_target_timeout_is_a_duration_and_a_bare_number_stays_seconds(
    timeout: object, seconds: float
) -> None:
    target = TargetConfig.model_validate({"host": "tcp://box:2376", "timeout": timeout})
    assert target.timeout == seconds


def test_target_timeout_defaults_to_30_seconds() -> None:
    assert TargetConfig.model_validate({"host": "tcp://box:2376"}).timeout == 30.0


def test_a_bad_target_timeout_is_one_line_naming_the_source_and_field() -> None:
    text = (
        "sources:\n"
        "  - name: web\n    url: https://git.example.com/web.git\n"
        "  - name: edge\n    url: https://git.example.com/edge.git\n"
        "    target: {host: 'tcp://box:2376', timeout: 30sec}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "/etc/gitdock/agent.yaml", {})
    assert str(caught.value).splitlines() == [
        "/etc/gitdock/agent.yaml:6:47: sources[1].target.timeout: "
        '"30sec" is not a duration (expected something like 10s or 1m30s)'
    ]


# -- the engine's name in metrics and history ----------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "shown"),
    [
        (Endpoint("unix:///var/run/docker.sock"), "unix:///var/run/docker.sock"),
        (Endpoint("tcp://edge-1.example.com:2376"), "tcp://edge-1.example.com:2376"),
        (Endpoint("ssh://deploy@edge-1.example.com:2222"), "ssh://edge-1.example.com:2222"),
        (Endpoint("ssh://deploy@[fd00::1]"), "ssh://[fd00::1]"),
        (Endpoint("ssh://deploy@edge-2", context="edge-2"), "edge-2"),
    ],
)
def test_display_host_names_the_engine_without_a_user(endpoint: Endpoint, shown: str) -> None:
    assert display_host(endpoint) == shown


def test_reconcile_metrics_of_a_source_carry_its_engine_as_host() -> None:
    metrics, provider = create_metrics()
    try:
        edge = metrics.for_host(display_host(Endpoint("ssh://deploy@edge-1")))
        with capture_spans(), sync_span("web", metrics=edge) as sync:
            sync.set_result("success")
        edge.set_last_apply("web", 1_764_000_000.0)
        text = metrics.render_prometheus()
    finally:
        provider.shutdown()
    assert 'gitdock_reconciles_total{host="ssh://edge-1",project="web",result="success"} 1.0' in text
    assert 'gitdock_last_apply_timestamp_seconds{host="ssh://edge-1",project="web"} 1.764e+09' in text
    assert "deploy" not in text


def test_history_records_the_engine_each_reconcile_deployed_to(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        store.add_history("edge", Trigger.WEBHOOK, "a" * 40, Result.SUCCESS, host="tcp://box:2376")
        store.add_history("edge", Trigger.SCHEDULE, "a" * 40, Result.ERROR, host="edge-ctx")
        store.add_history("edge", Trigger.MANUAL, None, Result.SKIP)  # a caller that names none
        assert [e.host for e in store.history("edge")] == [None, "edge-ctx", "tcp://box:2376"]


# -- parallel: the engine's turns, shared by its sources -----------------------------------------


def test_each_engine_client_takes_the_defaults_parallel_unless_its_target_sets_one(tmp_path: Path) -> None:
    text = (
        "defaults: {parallel: 3}\n"
        "sources:\n"
        "  - {name: web, url: 'https://git.example.com/web.git'}\n"
        "  - {name: edge, url: 'https://git.example.com/edge.git',\n"
        "     target: {host: 'tcp://edge:2376', parallel: 5}}\n"
        "  - {name: lab, url: 'https://git.example.com/lab.git', target: {host: 'tcp://lab:2376'}}\n"
    )
    config = parse_config(text, str(tmp_path / "agent.yaml"), {})
    default = DockerClient("unix:///var/run/docker.sock", max_in_flight=config.defaults.parallel)
    targets = Targets(default, tmp_path, {}, parallel=config.defaults.parallel)
    web, edge, lab = (targets.client(s.target) for s in config.sources)
    assert (web.max_in_flight, edge.max_in_flight, lab.max_in_flight) == (3, 5, 3)
    assert web is default and targets.client(config.sources[1].target) is edge  # one client per engine


def test_parallel_defaults_to_eight_per_engine() -> None:
    config = parse_config("sources:\n  - {name: web, url: 'https://git.example.com/web.git'}\n", "a.yaml", {})
    assert config.defaults.parallel == 8
    assert TargetConfig.model_validate({"host": "tcp://box:2376"}).parallel is None


def test_a_parallel_below_one_is_one_line_naming_the_field() -> None:
    text = "defaults: {parallel: 0}\nsources:\n  - {name: web, url: 'https://git.example.com/web.git'}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "/etc/gitdock/agent.yaml", {})
    assert str(caught.value).splitlines() == [
        "/etc/gitdock/agent.yaml:1:22: defaults.parallel: Input should be greater than or equal to 1"
    ]
