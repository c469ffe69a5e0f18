from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.spool import Spool, SpoolConfig, SpoolFull


def _config(tmp_path: Path, **overrides: int) -> SpoolConfig:
    return SpoolConfig(
        tmp_path / "spool",
        segment_bytes=overrides.get("segment_bytes", 4096),
        max_bytes=overrides.get("max_bytes", 1 << 20),
    )


async def test_appended_records_are_synced_and_read_back_in_order(tmp_path: Path) -> None:
    spool = Spool.open(_config(tmp_path))
    await spool.start()
    seqs = [spool.append(1, f"payload-{i}".encode()) for i in range(5)]
    await spool.wait_synced(seqs[-1])

    records = spool.read(2, max_bytes=1 << 20)

    assert seqs == [1, 2, 3, 4, 5]
    assert spool.synced_seq == 5
    assert [(r.seq, r.tag, r.payload) for r in records] == [
        (i, 1, f"payload-{i - 1}".encode()) for i in range(2, 6)
    ]
    await spool.close()


async def test_records_survive_reopen_and_segments_rotate(tmp_path: Path) -> None:
    spool = Spool.open(_config(tmp_path))
    await spool.start()
    for _ in range(10):
        last = spool.append(2, b"x" * 1000)
    await spool.wait_synced(last)
    await spool.close()

    reopened = Spool.open(_config(tmp_path))

    assert len(list((tmp_path / "spool").glob("*.seg"))) >= 2
    assert reopened.last_seq == 10
    assert [r.seq for r in reopened.read(1, max_bytes=1 << 20)] == list(range(1, 11))
    assert reopened.spool_id == spool.spool_id


async def test_a_torn_tail_is_cut_off_on_open(tmp_path: Path) -> None:
    spool = Spool.open(_config(tmp_path))
    await spool.start()
    spool.append(1, b"a" * 100)
    last = spool.append(1, b"b" * 100)
    await spool.wait_synced(last)
    await spool.close()
    segment = sorted((tmp_path / "spool").glob("*.seg"))[-1]
    data = segment.read_bytes()
    segment.write_bytes(data[:-30])  # crash in the middle of writing record 2

    reopened = Spool.open(_config(tmp_path))

    assert reopened.last_seq == 1
    assert [r.payload for r in reopened.read(1, 1 << 20)] == [b"a" * 100]
    await reopened.start()
    assert reopened.append(1, b"c") == 2
    await reopened.close()


async def test_checkpoint_records_inflight_and_done_and_frees_segments(tmp_path: Path) -> None:
    spool = Spool.open(_config(tmp_path))
    await spool.start()
    for _ in range(12):
        last = spool.append(1, b"y" * 1000)
    await spool.wait_synced(last)
    segments_before = len(list((tmp_path / "spool").glob("*.seg")))

    await spool.begin_batch(1, 8)
    state = json.loads((tmp_path / "spool" / "checkpoint.json").read_text())
    assert state["inflight"] == [1, 8]
    await spool.commit_batch(8)

    state = json.loads((tmp_path / "spool" / "checkpoint.json").read_text())
    assert state == {"spool_id": spool.spool_id, "done_upto": 8, "inflight": None}
    assert len(list((tmp_path / "spool").glob("*.seg"))) < segments_before
    assert [r.seq for r in spool.read(9, 1 << 20)] == [9, 10, 11, 12]
    await spool.close()


async def test_reopen_after_everything_is_done_continues_the_sequence(tmp_path: Path) -> None:
    spool = Spool.open(_config(tmp_path))
    await spool.start()
    last = spool.append(1, b"z")
    await spool.wait_synced(last)
    await spool.commit_batch(last)
    await spool.close()

    reopened = Spool.open(_config(tmp_path))
    await reopened.start()
    assert reopened.done_upto == 1
    assert reopened.append(1, b"next") == 2
    await reopened.close()


async def test_the_disk_cap_refuses_new_records(tmp_path: Path) -> None:
    spool = Spool.open(_config(tmp_path, segment_bytes=2048, max_bytes=4096))
    await spool.start()
    spool.append(1, b"q" * 2000)
    spool.append(1, b"q" * 1500)
    with pytest.raises(SpoolFull, match="disk cap"):
        spool.append(1, b"q" * 1000)
    await spool.close()


def test_config_rejects_a_cap_below_the_segment_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        SpoolConfig(tmp_path, segment_bytes=4096, max_bytes=1024)


async def test_a_failed_fsync_fails_the_waiters_and_refuses_later_appends(tmp_path: Path) -> None:
    async def broken_disk(_fn: object) -> None:
        raise OSError(5, "Input/output error")

    spool = Spool.open(_config(tmp_path), run_blocking=broken_disk)
    await spool.start()
    seq = spool.append(1, b"never acknowledged")
    with pytest.raises(SpoolFull, match="fsync failed"):
        await spool.wait_synced(seq)
    with pytest.raises(SpoolFull, match="not writable"):
        spool.append(1, b"more")
    await spool.close()
