"""Images built from the revision: the build context as a tar, and the digest of its content.

A service with ``build:`` runs ``<project>-<service>:<digest prefix>``, where the digest covers
exactly what the Engine is sent: the context as a deterministic tar (sorted entries, owner 0,
mtime 0, ``.dockerignore`` applied) plus the build's settings (Dockerfile, args, target,
labels, ...). So an unchanged context names an image that already exists (nothing is built)
and an unchanged service keeps its config hash (nothing is recreated). ``bind_builds`` puts
that tag into the project before planning; the executor sends ``context_tar``'s tar.

A build the classic builder cannot do (``Build.refusals``: a BuildKit-only key such as
``secrets``, ``ssh``, ``additional_contexts`` or several platforms) still loads, binds and
plans; the executor's BuildImage calls ``refuse_classic_build`` first, a BuildError naming the
key, so it fails before anything live is touched (every other operation waits for it).

``.dockerignore`` follows Docker's rules (moby/patternmatcher): one pattern a line, ``#``
comments, ``*`` and ``?`` within one path segment, ``**`` across segments, a leading ``/``
ignored, ``!`` re-including, the last matching pattern winning, and a path excluded when a
parent directory is. The Dockerfile and ``.dockerignore`` are always sent (the Engine drops
them again when ignored, as the docker CLI arranges).

A remote context (``build.remote``: a git or tarball URL) is fetched by the Engine itself
(``POST /build?remote=``, no tar sent); its digest is the URL's and the settings', so it is
built once and again only when the URL or a setting changes (or ``--build``), and the plan
warns that it is not pinned to the deployed revision unless the URL names a commit.

No Docker, no network: the only I/O is reading the context's files. Nothing outside the
project directory is read: paths are checked when loading (``specs.normalise``) and again
here with symlinks resolved; symlinks inside the context are sent as links, never followed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import IO, TYPE_CHECKING, cast

from gitdock.specs.errors import PermanentError
from gitdock.specs.model import Build, Project, Service

if TYPE_CHECKING:
    import tarfile  # imported where a context is written: a no-op apply never needs it

# The name a Dockerfile from outside the context (or dockerfile_inline) gets in the tar.
INLINE_DOCKERFILE = ".gitdock.Dockerfile"
DIGEST_PREFIX = 12  # hex digits of the content digest in the image's tag


class BuildError(PermanentError):
    """A service's build cannot start or failed: a new commit must fix it."""


@dataclass(frozen=True)
class IgnorePattern:
    """One ``.dockerignore`` line: ``regex`` matches a slash-separated relative path."""

    text: str
    regex: re.Pattern[str]
    exception: bool  # a ``!`` line: re-includes what it matches


def parse_dockerignore(text: str) -> tuple[IgnorePattern, ...]:
    """The patterns of a ``.dockerignore``, in order, as Docker reads them. Pure."""
    patterns: list[IgnorePattern] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        if exception:
            line = line[1:].strip()
        if not line:
            continue
        cleaned = os.path.normpath(line).lstrip("/") or "."
        patterns.append(IgnorePattern(line, _compile(cleaned), exception))
    return tuple(patterns)


