"""`meshlens dashboards push` against a fake Grafana.

FakeGrafana is a fake of an external system (Grafana's HTTP API): a small HTTP server on
127.0.0.1 implementing just the endpoints the push calls (datasources by uid, folders,
POST /api/dashboards/db), recording every request and refusing a wrong bearer token.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dashboards.catalog import load_dashboards
from dashboards.datasources import CLICKHOUSE_UID, JAEGER_UID
from meshlens_cli import main

TOKEN = "glsa_s3cr3t-token-never-logged_0123"


class FakeGrafana(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str, str, Any]] = []  # method, path, auth, body
        self.datasources: dict[str, dict[str, Any]] = {}
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, int] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeGrafana

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body: Any = json.loads(self.rfile.read(length)) if length else {}
        auth = self.headers.get("Authorization", "")
        self.server.requests.append((method, self.path, auth, body))
        if auth != f"Bearer {TOKEN}":
            return self._reply(401, {"message": "invalid API key"})
        path = self.path
        grafana = self.server
        if path.startswith("/api/datasources/uid/"):
            uid = path.rsplit("/", 1)[1]
            if uid not in grafana.datasources:
                return self._reply(404, {"message": "Data source not found"})
            if method == "PUT":
                grafana.datasources[uid] = body
            return self._reply(200, grafana.datasources[uid])
        if path == "/api/datasources" and method == "POST":
            grafana.datasources[body["uid"]] = body
            return self._reply(200, {"message": "Datasource added", "id": len(grafana.datasources)})
        if path.startswith("/api/folders/") and method == "GET":
            uid = path.rsplit("/", 1)[1]
            if uid not in grafana.folders:
                return self._reply(404, {"message": "folder not found"})
            return self._reply(200, grafana.folders[uid])
        if path == "/api/folders" and method == "POST":
            grafana.folders[body["uid"]] = body
            return self._reply(200, body)
        if path == "/api/dashboards/db" and method == "POST":
            uid = body["dashboard"]["uid"]
            if body.get("folderUid") not in grafana.folders:
                return self._reply(400, {"message": "folder not found"})
            if uid in grafana.dashboards and not body.get("overwrite"):
                return self._reply(412, {"status": "name-exists"})
            grafana.dashboards[uid] = body
            grafana.versions[uid] = grafana.versions.get(uid, 0) + 1
            return self._reply(
                200, {"uid": uid, "status": "success", "version": grafana.versions[uid]}
            )
        return self._reply(404, {"message": f"fake: no route {method} {path}"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    server = FakeGrafana()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _push(grafana: FakeGrafana, *extra: str) -> int:
    return main(["--log-level", "DEBUG", "dashboards", "push", "--grafana", grafana.url, *extra])


def test_push_creates_datasources_folder_and_dashboards(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _push(grafana, "--token", TOKEN, "--jaeger-url", "http://mesh:8686/jaeger") == 0

    assert set(grafana.datasources) == {CLICKHOUSE_UID, JAEGER_UID}
    clickhouse = grafana.datasources[CLICKHOUSE_UID]
    assert clickhouse["type"] == "grafana-clickhouse-datasource"
    assert clickhouse["jsonData"]["defaultDatabase"] == "default"
    assert clickhouse["jsonData"]["traces"]["otelEnabled"] is True
    assert grafana.datasources[JAEGER_UID]["url"] == "http://mesh:8686/jaeger"
    assert set(grafana.folders) == {"meshlens"}
    expected = {d["uid"] for d in load_dashboards()}
    assert set(grafana.dashboards) == expected
    for body in grafana.dashboards.values():
        assert body["overwrite"] is True
        assert body["folderUid"] == "meshlens"
        assert body["dashboard"]["id"] is None
    methods = [(m, p) for m, p, _, _ in grafana.requests]
    assert ("POST", "/api/datasources") in methods
    assert methods.count(("POST", "/api/dashboards/db")) == len(expected)
    out = capsys.readouterr().out
    assert f"datasource {CLICKHOUSE_UID}: created" in out


def test_push_twice_updates_by_uid_and_creates_nothing_new(grafana: FakeGrafana) -> None:
    assert _push(grafana, "--token", TOKEN) == 0
    first = len(grafana.requests)
    assert _push(grafana, "--token", TOKEN) == 0

    second = [(m, p) for m, p, _, _ in grafana.requests[first:]]
    assert ("PUT", f"/api/datasources/uid/{CLICKHOUSE_UID}") in second
    assert ("PUT", f"/api/datasources/uid/{JAEGER_UID}") in second
    assert ("POST", "/api/datasources") not in second
    assert ("POST", "/api/folders") not in second
    assert len(grafana.datasources) == 2
    assert set(grafana.versions.values()) == {2}


def test_token_is_sent_as_bearer_and_never_printed_or_logged(
    grafana: FakeGrafana,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert _push(grafana, "--token-file", str(token_file)) == 0  # JSON logs at DEBUG to stderr

    assert {auth for _, _, auth, _ in grafana.requests} == {f"Bearer {TOKEN}"}
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    assert '"msg": "dashboard pushed"' in captured.err


def test_wrong_token_fails_with_a_clear_message(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _push(grafana, "--token", "wrong-token-0123456789") == 1

    err = capsys.readouterr().err
    assert "HTTP 401" in err
    assert "datasource" in err
    assert grafana.dashboards == {}


def test_unreachable_grafana_fails_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeGrafana()
    url = server.url
    server.server_close()  # nothing listens on that port any more

    code = main(["dashboards", "push", "--grafana", url, "--token", TOKEN, "--timeout", "2"])

    assert code == 1
    err = capsys.readouterr().err
    assert "error: dashboards push" in err
    assert TOKEN not in err


def test_bad_grafana_url_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboards", "push", "--grafana", "ftp://x", "--token", TOKEN]) == 1
    assert "bad Grafana URL" in capsys.readouterr().err
