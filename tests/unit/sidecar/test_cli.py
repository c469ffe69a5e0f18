"""`meshlens sidecar` options that need no running sidecar: --otlp-compression and its env."""

from __future__ import annotations

import argparse

import pytest

from sidecar import cli
from sidecar.app import SidecarOptions
from sidecar.telemetry import TelemetryConfig
from tests.conftest import address_of_this_host


def _args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(["sidecar", "--service", "web", "--app-port", "8080", *extra])


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        ([], None, "none"),  # the OpenTelemetry SDKs' default
        ([], "gzip", "gzip"),
        ([], " GZIP ", "gzip"),
        ([], "none", "none"),
        ([], "", "none"),
        (["--otlp-compression", "gzip"], None, "gzip"),
        (["--otlp-compression", "none"], "gzip", "none"),  # the flag wins over the env
        (["--otlp-compression", "gzip"], "none", "gzip"),
    ],
)
def test_otlp_compression_from_the_flag_else_the_otel_env_else_none(
    flags: list[str], env: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is None:
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_COMPRESSION", raising=False)
    else:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", env)
    assert cli._otlp_compression(_args(*flags)) == expected


def test_a_bad_otel_compression_env_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")
    assert cli.run(_args()) == 2
    assert "OTEL_EXPORTER_OTLP_COMPRESSION must be none or gzip, got 'zstd'" in (
        capsys.readouterr().err
    )


def test_a_bad_flag_value_is_refused_by_the_parser() -> None:
    with pytest.raises(SystemExit):
        _args("--otlp-compression", "deflate")


def test_options_and_telemetry_config_refuse_unknown_compressions() -> None:
    with pytest.raises(ValueError, match="otlp_compression must be none or gzip"):
        SidecarOptions(service="web", app_port=8080, otlp_compression="br")
    with pytest.raises(ValueError, match="otlp_compression must be none or gzip"):
        TelemetryConfig(service="web", otlp_compression="br")
    assert SidecarOptions(service="web", app_port=8080).otlp_compression == "none"
    assert TelemetryConfig(service="web").otlp_compression == "none"


@pytest.mark.parametrize(
    ("app_host", "port", "name"),
    [
        ("127.0.0.1", 15006, "inbound"),  # (went round ~64 times per request, then a 431)
        ("localhost", 15001, "outbound"),
        ("127.1", 15000, "admin"),
        ("::1", 15006, "inbound"),
    ],
)
def test_an_app_port_that_is_one_of_the_sidecars_own_is_refused(
    app_host: str, port: int, name: str
) -> None:
    with pytest.raises(ValueError, match=f"is this sidecar's {name} port"):
        SidecarOptions(service="web", app_port=port, app_host=app_host)


def test_the_same_port_on_another_host_is_an_app_like_any_other() -> None:
    assert SidecarOptions(service="web", app_port=15006, app_host="10.0.0.9").app_port == 15006
    assert SidecarOptions(service="web", app_port=15006, inbound_port=0).inbound_port == 0


def test_this_hosts_own_address_is_the_sidecar_itself_when_it_listens_everywhere() -> None:
    own = address_of_this_host()
    if own is None:
        pytest.skip("this host has no non-loopback address")
    # (deployed, --listen 0.0.0.0: the pod's IP on the inbound port went round ~64 times)
    with pytest.raises(ValueError, match="is this sidecar's inbound port"):
        SidecarOptions(service="web", app_port=15006, app_host=own, listen_host="0.0.0.0")
    with pytest.raises(ValueError, match="is this sidecar's inbound port"):
        SidecarOptions(service="web", app_port=15006, app_host=own, listen_host=own)
    # listening on loopback only, the host's address on that port is not a listener of ours
    assert SidecarOptions(service="web", app_port=15006, app_host=own).app_port == 15006
