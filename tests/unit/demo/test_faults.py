from __future__ import annotations

import asyncio

import pytest

from demo.faults import (
    AppFaults,
    FaultInjector,
    FaultKind,
    FaultSpec,
    default_params,
    describe,
)


class RecordingMesh:
    """A FaultTarget that records what the injector asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def instances_of(self, service: str) -> tuple[str, ...]:
        return (f"{service}-1", f"{service}-2")

    async def set_app_faults(self, instance: str, faults: AppFaults) -> None:
        self.calls.append(("app", instance, repr(faults)))

    async def set_abort(self, service: str, status: int, percent: float) -> None:
        self.calls.append(("abort", service, str(status), str(percent)))

    async def clear_abort(self, service: str) -> None:
        self.calls.append(("clear_abort", service))

    async def kill(self, instance: str) -> None:
        self.calls.append(("kill", instance))

    async def restart(self, instance: str) -> None:
        self.calls.append(("restart", instance))


class FakeClock:
    def __init__(self) -> None:
        self.now_ns = 1_000
        self.slept: list[float] = []

    def __call__(self) -> int:
        return self.now_ns

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now_ns += int(seconds * 1e9)


def _injector() -> tuple[FaultInjector, RecordingMesh, FakeClock, list[str]]:
    mesh, clock, said = RecordingMesh(), FakeClock(), list[str]()
    return FaultInjector(mesh, said.append, clock_ns=clock, sleep=clock.sleep), mesh, clock, said


async def test_an_app_fault_hits_every_instance_then_clears_and_is_recorded() -> None:
    injector, mesh, _clock, said = _injector()
    spec = FaultSpec(FaultKind.LATENCY, "payment", duration_s=5, params={"latency_ms": 300})
    record = await injector.inject(spec)
    assert [c[:2] for c in mesh.calls] == [("app", "payment-1"), ("app", "payment-2")] * 2
    assert "latency_ms=300.0" in mesh.calls[0][2] and "latency_ms=0.0" in mesh.calls[2][2]
    assert (record.start_ns, record.end_ns) == (1_000, 1_000 + 5 * 10**9)
    assert record.to_json()["instances"] == ["payment-1", "payment-2"]
    assert record.to_json()["via"] == "app"
    assert said[0].startswith("FAULT  latency: +300 ms latency on payment")
    assert said[1] == "CLEARED latency on payment" and injector.active is None


async def test_a_crash_kills_one_instance_and_restarts_it() -> None:
    injector, mesh, _, _ = _injector()
    await injector.inject(FaultSpec(FaultKind.CRASH, "catalog", "catalog-2", duration_s=3))
    assert mesh.calls == [("kill", "catalog-2"), ("restart", "catalog-2")]


async def test_an_abort_goes_through_the_sidecar_and_is_cleared() -> None:
    injector, mesh, _, _ = _injector()
    params = default_params(FaultKind.ABORT)
    record = await injector.inject(FaultSpec(FaultKind.ABORT, "payment", params=params))
    assert mesh.calls == [("abort", "payment", "503", "40.0"), ("clear_abort", "payment")]
    assert record.to_json()["via"] == "sidecar"


async def test_a_cancelled_fault_is_still_cleared_and_recorded() -> None:
    mesh, said = RecordingMesh(), list[str]()

    async def cancelled(_: float) -> None:
        raise asyncio.CancelledError

    injector = FaultInjector(mesh, said.append, sleep=cancelled)
    with pytest.raises(asyncio.CancelledError):
        await injector.inject(
            FaultSpec(FaultKind.CPU, "shipping", "shipping-1", params={"cpu_ms": 5})
        )
    assert mesh.calls[-1][:2] == ("app", "shipping-1") and "cpu_ms=0.0" in mesh.calls[-1][2]
    assert len(injector.records) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"latency_ms": -1}, "must be >= 0"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"colour": 1}, "unknown fault fields: colour"),
        ({"cpu_ms": "lots"}, "cpu_ms must be a number"),
        ({"reset_rate": True}, "reset_rate must be a number"),
    ],
)
def test_app_faults_reject_bad_bodies(body: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AppFaults.from_json(body)


def test_app_faults_round_trip() -> None:
    faults = AppFaults(latency_ms=10, error_rate=0.5, cpu_ms=2, reset_rate=0.1)
    assert AppFaults.from_json(faults.to_json()) == faults


def test_every_kind_has_parameters_and_a_description() -> None:
    for kind in FaultKind:
        instance = "x-1" if kind is FaultKind.CRASH else None
        text = describe(FaultSpec(kind, "x", instance, params=default_params(kind)))
        assert text.endswith("for 10 s")


def test_a_crash_without_an_instance_is_refused() -> None:
    with pytest.raises(ValueError, match="one instance"):
        FaultSpec(FaultKind.CRASH, "catalog")


def test_serial_ms_round_trips_and_must_not_be_negative() -> None:
    faults = AppFaults.from_json({"serial_ms": 100})
    assert faults.serial_ms == 100.0 and AppFaults.from_json(faults.to_json()) == faults
    with pytest.raises(ValueError, match="serial_ms"):
        AppFaults(serial_ms=-1)
