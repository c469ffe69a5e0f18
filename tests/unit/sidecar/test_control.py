from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from sidecar.build import BuiltStack, build_inbound, build_outbound
from sidecar.config import SidecarConfig, load_config, parse_config
from sidecar.control import (
    STATE_FILE,
    ActiveStacks,
    ConfigControl,
    ConfigUpdate,
    read_state,
    write_state,
)
from sidecar.discovery import DynamicEndpoints, LayeredEndpoints, StaticEndpoints
from sidecar.http import Endpoint, Request, RequestContext
from tests.fakes import RecordingSleep, ScriptedUpstream

GOOD = {
    "version": "3",
    "service": "web",
    "upstreams": {"api": {"lb": "round_robin"}},
    "routes": [{"name": "api", "destinations": [{"upstream": "api"}]}],
}
BAD = {
    "service": "web",
    "upstreams": {"api": {"lb": "random_walk"}},
    "routes": [{"name": "x", "destinations": [{"upstream": "ghost"}]}],
}
API = (Endpoint("10.0.0.1", 8080, service="api", instance="api-1", labels=(("version", "v1"),)),)


class Harness:
    """A ConfigControl over the real builders; records the `previous` each build received."""

    def __init__(self, tmp_path: Path, endpoints: DynamicEndpoints | None = None) -> None:
        self.terminal = ScriptedUpstream()
        self.endpoints = endpoints or DynamicEndpoints()
        self.previous: list[ActiveStacks | None] = []
        self.state_dir = tmp_path / "state"
        self.control: ConfigControl[SidecarConfig] = ConfigControl(
            path=None,
            load=load_config,
            build=self.build,
            parse=parse_config,
            sleep=RecordingSleep(),
            on_endpoints=self.endpoints.update,
            state_dir=self.state_dir,
        )

    def build(
        self, config: SidecarConfig | None, source: str, previous: ActiveStacks | None
    ) -> ActiveStacks:
        self.previous.append(previous)
        config = config if config is not None else parse_config({})
        static = {n: s.endpoints for n, s in config.upstreams.items()}
        source_eps = LayeredEndpoints(self.endpoints, StaticEndpoints(static))
        old_out = previous.outbound if previous is not None else None
        out = build_outbound(
            config,
            terminal=self.terminal,
            endpoints=source_eps,
            previous=old_out if isinstance(old_out, BuiltStack) else None,
        )
        inb = build_inbound(config, terminal=self.terminal)
        return ActiveStacks(out, inb, out.version, source)


def update(
    version: int | None,
    document: Mapping[str, Any] | None,
    endpoints: Mapping[str, tuple[Endpoint, ...]] | None = None,
) -> ConfigUpdate:
    return ConfigUpdate(version, document, endpoints, "control-plane")


