"""Store tests also run the server backend (ServerStore) on the in-process engine by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import store_urls


def _urls() -> list[str]:
    urls = store_urls()
    return (
        urls
        if any(u.startswith("connect+") for u in urls)
        else [*urls, "connect+chdb://{tmp_path}/ch"]
    )


@pytest.fixture(
    params=_urls(),
    ids=lambda url: url.split("://", 1)[0] if "chdb" in url else url.rsplit("@", 1)[-1],
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store URL under test: MESHLENS_TEST_STORES plus the server backend on chdb."""
    url: str = request.param
    return url.replace("{tmp_path}", str(tmp_path))
