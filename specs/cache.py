"""Reuse a validated load while nothing it depends on has changed.

Loading validates every file with pydantic, and importing that machinery alone costs a short
command (``gitdock apply`` with nothing to do) most of its time. A successful load is stored
with the digest of every file it read and every file whose existence it checked; the next
load with the same arguments and the same environment reuses it when all of those still
match, and never imports the validator.

The environment counts by what the load can read of it: the variables whose names appear in a
file it read (``${TAG}``, a bare ``environment: [TOKEN]``, an env file's ``KEY`` line) and those
the loader reads by itself (``COMPOSE_*``, ``DOCKER_*``, ``GITDOCK_*``, ``SOPS_*``, ``HOME``),
so an unrelated variable changing (``OLDPWD``, bash's ``$_``) does not cost a validated load.

The entry lives in gitdock's own state directory (created 0700). It is a pickle, so it is read
only from a file owned by this user that nobody else can write; anything else, or any error,
is a miss and the files are loaded again. Only successful loads are stored: a bad spec is
always reported afresh. A load that decrypted a SOPS file (an input recorded as "sops:...")
is never stored: the pickle would hold the plaintext, so such a load is done afresh each time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Unpack

from gitdock.specs.inputs import input_digest
from gitdock.specs.model import Project

if TYPE_CHECKING:
    from gitdock.specs.load import LoadOptions

log = logging.getLogger("gitdock.specs")

FORMAT = 3  # bump when the model or this file's layout changes

# Variables the loader reads without a file naming them.
_ENV_PREFIXES = ("COMPOSE_", "DOCKER_", "GITDOCK_", "SOPS_")
_ENV_ALWAYS = frozenset({"HOME", "XDG_CONFIG_HOME", "GNUPGHOME"})
_WORD = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")


def _env_words(inputs: Mapping[str, str]) -> frozenset[str]:
    """Every name-like word in the files the load read: the variables it can have used."""
    words: set[bytes] = set()
    for path, digest in inputs.items():
        if digest in ("file", "absent"):
            continue
        try:
            with open(path, "rb") as fh:
                words.update(_WORD.findall(fh.read()))
        except OSError:
            continue
    return frozenset(w.decode() for w in words)


def _env_used(environ: Mapping[str, str], words: frozenset[str]) -> dict[str, str]:
    """The part of ``environ`` a load that read files with ``words`` in them depends on."""
    return {k: v for k, v in environ.items() if k in words or k in _ENV_ALWAYS or k.startswith(_ENV_PREFIXES)}


def _key(
    files: Sequence[str],
    environ: Mapping[str, str],
    options: Mapping[str, object],
) -> str:
    from gitdock.specs import model

    h = hashlib.sha256()
    # The loader's own source is part of the key: a changed gitdock never reuses an old load.
    for source in sorted(Path(model.__file__).parent.glob("*.py")):
        h.update(source.read_bytes())
    h.update(repr((FORMAT, sys.version_info[:2], list(files), sorted(options.items()))).encode())
    h.update(repr(sorted(_env_used(environ, frozenset()).items())).encode())
    return h.hexdigest()


def _unchanged(inputs: Mapping[str, str]) -> bool:
    for path, expected in inputs.items():
        if expected in ("file", "absent"):
            if os.path.isfile(path) != (expected == "file"):
                return False
            continue
        try:
            with open(path, "rb") as fh:
                if input_digest(fh.read()) != expected:
                    return False
        except OSError:
            return False
    return True


def _trusted(path: Path) -> bool:
    info = path.stat()
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


MAX_ENTRIES = 64


def _prune(cache_dir: Path) -> None:
    """Keep the newest MAX_ENTRIES entries: every set of files and options gets its own."""
    entries = sorted(cache_dir.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[MAX_ENTRIES:]:
        old.unlink(missing_ok=True)


def load_project_cached(
    files: Sequence[str | os.PathLike[str]], cache_dir: Path, **options: Unpack[LoadOptions]
) -> Project:
    """``load_project`` that reuses the last successful load of the same inputs.

    Same arguments (``load.LoadOptions``), result and errors as ``load_project``; warnings
    are logged either way.
    """
    return load_project_fingerprinted(files, cache_dir, **options)[0]


def load_project_fingerprinted(
    files: Sequence[str | os.PathLike[str]], cache_dir: Path, **options: Unpack[LoadOptions]
) -> tuple[Project, str | None]:
    """``load_project_cached``, and a fingerprint of the load: the same fingerprint means the
    same arguments, environment, gitdock loader and input files, so an equal project (what a
    caller derives from it can be kept under that name). None when the load is never cached
    (it decrypted a SOPS file)."""
    env = options.get("environ")
    env = os.environ if env is None else env
    paths = [os.path.abspath(os.fspath(f)) for f in files]
    env_file, profiles = options.get("env_file"), options.get("profiles")
    key_options = {
        "project_name": options.get("project_name"),
        "env_file": None if env_file is None else os.path.abspath(os.fspath(env_file)),
        "profiles": None if profiles is None else tuple(profiles),
        "ignore_build": options.get("ignore_build", False),
        "root": None if options.get("root") is None else os.path.abspath(os.fspath(options["root"] or "")),
    }
    key = _key(paths, env, key_options)
    entry = cache_dir / f"{key}.pickle"
    cached = _read_entry(entry, env)
    if cached is not None:
        project, warnings, inputs, used = cached
    else:
        from gitdock.specs.load import load_project_with_inputs

        project, warnings, inputs = load_project_with_inputs(paths, **options)
        words = _env_words(inputs)
        used = _env_used(env, words)
        if any(digest.startswith("sops:") for digest in inputs.values()):
            inputs = {}
        else:
            _write_entry(cache_dir, entry, (inputs, project, warnings, words, used))
    for warning in warnings:
        log.warning("%s", warning)
    if not inputs:
        return project, None
    fingerprint = hashlib.sha256(repr((key, sorted(inputs.items()), sorted(used.items()))).encode())
    return project, fingerprint.hexdigest()


def _read_entry(
    entry: Path, environ: Mapping[str, str]
) -> tuple[Project, list[str], dict[str, str], dict[str, str]] | None:
    """The project, warnings, inputs and the environment it used, stored in ``entry``, if
    it is ours and still current (same files, same values of the variables it could use)."""
    try:
        if entry.is_file() and _trusted(entry):
            with entry.open("rb") as fh:
                inputs, project, warnings, words, used = pickle.load(fh)  # noqa: S301 - our own 0600 file, checked above
            if isinstance(project, Project) and _env_used(environ, words) == used and _unchanged(inputs):
                return project, warnings, inputs, used
    except Exception:  # a broken or stale entry is only a miss
        log.debug("load cache: ignoring %s", entry, exc_info=True)
    return None


def _write_entry(
    cache_dir: Path,
    entry: Path,
    value: tuple[dict[str, str], Project, list[str], frozenset[str], dict[str, str]],
) -> None:
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, entry)
        _prune(cache_dir)
    except OSError:
        log.debug("load cache: cannot write %s", entry, exc_info=True)
