"""Authorization layer: deny first, then allow (default deny once an allow rule exists), audit only
records, observe-only mode, and the 403 rbac_denied answer."""

from __future__ import annotations

import pytest

from sidecar.layers.authz import Authorizer, AuthzConfig, AuthzRule, authz_layer
from sidecar.stack import compose
from tests.fakes import ScriptedUpstream, make_request

FRONTEND = "spiffe://example.org/ns/shop/sa/frontend"
BATCH = "spiffe://example.org/ns/jobs/sa/batch"


def _rule(name: str, action: str, **kw: object) -> AuthzRule:
    return AuthzRule(name=name, action=action, **kw)  # type: ignore[arg-type]


async def _status(config: AuthzConfig, method: str, path: str, who: str) -> int:
    upstream = ScriptedUpstream()
    handler = compose([authz_layer(config)], upstream)
    response = await handler(make_request(method, path, peer_identity=who))
    return response.status


async def test_no_rules_allows_everything_including_unauthenticated_callers() -> None:
    assert await _status(AuthzConfig(), "DELETE", "/admin", "") == 200


async def test_a_deny_rule_blocks_exactly_the_calls_it_names() -> None:
    config = AuthzConfig(
        rules=(
            _rule(
                "no-batch-writes",
                "deny",
                principals=("spiffe://example.org/ns/jobs/*",),
                methods=frozenset({"POST"}),
                paths=("/orders*",),
            ),
        )
    )
    assert await _status(config, "POST", "/orders/1", BATCH) == 403
    assert await _status(config, "GET", "/orders/1", BATCH) == 200  # other method
    assert await _status(config, "POST", "/carts", BATCH) == 200  # other path
    assert await _status(config, "POST", "/orders/1", FRONTEND) == 200  # other caller
    assert await _status(config, "POST", "/orders", "") == 200  # unauthenticated: not named


async def test_denied_response_is_403_marked_rbac_denied_and_never_reaches_the_app() -> None:
    upstream = ScriptedUpstream()
    config = AuthzConfig(rules=(_rule("deny-all", "deny"),))
    request = make_request("GET", "/x", peer_identity=FRONTEND)

    response = await compose([authz_layer(config)], upstream)(request)

    assert response.status == 403
    assert dict(response.headers)["x-meshlens-error"] == "rbac_denied"
    assert upstream.calls == 0
    assert request.context.attributes["meshlens.authz.rule"] == "deny-all"


async def test_allow_rules_deny_whatever_they_do_not_match_and_deny_wins() -> None:
    config = AuthzConfig(
        rules=(
            _rule("frontend", "allow", principals=(FRONTEND,)),
            _rule("any-mesh-health", "allow", principals=("*",), paths=("/healthz",)),
            _rule("no-admin", "deny", paths=("/admin*",)),
        )
    )
    assert await _status(config, "GET", "/orders", FRONTEND) == 200
    assert await _status(config, "GET", "/admin/users", FRONTEND) == 403  # deny first
    assert await _status(config, "GET", "/orders", BATCH) == 403  # no allow rule matches
    assert await _status(config, "GET", "/healthz", BATCH) == 200
    assert await _status(config, "GET", "/healthz", "") == 403  # "*" needs an identity


async def test_audit_rules_only_record() -> None:
    upstream = ScriptedUpstream()
    config = AuthzConfig(rules=(_rule("watch-deletes", "audit", methods=frozenset({"DELETE"})),))
    request = make_request("DELETE", "/orders/1", peer_identity=BATCH)

    response = await compose([authz_layer(config)], upstream)(request)

    assert response.status == 200
    assert request.context.attributes["meshlens.authz.audit"] == "watch-deletes"


async def test_observe_only_lets_denied_calls_through_and_records_them() -> None:
    authorizer = Authorizer(AuthzConfig(rules=(_rule("deny-all", "deny"),), enforce=False))
    upstream = ScriptedUpstream()
    request = make_request("GET", "/x", peer_identity=FRONTEND)

    response = await compose([authz_layer(authorizer.config, authorizer=authorizer)], upstream)(
        request
    )

    assert response.status == 200 and upstream.calls == 1
    assert request.context.attributes["meshlens.authz.would_deny"] is True
    assert authorizer.stats()["would_deny"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "action": "deny"}, "name"),
        ({"name": "r", "action": "block"}, "action"),
        ({"name": "r", "action": "deny", "paths": ("/a*b",)}, "only allowed at the end"),
        ({"name": "r", "action": "deny", "methods": frozenset({"get"})}, "upper-case"),
    ],
)
def test_invalid_rules_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AuthzRule(**kwargs)  # type: ignore[arg-type]


def test_rule_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        AuthzConfig(rules=(_rule("a", "deny"), _rule("a", "allow")))
