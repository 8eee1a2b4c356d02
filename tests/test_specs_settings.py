"""Issue 11's keys, from Compose file to the Engine API body they ask for."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from gitdock.runtime.desired import desired_container, desired_network
from gitdock.specs import load_project, load_project_with_warnings
from gitdock.specs.model import Project


def load(tmp_path: Path, text: str, **files: str) -> Project:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    path = tmp_path / "compose.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return load_project([path], environ={}, project_name="p")


def body(project: Project, service: str) -> dict[str, Any]:
    return desired_container(project, project.service(service), 1).create_body


def test_blkio_cpu_and_isolation_settings_reach_the_host_config(tmp_path: Path) -> None:
    host = body(
        load(
            tmp_path,
            """
            services:
              s:
                image: x
                blkio_config:
                  weight: 300
                  device_read_bps: [{path: /dev/sda, rate: 1mb}]
                cpu_count: 2
                cpu_percent: 50
                cpu_rt_period: 1400us
                cpu_rt_runtime: 400
                isolation: default
            """,
        ),
        "s",
    )["HostConfig"]
    assert host["BlkioWeight"] == 300
    assert host["BlkioDeviceReadBps"] == [{"Path": "/dev/sda", "Rate": 1 << 20}]
    assert (host["CpuCount"], host["CpuPercent"]) == (2, 50)
    assert (host["CpuRealtimePeriod"], host["CpuRealtimeRuntime"]) == (1400, 400)
    assert host["Isolation"] == "default"


def test_gpus_and_device_reservations_become_device_requests(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        """
        services:
          a: {image: x, gpus: all}
          b:
            image: x
            deploy:
              resources:
                reservations:
                  devices: [{capabilities: [gpu], driver: nvidia, count: 1}]
        """,
    )
    assert body(project, "a")["HostConfig"]["DeviceRequests"] == [
        {"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": None}
    ]
    assert body(project, "b")["HostConfig"]["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": 1, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": None}
    ]


def test_service_namespaces_resolve_to_the_first_replica_and_order_the_start(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        """
        services:
          db: {image: x}
          app: {image: x, ipc: "service:db", pid: "service:db", external_links: ["old:legacy"]}
        """,
    )
    host = body(project, "app")["HostConfig"]
    assert (host["IpcMode"], host["PidMode"]) == ("container:p-db-1", "container:p-db-1")
    assert dict(project.service("app").depends_on).keys() == {"db"}
    endpoint = body(project, "app")["NetworkingConfig"]["EndpointsConfig"]["p_default"]
    assert endpoint["Links"] == ["old:legacy"]


def test_long_mount_options_reach_binds_and_mounts(tmp_path: Path) -> None:
    host = body(
        load(
            tmp_path,
            """
            services:
              s:
                image: x
                volumes:
                  - ./a:/a:ro,z
                  - {type: bind, source: ./b, target: /b, bind: {propagation: rshared}}
                  - {type: bind, source: ./c, target: /c, bind: {recursive: disabled}}
                  - {type: volume, source: v, target: /v, volume: {nocopy: true, labels: {k: x}}}
                  - {type: tmpfs, target: /t, tmpfs: {mode: 01777}}
            volumes: {v: {}}
            """,
        ),
        "s",
    )["HostConfig"]
    assert host["Binds"] == [f"{tmp_path}/a:/a:ro,z", f"{tmp_path}/b:/b:rshared"]
    bind, volume, tmpfs = host["Mounts"]
    assert volume["VolumeOptions"] == {"NoCopy": True, "Labels": {"k": "x"}}
    assert tmpfs["TmpfsOptions"] == {"Mode": 0o1777}
    assert bind["BindOptions"] == {"NonRecursive": True}


def test_network_attachment_settings_reach_the_endpoint(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        """
        services:
          s:
            image: x
            networks:
              a: {priority: 1}
              z:
                priority: 10
                ipv4_address: 10.5.0.5
                ipv6_address: "fd00::5"
                link_local_ips: [169.254.1.1]
                mac_address: "02:42:ac:11:00:05"
                driver_opts: {k: 1}
        networks:
          a: {}
          z:
            enable_ipv6: true
            driver_opts: {com.docker.network.bridge.name: gd0}
            ipam: {config: [{subnet: 10.5.0.0/16, gateway: 10.5.0.1}, {subnet: "fd00::/64"}]}
        """,
    )
    dc = desired_container(project, project.service("s"), 1)
    assert [name for name, _ in dc.networks] == ["p_z", "p_a"]  # by priority, as in Compose
    assert dc.create_body["NetworkingConfig"]["EndpointsConfig"]["p_z"] == {
        "Aliases": ["s"],
        "IPAMConfig": {"IPv4Address": "10.5.0.5", "IPv6Address": "fd00::5", "LinkLocalIPs": ["169.254.1.1"]},
        "DriverOpts": {"k": "1"},
        "MacAddress": "02:42:ac:11:00:05",
    }
    assert dc.create_body["MacAddress"] == "02:42:ac:11:00:05"
    network = desired_network(project, project.network("z")).create_body
    assert network["EnableIPv6"] is True
    assert network["Options"] == {"com.docker.network.bridge.name": "gd0"}
    assert network["IPAM"]["Config"] == [
        {"Subnet": "10.5.0.0/16", "Gateway": "10.5.0.1"},
        {"Subnet": "fd00::/64"},
    ]


def test_label_files_come_before_labels_and_raw_env_files_stay_literal(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        """
        services:
          s:
            image: x
            label_file: [l.txt]
            labels: {b: from-labels}
            env_file: [{path: raw.env, format: raw}]
        """,
        **{"l.txt": "a=1\nb=from-file\n", "raw.env": 'Q="$HOME x"\n'},
    )
    assert dict(project.service("s").labels) == {"a": "1", "b": "from-labels"}
    assert dict(project.service("s").environment) == {"Q": '"$HOME x"'}


def test_legacy_external_name_names_the_docker_object(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        """
        services: {s: {image: x, networks: [n], volumes: ["v:/v"]}}
        networks: {n: {external: {name: outside-net}}}
        volumes: {v: {external: {name: outside-vol}}}
        """,
    )
    assert (project.network("n").name, project.network("n").external) == ("outside-net", True)
    assert (project.volume("v").name, project.volume("v").external) == ("outside-vol", True)


def test_a_provider_service_is_skipped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(
        "services:\n  ai: {provider: {type: model, options: {model: x}}}\n"
        "  app: {image: x, depends_on: [ai]}\n"
    )
    project, warnings = load_project_with_warnings([path], environ={})
    assert [s.name for s in project.services] == ["app"]
    assert project.service("app").depends_on == ()
    assert any("provider model is run by a Compose provider plugin" in w for w in warnings)


def test_depends_on_restart_is_kept_on_the_dependency(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        "services:\n  db: {image: x}\n"
        "  app: {image: x, depends_on: {db: {condition: service_started, restart: true}}}\n",
    )
    assert dict(project.service("app").depends_on)["db"].restart is True


def test_extra_hosts_with_several_addresses_give_one_entry_each(tmp_path: Path) -> None:
    project = load(tmp_path, 'services:\n  s: {image: x, extra_hosts: ["h=10.0.0.1,10.0.0.2"]}\n')
    assert body(project, "s")["HostConfig"]["ExtraHosts"] == ["h:10.0.0.1", "h:10.0.0.2"]
