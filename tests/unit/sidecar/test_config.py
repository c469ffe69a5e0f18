from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecar.config import ConfigError, config_to_dict, load_config, parse_config
from sidecar.layers.balance import BalanceConfig
from sidecar.layers.outlier import OutlierConfig
from sidecar.layers.timeout import TimeoutConfig

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "sidecar.yaml"


def test_the_full_example_file_parses() -> None:
    config = load_config(EXAMPLE)

    assert config.service == "frontend"
    assert [r.name for r in config.routes] == ["reviews-canary", "reviews", "ratings-write"]
    reviews = config.routes[1]
    assert reviews.retry is not None
    assert reviews.retry.attempts == 3
    assert reviews.retry.statuses == {429}
    assert reviews.retry.per_try_s == 1.0  # from the route's timeout section
    assert reviews.ratelimit is not None and not reviews.ratelimit.enforce
    assert [d.weight for d in reviews.rule.destinations] == [90, 10]
    assert reviews.rule.match.headers[0].pattern is not None
    upstream = config.upstreams["reviews-v1"]
    assert upstream.endpoints[1].weight == 2
    assert upstream.endpoints[1].instance == "reviews-v1-b"
    assert upstream.outlier is not None and upstream.outlier.latency is not None
    assert config.upstreams["ratings"].outlier is None
    fault = config.routes[2].fault
    assert fault is not None and fault.delay_ms == 100 and not fault.enforce
    assert config.inbound.ratelimit is not None and config.inbound.ratelimit.per_identity


def test_json_and_yaml_files_give_the_same_config(tmp_path: Path) -> None:
    yaml_config = load_config(EXAMPLE)
    path = tmp_path / "sidecar.json"
    path.write_text(json.dumps(config_to_dict(yaml_config)))

    assert load_config(path) == yaml_config


def test_empty_document_gives_the_documented_defaults() -> None:
    config = parse_config({})

    assert config.outbound_policy == "allow_any"
    assert config.routes == ()
    assert config.inbound.timeout == TimeoutConfig()
    assert config.max_request_body_buffer_bytes == 65_536
    doc = parse_config({"upstreams": {"a": {"endpoints": ["h:1"]}}})
    assert doc.upstreams["a"].balance == BalanceConfig()
    assert doc.upstreams["a"].outlier == OutlierConfig()


def test_every_problem_is_listed_at_once() -> None:
    doc = {
        "version": 4,
        "surprise": True,
        "upstreams": {
            "reviews": {"endpoints": ["10.0.0.1:80", {"host": "h", "port": 0, "weight": 0}]},
            "Bad_Name": {},
        },
        "routes": [
            {
                "name": "r1",
                "destinations": [{"upstream": "ghost", "weight": 0}],
                "timeout": {"request_s": 1, "per_try_s": 2},
                "retry": {"on": ["5xx", "sometimes"], "backoff_base_ms": 500},
                "match": {"headers": {"x-a": {"regex": "("}}, "path_prefix": "api"},
            },
            {
                "name": "r1",
                "destinations": [{"upstream": "reviews"}],
                "fault": {"abort": {"percent": 101}},
            },
            {"name": "passthrough", "destinations": []},
        ],
        "outbound_policy": "open",
    }

    with pytest.raises(ConfigError) as caught:
        parse_config(doc)

    errors = caught.value.errors
    expected = [
        "surprise: unknown field",
        "upstreams.reviews.endpoints[1].port:",
        "upstreams.reviews.endpoints[1].weight:",
        "upstreams.Bad_Name:",
        "routes[0].destinations[0].weight:",
        "routes[0].timeout: per_try_s (2) must be <= request_s (1)",
        "routes[0].retry.on[1]:",
        "routes[0].match.headers.x-a: invalid regex",
        "routes[0].match.path_prefix:",
        "routes[0].destinations[0].upstream: unknown upstream 'ghost'",
        "routes[1].name: duplicate route name 'r1'",
        "routes[1].fault.abort.percent:",
        "routes[2].name: 'passthrough' is reserved",
        "routes[2].destinations:",
        "outbound_policy:",
    ]
    for prefix in expected:
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)
    assert str(len(errors)) in str(caught.value)


