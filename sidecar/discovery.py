"""Where the balancer learns the endpoints of each upstream service.

`EndpointSource` is the seam: `StaticEndpoints` serves the endpoints listed in the config file;
the control-plane client later provides a dynamic source that bumps `version` on every change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from sidecar.http import Endpoint

__all__ = ["EndpointSource", "StaticEndpoints"]


@runtime_checkable
class EndpointSource(Protocol):
    """Endpoints per upstream service; `version` changes whenever any set changes."""

    @property
    def version(self) -> int: ...

    def endpoints(self, service: str) -> tuple[Endpoint, ...]: ...


class StaticEndpoints:
    """A fixed endpoint table (from the config file); its version never changes."""

    __slots__ = ("_table",)

    def __init__(self, table: Mapping[str, Iterable[Endpoint]]) -> None:
        self._table: dict[str, tuple[Endpoint, ...]] = {
            service: tuple(endpoints) for service, endpoints in table.items()
        }

    @property
    def version(self) -> int:
        return 0

    def endpoints(self, service: str) -> tuple[Endpoint, ...]:
        """The endpoints of `service`, or () when it is unknown."""
        return self._table.get(service, ())

    def services(self) -> tuple[str, ...]:
        return tuple(self._table)
