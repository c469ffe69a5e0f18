"""The `BodyStream` protocol (re-exported by sidecar/http.py, where the layers import it).

Its own module because sidecar/http.py is compiled by mypyc (sidecar/_native.py), which cannot
compile a `runtime_checkable` Protocol; this one stays Python, so isinstance checks keep working.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["BodyStream"]


@runtime_checkable
class BodyStream(Protocol):
    """A streamed body: `read()` returns the next chunk and b"" once at the end."""

    @property
    def length(self) -> int | None:
        """The Content-Length if the sender declared one, else None (chunked)."""
        ...

    async def read(self) -> bytes: ...
