"""Create or update our datasources, folder and dashboards in a running Grafana (its HTTP API).

Datasources are matched by uid (`GET /api/datasources/uid/:uid`, then `PUT` or `POST`), the folder
by uid, and dashboards are written with `POST /api/dashboards/db` and `overwrite: true`, so pushing
twice leaves Grafana as pushing once. The token is handed to grafana-client only; nothing here
logs or returns it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from dashboards.catalog import load_dashboards
from dashboards.datasources import DatasourceOptions, datasources

__all__ = ["GrafanaApiError", "PushResult", "grafana_api", "push", "redacted_url"]

logger = logging.getLogger(__name__)

FOLDER_UID = "meshlens"
FOLDER_TITLE = "meshlens"
MESSAGE = "meshlens dashboards push"


class GrafanaApiError(Exception):
    """Grafana refused a call or could not be reached; the message says which call."""


class _Api(Protocol):
    """The part of grafana_client.GrafanaApi we use (its elements are untyped)."""

    @property
    def datasource(self) -> Any: ...

    @property
    def folder(self) -> Any: ...

    @property
    def dashboard(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class PushResult:
    """What a push did: per datasource/dashboard uid, `created` or `updated`."""

    datasources: dict[str, str] = field(default_factory=dict)
    folder: str = ""
    dashboards: dict[str, str] = field(default_factory=dict)


def redacted_url(url: str) -> str:
    """`url` without any user:password part (safe to log)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def grafana_api(url: str, token: str, timeout_s: float = 10.0) -> _Api:
    """A grafana-client API object for `url` sending `Authorization: Bearer <token>`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"bad Grafana URL {redacted_url(url)!r}: expected http(s)://host[:port]")
    if not token:
        raise ValueError("a Grafana service-account token is required")
    try:
        from grafana_client.api import GrafanaApi
    except ImportError as exc:
        raise GrafanaApiError(
            "grafana-client is not installed: pip install 'grafana-client>=5.1'"
        ) from exc

    api: _Api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    return api


def _is_not_found(exc: Exception) -> bool:
    return getattr(exc, "status_code", None) == 404


def _call(what: str, fn: Any, *args: Any) -> Any:
    """Run one API call, turning grafana-client / niquests failures into GrafanaApiError."""
    from grafana_client.client import GrafanaException

    try:
        return fn(*args)
    except GrafanaException as exc:
        raise GrafanaApiError(f"{what}: HTTP {exc.status_code}: {exc.message}") from exc
    except OSError as exc:  # niquests' connection errors derive from OSError via IOError
        raise GrafanaApiError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _exists(what: str, fn: Any, uid: str) -> bool:
    from grafana_client.client import GrafanaException

    try:
        _call(what, fn, uid)
    except GrafanaApiError as exc:
        cause = exc.__cause__
        if isinstance(cause, GrafanaException) and _is_not_found(cause):
            return False
        raise
    return True


def _push_datasource(api: _Api, body: dict[str, Any]) -> str:
    uid = body["uid"]
    if _exists(f"GET datasource {uid}", api.datasource.get_datasource_by_uid, uid):
        _call(f"PUT datasource {uid}", api.datasource.update_datasource_by_uid, uid, body)
        return "updated"
    _call(f"POST datasource {uid}", api.datasource.create_datasource, body)
    return "created"


def _push_folder(api: _Api, uid: str, title: str) -> str:
    if _exists(f"GET folder {uid}", api.folder.get_folder, uid):
        return "exists"
    _call(f"POST folder {uid}", lambda: api.folder.create_folder(title, uid=uid))
    return "created"


def push(
    api: _Api,
    options: DatasourceOptions,
    *,
    folder_uid: str = FOLDER_UID,
    folder_title: str = FOLDER_TITLE,
    with_datasources: bool = True,
    dashboards: Sequence[dict[str, Any]] | None = None,
) -> PushResult:
    """Push datasources (unless told not to), the folder and every dashboard; idempotent."""
    result = PushResult()
    if with_datasources:
        for body in datasources(options):
            action = _push_datasource(api, body)
            result.datasources[body["uid"]] = action
            logger.info("datasource pushed", extra={"uid": body["uid"], "action": action})
    folder = _push_folder(api, folder_uid, folder_title)
    result = PushResult(result.datasources, folder, result.dashboards)
    for dashboard in load_dashboards() if dashboards is None else dashboards:
        uid = dashboard["uid"]
        body = {
            "dashboard": {**dashboard, "id": None},
            "folderUid": folder_uid,
            "overwrite": True,
            "message": MESSAGE,
        }
        answer = _call(f"POST dashboard {uid}", api.dashboard.update_dashboard, body)
        result.dashboards[uid] = "updated" if int(answer.get("version", 1)) > 1 else "created"
        logger.info("dashboard pushed", extra={"uid": uid, "version": answer.get("version")})
    return result
