"""The Helm chart (helm/gitdock): real `helm lint` and `helm template`, golden renders, schemas.

Every values file in helm/gitdock/ci/ is linted, rendered and compared with
helm/golden/<name>.yaml (GITDOCK_UPDATE_GOLDEN=1 rewrites them); every rendered object is
validated against Kubernetes' own schemas (kubernetes-validate, strict: unknown fields fail);
and the agent config each render puts in its ConfigMap must pass `gitdock agent --check-config`.

`helm` comes from tests/env/setup.sh (extracted from a PyPI package into .venv/bin). Without it
these tests skip, except under CI or GITDOCK_REQUIRE_DOCKER=1, where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

from support.docker import is_docker_required

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "gitdock"
GOLDEN = REPO / "helm" / "golden"
VALUES = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))
KUBERNETES_VERSION = "1.31.0"
RELEASE = "gitdock"
# Custom resources have no schema in kubernetes-validate; their shape is asserted below.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def helm_binary() -> str:
    found = shutil.which(
        "helm", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if found is None:
        reason = "helm is not installed (tests/env/setup.sh puts it in .venv/bin)"
        if is_docker_required():
            pytest.fail(f"{reason}; CI or GITDOCK_REQUIRE_DOCKER=1 is set, so this fails instead of skipping")
        pytest.skip(reason)
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def render(values: str | None, *extra: str) -> str:
    files = ["-f", str(CHART / "ci" / f"{values}-values.yaml")] if values else []
    return helm("template", RELEASE, str(CHART), "--namespace", "gitdock", *files, *extra).stdout


def objects(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def by_kind(rendered: str, kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects(rendered) if o["kind"] == kind]
    return found


def test_chart_version_follows_gitdocks_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    with (REPO / "pyproject.toml").open("rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert (chart["version"], chart["appVersion"]) == (version, version)


@pytest.mark.parametrize("values", [None, *VALUES])
def test_chart_lints_clean(values: str | None) -> None:
    files = ["-f", str(CHART / "ci" / f"{values}-values.yaml")] if values else []
    helm("lint", "--strict", str(CHART), *files)


@pytest.mark.parametrize("values", VALUES)
def test_render_matches_golden(values: str) -> None:
    rendered = render(values)
    golden = GOLDEN / f"{values}.yaml"
    if os.environ.get("GITDOCK_UPDATE_GOLDEN") == "1":
        golden.write_text(rendered)
    assert golden.exists(), f"{golden} is missing: run with GITDOCK_UPDATE_GOLDEN=1"
    assert rendered == golden.read_text()


@pytest.mark.parametrize("values", VALUES)
def test_every_rendered_object_is_valid_kubernetes(values: str) -> None:
    checked = 0
    for obj in objects(render(values)):
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 4  # ConfigMap, PVC, Service, Deployment at least


@pytest.mark.parametrize("values", VALUES)
def test_rendered_agent_config_passes_check_config(values: str, tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(by_kind(render(values), "ConfigMap")["data"]["agent.yaml"])
    done = subprocess.run(
        [sys.executable, "-m", "gitdock.agent.cli.main", "agent", "--check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout


def test_deployment_is_one_recreated_replica_with_probes_and_a_restricted_security_context() -> None:
    deployment = by_kind(render("default"), "Deployment")
    spec = deployment["spec"]
    assert (spec["replicas"], spec["strategy"]) == (1, {"type": "Recreate"})
    pod = spec["template"]["spec"]
    (agent,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert agent["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert not any("hostPath" in v for v in pod["volumes"])  # the node's socket is opt-in only
    assert "DOCKER_HOST" not in {e["name"] for e in agent["env"]}


def test_docker_host_comes_from_a_secret_and_the_socket_only_when_enabled() -> None:
    agent = by_kind(render("tcp-secrets"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in agent["env"]}
    assert env["DOCKER_HOST"]["valueFrom"] == {
        "secretKeyRef": {"name": "gitdock-docker", "key": "DOCKER_HOST"}
    }

    pod = by_kind(render("socket"), "Deployment")["spec"]["template"]["spec"]
    assert {"name": "docker-socket", "hostPath": {"path": "/var/run/docker.sock", "type": "Socket"}} in pod[
        "volumes"
    ]
    assert pod["securityContext"]["supplementalGroups"] == [998]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    assert env["GITDOCK_LISTEN"] == "0.0.0.0:9100"
    assert "listen: 0.0.0.0:9100" in by_kind(render("socket"), "ConfigMap")["data"]["agent.yaml"]


def test_ingress_and_service_monitor_are_optional_and_point_at_the_service() -> None:
    assert {o["kind"] for o in objects(render("default"))} == {
        "ConfigMap",
        "PersistentVolumeClaim",
        "Service",
        "Deployment",
    }
    rendered = render("tcp-secrets")
    service = by_kind(rendered, "Service")
    monitor = by_kind(rendered, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    backend = by_kind(rendered, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend == {"service": {"name": service["metadata"]["name"], "port": {"name": "http"}}}


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("config.listen=0.0.0.0:1", "additional properties 'listen' not allowed"),
        ("docker.socket.enabled=yes", "/docker/socket/enabled': got string, want boolean"),
        ("service.port=70000", "/service/port': maximum"),
    ],
)
def test_values_schema_rejects_bad_values(setting: str, complaint: str) -> None:
    done = helm("template", RELEASE, str(CHART), "--set", setting, check=False)
    assert done.returncode != 0
    assert complaint in done.stderr.lower(), done.stderr
