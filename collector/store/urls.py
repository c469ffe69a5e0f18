"""Store URL parsing and password redaction (the only form of a URL we ever log or raise)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["StoreUrl", "parse_store_url", "redact_url"]


@dataclass(frozen=True, slots=True)
class StoreUrl:
    """A parsed store URL. `path` is set for chdb, the rest for http(s)."""

    scheme: str
    path: str = ""
    host: str = ""
    port: int = 0
    username: str = "default"
    password: str = ""
    database: str = "default"

    @property
    def redacted(self) -> str:
        if self.scheme == "chdb":
            return f"chdb://{self.path}"
        auth = f"{self.username}:***@" if self.password else f"{self.username}@"
        return f"{self.scheme}://{auth}{self.host}:{self.port}/{self.database}"


def parse_store_url(url: str) -> StoreUrl:
    """Parse `chdb://PATH` or `http(s)://user:pass@host:port/db`; ValueError (redacted) if bad."""
    if url.startswith("chdb://"):
        path = url[len("chdb://") :]
        if not path or "?" in path or "#" in path:
            raise ValueError(f"bad store URL {url!r}: expected chdb://PATH")
        return StoreUrl(scheme="chdb", path=path)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"bad store URL {redact_url(url)!r}: expected chdb://PATH or "
            "http(s)://user:pass@host:port/db"
        )
    try:
        port = parts.port or (8443 if parts.scheme == "https" else 8123)
    except ValueError as exc:
        raise ValueError(f"bad store URL {redact_url(url)!r}: bad port") from exc
    database = parts.path.strip("/") or "default"
    if "/" in database:
        raise ValueError(f"bad store URL {redact_url(url)!r}: path must be one database name")
    return StoreUrl(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else "default",
        password=unquote(parts.password) if parts.password else "",
        database=database,
    )


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`, also for URLs we cannot fully parse."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostport}{slash}{tail}"