async def test_a_good_update_is_swapped_in_persisted_and_reported_ok(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.control.load_initial()

    result = h.control.apply_update(update(3, GOOD, {"api": API}))

    assert result.ok and result.errors == ()
    assert h.control.active.version == "3"
    assert h.control.active.source == "control-plane"
    assert h.control.good_version == 3
    assert h.endpoints.endpoints("api") == API
    saved = read_state(h.state_dir)
    assert saved is not None
    assert (saved.version, saved.document, saved.endpoints) == (3, GOOD, {"api": API})
    assert (h.state_dir / STATE_FILE).stat().st_mode & 0o777 == 0o600
    assert [p.name for p in h.state_dir.iterdir()] == [STATE_FILE]  # no temp file left
    await h.control.close()


async def test_an_invalid_update_is_rejected_with_every_problem_and_the_old_stacks_stay(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    h.control.load_initial()
    assert h.control.apply_update(update(3, GOOD, {"api": API})).ok
    active = h.control.active
    before = (h.state_dir / STATE_FILE).read_bytes()

    result = h.control.apply_update(update(4, BAD, {"api": API}))

    assert not result.ok
    assert len(result.errors) == 2
    assert any("random_walk" in e or "lb" in e for e in result.errors)
    assert any("ghost" in e for e in result.errors)
    assert h.control.active is active
    assert h.control.rejected == 1
    assert h.control.last_errors == result.errors
    assert h.control.good_version == 3
    assert (h.state_dir / STATE_FILE).read_bytes() == before
    await h.control.close()


async def test_builds_get_the_active_stacks_as_previous_so_state_carries_over(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    h.control.load_initial()
    h.control.apply_update(update(3, GOOD, {"api": API}))
    first = h.control.active
    h.control.apply_update(update(4, {**GOOD, "version": "4"}, {"api": API}))

    assert h.previous[0] is None
    assert h.previous[1] is not None and h.previous[2] is first
    # unchanged upstream policy: the same balancer object serves version 4
    stats3 = first.outbound.stats()["upstreams"]
    stats4 = h.control.active.outbound.stats()["upstreams"]
    assert stats3.keys() == stats4.keys() == {"api"}
    await h.control.close()


async def test_an_endpoint_only_update_keeps_the_policy_and_persists_the_endpoints(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    h.control.load_initial()
    h.control.apply_update(update(3, GOOD, {"api": API}))
    active = h.control.active
    more = (*API, Endpoint("10.0.0.2", 8080, service="api", instance="api-2"))

    result = h.control.apply_update(update(3, GOOD, {"api": more}), policy=False)

    assert result.ok
    assert h.control.active is active  # no rebuild
    assert h.endpoints.endpoints("api") == more
    saved = read_state(h.state_dir)
    assert saved is not None and saved.endpoints == {"api": more} and saved.version == 3
    await h.control.close()


async def test_endpoints_before_any_good_document_are_applied_but_not_persisted(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    h.control.load_initial()

    assert h.control.apply_update(update(3, GOOD, {"api": API}), policy=False).ok

    assert h.endpoints.endpoints("api") == API
    assert read_state(h.state_dir) is None
    await h.control.close()


async def test_a_fresh_control_starts_from_the_persisted_config(tmp_path: Path) -> None:
    first = Harness(tmp_path)
    first.control.load_initial()
    first.control.apply_update(update(3, GOOD, {"api": API}))
    await first.control.close()

    second = Harness(tmp_path)
    assert second.control.load_persisted()

    assert second.control.active.version == "3"
    assert second.control.active.source.startswith("persisted:")
    assert second.control.good_version == 3
    assert second.endpoints.endpoints("api") == API
    # the restored stack routes to the persisted endpoints
    request = Request("GET", "/", authority="api", context=RequestContext())
    response = await second.control.active.outbound.handler(request)
    assert response.status == 200
    assert second.terminal.addresses() == ["10.0.0.1:8080"]
    await second.control.close()


async def test_no_policy_version_applies_the_defaults(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.control.load_initial()

    assert h.control.apply_update(update(0, None, {})).ok

    assert h.control.active.version == "0"
    saved = read_state(h.state_dir)
    assert saved is not None and saved.document is None and saved.version == 0
    await h.control.close()


def test_without_state_dir_nothing_is_loaded(tmp_path: Path) -> None:
    control: ConfigControl[SidecarConfig] = ConfigControl(
        path=None, load=load_config, build=Harness(tmp_path).build
    )
    assert control.load_persisted() is False


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"format": 99, "version": 1, "document": null, "endpoints": {}}',
        b'{"format": 1, "version": 1, "document": [], "endpoints": {}}',
        b'{"format": 1, "version": 1, "document": null, "endpoints": {"a": [{"host": "h"}]}}',
    ],
)
def test_an_unreadable_state_file_is_ignored_and_logged(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / STATE_FILE).write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="sidecar.control"):
        assert read_state(tmp_path) is None
    assert "ignoring unreadable persisted config" in caplog.text


def test_write_state_replaces_the_file_atomically(tmp_path: Path) -> None:
    write_state(tmp_path, update(1, GOOD, {"api": API}))
    write_state(tmp_path, update(2, None, {}))

    doc = json.loads((tmp_path / STATE_FILE).read_text())
    assert doc["version"] == 2 and doc["document"] is None and doc["endpoints"] == {}
    assert os.listdir(tmp_path) == [STATE_FILE]


def test_dynamic_endpoints_bump_the_version_only_on_a_change() -> None:
    source = DynamicEndpoints()
    assert source.version == 0 and source.endpoints("api") == ()

    assert source.update({"api": list(API)})
    assert source.version == 1
    assert not source.update({"api": API})
    assert source.version == 1
    assert source.update({})
    assert source.version == 2 and source.services() == ()


def test_layered_endpoints_prefer_the_control_plane_and_fall_back_to_the_document() -> None:
    dynamic = DynamicEndpoints({"api": API})
    static_ep = Endpoint("192.0.2.1", 443, service="ext")
    layered = LayeredEndpoints(dynamic, StaticEndpoints({"ext": [static_ep], "api": []}))

    assert layered.endpoints("api") == API
    assert layered.endpoints("ext") == (static_ep,)
    assert layered.endpoints("none") == ()
    dynamic.update({})
    assert layered.version == dynamic.version == 2


class _BrokenBuild:
    """Builds with the harness, except that version "boom" fails as a bug would."""

    def __init__(self, h: Harness) -> None:
        self.h = h

    def __call__(
        self, config: SidecarConfig | None, source: str, previous: ActiveStacks | None
    ) -> ActiveStacks:
        if config is not None and config.version == "boom":
            raise OverflowError("cannot convert float infinity to integer")
        return self.h.build(config, source, previous)


async def test_a_build_that_fails_as_a_bug_rejects_the_update_and_keeps_the_stacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    control: ConfigControl[SidecarConfig] = ConfigControl(
        path=None, load=load_config, build=_BrokenBuild(Harness(tmp_path)), parse=parse_config
    )
    control.load_initial()
    assert control.apply_update(update(3, GOOD)).ok
    active = control.active

    result = control.apply_update(update(4, {**GOOD, "version": "boom"}))

    assert not result.ok  # (it raised OverflowError out of apply_update: nothing was reported)
    assert result.errors == (
        "building the config failed: OverflowError: cannot convert float infinity to integer",
    )
    assert control.active is active
    assert control.good_version == 3
    assert any(r.exc_info for r in caplog.records if r.message == "building the config failed")
    await control.close()


async def test_hot_reload_goes_on_after_a_file_whose_build_fails(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.json"
    path.write_text(json.dumps(GOOD))
    h = Harness(tmp_path)
    control: ConfigControl[SidecarConfig] = ConfigControl(
        path=str(path), load=load_config, build=_BrokenBuild(h), sleep=RecordingSleep()
    )
    control.load_initial()

    path.write_text(json.dumps({**GOOD, "version": "boom"}))
    # (raised: the file poll calls reload() and died with it, so no later file was read)
    assert control.reload() is False
    assert control.active.version == "3"
    assert control.rejected == 1
    path.write_text(json.dumps({**GOOD, "version": "5"}))
    assert control.reload() is True
    assert control.active.version == "5"
    await control.close()
