"""`meshlens sidecar` options that need no running sidecar: --otlp-compression and its env."""

from __future__ import annotations

import argparse

import pytest

from sidecar import cli
from sidecar.app import SidecarOptions
from sidecar.telemetry import TelemetryConfig


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
