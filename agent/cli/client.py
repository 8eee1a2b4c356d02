"""A small client for the running agent's HTTP API: the only CLI module that imports httpx.

httpx's exceptions are translated once, here, by ``_TRANSLATED``:

    GitdockError
    ├── AgentUnreachable    no answer: connect refused, timed out, protocol error
    └── AgentRequestFailed  the agent answered 4xx or 5xx (its ``error`` text in the message)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, Self

import httpx

from gitdock.specs.errors import GitdockError

__all__ = ["AgentClient", "AgentRequestFailed", "AgentUnreachable"]


class AgentUnreachable(GitdockError):
    """The agent's API cannot be reached."""


class AgentRequestFailed(GitdockError):
    """The agent answered with an error."""


# httpx exception → gitdock error, first match wins. Every httpx.HTTPError a request can raise
# (TransportError, TimeoutException, TooManyRedirects, DecodingError) means "no usable answer".
_TRANSLATED: Final[tuple[tuple[type[httpx.HTTPError], type[GitdockError]], ...]] = (
    (httpx.HTTPError, AgentUnreachable),
)


@contextmanager
def _translate_errors(url: str) -> Iterator[None]:
    """Re-raise an httpx error as the gitdock error ``_TRANSLATED`` names for it."""
    try:
        yield
    except httpx.HTTPError as exc:
        for source, target in _TRANSLATED:
            if isinstance(exc, source):
                raise target(f"cannot reach the agent at {url}: {exc or type(exc).__name__}") from None
        raise


class AgentClient:
    """The agent's HTTP API at `url`, with a bearer `token` if given. A context manager."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"User-Agent": "gitdock"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, *, params: dict[str, str] | None = None, timeout: float | None = None
    ) -> Any:
        """JSON body of a 2xx answer. Raises AgentUnreachable or AgentRequestFailed."""
        with _translate_errors(self.url):
            resp = self._http.request(
                method,
                path,
                params=params,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        try:
            body = resp.json()
        except ValueError:
            body = {"error": resp.text.strip()[:200]}
        if resp.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise AgentRequestFailed(
                f"{method} {path}: HTTP {resp.status_code}: {message or resp.reason_phrase}"
            )
        return body
