from __future__ import annotations

from collections.abc import Sequence

import pytest

from analytics.controlplane.errors import Unavailable
from analytics.controlplane.spool import Spool


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.down = False

    async def write(self, rows: Sequence[int]) -> None:
        if self.down:
            raise Unavailable("store down")
        self.batches.append(list(rows))


async def test_rows_are_written_in_one_batch_and_kept_while_the_store_is_down() -> None:
    sink = Sink()
    spool: Spool[int] = Spool("t", sink.write, max_rows=3)
    for row in (1, 2):
        spool.add(row)
    sink.down = True
    assert await spool.flush() == 0
    spool.add(3)
    spool.add(4)  # over the bound: the oldest row is dropped and counted

    sink.down = False
    assert await spool.flush() == 3

    assert sink.batches == [[2, 3, 4]]
    assert spool.dropped == 1
    assert len(spool) == 0


def test_bound_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Spool("t", Sink().write, max_rows=0)
