from __future__ import annotations

import argparse

import pytest

from collector import cli


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshlens")
    cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_collector_flags_and_defaults() -> None:
    args = _parser().parse_args(["collector", "--store", "chdb:///tmp/x"])
    assert (args.store, args.otlp_http_port, args.otlp_grpc_port) == ("chdb:///tmp/x", 4318, 4317)
    assert args.host == "127.0.0.1" and args.spool is None
    assert args.max_body_bytes == 16 * 1024 * 1024


def test_up_defaults_to_the_local_data_directory_and_takes_port_zero() -> None:
    args = _parser().parse_args(["up", "--otlp-http-port", "0", "--otlp-grpc-port", "0"])
    assert args.data == ".meshlens"
    assert (args.otlp_http_port, args.otlp_grpc_port) == (0, 0)


def test_collector_requires_a_store_and_valid_ports(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["collector"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["collector", "--store", "chdb://x", "--otlp-http-port", "70000"])
    assert "port must be 0..65535, got 70000" in capsys.readouterr().err
