"""A retry budget over a sliding window, after Tower's `TpsBudget` (linkerd2-proxy's budget).

Each request deposits 1; each retry withdraws 1/ratio; a reserve of `min_per_s * window_s` retries
is always available. Deposits and withdrawals live in 10 time slots spanning the window, so they
expire as the window slides (tower-rs/tower: tower/src/retry/budget/tps_budget.rs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.stack import Clock, monotonic

__all__ = ["BudgetConfig", "RetryBudget"]

_SLOTS = 10


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    """Retries may be `ratio` of requests plus `min_per_s` per second, over `window_s`."""

    ratio: float = 0.2  # Tower/Linkerd retry_percent 20 %
    min_per_s: float = 10.0  # Tower/Linkerd min_per_sec
    window_s: float = 10.0  # Tower/Linkerd ttl

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 1000.0:
            raise ValueError(f"ratio must be in 0..1000, got {self.ratio}")
        if self.min_per_s < 0:
            raise ValueError(f"min_per_s must be >= 0, got {self.min_per_s}")
        if not 1.0 <= self.window_s <= 60.0:
            raise ValueError(f"window_s must be in 1..60, got {self.window_s}")


class RetryBudget:
    """Deposits per request, withdrawals per retry, expiring slot by slot."""

    __slots__ = (
        "_clock",
        "_deposit",
        "_generation",
        "_reserve",
        "_slot_s",
        "_slots",
        "_withdraw",
        "config",
        "exhausted",
        "retries",
    )

    def __init__(self, config: BudgetConfig, clock: Clock = monotonic) -> None:
        self.config = config
        self._clock = clock
        if config.ratio == 0.0:
            self._deposit, self._withdraw = 0.0, 1.0
        else:
            self._deposit, self._withdraw = 1.0, 1.0 / config.ratio
        self._reserve = config.min_per_s * config.window_s * self._withdraw
        self._slot_s = config.window_s / _SLOTS
        self._slots = [0.0] * _SLOTS
        # the absolute slot number last written; slots older than the window are zeroed lazily
        self._generation = int(clock() / self._slot_s)
        self.retries = 0
        self.exhausted = 0

    def _current(self) -> int:
        generation = int(self._clock() / self._slot_s)
        gap = generation - self._generation
        if gap > 0:
            for i in range(1, min(gap, _SLOTS) + 1):
                self._slots[(self._generation + i) % _SLOTS] = 0.0
            self._generation = generation
        return generation % _SLOTS

    def deposit(self) -> None:
        """Record one original request."""
        self._slots[self._current()] += self._deposit

    def withdraw(self) -> bool:
        """Take one retry from the budget; False (and counted) when it is exhausted."""
        index = self._current()
        if sum(self._slots) + self._reserve >= self._withdraw:
            self._slots[index] -= self._withdraw
            self.retries += 1
            return True
        self.exhausted += 1
        return False

    def balance(self) -> float:
        """How many retries the budget would allow right now."""
        self._current()
        return (sum(self._slots) + self._reserve) / self._withdraw

    def stats(self) -> dict[str, Any]:
        return {
            "ratio": self.config.ratio,
            "min_per_s": self.config.min_per_s,
            "window_s": self.config.window_s,
            "available": round(self.balance(), 3),
            "retries": self.retries,
            "exhausted": self.exhausted,
        }
