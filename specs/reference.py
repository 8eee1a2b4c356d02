"""Image references: parsing and normalising `[registry/]repository[:tag][@digest]`.

This is a purely computational module with no side-effects. It follows the rules of
Docker's `distribution/reference` package:

- the first path component is a registry when it contains `.` or `:`, is `localhost`,
  or has an uppercase letter; otherwise the registry is `docker.io`;
- single-component Docker Hub names get the `library/` prefix;
- a reference with neither tag nor digest gets the tag `latest`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_API",
    "ImageReference",
    "is_digest",
    "parse_reference",
]

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"(sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})")
_MAX_NAME = 255


def is_digest(value: str) -> bool:
    """True when `value` is a well-formed `sha256:`/`sha384:`/`sha512:` content digest."""
    return _DIGEST_RE.fullmatch(value) is not None


@dataclass(frozen=True)
class ImageReference:
    """A normalised image reference. `tag` may be set together with `digest`; the digest wins."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository_ref(self) -> str:
        """`registry/repository`, e.g. `docker.io/library/nginx`."""
        return f"{self.registry}/{self.repository}"

    @property
    def canonical(self) -> str:
        """Fully qualified form, e.g. `docker.io/library/nginx:latest`."""
        return self.repository_ref + self._suffix()

    @property
    def familiar(self) -> str:
        """Short form as `docker` prints it, e.g. `nginx:latest`, `127.0.0.1:5000/app:1`."""
        if self.registry == DOCKER_HUB:
            repo = self.repository.removeprefix("library/")
            if "/" in repo and repo != self.repository:
                repo = self.repository  # `library/a/b` must stay explicit
            return repo + self._suffix()
        return self.canonical

    @property
    def api_host(self) -> str:
        """Host (and port) to talk the Distribution API to: `registry-1.docker.io` for Docker Hub."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def is_pinned(self) -> bool:
        """True when the reference names a digest, so it must not be re-resolved."""
        return self.digest is not None

    def with_digest(self, digest: str) -> ImageReference:
        """The same image pinned to `digest` (the tag is kept for display)."""
        if not is_digest(digest):
            raise ValueError(f"digest {digest!r}: not a valid sha256/sha384/sha512 digest")
        return replace(self, digest=digest)

    def with_tag(self, tag: str) -> ImageReference:
        """The same repository at another tag, with no digest."""
        if _TAG_RE.fullmatch(tag) is None:
            raise ValueError(f"tag {tag!r}: not a valid tag")
        return replace(self, tag=tag, digest=None)

    def _suffix(self) -> str:
        out = f":{self.tag}" if self.tag is not None else ""
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    def __str__(self) -> str:
        return self.canonical


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        return first, rest
    return DOCKER_HUB, name


@functools.lru_cache(maxsize=1024)
def parse_reference(text: str) -> ImageReference:
    """Parse and normalise an image reference; raise ValueError saying what is wrong.

    Memoised (the reference is immutable): a plan of 1,000 services of one image asks it
    thousands of times.
    """
    if not text or text != text.strip():
        raise ValueError(f"image reference {text!r}: empty or surrounded by whitespace")
    remainder, at, digest = text.partition("@")
    if at and not is_digest(digest):
        raise ValueError(f"image reference {text!r}: {digest!r} is not a valid digest")
    tag: str | None = None
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if _TAG_RE.fullmatch(tag) is None:
            raise ValueError(f"image reference {text!r}: {tag!r} is not a valid tag")
    registry, repository = _split_domain(remainder)
    if registry != DOCKER_HUB and _DOMAIN_RE.fullmatch(registry) is None:
        raise ValueError(f"image reference {text!r}: {registry!r} is not a valid registry host")
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
    if _REPOSITORY_RE.fullmatch(repository) is None:
        why = "must be lowercase" if repository.lower() != repository else "has an invalid path"
        raise ValueError(f"image reference {text!r}: repository {repository!r} {why}")
    if len(registry) + 1 + len(repository) > _MAX_NAME:
        raise ValueError(f"image reference {text!r}: name longer than {_MAX_NAME} characters")
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if tag is None and not at:
        tag = "latest"
    return ImageReference(registry, repository, tag, digest if at else None)
