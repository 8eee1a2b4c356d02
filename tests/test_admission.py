"""The deploy policy (runtime/admission.py): a violation per rule at each level, the accepted
cases, exceptions, bind path normalisation and the policy's configuration."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitdock.runtime.admission import (
    BASELINE,
    Exemption,
    Level,
    Policy,
    PolicyConfigError,
    PolicyRefused,
    Rule,
    admit_project,
    check_project,
    normalise_host_path,
    parse_policy,
)
from gitdock.specs import load_project
from gitdock.specs.model import Project, ServiceFile

RESTRICTED = Policy(Level.RESTRICTED, bind_prefixes=("/srv/data",))
# What a restricted service must say; each restricted test breaks one of these.
HARDENED: dict[str, Any] = {"user": "1000:1000", "read_only": True, "cap_drop": ["ALL"]}


def load(tmp_path: Path, service: dict[str, Any], **top: Any) -> Project:
    """A project of one service ``web`` (busybox) with ``service``'s keys and top-level ``top``."""
    spec = {"services": {"web": {"image": "busybox", **service}}, **top}
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_project([path], environ={}, project_name="p")


def lines(project: Project, policy: Policy) -> list[str]:
    return [str(v) for v in check_project(project, policy)]


def rules(project: Project, policy: Policy) -> list[tuple[str, Rule]]:
    return [(v.field, v.rule) for v in check_project(project, policy)]


