"""Policy documents with extreme numbers: refused with a ConfigError, or built and served.

The schema's recorded cases (test_config_cases.py) pin what each field takes; this checks what
a taken document then does. Each trial sets one to three numeric fields of a full document (the
example file or the cases' "full" base) to an extreme value and requires: parse_config raises
nothing but ConfigError; a document it takes is shown as strict JSON (admin /config); both
stacks build (a hot reload or push of it must not fail); requests through them get responses;
their stats are strict JSON (admin /stats). Seeded and bounded in count.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from sidecar.build import build_inbound, build_outbound
from sidecar.config import ConfigError, config_to_dict, parse_config
from sidecar.http import Endpoint
from tests.fakes import ManualClock, RecordingSleep, ScriptedUpstream, SequenceRandom, make_request

ROOT = Path(__file__).resolve().parents[3]
EXTREMES: list[Any] = [
    0, -1, 1e-300, 1e-9, 0.5, 1e15, 1e300, 2**62, 2**63, 10**400, "1" * 5000,
    "inf", "-inf", "nan", "1e999", float("inf"), float("nan"), True, "", None,
]  # fmt: skip
TRIALS = 1000


def _documents() -> list[dict[str, Any]]:
    example = yaml.safe_load((ROOT / "examples/sidecar.yaml").read_text())
    cases = json.loads((ROOT / "tests/unit/sidecar/config_cases.json").read_text())
    return [example, cases["bases"]["full"]["doc"]]


def _numeric_paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _numeric_paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _numeric_paths(value, (*path, index))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path


def _set(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


async def _serve_through(config: Any) -> None:
    clock = ManualClock()
    for direction in ("outbound", "inbound"):
        upstream = ScriptedUpstream(default=200)
        common: dict[str, Any] = {
            "terminal": upstream,
            "clock": clock,
            "sleep": RecordingSleep(clock),
            "random": SequenceRandom([0.3, 0.7]),
        }
        if direction == "outbound":
            stack = build_outbound(config, **common)
        else:
            stack = build_inbound(config, app=Endpoint("127.0.0.1", 8080), **common)
        headers = (("x-user", "a"), ("x-canary", "true"), ("x-a", "1"))
        for host, method in (("reviews", "GET"), ("ratings", "POST"), ("A", "GET")):
            request = make_request(method, "/reviews/x", authority=host, headers=headers)
            response = await stack.handler(request)
            assert 100 <= response.status <= 599
        json.dumps(stack.stats(), allow_nan=False)
        await stack.close()


async def test_extreme_numbers_are_refused_or_built_and_served() -> None:
    rng = random.Random(20261127)
    documents = _documents()
    taken = 0
    for _ in range(TRIALS):
        document = copy.deepcopy(rng.choice(documents))
        paths = list(_numeric_paths(document))
        changes = [(rng.choice(paths), rng.choice(EXTREMES)) for _ in range(rng.randint(1, 3))]
        for path, value in changes:
            _set(document, path, value)
        try:
            config = parse_config(document)
        except ConfigError:
            continue
        taken += 1
        json.dumps(config_to_dict(config), allow_nan=False)
        await _serve_through(config)
    assert taken >= TRIALS // 20  # (the trials reach the stacks, not only the schema)