def _compile(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax as a regular expression (patternmatcher's ``compile``)."""
    out, i, n = ["^"], 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*" and i < n and pattern[i] == "*":
            i += 1
            if i < n and pattern[i] == "/":
                i += 1  # "**/" is "**"
            out.append(".*" if i >= n else "(.*/)?")
        elif ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i < n:
            out.append(re.escape(pattern[i]))
            i += 1
        elif ch in "[]":
            out.append(ch)  # a character class, as in Go's filepath.Match
        else:
            out.append(re.escape(ch))
    out.append("$")
    try:
        return re.compile("".join(out))
    except re.error:  # an unbalanced class matches nothing, as Docker's Match errors
        return re.compile(r"(?!)")


def is_excluded(path: str, patterns: tuple[IgnorePattern, ...]) -> bool:
    """Whether ``.dockerignore`` leaves ``path`` (relative, ``/``-separated) out. Pure.

    As patternmatcher's MatchesOrParentMatches: each pattern in order may flip the answer;
    a pattern matches the path itself or any of its parent directories.
    """
    parents = path.split("/")[:-1]
    prefixes = ["/".join(parents[: i + 1]) for i in range(len(parents))]
    excluded = False
    for pattern in patterns:
        if pattern.exception != excluded:
            continue  # an exclusion of what is already out, or an exception for what is in
        if pattern.regex.match(path) or any(pattern.regex.match(p) for p in prefixes):
            excluded = not pattern.exception
    return excluded


# --- the context as a tar ---------------------------------------------------------------


def dockerfile_in_context(build: Build) -> str:
    """The Dockerfile's name inside the tar (what the Engine's ``dockerfile`` parameter says);
    for a remote context, inside what the Engine fetches."""
    if build.remote is not None:
        return build.dockerfile
    if build.dockerfile_inline is not None:
        return INLINE_DOCKERFILE
    full = os.path.normpath(os.path.join(build.context, build.dockerfile))
    inside = os.path.relpath(full, build.context)
    return INLINE_DOCKERFILE if inside.startswith("..") else inside.replace(os.sep, "/")


def context_entries(build: Build) -> Iterator[tuple[str, str]]:
    """``(name in the tar, host path)`` for every entry sent, in a stable order."""
    patterns = _read_ignore(build.context)
    always = {".dockerignore", dockerfile_in_context(build)}
    yield from _walk(build.context, "", patterns, always, any(p.exception for p in patterns))


def _read_ignore(context: str) -> tuple[IgnorePattern, ...]:
    path = os.path.join(context, ".dockerignore")
    try:
        with open(path, encoding="utf-8") as f:
            return parse_dockerignore(f.read())
    except FileNotFoundError:
        return ()
    except (OSError, UnicodeDecodeError) as exc:
        raise BuildError(f"{path}: cannot read: {exc}") from None


def _walk(
    root: str, prefix: str, patterns: tuple[IgnorePattern, ...], always: set[str], has_exceptions: bool
) -> Iterator[tuple[str, str]]:
    """Depth-first, sorted by name; an excluded directory is entered only if a ``!`` may apply."""
    try:
        names = sorted(os.listdir(os.path.join(root, prefix) if prefix else root))
    except OSError as exc:
        raise BuildError(f"{os.path.join(root, prefix)}: cannot list: {exc.strerror}") from None
    for name in names:
        rel = f"{prefix}/{name}" if prefix else name
        host = os.path.join(root, rel)
        excluded = rel not in always and is_excluded(rel, patterns)
        is_dir = os.path.isdir(host) and not os.path.islink(host)
        if not excluded:
            yield rel, host
        if is_dir and (not excluded or has_exceptions):
            yield from _walk(root, rel, patterns, always, has_exceptions)


def write_context(build: Build, out: IO[bytes]) -> None:
    """Write the context tar of ``build`` to ``out``: the same bytes for the same content.

    Raises BuildError when the context or the Dockerfile is missing or cannot be read.
    """
    if not os.path.isdir(build.context):
        raise BuildError(f"build context {build.context}: not a directory")
    dockerfile = dockerfile_in_context(build)
    import tarfile

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for name, host in context_entries(build):
            _add(tar, name, host)
        if dockerfile == INLINE_DOCKERFILE:
            _add_bytes(tar, INLINE_DOCKERFILE, _outside_dockerfile(build))
        elif not os.path.isfile(os.path.join(build.context, dockerfile)):
            raise BuildError(f"{dockerfile}: no such Dockerfile in the build context {build.context}")


def _outside_dockerfile(build: Build) -> bytes:
    if build.dockerfile_inline is not None:
        return build.dockerfile_inline.encode()
    path = os.path.normpath(os.path.join(build.context, build.dockerfile))
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise BuildError(f"dockerfile {path}: {exc.strerror}") from None


def _add(tar: tarfile.TarFile, name: str, host: str) -> None:
    """One entry, normalised: owner 0, mtime 0, permission bits kept; sockets and fifos skipped."""
    import tarfile

    st = os.lstat(host)
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = 0
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(host)
        tar.addfile(info)
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif stat.S_ISREG(st.st_mode):
        info.size = st.st_size
        try:
            with open(host, "rb") as f:
                tar.addfile(info, f)
        except OSError as exc:
            raise BuildError(f"{host}: cannot read: {exc.strerror}") from None


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import tarfile

    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def refuse_classic_build(build: Build) -> None:
    """Raise BuildError when the classic builder cannot build ``build``, naming each key why."""
    if build.refusals:
        raise BuildError("; ".join(build.refusals))


def context_tar(build: Build) -> bytes:
    """The context tar in memory, as the Engine's ``POST /build`` takes it (empty for a remote
    context: the Engine fetches it, ``remote=``)."""
    if build.remote is not None:
        return b""
    buf = io.BytesIO()
    write_context(build, buf)
    return buf.getvalue()


# --- the content digest -----------------------------------------------------------------


class _Hasher(io.RawIOBase):
    """A write-only stream that only hashes what is written to it."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]  # bytes is all tarfile writes
        self.sha.update(data)
        return len(data)


# Build fields that name or locate the image but do not change what is built.
# The BuildKit-only settings are left out too: a refused build is never built, and the classic
# builder ignores the rest (cache_to, entitlements, privileged), so digests stay as they were.
_UNDIGESTED = frozenset(
    {
        *("context", "repository", "tags", "digest", "revision", "dockerfile_inline"),
        *("secrets", "ssh", "additional_contexts", "cache_to", "entitlements", "privileged"),
        *("platforms", "refusals", "remote"),
    }
)


def build_settings(build: Build) -> dict[str, object]:
    """The settings that change what is built, for the digest (the inline Dockerfile is in the tar)."""
    settings = {
        f.name: getattr(build, f.name) for f in dataclasses.fields(build) if f.name not in _UNDIGESTED
    }
    settings["dockerfile"] = dockerfile_in_context(build)
    return settings


def build_digest(build: Build) -> str:
    """``sha256:<hex>`` of the context tar and the build's settings. Raises BuildError.

    The tar is hashed as it is written, never held in memory.
    """
    hasher = _Hasher()
    if build.remote is not None:  # what the URL serves is not known here: the URL stands for it
        hasher.sha.update(f"remote:{build.remote}\n".encode())
    else:
        write_context(build, cast("IO[bytes]", hasher))  # "w|" only ever calls write()
    hasher.sha.update(_settings_bytes(build))
    return f"sha256:{hasher.sha.hexdigest()}"


def tar_digest(build: Build, tar: bytes) -> str:
    """``build_digest`` of a context tar already made (what the executor checks before sending)."""
    if build.remote is not None:
        return build_digest(build)
    sha = hashlib.sha256(tar)
    sha.update(_settings_bytes(build))
    return f"sha256:{sha.hexdigest()}"


def _settings_bytes(build: Build) -> bytes:
    return json.dumps(build_settings(build), sort_keys=True, default=list).encode()


def content_tag(build: Build, digest: str) -> str:
    """``<repository>:<digest prefix>``: the image a built service runs."""
    return f"{build.repository}:{digest.removeprefix('sha256:')[:DIGEST_PREFIX]}"


def bind_builds(project: Project, *, revision: str | None = None) -> Project:
    """``project`` with every built service's image set to its content tag.

    Reads every build context (the only I/O). Raises BuildError naming the service when a
    context or Dockerfile is missing or unreadable; nothing has been changed then.
    """
    if not any(s.build is not None for s in project.services):
        return project
    return dataclasses.replace(project, services=tuple(_bind(s, revision) for s in project.services))


def _bind(service: Service, revision: str | None) -> Service:
    if service.build is None:
        return service
    try:
        digest = build_digest(service.build)
    except BuildError as exc:
        raise BuildError(f"service {service.name}: {exc}") from None
    build = dataclasses.replace(service.build, digest=digest, revision=revision)
    return dataclasses.replace(service, image=content_tag(build, digest), build=build)


_COMMIT_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def is_pinned_remote(url: str) -> bool:
    """Whether a remote context names one commit (``…#<full sha>[:subdir]``). Pure.

    A branch, a tag or no fragment can move; a tarball URL can serve other bytes tomorrow."""
    ref = url.partition("#")[2].partition(":")[0]
    return bool(_COMMIT_RE.fullmatch(ref))


class BuildMode(str, Enum):
    """When a service with ``build:`` is built: its content tag missing, always, or never."""

    AUTO = "auto"
    ALWAYS = "always"  # --build
    NEVER = "never"  # --no-build