# --- baseline: one violation per rule ------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ({"privileged": True}, "services.web.privileged: privileged containers are not allowed"),
        ({"pid": "host"}, "services.web.pid: sharing the host's PID namespace is not allowed"),
        ({"ipc": "host"}, "services.web.ipc: sharing the host's IPC namespace is not allowed"),
        ({"uts": "host"}, "services.web.uts: sharing the host's UTS namespace is not allowed"),
        (
            {"userns_mode": "host"},
            "services.web.userns_mode: sharing the host's user namespace is not allowed",
        ),
        (
            {"cap_add": ["SYS_ADMIN"]},
            "services.web.cap_add: adding capability SYS_ADMIN is not allowed (outside Docker's default set)",
        ),
        (
            {"cap_add": ["cap_sys_ptrace"]},
            "services.web.cap_add: adding capability SYS_PTRACE is not allowed "
            "(outside Docker's default set)",
        ),
        (
            {"cap_add": ["ALL"]},
            "services.web.cap_add: adding capability ALL is not allowed (outside Docker's default set)",
        ),
        ({"devices": ["/dev/sda:/dev/xvda"]}, "services.web.devices: host device /dev/sda is not allowed"),
        (
            {"device_cgroup_rules": ["c 1:3 mr"]},
            "services.web.device_cgroup_rules: device cgroup rules are not allowed",
        ),
        (
            {"security_opt": ["seccomp=unconfined"]},
            "services.web.security_opt: seccomp=unconfined: running without a seccomp profile is not allowed",
        ),
        (
            {"security_opt": ["seccomp:unconfined"]},
            "services.web.security_opt: seccomp:unconfined: running without a seccomp profile is not allowed",
        ),
        (
            {"security_opt": ["apparmor=unconfined"]},
            "services.web.security_opt: apparmor=unconfined: running without an AppArmor profile "
            "is not allowed",
        ),
        (
            {"security_opt": ["label:disable"]},
            "services.web.security_opt: label:disable: turning SELinux labelling off is not allowed",
        ),
        (
            {"security_opt": ["systempaths=unconfined"]},
            "services.web.security_opt: systempaths=unconfined: unmasking the kernel's /proc and /sys paths "
            "is not allowed",
        ),
        (
            {"cgroup_parent": "/system.slice"},
            "services.web.cgroup_parent: placing the container under a host cgroup is not allowed",
        ),
        ({"cgroup": "host"}, "services.web.cgroup: sharing the host's cgroup namespace is not allowed"),
        (
            {"sysctls": {"kernel.core_pattern": "|/tmp/x"}},
            "services.web.sysctls: sysctl kernel.core_pattern is not in the safe set",
        ),
        (
            {"sysctls": ["net.ipv4.ip_forward=1"]},
            "services.web.sysctls: sysctl net.ipv4.ip_forward is not in the safe set",
        ),
        (
            {"volumes": ["/var/run/docker.sock:/var/run/docker.sock"]},
            "services.web.volumes: binding the host path /var/run/docker.sock is not allowed",
        ),
        (
            {"use_api_socket": True},
            "services.web.volumes: binding the host path /var/run/docker.sock is not allowed",
        ),
        (
            {"volumes_from": ["container:portainer"]},
            "services.web.volumes_from: container:portainer: the volumes of a container outside the project "
            "are not allowed",
        ),
    ],
)
def test_baseline_refuses(tmp_path: Path, service: dict[str, Any], expected: str) -> None:
    project = load(tmp_path, service)
    assert lines(project, BASELINE) == [expected]
    assert lines(project, Policy(Level.PRIVILEGED)) == []


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("/", ""),
        ("/etc", ""),
        ("/etc/ssh", " (under /etc)"),
        ("/proc", ""),
        ("/proc/1/root", " (under /proc)"),
        ("/sys", ""),
        ("/sys/fs/cgroup", " (under /sys)"),
        ("/boot", ""),
        ("/dev", ""),
        ("/dev/mem", " (under /dev)"),
        ("/root", ""),
        ("/root/.ssh", " (under /root)"),
        ("/run/docker.sock", ""),
        ("/var/lib/docker", ""),
        ("/var/lib/docker/volumes", " (under /var/lib/docker)"),
        ("/usr/bin", " (under /usr)"),
        ("/var", " (it holds /var/run/docker.sock)"),
        ("/run", " (it holds /run/docker.sock)"),
        ("/var/lib", " (it holds /var/lib/docker)"),
    ],
)
def test_baseline_refuses_binding_the_host(tmp_path: Path, source: str, why: str) -> None:
    project = load(tmp_path, {"volumes": [{"type": "bind", "source": source, "target": "/host"}]})
    assert lines(project, BASELINE) == [
        f"services.web.volumes: binding the host path {source} is not allowed{why}"
    ]


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("/srv/../etc/", "/etc"),
        ("//etc//", "/etc"),
        ("/var/run/./docker.sock", "/var/run/docker.sock"),
        ("/var/lib/docker/", "/var/lib/docker"),
        ("/srv/app/../../proc/self", "/proc/self"),
        ("/../../sys", "/sys"),
    ],
)
def test_bind_paths_are_normalised_before_they_are_judged(
    tmp_path: Path, written: str, normalised: str
) -> None:
    assert normalise_host_path(written) == normalised
    project = load(tmp_path, {"volumes": [{"type": "bind", "source": written, "target": "/host"}]})
    assert rules(project, BASELINE) == [("volumes", Rule.HOST_PATHS)]
    assert normalised in lines(project, BASELINE)[0]


def test_a_relative_bind_that_climbs_to_the_host_is_refused(tmp_path: Path) -> None:
    climb = "../" * (len(tmp_path.parts) + 2) + "etc"
    project = load(tmp_path, {"volumes": [f"{climb}:/host"]})
    assert lines(project, BASELINE) == ["services.web.volumes: binding the host path /etc is not allowed"]


def _with_file(project: Project, kind: str, source: str) -> Project:
    file = ServiceFile(kind=kind, name="f", target="/run/f", digest="0" * 64, source=source)
    web = dataclasses.replace(project.services[0], files=(file,))
    return dataclasses.replace(project, services=(web,))


@pytest.mark.parametrize("kind", ["configs", "secrets"])
def test_config_and_secret_files_count_as_binds(tmp_path: Path, kind: str) -> None:
    project = _with_file(load(tmp_path, {}), kind, "/srv/app/../../etc/shadow")
    assert lines(project, BASELINE) == [
        f"services.web.{kind}: binding the host path /etc/shadow is not allowed (under /etc)"
    ]