def test_retry_statuses_may_be_listed_in_on() -> None:
    doc = {
        "upstreams": {"a": {}},
        "routes": [
            {"name": "r", "destinations": [{"upstream": "a"}], "retry": {"on": [503, "5xx"]}}
        ],
    }

    retry = parse_config(doc).routes[0].retry

    assert retry is not None and retry.on == {"5xx"} and retry.statuses == {503}


def test_per_try_timeout_alone_builds_a_single_attempt_retry() -> None:
    doc = {
        "upstreams": {"a": {}},
        "routes": [{"name": "r", "destinations": [{"upstream": "a"}], "timeout": {"per_try_s": 1}}],
    }

    retry = parse_config(doc).routes[0].retry

    assert retry is not None and retry.attempts == 1 and retry.per_try_s == 1


def test_yaml_on_key_is_not_a_boolean(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "upstreams: {a: {}}\n"
        "routes:\n- name: r\n  destinations: [{upstream: a}]\n  retry: {on: [reset]}\n"
    )

    retry = load_config(path).routes[0].retry

    assert retry is not None and retry.on == {"reset"}


def test_unreadable_or_malformed_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid json"):
        load_config(bad)
    for suffix in (".json", ".yaml"):
        nested = tmp_path / f"deep{suffix}"
        nested.write_text("[" * 100_000 + "]" * 100_000)
        with pytest.raises(ConfigError, match="nested too deeply"):
            load_config(nested)  # (a RecursionError traceback before)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listy)


def test_config_to_dict_is_plain_json_with_defaults_filled_in() -> None:
    config = parse_config({"version": 7, "upstreams": {"a": {"endpoints": ["h:1"]}}})

    doc = config_to_dict(config)

    assert doc["version"] == "7"
    assert doc["upstreams"]["a"]["lb"] == "peak_ewma"
    assert doc["inbound"]["timeout"]["request_s"] == 15.0
    assert json.loads(json.dumps(doc)) == doc
    assert parse_config(doc) == config


def test_observe_only_timeouts_do_not_enforce_the_per_try_timeout_either() -> None:
    doc = {
        "upstreams": {"a": {}},
        "routes": [
            {
                "name": "r",
                "destinations": [{"upstream": "a"}],
                "timeout": {"request_s": 2, "per_try_s": 1, "enforce": False},
                "retry": {"attempts": 2},
            }
        ],
    }

    route = parse_config(doc).routes[0]

    assert not route.timeout.enforce
    assert route.retry is not None and route.retry.per_try_s is None


def test_inbound_may_override_the_replay_buffer() -> None:
    doc = {
        "max_request_body_buffer_bytes": 1000,
        "inbound": {"retry": {}, "max_request_body_buffer_bytes": 10},
    }

    config = parse_config(doc)

    assert config.inbound.retry is not None and config.inbound.retry.max_buffer_bytes == 10
    assert parse_config({"inbound": {"retry": {}}}).inbound.retry.max_buffer_bytes == 65_536


@pytest.mark.parametrize("port", ["\u00b2", "9" * 5000, "", "x"])
def test_an_endpoint_port_that_is_no_ascii_number_is_a_config_error(port: str) -> None:
    # ('\u00b2' passed str.isdigit and int() raised ValueError out of parse_config, as did
    # 5,000 digits: a pushed policy failed with a traceback instead of its listed problems)
    with pytest.raises(ConfigError, match=r"endpoints\[0\]: endpoint .* is not host:port"):
        parse_config({"upstreams": {"app": {"endpoints": [f"127.0.0.1:{port}"]}}})


def test_a_header_regex_outside_re2_is_refused_with_the_reason() -> None:
    doc = {
        "upstreams": {"app": {"endpoints": ["a:1"]}},
        "routes": [
            {
                "name": "r",
                "match": {"headers": {"x-a": {"regex": r"(a)\1"}}},
                "destinations": [{"upstream": "app"}],
            }
        ],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(doc)
    (error,) = caught.value.errors
    assert error.startswith("routes[0].match.headers.x-a: invalid regex '(a)\\\\1': ")
    assert "RE2 syntax" in error and "backreferences" in error
