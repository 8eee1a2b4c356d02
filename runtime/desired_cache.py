"""The desired containers of one load, kept between commands.

A no-op apply of N services spends most of its own time building N desired containers (their
field hashes). The CLI names a file by the load's fingerprint
(``specs.cache.load_project_fingerprinted``): the same fingerprint is the same project, so the
next command reads the answers instead of building them again. The file is a pickle in
gitdock's own 0700 state directory, read only when this user owns it and nobody else can write
it, and only when it was written by this very mapping code (its digest is in the file); any
other file, and any error, is a miss. Projects with ``build:`` never get here: their images
are bound to content tags that the load's fingerprint does not cover.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import stat
import tempfile
from pathlib import Path

from gitdock.runtime.desired import memo_answers, preset_answers
from gitdock.specs.model import Project

__all__ = ["recall_desired", "remember_desired"]

FORMAT = 1
MAX_FILES = 16  # each edit of a project makes a new file; the newest are kept


def _stamp() -> str:
    """The mapping code's digest: answers an older gitdock gave are never reused."""
    h = hashlib.sha256(repr(FORMAT).encode())
    for module in ("desired.py", "labels.py", "build.py"):
        h.update((Path(__file__).parent / module).read_bytes())
    return h.hexdigest()


def recall_desired(project: Project, path: Path) -> int:
    """Make the answers kept in ``path`` the desired containers of ``project``; returns how
    many (0 for a missing, foreign, stale or unreadable file)."""
    try:
        with open(path, "rb") as fh:
            info = os.fstat(fh.fileno())
            if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return 0
            stamp, kept = pickle.load(fh)  # noqa: S301 - our own file, checked above
        if stamp != _stamp() or not isinstance(kept, dict):
            return 0
        return preset_answers(project, kept)
    except Exception:  # a cache is only ever a miss
        return 0


def remember_desired(project: Project, path: Path) -> None:
    """Keep the desired containers built for ``project`` in ``path`` (0600, atomically)."""
    kept = memo_answers(project)
    if not kept:
        return
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump((_stamp(), kept), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return
    _prune(path.parent)


def _prune(directory: Path) -> None:
    with contextlib.suppress(OSError):
        files = sorted(directory.glob("*.desired"), key=os.path.getmtime)
        for old in files[:-MAX_FILES]:
            old.unlink()