@pytest.mark.parametrize("options", ["bind", "rbind,ro"])
def test_a_named_volume_the_local_driver_binds_counts_as_a_bind(tmp_path: Path, options: str) -> None:
    project = load(
        tmp_path,
        {"volumes": ["hostroot:/host"]},
        volumes={"hostroot": {"driver_opts": {"type": "none", "o": options, "device": "/etc/"}}},
    )
    assert lines(project, BASELINE) == ["services.web.volumes: binding the host path /etc is not allowed"]


def test_every_violation_is_reported_at_once_in_service_order(tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "services": {
                    "a": {"image": "busybox", "privileged": True, "pid": "host"},
                    "b": {"image": "busybox", "volumes": ["/:/host"], "cap_add": ["NET_ADMIN"]},
                }
            }
        )
    )
    project = load_project([path], environ={}, project_name="p")
    with pytest.raises(PolicyRefused) as refused:
        admit_project(project, BASELINE)
    assert str(refused.value).splitlines() == [
        "policy baseline: services.a.privileged: privileged containers are not allowed",
        "policy baseline: services.a.pid: sharing the host's PID namespace is not allowed",
        "policy baseline: services.b.volumes: binding the host path / is not allowed",
        "policy baseline: services.b.cap_add: adding capability NET_ADMIN is not allowed (outside Docker's "
        "default set)",
    ]
    assert refused.value.lines == str(refused.value).splitlines()
    assert [v.service for v in refused.value.violations] == ["a", "a", "b", "b"]


# --- baseline: what it allows --------------------------------------------------------------


def test_baseline_allows_host_networking_default_capabilities_and_safe_settings(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        {
            "network_mode": "host",  # common, and not root: see README's Deploy policy
            "cap_add": ["NET_RAW", "chown", "CAP_NET_BIND_SERVICE"],
            "cap_drop": ["MKNOD"],
            "sysctls": {"net.ipv4.tcp_syncookies": 1, "net.ipv4.ip_unprivileged_port_start": 0},
            "security_opt": [
                "no-new-privileges:true",
                "seccomp=/etc/docker/profile.json",
                "label=type:svirt",
            ],
            "ipc": "shareable",
            "volumes": [
                "/srv/data:/data",
                "./config:/config:ro",
                "/home/app/cache:/cache",
                "data:/var/lib/x",
            ],
            "tmpfs": ["/tmp"],
            "user": "root",
        },
        volumes={"data": {}},
    )
    assert lines(project, BASELINE) == []


def test_baseline_allows_sharing_namespaces_with_services_of_the_project(tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "services": {
                    "app": {"image": "busybox", "ipc": "shareable"},
                    "side": {"image": "busybox", "pid": "service:app", "volumes_from": ["app:ro"]},
                }
            }
        )
    )
    assert lines(load_project([path], environ={}, project_name="p"), BASELINE) == []


def test_a_path_beside_a_forbidden_one_is_not_under_it(tmp_path: Path) -> None:
    project = load(tmp_path, {"volumes": ["/etcetera:/a", "/var/lib/dockerish:/b", "/srv/proc:/c"]})
    assert lines(project, BASELINE) == []


# --- restricted ----------------------------------------------------------------------------


