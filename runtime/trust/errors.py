"""The root of the trust package's refusals.

Every way an image can fail verification — a bad key file, a malformed signature, a registry
that sent bytes not matching their digest, a policy that refuses the image — is a
``TrustError``: a permanent error, because a new commit or a new signature must fix it.
"""

from __future__ import annotations

from gitdock.specs.errors import PermanentError


class TrustError(PermanentError):
    """An image was refused by signature policy."""
