"""The image's HEALTHCHECK: GET /healthz on the agent's own listen address; exit 0 when 200.

Reads GITDOCK_LISTEN (host:port, as the agent does); a wildcard host is asked on loopback.
Standard library only, so the check needs nothing the agent does not already have.
"""

import os
import sys
import urllib.request

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 - names the wildcards, binds nothing


def healthz_url(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    return f"http://{'127.0.0.1' if host in WILDCARDS else host}:{port}/healthz"


def main() -> int:
    url = healthz_url(os.environ.get("GITDOCK_LISTEN", "127.0.0.1:9000"))
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - http to itself
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