def test_restricted_accepts_a_hardened_service(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        {
            **HARDENED,
            "cap_add": ["NET_BIND_SERVICE"],
            "volumes": ["/srv/data/web:/data", "/srv/data:/all:ro", "cache:/cache"],
            "security_opt": ["no-new-privileges:true"],
        },
        volumes={"cache": {}},
    )
    assert lines(project, RESTRICTED) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"user": None},
            "services.web.user: a non-root user is required (user: is not set; the image's may be root)",
        ),
        ({"user": "root"}, "services.web.user: a non-root user is required (root is root)"),
        ({"user": "0"}, "services.web.user: a non-root user is required (0 is root)"),
        ({"user": "0:1000"}, "services.web.user: a non-root user is required (0:1000 is root)"),
        (
            {"read_only": None},
            "services.web.read_only: a read-only root filesystem is required (read_only: true)",
        ),
        (
            {"read_only": False},
            "services.web.read_only: a read-only root filesystem is required (read_only: true)",
        ),
        (
            {"cap_drop": ["NET_RAW"]},
            "services.web.cap_drop: every capability must be dropped (cap_drop: [ALL])",
        ),
        (
            {"cap_add": ["CHOWN"]},
            "services.web.cap_add: adding capability CHOWN is not allowed "
            "(only NET_BIND_SERVICE may be added)",
        ),
        (
            {"volumes": ["/srv/data2:/data"]},
            "services.web.volumes: the host path /srv/data2 is not under an allowed bind prefix (/srv/data)",
        ),
        (
            {"volumes": ["/srv/data/../other:/data"]},
            "services.web.volumes: the host path /srv/other is not under an allowed bind prefix (/srv/data)",
        ),
        (
            {"security_opt": ["no-new-privileges:false"]},
            "services.web.security_opt: no-new-privileges:false: privilege escalation is not allowed",
        ),
        (
            {"security_opt": ["no-new-privileges=false"]},
            "services.web.security_opt: no-new-privileges=false: privilege escalation is not allowed",
        ),
    ],
)
def test_restricted_refuses(tmp_path: Path, change: dict[str, Any], expected: str) -> None:
    service = {k: v for k, v in {**HARDENED, **change}.items() if v is not None}
    project = load(tmp_path, service)
    assert lines(project, RESTRICTED) == [expected]
    assert lines(project, BASELINE) == []


def test_restricted_refuses_every_bind_when_no_prefix_is_listed(tmp_path: Path) -> None:
    project = load(tmp_path, {**HARDENED, "volumes": ["./config:/config:ro"]})
    assert lines(project, Policy(Level.RESTRICTED)) == [
        f"services.web.volumes: the host path {tmp_path}/config is not under an allowed bind prefix "
        "(none are listed)"
    ]


def test_restricted_includes_every_baseline_rule(tmp_path: Path) -> None:
    project = load(tmp_path, {**HARDENED, "privileged": True, "pid": "host", "volumes": ["/etc:/etc"]})
    assert rules(project, RESTRICTED) == [
        ("privileged", Rule.PRIVILEGED),
        ("pid", Rule.HOST_NAMESPACES),
        ("volumes", Rule.HOST_PATHS),  # a forbidden path is not also reported as outside the prefixes
    ]


def test_restricted_config_files_must_come_from_the_prefixes(tmp_path: Path) -> None:
    project = _with_file(load(tmp_path, HARDENED), "configs", "/opt/app/app.conf")
    assert rules(project, RESTRICTED) == [("configs", Rule.BIND_PREFIXES)]
    assert lines(_with_file(load(tmp_path, HARDENED), "configs", "/srv/data/app.conf"), RESTRICTED) == []


# --- exceptions ----------------------------------------------------------------------------


def test_an_exception_lifts_one_field_of_one_service(tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "services": {
                    "monitor": {"image": "busybox", "pid": "host", "privileged": True},
                    "web": {"image": "busybox", "pid": "host"},
                }
            }
        )
    )
    project = load_project([path], environ={}, project_name="p")
    policy = Policy(Level.BASELINE, exemptions=(Exemption("monitor", "pid"),))
    assert lines(project, policy) == [
        "services.monitor.privileged: privileged containers are not allowed",
        "services.web.pid: sharing the host's PID namespace is not allowed",
    ]
    admit_project(
        project,
        Policy(Level.BASELINE, exemptions=(Exemption("*", "pid"), Exemption("monitor", "privileged"))),
    )


