"""Where the balancer learns the endpoints of each upstream service.

`EndpointSource` is the seam: `StaticEndpoints` serves the endpoints listed in the config file;
`DynamicEndpoints` is fed by the control-plane watch (sidecar/cpclient.py) and bumps `version`
whenever any service's set changes, so balancers re-read it on their next pick.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from sidecar.http import Endpoint

__all__ = ["DynamicEndpoints", "EndpointSource", "LayeredEndpoints", "StaticEndpoints"]


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


class DynamicEndpoints:
    """An endpoint table replaced as a whole by `update()` (the control-plane watch)."""

    __slots__ = ("_table", "_version")

    def __init__(self, table: Mapping[str, Iterable[Endpoint]] | None = None) -> None:
        self._table: dict[str, tuple[Endpoint, ...]] = {}
        self._version = 0
        if table is not None:
            self.update(table)

    @property
    def version(self) -> int:
        return self._version

    def endpoints(self, service: str) -> tuple[Endpoint, ...]:
        """The endpoints of `service`, or () when it is unknown."""
        return self._table.get(service, ())

    def services(self) -> tuple[str, ...]:
        return tuple(self._table)

    def snapshot(self) -> dict[str, tuple[Endpoint, ...]]:
        return dict(self._table)

    def update(self, table: Mapping[str, Iterable[Endpoint]]) -> bool:
        """Replace the whole table; True (and a new version) only if anything changed."""
        new = {service: tuple(endpoints) for service, endpoints in table.items()}
        if new == self._table:
            return False
        self._table = new
        self._version += 1
        return True


class LayeredEndpoints:
    """Control-plane endpoints first; a service it knows nothing of falls back to the document's.

    The fallback is fixed for one built config version (a new version rebinds its balancers).
    """

    __slots__ = ("_fallback", "_primary")

    def __init__(self, primary: DynamicEndpoints, fallback: EndpointSource) -> None:
        self._primary = primary
        self._fallback = fallback

    @property
    def version(self) -> int:
        return self._primary.version

    def endpoints(self, service: str) -> tuple[Endpoint, ...]:
        return self._primary.endpoints(service) or self._fallback.endpoints(service)
