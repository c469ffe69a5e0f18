from __future__ import annotations

import pytest

from sidecar.layers.budget import BudgetConfig, RetryBudget
from tests.fakes import ManualClock


def test_budget_allows_ratio_of_requests() -> None:
    clock = ManualClock()
    budget = RetryBudget(BudgetConfig(ratio=0.2, min_per_s=0.0, window_s=10.0), clock)
    for _ in range(10):
        budget.deposit()

    assert budget.withdraw()
    assert budget.withdraw()
    assert not budget.withdraw()
    assert budget.stats()["exhausted"] == 1


def test_reserve_allows_min_per_second_without_traffic() -> None:
    clock = ManualClock()
    budget = RetryBudget(BudgetConfig(ratio=0.2, min_per_s=1.0, window_s=10.0), clock)

    allowed = sum(budget.withdraw() for _ in range(20))

    assert allowed == 10  # 1 per second over the 10 s window


def test_deposits_expire_as_the_window_slides() -> None:
    clock = ManualClock()
    budget = RetryBudget(BudgetConfig(ratio=0.5, min_per_s=0.0, window_s=10.0), clock)
    for _ in range(4):
        budget.deposit()
    assert budget.balance() == pytest.approx(2.0)

    clock.advance(10.5)

    assert budget.balance() == pytest.approx(0.0)
    assert not budget.withdraw()


def test_withdrawals_expire_too() -> None:
    clock = ManualClock()
    budget = RetryBudget(BudgetConfig(ratio=0.2, min_per_s=0.1, window_s=10.0), clock)
    assert budget.withdraw()
    assert not budget.withdraw()

    clock.advance(11.0)

    assert budget.withdraw()


def test_budget_config_bounds() -> None:
    with pytest.raises(ValueError):
        BudgetConfig(window_s=0.5)
    with pytest.raises(ValueError):
        BudgetConfig(min_per_s=-1)