def test_an_exception_for_volumes_lifts_the_service_binds(tmp_path: Path) -> None:
    project = load(
        tmp_path, {"volumes": ["/var/run/docker.sock:/var/run/docker.sock:ro"], "cap_add": ["SYS_ADMIN"]}
    )
    policy = Policy(Level.BASELINE, exemptions=(Exemption("web", "volumes"),))
    assert rules(project, policy) == [("cap_add", Rule.CAPABILITIES)]


# --- the policy's configuration ------------------------------------------------------------


def test_parse_policy_takes_a_level_or_a_mapping() -> None:
    assert parse_policy("restricted") == Policy(Level.RESTRICTED)
    assert parse_policy(
        {
            "level": "baseline",
            "exceptions": [{"service": "monitor", "field": "pid"}],
            "bind_prefixes": ["/srv/data/", "/opt//app"],
        }
    ) == Policy(Level.BASELINE, (Exemption("monitor", "pid"),), ("/srv/data", "/opt/app"))
    assert parse_policy({}) == BASELINE


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("lax", "policy.level: 'lax' is not a policy level (privileged, baseline, restricted)"),
        ({"levels": "baseline"}, "policy.levels: unknown key (known: level, exceptions, bind_prefixes)"),
        (
            {"exceptions": [{"service": "web"}]},
            "policy.exceptions[0]: an exception is {service: NAME, field: KEY}",
        ),
        ({"exceptions": "web"}, "policy.exceptions: expected a list"),
        ({"bind_prefixes": ["srv"]}, "policy.bind_prefixes[0]: 'srv' is not an absolute host path"),
        (["baseline"], "policy: expected a level name or a mapping with `level`"),
    ],
)
def test_parse_policy_names_the_bad_field(data: Any, message: str) -> None:
    with pytest.raises(PolicyConfigError) as refused:
        parse_policy(data)
    assert str(refused.value) == message


def test_parse_policy_refuses_an_exception_for_a_field_it_does_not_check() -> None:
    with pytest.raises(
        PolicyConfigError, match=r"exceptions\[0\]\.field: 'image' is not a key the policy checks"
    ):
        parse_policy({"exceptions": [{"service": "web", "field": "image"}]})


# --- the agent's configuration -------------------------------------------------------------


def test_agent_sources_default_to_baseline_and_may_set_their_own() -> None:
    from gitdock.agent.config import parse_config

    config = parse_config(
        "sources:\n"
        "  - {name: a, url: 'file:///srv/a.git'}\n"
        "  - name: b\n"
        "    url: file:///srv/b.git\n"
        "    policy:\n"
        "      level: restricted\n"
        "      exceptions: [{service: monitor, field: pid}]\n"
        "      bind_prefixes: [/srv/data/]\n"
        "  - {name: c, url: 'file:///srv/c.git', policy: privileged}\n",
        "agent.yaml",
        {},
    )
    a, b, c = config.sources
    assert config.policy(a) == BASELINE
    assert config.policy(b) == Policy(Level.RESTRICTED, (Exemption("monitor", "pid"),), ("/srv/data",))
    assert config.policy(c) == Policy(Level.PRIVILEGED)
    relaxed = parse_config(
        "defaults: {policy: privileged}\nsources: [{name: a, url: 'file:///srv/a.git'}]\n", "agent.yaml", {}
    )
    assert relaxed.policy(relaxed.sources[0]) == Policy(Level.PRIVILEGED)


def test_a_bad_policy_in_the_agent_config_names_file_line_and_field() -> None:
    from gitdock.agent.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as refused:
        parse_config(
            "sources:\n  - name: a\n    url: file:///srv/a.git\n    policy: {level: lax}\n", "agent.yaml", {}
        )
    assert str(refused.value) == (
        "agent.yaml:4:13: sources[0].policy: level: 'lax' is not a policy level "
        "(privileged, baseline, restricted)"
    )
