"""Pure drift detection, the applied record and the heal policy: literal inputs, no Docker."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gitdock.agent.applied_store import AppliedStore, applied_basis
from gitdock.agent.healing import Healer, HealMode, HealPolicy
from gitdock.runtime.drift.detect import (
    DockerEvent,
    DriftField,
    DriftReport,
    containers_to_inspect,
    detect_drift,
    is_secret_name,
)
from gitdock.runtime.observe import ObservedContainer, ObservedNetwork, ObservedState, ObservedVolume
from gitdock.runtime.record import (
    AppliedContainer,
    AppliedNetwork,
    AppliedRecord,
    AppliedVolume,
    ExpectedState,
    applied_record,
    mount_keys,
)
from gitdock.specs.model import Mount, Network, NetworkAttachment, PortMapping, Project, Service, Volume

P = "shop"
NOW = 1_700_000_100.0  # 2023-11-14T22:15:00Z
T0 = 1_700_000_000.0
NET_ID = "n" * 64
IMG = "sha256:" + "a" * 64


def cid(n: int) -> str:
    return f"{n:064x}"


def applied(service: str = "web", n: int = 1, **kw: Any) -> AppliedContainer:
    base = AppliedContainer(
        name=f"{P}-{service}-{n}",
        id=cid(n if service == "web" else 100 + n),
        service=service,
        number=n,
        config_hash="h",
        image="busybox:1",
        image_id=IMG,
        expect=ExpectedState.RUNNING,
        restart="no",
        resources=(
            ("Memory", 0),
            ("MemoryReservation", 0),
            ("NanoCpus", 0),
            ("CpuShares", 0),
            ("PidsLimit", 0),
        ),
        env=("GREETING=hi", "DB_PASSWORD=hunter2"),
        ports=(":8080->80/tcp",),
        mounts=(f"volume:{P}_data:/data",),
        networks=(f"{P}_default",),
    )
    return replace(base, **kw)


def record(*containers: AppliedContainer) -> AppliedRecord:
    return AppliedRecord(
        project=P,
        containers=containers or (applied(),),
        networks=(AppliedNetwork("default", f"{P}_default", NET_ID),),
        volumes=(AppliedVolume("data", f"{P}_data"),),
        applied_at=T0,
        revision="abc123",
    )


def live(rc: AppliedContainer, **kw: Any) -> ObservedContainer:
    labels = {"io.gitdock.project": P, "io.gitdock.service": rc.service, "io.gitdock.container-number": "1"}
    base = ObservedContainer(
        id=rc.id,
        name=rc.name,
        image=rc.image,
        image_id=rc.image_id,
        state="running",
        status="Up 2 minutes",
        labels=labels,
        networks={n: NET_ID for n in rc.networks},
    )
    return replace(base, **kw)


def observed(*containers: ObservedContainer, networks: bool = True, volumes: bool = True) -> ObservedState:
    return ObservedState(
        containers=containers,
        networks=(ObservedNetwork(NET_ID, f"{P}_default", "bridge", {"io.gitdock.project": P}),)
        if networks
        else (),
        volumes=(ObservedVolume(f"{P}_data", "local", {"io.gitdock.project": P}),) if volumes else (),
    )


def event(kind: str, action: str, ident: str, at: float, **attrs: str) -> DockerEvent:
    return DockerEvent(kind, action, ident, attrs.get("name", ""), int(at * 1e9), dict(attrs))


def inspect_of(rc: AppliedContainer, **host: Any) -> dict[str, Any]:
    base_host: dict[str, Any] = {
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "Memory": 0,
        "MemoryReservation": 0,
        "NanoCpus": 0,
        "CpuShares": 0,
        "PidsLimit": None,
        "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
        "Mounts": [{"Type": "volume", "Source": f"{P}_data", "Target": "/data"}],
    }
    base_host.update(host)
    env = ["PATH=/bin", *rc.env]
    return {"Id": rc.id, "HostConfig": base_host, "Config": {"Env": env}}


def only(report: DriftReport) -> dict[str, Any]:
    assert len(report.items) == 1, report.render_text()
    data: dict[str, Any] = report.items[0].to_dict()
    return data


def test_no_drift_when_the_host_matches_the_record() -> None:
    rc = applied()
    report = detect_drift(record(rc), observed(live(rc)), {rc.id: inspect_of(rc)}, now=NOW)
    assert report.items == ()
    assert not report.has_drift
    assert report.render_text() == "project shop: no drift"


def test_container_stopped_by_hand_is_state_drift_with_its_exit_code() -> None:
    rc = applied()
    events = [
        event("container", "kill", rc.id, T0 + 61, signal="15"),
        event("container", "die", rc.id, T0 + 63, exitCode="0"),
        event("container", "stop", rc.id, T0 + 63.01),
    ]
    obs = observed(live(rc, state="exited", status="Exited (0) 30 seconds ago"))
    item = only(detect_drift(record(rc), obs, events=events, now=NOW))
    assert item["resource"] == "service:web:1"
    assert (item["field"], item["kind"], item["desired"], item["live"]) == (
        "state",
        "changed",
        "running",
        "exited (0)",
    )
    assert item["what"] == "stopped by hand at 22:14:23, exit 0"


def test_killed_container_names_the_signal_and_exit_code() -> None:
    rc = applied()
    events = [
        event("container", "kill", rc.id, T0 + 1, signal="9"),
        event("container", "die", rc.id, T0 + 1.1, exitCode="137"),
    ]
    obs = observed(live(rc, state="exited", status="Exited (137) 1 second ago"))
    item = only(detect_drift(record(rc), obs, events=events, now=NOW))
    assert item["live"] == "exited (137)"
    assert item["what"] == "killed (SIGKILL) at 22:13:21, exit 137"


def test_without_events_the_status_line_explains_the_stop() -> None:
    rc = applied()
    obs = observed(live(rc, state="exited", status="Exited (137) 5 minutes ago"))
    assert only(detect_drift(record(rc), obs, now=NOW))["what"] == "exited, exit 137"


def test_container_docker_is_restarting_is_not_drift() -> None:
    rc = applied(restart="always")
    assert detect_drift(record(rc), observed(live(rc, state="restarting")), now=NOW).items == ()
    # Exited a moment ago by itself under restart: always: Docker is about to start it again.
    died = [event("container", "die", rc.id, NOW - 0.5, exitCode="1")]
    obs = observed(live(rc, state="exited", status="Exited (1) Less than a second ago"))
    assert detect_drift(record(rc), obs, events=died, now=NOW).items == ()
    # Stopped by hand, Docker will not restart it: drift.
    stopped = [*died, event("container", "stop", rc.id, NOW - 0.4)]
    assert only(detect_drift(record(rc), obs, events=stopped, now=NOW))["field"] == "state"


def test_on_failure_exit_zero_is_not_restarted_so_it_is_drift() -> None:
    rc = applied(restart="on-failure:3")
    died = [event("container", "die", rc.id, NOW - 0.5, exitCode="0")]
    obs = observed(live(rc, state="exited", status="Exited (0) Less than a second ago"))
    assert only(detect_drift(record(rc), obs, events=died, now=NOW))["what"].startswith("exited at")


def test_finished_one_shot_job_is_not_drift() -> None:
    rc = applied(service="migrate", expect=ExpectedState.COMPLETED)
    obs = observed(live(rc, state="exited", status="Exited (0) 1 hour ago"))
    assert detect_drift(record(rc), obs, now=NOW).items == ()


def test_container_recreated_by_hand_is_drift_even_with_the_same_labels() -> None:
    rc = applied()
    new = live(rc, id=cid(999))
    events = [event("container", "destroy", rc.id, T0 + 5), event("container", "create", cid(999), T0 + 6)]
    item = only(detect_drift(record(rc), observed(new), events=events, now=NOW))
    assert (item["field"], item["kind"]) == ("id", "recreated")
    assert (item["desired"], item["live"]) == (rc.id[:12], cid(999)[:12])
    assert item["what"] == "recreated by hand at 22:13:26"
    assert containers_to_inspect(record(rc), observed(new)) == [cid(999)]


def test_removed_container_is_missing() -> None:
    rc = applied()
    events = [event("container", "destroy", rc.id, T0 + 7)]
    item = only(detect_drift(record(rc), observed(), events=events, now=NOW))
    assert (item["resource"], item["field"], item["kind"]) == ("service:web:1", "existence", "missing")
    assert (item["desired"], item["live"], item["what"]) == ("running", "missing", "removed at 22:13:27")


def test_extra_container_with_the_project_label_is_rogue() -> None:
    rc = applied()
    rogue = live(rc, id=cid(555), name="sneaky")
    item = only(detect_drift(record(rc), observed(live(rc), rogue), now=NOW))
    assert (item["resource"], item["field"], item["kind"]) == ("container:sneaky", "existence", "rogue")
    assert (item["desired"], item["live"]) == ("absent", "running")


def test_network_disconnected_by_hand() -> None:
    rc = applied()
    events = [event("network", "disconnect", NET_ID, T0 + 9, name=f"{P}_default", container=rc.id)]
    item = only(detect_drift(record(rc), observed(live(rc, networks={})), events=events, now=NOW))
    assert (item["field"], item["desired"], item["live"]) == ("networks", f"{P}_default", "none")
    assert item["what"] == f"disconnected from network {P}_default at 22:13:29"


def test_missing_network_and_volume() -> None:
    rc = applied()
    events = [event("volume", "destroy", f"{P}_data", T0 + 3, name=f"{P}_data")]
    report = detect_drift(
        record(rc), observed(live(rc), networks=False, volumes=False), events=events, now=NOW
    )
    rows = [(i.resource, i.field.value, i.kind.value, i.what) for i in report.items]
    assert rows == [
        ("network:default", "existence", "missing", "removed"),
        ("volume:data", "existence", "missing", "removed at 22:13:23"),
    ]


def test_image_changed_under_the_same_container_name() -> None:
    rc = applied()
    item = only(detect_drift(record(rc), observed(live(rc, image_id="sha256:" + "b" * 64)), now=NOW))
    assert (item["field"], item["live"]) == ("image", "busybox:1 (bbbbbbbbbbbb)")


def test_docker_update_memory_is_seen_through_the_update_event() -> None:
    rc = applied()
    update = event("container", "update", rc.id, T0 + 20)
    obs = observed(live(rc))
    assert containers_to_inspect(record(rc), obs, [update]) == [rc.id]
    assert containers_to_inspect(record(rc), obs, []) == []
    inspected = {rc.id: inspect_of(rc, Memory=64 << 20, NanoCpus=1_500_000_000)}
    report = detect_drift(record(rc), obs, inspected, [update], now=NOW)
    rows = [(i.field, i.desired, i.live, i.what) for i in report.items]
    assert rows == [
        (DriftField.CPUS, "unlimited", "1.5", "updated at 22:13:40: cpus unlimited → 1.5"),
        (DriftField.MEMORY, "unlimited", "64M", "updated at 22:13:40: memory unlimited → 64M"),
    ]
    assert report.inspected == 1


def test_restart_policy_changed_in_place() -> None:
    rc = applied(restart="always")
    inspected = {rc.id: inspect_of(rc, RestartPolicy={"Name": "on-failure", "MaximumRetryCount": 2})}
    item = only(detect_drift(record(rc), observed(live(rc)), inspected, now=NOW))
    assert (item["field"], item["desired"], item["live"]) == ("restart", "always", "on-failure:2")


def test_deep_check_inspects_every_recorded_container() -> None:
    a, b = applied(), applied(service="worker")
    assert containers_to_inspect(record(a, b), observed(live(a), live(b)), deep=True) == [a.id, b.id]


def test_environment_secrets_are_redacted() -> None:
    rc = applied(env=("GREETING=hi", "DB_PASSWORD=hunter2", "api_token=t0k", "SHOP_PIN=1234"))
    other = dict(inspect_of(rc))
    other["Config"] = {"Env": ["GREETING=ho", "DB_PASSWORD=letmein", "api_token=t1k", "SHOP_PIN=9999"]}
    report = detect_drift(record(rc), observed(live(rc)), {rc.id: other}, now=NOW, secret_names={"SHOP_PIN"})
    item = only(report)
    assert item["field"] == "environment"
    assert item["desired"] == "DB_PASSWORD=<redacted>, GREETING=hi, SHOP_PIN=<redacted>, api_token=<redacted>"
    assert item["live"] == "DB_PASSWORD=<redacted>, GREETING=ho, SHOP_PIN=<redacted>, api_token=<redacted>"
    rendered = report.to_json() + report.render_text() + report.render_markdown()
    for secret in ("hunter2", "letmein", "t0k", "t1k", "1234", "9999"):
        assert secret not in rendered


@pytest.mark.parametrize(
    ("name", "secret"),
    [("POSTGRES_PASSWORD", True), ("aws_secret_access_key", True), ("GITHUB_TOKEN", True),
     ("Api-Key", True), ("REGISTRY_CREDENTIALS", True), ("GREETING", False), ("PORT", False)],
)  # fmt: skip
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_changed_ports_and_mounts_are_seen_on_inspect() -> None:
    rc = applied()
    other = inspect_of(
        rc,
        PortBindings={"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9090"}]},
        Mounts=[{"Type": "volume", "Source": "elsewhere", "Target": "/data"}],
    )
    report = detect_drift(record(rc), observed(live(rc)), {rc.id: other}, now=NOW)
    assert [(i.field, i.desired, i.live) for i in report.items] == [
        (DriftField.PORTS, ":8080->80/tcp", "127.0.0.1:9090->80/tcp"),
        (DriftField.VOLUMES, f"volume:{P}_data:/data", "volume:elsewhere:/data"),
    ]


def test_mount_keys_treat_named_binds_as_volumes_and_ignore_anonymous_names() -> None:
    assert mount_keys({"Binds": ["data:/d", "/srv:/s:ro", "/anon"]}) == (
        "bind:/srv:/s:ro",
        "volume::/anon",
        "volume:data:/d",
    )


def test_first_seen_and_what_carry_over_from_the_previous_report() -> None:
    rc = applied()
    obs = observed(live(rc, state="exited", status="Exited (0) 1 minute ago"))
    events = [
        event("container", "die", rc.id, T0 + 1, exitCode="0"),
        event("container", "stop", rc.id, T0 + 1.1),
    ]
    first = detect_drift(record(rc), obs, events=events, now=NOW)
    later = detect_drift(record(rc), obs, now=NOW + 600, previous=first)
    assert later.items[0].first_seen == NOW
    assert later.items[0].what == "stopped by hand at 22:13:21, exit 0"
    assert later.checked_at == NOW + 600


def test_report_renders_as_text_markdown_and_json() -> None:
    rc = applied()
    events = [
        event("container", "kill", rc.id, T0 + 1, signal="9"),
        event("container", "die", rc.id, T0 + 1, exitCode="137"),
    ]
    obs = observed(live(rc, state="exited", status="Exited (137) 1 minute ago"), volumes=False)
    report = detect_drift(record(rc), obs, events=events, now=NOW)
    assert report.render_text() == "\n".join(
        [
            "project shop: 2 drift item(s)",
            "RESOURCE       FIELD      DESIRED    LIVE          FIRST SEEN  WHAT",
            "service:web:1  state      running    exited (137)  22:15:00    "
            "killed (SIGKILL) at 22:13:21, exit 137",
            "volume:data    existence  shop_data  missing       22:15:00    removed",
        ]
    )
    assert report.render_markdown().splitlines()[2:] == [
        "| resource | field | desired | live | first seen | what |",
        "|---|---|---|---|---|---|",
        "| service:web:1 | state | running | exited (137) | 2023-11-14T22:15:00Z "
        "| killed (SIGKILL) at 22:13:21, exit 137 |",
        "| volume:data | existence | shop_data | missing | 2023-11-14T22:15:00Z | removed |",
    ]
    data = json.loads(report.to_json())
    assert data["drift"] is True and data["revision"] == "abc123"
    assert DriftReport.from_dict(data) == report


def test_applied_record_round_trips_through_json() -> None:
    rec = record(applied(), applied(service="worker", expect=ExpectedState.COMPLETED))
    assert AppliedRecord.from_json(rec.to_json()) == rec
    with pytest.raises(ValueError, match="version 9"):
        AppliedRecord.from_dict({**rec.to_dict(), "version": 9})


def test_applied_record_takes_config_from_the_create_bodies_and_ids_from_the_snapshot() -> None:
    svc = Service(
        name="web",
        image="busybox:1",
        environment=(("A", "1"), ("UNSET", None)),
        ports=(PortMapping(80, "8080"),),
        mounts=(Mount("volume", "/data", "data"),),
        networks=(("default", NetworkAttachment()),),
        restart="on-failure:3",
        extra=(("mem_limit", 512 << 20),),
    )
    project = Project(
        P,
        (svc,),
        (Network("default", f"{P}_default"),),
        (Volume("data", f"{P}_data"), Volume("ext", "ext", external=True)),
    )
    web = ObservedContainer(
        cid(1), f"{P}-web-1", "busybox:1", IMG, "running", "Up", {}, {f"{P}_default": NET_ID}
    )
    snapshot = ObservedState(
        (web,),
        (ObservedNetwork(NET_ID, f"{P}_default", "bridge", {}),),
        (ObservedVolume(f"{P}_data", "local", {}), ObservedVolume("ext", "local", {})),
    )
    rec = applied_record(project, snapshot, applied_at=T0, revision="r1")
    (c,) = rec.containers
    assert (c.id, c.image_id, c.expect, c.restart) == (cid(1), IMG, ExpectedState.RUNNING, "on-failure:3")
    assert dict(c.resources)["Memory"] == 512 << 20
    assert c.env == ("A=1",)
    assert c.ports == (":8080->80/tcp",)
    assert c.mounts == (f"volume:{P}_data:/data",)
    assert c.networks == (f"{P}_default",)
    assert rec.networks == (AppliedNetwork("default", f"{P}_default", NET_ID),)
    assert rec.volumes == (AppliedVolume("data", f"{P}_data"),)  # external ones are not gitdock's
    assert detect_drift(rec, snapshot, now=NOW).items == ()


def test_docker_event_from_raw() -> None:
    raw = {
        "Type": "container",
        "Action": "die",
        "Actor": {"ID": cid(1), "Attributes": {"exitCode": "137", "name": "x", "io.gitdock.project": P}},
        "time": 1700000001,
        "timeNano": 1700000001123456789,
    }
    e = DockerEvent.from_raw(raw)
    assert (e.type, e.action, e.id, e.name, e.project, e.time_ns) == (
        "container",
        "die",
        cid(1),
        "x",
        P,
        1700000001123456789,
    )
    vol = DockerEvent.from_raw({"Type": "volume", "Action": "destroy", "Actor": {"ID": "v1"}, "time": 5})
    assert (vol.name, vol.time_ns) == ("v1", 5_000_000_000)


# -- heal policy ------------------------------------------------------------------------------


def _items(*resources: str) -> list[Any]:
    rc = applied()
    report = detect_drift(record(rc), observed(), now=NOW)
    return [replace(report.items[0], resource=r) for r in resources]


def test_report_mode_never_heals() -> None:
    healer = Healer(HealPolicy(HealMode.REPORT))
    assert healer.should_heal(P, _items("service:web:1"), NOW) == (False, [])


def test_heal_mode_heals_until_a_resource_flaps() -> None:
    healer = Healer(HealPolicy(HealMode.HEAL, max_heals=3, window=60))
    for k in range(3):
        assert healer.should_heal(P, _items("service:web:1"), NOW + k) == (True, [])
    assert healer.should_heal(P, _items("service:web:1"), NOW + 3) == (False, ["service:web:1"])
    decision = healer.decide(P, _items("service:web:1", "volume:data"), NOW + 4)
    assert (decision.heal, decision.healing, decision.flapping) == (
        True,
        ("volume:data",),
        ("service:web:1",),
    )
    assert "not healing service:web:1: flapping" in decision.message
    # Once the old heals leave the window, healing resumes.
    assert healer.should_heal(P, _items("service:web:1"), NOW + 61) == (True, [])


def test_heal_history_is_per_project_and_can_be_forgotten() -> None:
    healer = Healer(HealPolicy(max_heals=1, window=60))
    assert healer.should_heal(P, _items("service:web:1"), NOW)[0]
    assert healer.should_heal("other", _items("service:web:1"), NOW)[0]
    assert healer.is_flapping(P, "service:web:1", NOW)
    healer.forget(P)
    assert not healer.is_flapping(P, "service:web:1", NOW)
    assert healer.should_heal(P, [], NOW) == (False, [])


def test_a_record_that_differs_only_in_its_time_is_not_written_again(tmp_path: Path) -> None:
    rc = applied()
    with AppliedStore.open(tmp_path) as store:
        assert store.save(record(rc)) is True
        assert store.save(replace(record(rc), applied_at=T0 + 60)) is False
        kept = store.load(P)
        assert kept is not None and kept.applied_at == T0  # the time of the apply that changed it

        moved = replace(rc, id="f" * 64)
        assert store.save(replace(record(moved), applied_at=T0 + 120)) is True
        kept = store.load(P)
        assert kept is not None and kept.applied_at == T0 + 120 and kept.containers[0].id == "f" * 64
        assert store.save(replace(record(moved), applied_at=T0 + 180, revision="def456")) is True


def test_a_kept_drift_report_makes_the_same_record_be_written_and_the_report_dropped(tmp_path: Path) -> None:
    rc = applied()
    with AppliedStore.open(tmp_path) as store:
        store.save(record(rc))
        stopped = live(rc, state="exited", status="Exited (137) 5 seconds ago")
        store.save_report(detect_drift(record(rc), observed(stopped), {}, now=NOW))
        assert store.last_report(P) is not None
        assert store.save(replace(record(rc), applied_at=T0 + 60)) is True
        assert store.last_report(P) is None
        kept = store.load(P)
        assert kept is not None and kept.applied_at == T0 + 60


def test_the_applied_basis_changes_with_what_a_record_keeps_and_nothing_else() -> None:
    project = Project(P, (), (Network("default", f"{P}_default"),), (Volume("data", f"{P}_data"),))
    labels = {"io.gitdock.project": P, "io.gitdock.service": "web", "io.gitdock.container-number": "1"}
    web = ObservedContainer(cid(1), f"{P}-web-1", "busybox:1", IMG, "running", "Up 2 minutes", labels, {})
    net = ObservedNetwork(NET_ID, f"{P}_default", "bridge", {})
    vol = ObservedVolume(f"{P}_data", "local", {})
    other = ObservedContainer(cid(9), "other-1", "busybox:1", IMG, "running", "Up", {}, {})

    def basis(*containers: ObservedContainer, load: str = "fp1", networks: bool = True) -> str:
        state = ObservedState(containers, (net,) if networks else (), (vol,))
        return applied_basis(load, project, state)

    same = basis(web)
    assert basis(web, other) == same  # another project's containers are not the record's
    assert basis(replace(web, status="Up 3 minutes")) == same  # the status text moves on its own
    changed = [
        basis(web, load="fp2"),  # another load: other desired containers
        basis(replace(web, id=cid(2))),  # recreated by hand
        basis(replace(web, image_id="sha256:" + "b" * 64)),
        basis(replace(web, state="exited", status="Exited (0) 1 second ago")),
        basis(replace(web, networks={f"{P}_default": NET_ID})),
        basis(web, networks=False),  # the network was removed
        basis(),
    ]
    assert same not in changed and len(set(changed)) == len(changed)


def test_a_record_made_from_a_stored_basis_is_known_until_a_drift_report_is_kept(tmp_path: Path) -> None:
    rc = applied()
    with AppliedStore.open(tmp_path) as store:
        assert not store.made_from(P, "b1")
        store.save(record(rc), "b1")
        assert store.made_from(P, "b1") and not store.made_from(P, "b2")
        assert store.save(replace(record(rc), applied_at=T0 + 60), "b1") is False
        assert store.save(replace(record(rc), applied_at=T0 + 60), "b2") is True  # same record, new basis
        kept = store.load(P)
        assert kept is not None and kept.applied_at == T0 and store.made_from(P, "b2")
        stopped = live(rc, state="exited", status="Exited (137) 5 seconds ago")
        store.save_report(detect_drift(record(rc), observed(stopped), {}, now=NOW))
        assert not store.made_from(P, "b2")
        store.save(record(rc))  # without a basis (the agent's): none is kept
        assert not store.made_from(P, "b2")
