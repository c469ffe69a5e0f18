"""open_store: URL parsing, options, password redaction, unreachable servers, chdb path guard."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from collector.store import StoreUnavailable, open_store
from collector.store.urls import parse_store_url, redact_url


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_server_url_parts_and_defaults() -> None:
    full = parse_store_url("https://ana:s%40cret@ch.example:9443/telemetry")
    bare = parse_store_url("http://ch.example")

    assert (full.host, full.port, full.username, full.password, full.database) == (
        "ch.example",
        9443,
        "ana",
        "s@cret",
        "telemetry",
    )
    assert (bare.port, bare.username, bare.password, bare.database) == (
        8123,
        "default",
        "",
        "default",
    )
    assert parse_store_url("chdb:///var/lib/meshlens/ch").path == "/var/lib/meshlens/ch"
    assert parse_store_url("chdb://relative/dir").path == "relative/dir"


@pytest.mark.parametrize(
    "url",
    ["", "chdb://", "postgres://u:p@h/db", "http://u:hunter2@h:notaport/db", "http://h/a/b"],
)
def test_bad_urls_raise_value_error_without_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="bad store URL") as caught:
        open_store(url)

    assert "hunter2" not in str(caught.value)


def test_redaction_hides_passwords_only() -> None:
    assert redact_url("http://ana:hunter2@h:8123/db") == "http://ana:***@h:8123/db"
    assert redact_url("http://ana@h:8123/db") == "http://ana@h:8123/db"
    assert redact_url("chdb:///tmp/x") == "chdb:///tmp/x"
    assert open_store("http://ana:hunter2@h:8123/db").url == "http://ana:***@h:8123/db"


def test_unknown_or_mistyped_options_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown store options"):
        open_store("http://h:8123", ttl=3)
    with pytest.raises(ValueError, match="ttl_days must be int"):
        open_store("http://h:8123", ttl_days="3")
    with pytest.raises(ValueError, match="ttl_days must be >= 0"):
        open_store("http://h:8123", ttl_days=-1)
    with pytest.raises(ValueError, match="invalid ClickHouse identifier"):
        open_store("http://h:8123", database="x`; DROP")
    with pytest.raises(ValueError, match="cluster mode needs a ClickHouse server"):
        open_store("chdb:///tmp/never-created", cluster="main")


async def test_closed_port_is_unavailable_fast_and_never_shows_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    store = open_store(
        f"http://ana:hunter2@127.0.0.1:{_closed_port()}/db", connect_timeout_s=1, timeout_s=2
    )
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.query("SELECT 1")
        alive = await store.ping()
    finally:
        await store.close()

    assert alive is False
    assert "hunter2" not in str(caught.value)
    assert "ana:***@127.0.0.1" in str(caught.value)
    assert "hunter2" not in caplog.text


async def test_one_chdb_directory_per_process(store_url: str, tmp_path: Path) -> None:
    if not store_url.startswith("chdb://"):
        pytest.skip("embedded-only rule")
    first = open_store(store_url)
    same = open_store(store_url)
    try:
        with pytest.raises(StoreUnavailable, match="one data directory per process"):
            open_store(f"chdb://{tmp_path}/elsewhere")
        assert await first.ping() is True
        assert await same.ping() is True
    finally:
        await first.close()
        await same.close()
    reopened = open_store(f"chdb://{tmp_path}/elsewhere")  # allowed once the first is closed
    try:
        assert await reopened.ping() is True
    finally:
        await reopened.close()
