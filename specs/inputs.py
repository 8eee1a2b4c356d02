"""What a load read: the digest of each input file, as the load cache records it.

A module of its own, with no import beyond the standard library, so the reader can record
inputs and the cache can check them without either importing the other (a cache hit must
not import the loader or pydantic).
"""

from __future__ import annotations

import hashlib


def input_digest(data: bytes) -> str:
    """How the loader records a file it read."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
