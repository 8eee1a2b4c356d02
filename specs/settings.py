"""The rest of the Compose Specification, normalised: what ``normalise`` asks of a validated spec
for the settings beyond its core model.

Each function answers one question of a validated ``schema`` model (a service's further Engine
settings, a mount's options, a network attachment, a network's options, the warnings for
settings that have no effect on a plain Docker host). Values stay keyed by the Compose key the
user wrote; ``gitdock.runtime.desired`` maps them to the Engine API. Unset settings are left
out, so they add nothing to a config hash.

This module is pure.
"""

from __future__ import annotations

from typing import Any

from gitdock.specs.model import IpamPool, NetworkAttachment
from gitdock.specs.schema import (
    BlkioConfig,
    DeviceRequest,
    KeyValues,
    NetworkSpec,
    ServiceNetwork,
    ServiceSpec,
    ServiceVolume,
)

# Service keys whose validated value goes to Service.extra as it is.
PLAIN_SETTINGS = ("cpu_count", "cpu_percent", "cpu_rt_period", "cpu_rt_runtime", "isolation")

API_SOCKET = "/var/run/docker.sock"


def further_settings(spec: ServiceSpec) -> dict[str, Any]:
    """Issue 11's service settings for ``Service.extra``; unset ones are absent."""
    out: dict[str, Any] = {key: getattr(spec, key) for key in PLAIN_SETTINGS}
    if spec.blkio_config is not None:
        out["blkio_config"] = _blkio(spec.blkio_config)
    out["external_links"] = list(spec.external_links)
    if spec.gpus is not None:
        gpus = [DeviceRequest(capabilities=["gpu"], count="all")] if spec.gpus == "all" else spec.gpus
        out["gpus"] = [_device_request(d, gpu=True) for d in gpus]
    reservations = spec.deploy.resources.reservations if spec.deploy and spec.deploy.resources else None
    if reservations is not None and reservations.devices:
        out["deploy.resources.reservations.devices"] = [_device_request(d) for d in reservations.devices]
    return {k: v for k, v in out.items() if v is not None and v != [] and v != {}}


def _blkio(config: BlkioConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "weight": config.weight,
        "weight_device": [{"path": w.path, "weight": w.weight} for w in config.weight_device],
    }
    for key in ("device_read_bps", "device_read_iops", "device_write_bps", "device_write_iops"):
        out[key] = [{"path": limit.path, "rate": limit.rate} for limit in getattr(config, key)]
    return {k: v for k, v in out.items() if v is not None and v != []}


def _device_request(device: DeviceRequest, *, gpu: bool = False) -> dict[str, Any]:
    """A device request; ``count: all`` is -1, and a GPU request's capability defaults to gpu."""
    capabilities = list(device.capabilities) or (["gpu"] if gpu else [])
    count = -1 if device.count == "all" else device.count
    if count is None and not device.device_ids:
        count = -1  # Compose: neither count nor device_ids means all of them
    return {
        "driver": device.driver or "",
        "count": count if count is not None else 0,
        "device_ids": list(device.device_ids),
        "capabilities": capabilities,
        "options": dict(_pairs(device.options)),
    }


def _pairs(values: KeyValues | None) -> list[tuple[str, str]]:
    if values is None:
        return []
    if isinstance(values, dict):
        return sorted((k, v or "") for k, v in values.items())
    return sorted((k, v) for k, _, v in (item.partition("=") for item in values))


def mount_options(vol: ServiceVolume) -> dict[str, Any]:
    """The ``model.Mount`` keyword arguments of a long-syntax mount's options, when set."""
    out: dict[str, Any] = {}
    if vol.bind is not None:
        out["propagation"] = vol.bind.propagation
        out["selinux"] = vol.bind.selinux
        out["non_recursive"] = vol.bind.recursive == "disabled"
    if vol.volume is not None:
        out["nocopy"] = vol.volume.nocopy
        out["volume_labels"] = tuple(_pairs(vol.volume.labels))
    if vol.tmpfs is not None:
        out["tmpfs_mode"] = vol.tmpfs.mode
    if vol.image is not None:
        out["image_subpath"] = vol.image.subpath
    return {k: v for k, v in out.items() if v not in (None, False, ())}


def network_attachment(net: ServiceNetwork | None) -> NetworkAttachment:
    """A service's attachment to one network, from its ``networks.<key>`` mapping."""
    if net is None:
        return NetworkAttachment()
    return NetworkAttachment(
        tuple(net.aliases),
        net.ipv4_address,
        ipv6_address=net.ipv6_address,
        link_local_ips=tuple(net.link_local_ips),
        mac_address=net.mac_address,
        driver_opts=tuple(sorted(net.driver_opts.items())),
        priority=net.priority,
    )


def network_options(spec: NetworkSpec) -> dict[str, Any]:
    """The ``model.Network`` keyword arguments of a network's further options, when set."""
    out: dict[str, Any] = {
        "driver_opts": tuple(sorted(spec.driver_opts.items())),
        "enable_ipv6": bool(spec.enable_ipv6),
    }
    if spec.ipam is not None:
        if spec.ipam.driver not in (None, "default"):
            out["ipam_driver"] = spec.ipam.driver
        out["ipam_options"] = tuple(sorted(spec.ipam.options.items()))
        pools = tuple(
            IpamPool(c.subnet, c.ip_range, c.gateway, tuple(sorted(c.aux_addresses.items())))
            for c in spec.ipam.config
        )
        if any(p.ip_range or p.gateway or p.aux_addresses for p in pools):
            out["pools"] = pools
    return {k: v for k, v in out.items() if v not in (None, False, ())}


def service_warnings(name: str, spec: ServiceSpec) -> list[str]:
    """Settings of a service that are accepted but have no effect on a plain Docker host."""
    svc = f"services.{name}"
    out: list[str] = []
    if spec.deploy is not None and spec.deploy.mode == "global":
        out.append(f"{svc}.deploy.mode global runs one container: a plain Docker host is one node")
    for i, vol in enumerate(spec.volumes):
        if vol.bind is not None and vol.bind.recursive in ("writable", "readonly"):
            out.append(
                f"{svc}.volumes[{i}].bind.recursive {vol.bind.recursive} needs Docker Engine API 1.44; "
                "no effect with the API 1.41 subset gitdock uses"
            )
    if isinstance(spec.networks, dict):
        nets = spec.networks
        first = min(nets, key=lambda k: (-(nets[k].priority if nets[k] else 0), k))  # type: ignore[union-attr]
        for key, net in nets.items():
            if net is not None and net.mac_address and key != first:
                out.append(
                    f"{svc}.networks.{key}.mac_address needs Docker Engine API 1.44 on a service with "
                    "several networks; it applies to the first network only"
                )
    return out


def provider_warning(name: str, spec: ServiceSpec) -> str | None:
    """A ``provider`` service is run by a Compose plugin gitdock does not run: it is skipped."""
    if spec.provider is None:
        return None
    return (
        f"services.{name}.provider {spec.provider.type} is run by a Compose provider plugin, which "
        "gitdock does not run: the service is skipped"
    )
