"""gitdock's names on Docker: every ``io.gitdock.*`` label, resource id and container name.

Ownership is by label: gitdock only ever touches an object that carries ``LABEL_PROJECT``
with its project's name. Resource ids follow docker/compose (``service:web:1``,
``network:backend``, ``volume:data``); they name operations in plans, spans and drift
reports. This module is pure data and string formatting.
"""

from __future__ import annotations

LABEL_PREFIX = "io.gitdock."
LABEL_PROJECT = "io.gitdock.project"
LABEL_SERVICE = "io.gitdock.service"
LABEL_NUMBER = "io.gitdock.container-number"
LABEL_CONFIG_HASH = "io.gitdock.config-hash"
LABEL_CONFIG_FIELDS = "io.gitdock.config-fields"
LABEL_IMAGE = "io.gitdock.image"
LABEL_NETWORK = "io.gitdock.network"
LABEL_VOLUME = "io.gitdock.volume"
# The lock record of the image a container runs, when digests are resolved and verified.
LABEL_IMAGE_DIGEST = "io.gitdock.image.digest"
LABEL_IMAGE_TRUST = "io.gitdock.image.trust"
# Where a container's image came from when gitdock built it: "build@<revision>" (or "build"
# when the revision is not known); built images carry the revision and their content digest.
LABEL_IMAGE_SOURCE = "io.gitdock.image.source"
LABEL_BUILD_REVISION = "io.gitdock.build.revision"
LABEL_BUILD_DIGEST = "io.gitdock.build.digest"


def service_resource(service: str, number: int | None = None) -> str:
    """``service:web:1`` for one replica, ``service:web`` for the whole service."""
    return f"service:{service}" if number is None else f"service:{service}:{number}"


def network_resource(key: str) -> str:
    return f"network:{key}"


def volume_resource(key: str) -> str:
    return f"volume:{key}"


def container_name(project: str, service: str, number: int, explicit: str | None = None) -> str:
    """Compose's naming: ``container_name`` if the service sets one, else ``<project>-<service>-<n>``."""
    return explicit or f"{project}-{service}-{number}"


def build_resource(service: str) -> str:
    """``build:web``: the image of one service, built from the revision."""
    return f"build:{service}"


def image_source(revision: str | None) -> str:
    """The ``io.gitdock.image.source`` of a built image: ``build@<revision>``."""
    return f"build@{revision}" if revision else "build"


def replacement_name(name: str, config_hash: str) -> str:
    """The name a recreate builds the new container under, before the old one is removed."""
    return f"{config_hash[:12]}_{name}"
