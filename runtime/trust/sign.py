"""The publisher side: sign an image and push the signature to its registry, as cosign does.

`sign_image` signs an image's digest with a private key; `attach_signature` appends the
simple-signing payload and its signature to the digest's legacy `sha256-<hex>.sig` manifest
(pushing the payload blob, a config blob and the manifest through `registry.RegistryClient`).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, Sequence

from gitdock.runtime.trust.keys import PrivateKey
from gitdock.runtime.trust.registry import OCI_MANIFEST, Descriptor, ManifestNotFound, RegistryClient
from gitdock.runtime.trust.signature import (
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    legacy_signature_tag,
    make_simple_signing_payload,
    sign_payload,
)
from gitdock.specs.reference import ImageReference

__all__ = ["attach_signature", "sign_image", "sign_image_recursive"]

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def _signature_config(layer_digests: Sequence[str]) -> bytes:
    """The config blob cosign writes for a `.sig` image (diff_ids are the payload digests)."""
    doc = {
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": list(layer_digests)},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def attach_signature(
    ref: ImageReference,
    digest: str,
    payload: bytes,
    signature: bytes,
    registry_client: RegistryClient,
    *,
    annotations: Mapping[str, str] | None = None,
) -> None:
    """Append one simple-signing layer (payload + signature) to `digest`'s `.sig` manifest.

    `annotations` are added to the layer's (cosign's certificate, chain and Rekor bundle).
    """
    tag = legacy_signature_tag(digest)
    try:
        existing = registry_client.get_manifest(ref, tag).layers()
    except ManifestNotFound:
        existing = []
    payload_digest = registry_client.push_blob(ref, payload)
    layer_annotations = {**(annotations or {}), SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()}
    layer = Descriptor(SIMPLE_SIGNING_MEDIA_TYPE, payload_digest, len(payload), layer_annotations)
    layers = [*existing, layer]
    config = _signature_config([d.digest for d in layers])
    config_digest = registry_client.push_blob(ref, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": config_digest},
        "layers": [d.to_json() for d in layers],
    }
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    registry_client.put_manifest(ref, tag, raw, OCI_MANIFEST)


def _sign_digest(ref: ImageReference, digest: str, private_key: PrivateKey, client: RegistryClient) -> None:
    payload = make_simple_signing_payload(ref.repository_ref, digest, timestamp=int(time.time()))
    attach_signature(ref, digest, payload, sign_payload(private_key, payload), client)


def sign_image(ref: ImageReference, private_key: PrivateKey, registry_client: RegistryClient) -> str:
    """Attach a cosign-compatible legacy signature to `ref`'s digest; returns the signed digest.

    Pushes the simple-signing payload blob, a config blob and the manifest at the
    `sha256-<hex>.sig` tag, appending to the layers already there.
    """
    digest = registry_client.resolve_digest(ref)
    _sign_digest(ref, digest, private_key, registry_client)
    return digest


def sign_image_recursive(
    ref: ImageReference, private_key: PrivateKey, registry_client: RegistryClient
) -> list[str]:
    """`cosign sign --recursive`: sign `ref`'s digest and, for an index, every manifest it lists.

    Returns the signed digests, the index first. Each signature names `ref`'s repository and
    sits at its own digest's `sha256-<hex>.sig` tag, where cosign and containers/image look.
    """
    manifest = registry_client.get_manifest(ref)
    digests = [manifest.digest]
    if manifest.is_index:
        digests += [d.digest for d in manifest.descriptors() if d.digest not in digests]
    for digest in digests:
        _sign_digest(ref, digest, private_key, registry_client)
    return digests
