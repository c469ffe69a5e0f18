"""Differential corpus of the policy document: 3,500 documents whose outcome was recorded with the
pydantic-based sidecar/config.py (commit e738ed3) in config_cases.json, which today's validator
must reproduce: an accepted document gives the same effective document (config_to_dict) and the
same SidecarConfig (every frozen per-layer config, field by field); a rejected one lists the same
problems (paths and messages; only "not a mapping" names the model in other words).

Each case is a base document ("full": every model present once; "empty": {}) with some values
set at a path: every field of every model probed with values of every JSON type, its bounds +-1,
its patterns, literals and shorthands; pairs of problems in different models; all at once.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from sidecar.config import ConfigError, config_to_dict, parse_config
from tests.unit.sidecar.config_cases_support import canonical, flatten

CASES = Path(__file__).with_name("config_cases.json")


@functools.cache
def _recorded() -> dict[str, Any]:
    return json.loads(CASES.read_text())  # type: ignore[no-any-return]


def _set_path(doc: Any, path: list[Any], value: Any) -> None:
    for i, part in enumerate(path[:-1]):
        following = path[i + 1]
        if isinstance(doc, dict) and part not in doc:
            doc[part] = [] if isinstance(following, int) else {}
        if isinstance(doc, list) and part >= len(doc):
            doc.append([] if isinstance(following, int) else {})
        doc = doc[part]
    if isinstance(doc, list) and path[-1] >= len(doc):
        doc.append(value)
    else:
        doc[path[-1]] = value


def _typed(flat: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """Leaves with their type, so 1, 1.0 and True differ."""
    return {k: (type(v).__name__, v) for k, v in flat.items()}


def _expected(base: dict[str, Any], change: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    out = {k: v for k, v in base.items() if k not in change["unset"]}
    out.update(change["set"])
    return _typed(out)


def _error_paths(errors: list[str] | tuple[str, ...]) -> set[str]:
    return {e.partition(": ")[0] for e in errors}


_NOT_A_MAPPING = re.compile(r"Input should be a valid dictionary( or instance of \w+| \(.*\))$")


def _messages(errors: list[str] | tuple[str, ...]) -> list[str]:
    """Every message, sorted; "not a mapping" names the model in pydantic's words or in ours."""
    return sorted(_NOT_A_MAPPING.sub("Input should be a valid dictionary", e) for e in errors)


def _chunks() -> list[int]:
    return list(range(0, len(_recorded()["cases"]), 250))


@pytest.mark.parametrize("start", _chunks())
def test_recorded_outcomes_are_reproduced(start: int) -> None:
    recorded = _recorded()
    failures: list[tuple[int, Any, Any, Any]] = []
    for index in range(start, min(start + 250, len(recorded["cases"]))):
        case = recorded["cases"][index]
        base = recorded["bases"][case["base"]]
        doc = copy.deepcopy(base["doc"])
        for path, value in case["set"]:
            _set_path(doc, path, value)
        try:
            config = parse_config(doc)
        except ConfigError as exc:
            if "errors" not in case:
                failures.append((index, case["set"], "rejected", exc.errors))
            elif _messages(exc.errors) != _messages(case["errors"]):
                failures.append((index, case["set"], case["errors"], exc.errors))
            continue
        if "errors" in case:
            failures.append((index, case["set"], case["errors"], "accepted"))
            continue
        document = _typed(flatten(config_to_dict(config)))
        if document != _expected(base["document"], case["document"]):
            failures.append((index, case["set"], "document differs", document))
        frozen = _typed(flatten(canonical(config)))
        if frozen != _expected(base["config"], case["config"]):
            failures.append((index, case["set"], "config differs", frozen))
        assert parse_config(config_to_dict(config)) == config
    assert not failures, failures[:5]


def test_the_corpus_covers_both_outcomes_and_several_problems_at_once() -> None:
    cases = _recorded()["cases"]
    rejected = [c for c in cases if "errors" in c]

    assert len(cases) > 3000 and 1000 < len(rejected) < len(cases) - 1000
    assert max(len(_error_paths(c["errors"])) for c in rejected) >= 10


def test_keys_json_cannot_carry_are_handled_as_recorded() -> None:
    """Recorded by hand: a YAML 1.1 `on` key read as True, and a non-string upstream name."""
    route = {"name": "r", "destinations": [{"upstream": "a"}], "retry": {True: ["reset", 503]}}
    retry = parse_config({"upstreams": {"a": {}}, "routes": [route]}).routes[0].retry

    assert retry is not None and retry.on == {"reset"} and retry.statuses == {503}
    with pytest.raises(ConfigError) as caught:
        parse_config({"upstreams": {5: {}}})
    assert caught.value.errors == ("upstreams[5]: Input should be a valid string",)
