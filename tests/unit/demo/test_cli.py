from __future__ import annotations

import pytest

from meshlens_cli import main


def test_list_scenarios_prints_every_evaluation_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--list-scenarios"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 60
    assert "shop/crash/catalog/catalog-1" in lines or "shop/crash/catalog/catalog-2" in lines
    assert any(line.startswith("chain/reset/") for line in lines)


def test_a_bad_scenario_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--scenario", "shop/flood"]) == 2
    assert "unknown fault kind 'flood'" in capsys.readouterr().err


def test_mtls_needs_a_known_mode() -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--mtls", "loose"])


def test_duration_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--scenario", "quick", "--duration", "-3"])
