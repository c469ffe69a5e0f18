"""End-user JWT authentication layer: each way a token can be wrong gets 401 with its reason;
a valid token puts claims and subject in the context for authz and on the span."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from sidecar.config import ConfigError, parse_config
from sidecar.http import Request, Response, header_value
from sidecar.jwks import JwksConfig, JwksError, JwksSource, parse_jwks
from sidecar.layers.authz import Authorizer, authz_layer
from sidecar.layers.jwt import (
    Authenticator,
    JwtConfig,
    JwtProvider,
    JwtRule,
    TokenSource,
    jwt_layer,
)
from sidecar.stack import compose
from tests.fakes import ManualClock, ScriptedUpstream, make_request
from tests.jwtkit import SigningKey, b64url, jwks_json, make_token, segment

NOW = 1_800_000_000.0
ISS = "https://auth.example.com"
RSA = SigningKey.rsa("rsa-1")
EC = SigningKey.ec("ec-1")
ED = SigningKey.ed25519("ed-1")


def claims(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": ISS, "sub": "alice", "aud": "orders", "exp": NOW + 300}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


class FakeJwks:
    """A JWKS endpoint: serves `docs[0]`; `rotate()` moves to the next document."""

    def __init__(self, *docs: str) -> None:
        self.docs = list(docs)
        self.urls: list[str] = []
        self.fail = False

    async def __call__(self, url: str, timeout_s: float) -> bytes:
        self.urls.append(url)
        await asyncio.sleep(0)
        if self.fail:
            raise JwksError("connect failure")
        return self.docs[0].encode()

    def rotate(self) -> None:
        self.docs.pop(0)


def provider(**kw: Any) -> JwtProvider:
    base: dict[str, Any] = {
        "name": "auth",
        "issuer": ISS,
        "audiences": frozenset({"orders"}),
        "jwks": JwksConfig(url="http://jwks.local/keys"),
    }
    base.update(kw)
    return JwtProvider(**base)


class Harness:
    def __init__(self, config: JwtConfig, fetch: FakeJwks | None = None) -> None:
        self.clock = ManualClock()
        self.fetch = fetch or FakeJwks(jwks_json(RSA, EC, ED))
        self.auth = Authenticator(config, fetch=self.fetch, clock=self.clock, wall=lambda: NOW)
        self.upstream = ScriptedUpstream()
        self.handler = compose([jwt_layer(config, authenticator=self.auth)], self.upstream)

    async def call(self, token: str | None = None, **kw: Any) -> tuple[Response, Request]:
        headers = kw.pop("headers", ())
        if token is not None:
            headers = (*headers, ("authorization", f"Bearer {token}"))
        request = make_request(headers=headers, **kw)
        return await self.handler(request), request


def simple(**kw: Any) -> Harness:
    return Harness(JwtConfig(providers=(provider(**kw),)))


def reason(response: Response) -> str | None:
    return header_value(response.headers, "x-meshlens-jwt-error")


@pytest.mark.parametrize("key", [RSA, EC, ED], ids=["RS256", "ES256", "EdDSA"])
async def test_a_valid_token_passes_with_claims_subject_and_span_marks(key: SigningKey) -> None:
    h = simple()
    response, request = await h.call(make_token(key, claims(role="admin")))
    assert response.status == 200
    ctx = request.context
    assert ctx.subject == "alice" and ctx.claims["role"] == "admin"
    assert ctx.attributes["enduser.id"] == "alice"
    assert ctx.attributes["meshlens.jwt.subject"] == "alice"
    # the token is stripped before the app sees it (Envoy forward: false)
    assert header_value(h.upstream.seen[0].headers, "authorization") is None


async def test_an_expired_token_is_refused_but_clock_skew_is_tolerated() -> None:
    h = simple()
    response, request = await h.call(make_token(RSA, claims(exp=NOW - 61)))
    assert response.status == 401 and reason(response) == "expired"
    assert b"Jwt is expired" in bytes(response.body)  # type: ignore[arg-type]
    assert header_value(response.headers, "x-meshlens-error") == "unauthenticated"
    assert 'error="invalid_token"' in (header_value(response.headers, "www-authenticate") or "")
    assert request.context.attributes["meshlens.jwt.error"] == "expired"
    assert (await h.call(make_token(RSA, claims(exp=NOW - 30))))[0].status == 200
    assert h.upstream.calls == 1


async def test_a_token_not_yet_valid_is_refused() -> None:
    h = simple()
    response, _ = await h.call(make_token(RSA, claims(nbf=NOW + 120)))
    assert response.status == 401 and reason(response) == "not_yet_valid"


def _signed_raw(key: SigningKey, claims_json: str) -> str:
    """A validly signed token whose claims are this JSON text, as written (json.dumps could not
    write a 400-digit exp as a number, nor 1e400)."""
    signing_input = f"{segment({'alg': key.alg, 'kid': key.kid})}.{b64url(claims_json.encode())}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode()))}"


@pytest.mark.parametrize(
    "exp",
    ["1e400", "Infinity", "NaN", "1" + "0" * 400, "-1e400"],
    ids=["overflowing float", "Infinity", "NaN", "400-digit integer", "minus infinity"],
)
async def test_a_numeric_date_that_is_no_finite_number_is_malformed(exp: str) -> None:
    # 1e400 reads as inf (an exp that never comes: the token would never expire), NaN compares
    # false with every time (never expired either), a 400-digit int has no float (it raised
    # OverflowError out of the layer: a 500 for any client, the signature being checked last)
    h = simple()
    for name in ("exp", "nbf"):
        body = f'{{"iss":"{ISS}","sub":"alice","aud":"orders","exp":{NOW + 300:.0f}'
        token = _signed_raw(RSA, body + f',"{name}":{exp}}}')
        response, _ = await h.call(token)
        assert response.status == 401 and reason(response) == "malformed", (name, exp)
    assert h.upstream.calls == 0


async def test_a_wrong_audience_is_refused_and_a_list_audience_may_match() -> None:
    h = simple()
    response, _ = await h.call(make_token(RSA, claims(aud="billing")))
    assert response.status == 401 and reason(response) == "bad_audience"
    assert (await h.call(make_token(RSA, claims(aud=["billing", "orders"]))))[0].status == 200


async def test_a_wrong_signature_is_refused() -> None:
    impostor = SigningKey("rsa-1", "RS256", SigningKey.rsa("x").private)  # same kid, other key
    h = simple()
    response, _ = await h.call(make_token(impostor, claims()))
    assert response.status == 401 and reason(response) == "bad_signature"
    good = make_token(RSA, claims())
    head, _, sig = good.split(".")
    tampered = f"{head}.{make_token(RSA, claims(sub='mallory')).split('.')[1]}.{sig}"
    assert reason((await h.call(tampered))[0]) == "bad_signature"
    assert h.upstream.calls == 0


async def test_an_unknown_key_id_is_refused_after_one_rate_limited_refetch() -> None:
    h = simple()
    stranger = SigningKey.rsa("rsa-unknown")
    response, _ = await h.call(make_token(stranger, claims()))
    assert response.status == 401 and reason(response) == "unknown_kid"
    assert len(h.fetch.urls) == 1  # the set was just loaded: no second fetch for it
    h.clock.advance(10)
    await h.call(make_token(stranger, claims()))
    assert len(h.fetch.urls) == 2  # the unknown kid triggers a refetch once the interval passed
    h.clock.advance(5)
    await h.call(make_token(stranger, claims()))
    assert len(h.fetch.urls) == 2  # within min_refetch_interval_s: no fetch storm


async def test_a_rotated_jwks_is_fetched_when_a_token_names_a_new_kid() -> None:
    new = SigningKey.ec("ec-2")
    fetch = FakeJwks(jwks_json(RSA), jwks_json(new))
    h = Harness(JwtConfig(providers=(provider(),)), fetch)
    assert (await h.call(make_token(RSA, claims())))[0].status == 200
    fetch.rotate()
    h.clock.advance(11)
    assert (await h.call(make_token(new, claims())))[0].status == 200
    # the old key is gone from the new set
    assert reason((await h.call(make_token(RSA, claims())))[0]) == "unknown_kid"
    assert h.auth.sources["auth"].stats()["keys"] == 1


async def test_alg_none_and_algorithm_confusion_are_refused() -> None:
    h = simple()
    unsigned = make_token(None, claims())
    assert reason((await h.call(unsigned))[0]) == "bad_algorithm"
    unsigned_with_kid = make_token(None, claims(), kid="rsa-1")
    assert reason((await h.call(unsigned_with_kid))[0]) == "bad_algorithm"
    # HS256 signed with the RSA public key's JWK as the secret (classic key confusion)
    secret = json.dumps(RSA.jwk()).encode()
    forged = make_token(RSA, claims(), alg="HS256", hmac_secret=secret)
    assert reason((await h.call(forged))[0]) == "bad_algorithm"
    # an RSA key named with an EC algorithm never verifies
    mixed = make_token(RSA, claims(), alg="ES256")
    assert reason((await h.call(mixed))[0]) == "unknown_kid"
    assert h.upstream.calls == 0


async def test_a_provider_can_narrow_its_algorithms() -> None:
    h = simple(algorithms=frozenset({"ES256"}))
    assert reason((await h.call(make_token(RSA, claims())))[0]) == "bad_algorithm"
    assert (await h.call(make_token(EC, claims())))[0].status == 200


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("not-a-jwt", "malformed"),
        ("a.b", "malformed"),
        (make_token(RSA, claims(iss="https://evil.example")), "unknown_issuer"),
        (make_token(RSA, claims(exp="soon")), "malformed"),
        # JSON nested past the recursion limit: RecursionError went out of the layer (a 502
        # and a logged traceback for each such request, from any client)
        (f"{b64url(b'[' * 20000 + b']' * 20000)}.e30.c2ln", "malformed"),
    ],
    ids=["not-a-jwt", "two-parts", "unknown-issuer", "bad-exp", "nested-20000"],
)
async def test_malformed_tokens_and_unknown_issuers_are_refused(token: str, expected: str) -> None:
    response, _ = await simple().call(token)
    assert response.status == 401 and reason(response) == expected


async def test_a_missing_token_is_refused_unless_the_rule_allows_it() -> None:
    config = JwtConfig(
        providers=(provider(),),
        rules=(
            JwtRule("/healthz", requires="none"),
            JwtRule("/public", requires="allow_missing"),
            JwtRule("/lenient", requires="allow_missing_or_failed"),
        ),
    )
    h = Harness(config)
    response, _ = await h.call(target="/orders")
    assert response.status == 401 and reason(response) == "missing"
    assert header_value(response.headers, "www-authenticate") == 'Bearer realm="meshlens"'
    assert (await h.call(target="/healthz"))[0].status == 200
    assert (await h.call(target="/public"))[0].status == 200
    expired = make_token(RSA, claims(exp=NOW - 3600))
    assert reason((await h.call(expired, target="/public"))[0]) == "expired"
    assert (await h.call(expired, target="/lenient"))[0].status == 200


async def test_two_tokens_in_one_request_are_refused() -> None:
    token = make_token(RSA, claims())
    other = make_token(EC, claims())
    h = simple(sources=(*provider().sources, TokenSource(param="token")))
    response, _ = await h.call(token, target=f"/x?token={other}")
    assert reason(response) == "multiple_tokens"
    assert (await h.call(None, target=f"/x?token={other}"))[0].status == 200


async def test_claims_go_to_headers_and_spoofed_claim_headers_are_dropped() -> None:
    h = simple(claim_to_headers=(("sub", "x-user"),), forward=True)
    token = make_token(RSA, claims())
    await h.call(token, headers=(("x-user", "root"),))
    seen = h.upstream.seen[0].headers
    assert [v for k, v in seen if k == "x-user"] == ["alice"]
    assert header_value(seen, "authorization") == f"Bearer {token}"  # forward: true keeps it
    await h.call(None, headers=(("x-user", "root"),), target="/x")
    assert h.upstream.calls == 1  # refused (missing), never reached the app


async def test_observe_only_lets_bad_tokens_through_and_records_it() -> None:
    h = Harness(JwtConfig(providers=(provider(),), enforce=False))
    response, request = await h.call(make_token(RSA, claims(exp=NOW - 3600)))
    assert response.status == 200
    assert request.context.attributes["meshlens.jwt.would_deny"] is True
    assert request.context.subject == ""
    assert h.auth.stats()["would_deny"] == 1


async def test_jwks_fetch_failure_keeps_the_previous_keys_or_answers_unavailable() -> None:
    fetch = FakeJwks(jwks_json(RSA))
    fetch.fail = True
    h = Harness(JwtConfig(providers=(provider(),)), fetch)
    assert reason((await h.call(make_token(RSA, claims())))[0]) == "jwks_unavailable"
    assert reason((await h.call(make_token(RSA, claims())))[0]) == "jwks_unavailable"
    assert len(fetch.urls) == 1  # no keys and the fetch just failed: not retried per request
    fetch.fail = False
    h.clock.advance(11)
    assert (await h.call(make_token(RSA, claims())))[0].status == 200
    fetch.fail = True
    h.clock.advance(601)  # cache expired, refresh fails: the old set is still used
    assert (await h.call(make_token(RSA, claims())))[0].status == 200
    assert h.auth.sources["auth"].failures == 2


async def test_concurrent_requests_share_one_jwks_fetch() -> None:
    h = simple()
    token = make_token(RSA, claims())
    results = await asyncio.gather(*(h.call(token) for _ in range(5)))
    assert all(r.status == 200 for r, _ in results)
    assert len(h.fetch.urls) == 1


async def test_a_jwks_file_is_reread_when_it_changes(tmp_path: Any) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(jwks_json(RSA))
    source = JwksSource(JwksConfig(file=str(path)), None)
    keys = await source.keys()
    assert keys is not None and [k.kid for k in keys.keys] == ["rsa-1"]
    path.write_text(jwks_json(RSA, EC) + " ")
    keys = await source.keys()
    assert keys is not None and [k.kid for k in keys.keys] == ["rsa-1", "ec-1"]


def test_jwks_parsing_refuses_unusable_documents_and_skips_bad_keys() -> None:
    with pytest.raises(JwksError, match="not JSON"):
        parse_jwks("{")
    with pytest.raises(JwksError, match="nested too deeply"):
        parse_jwks("[" * 100_000 + "]" * 100_000)  # (RecursionError went out of the fetch)
    with pytest.raises(JwksError, match="no usable keys"):
        parse_jwks(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
    keys = parse_jwks(json.dumps({"keys": [{"kty": "RSA", "n": "AQ", "e": "AQAB"}, EC.jwk()]}))
    assert keys.skipped == 1 and [k.kid for k in keys.keys] == ["ec-1"]


async def test_authz_rules_match_verified_claims() -> None:
    doc = {
        "jwt": {
            "providers": [
                {
                    "name": "auth",
                    "issuer": ISS,
                    "audiences": ["orders"],
                    "jwks": {"inline": jwks_json(RSA)},
                }
            ]
        },
        "authz": {
            "rules": [
                {
                    "name": "admin-writes",
                    "action": "allow",
                    "methods": ["POST"],
                    "paths": ["/admin/*"],
                    "claims": {"role": "admin"},
                },
                {"name": "reads", "action": "allow", "methods": ["GET"]},
            ]
        },
    }
    config = parse_config(doc)
    auth = Authenticator(config.jwt, wall=lambda: NOW)
    upstream = ScriptedUpstream()
    handler = compose(
        [
            jwt_layer(config.jwt, authenticator=auth),
            authz_layer(config.authz, authorizer=Authorizer(config.authz)),
        ],
        upstream,
    )

    async def post(role: Any) -> int:
        token = make_token(RSA, claims(role=role))
        request = make_request(
            "POST", "/admin/users", headers=(("authorization", f"Bearer {token}"),)
        )
        return (await handler(request)).status

    assert await post("admin") == 200
    assert await post(["viewer", "admin"]) == 200
    assert await post("viewer") == 403
    assert await post(None) == 403


def test_config_errors_are_listed() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                "jwt": {
                    "providers": [
                        {"name": "a", "issuer": ISS, "jwks": {"url": "https://x/keys"}},
                        {"name": "b", "issuer": ISS, "jwks": {}},
                    ],
                }
            }
        )
    text = str(err.value)
    assert "jwks.url: must be an http://" in text and "exactly one of url, file, inline" in text
    with pytest.raises(ConfigError, match="zzz"):
        parse_config(
            {
                "jwt": {
                    "providers": [{"name": "a", "issuer": ISS, "jwks": {"file": "/k.json"}}],
                    "rules": [{"path_prefix": "/", "providers": ["zzz"]}],
                }
            }
        )
    with pytest.raises(ConfigError, match="no usable keys"):
        parse_config(
            {
                "jwt": {
                    "providers": [{"name": "a", "issuer": ISS, "jwks": {"inline": '{"keys":[]}'}}]
                }
            }
        )


def test_a_negated_claim_denies_everyone_without_it() -> None:
    config = parse_config(
        {
            "authz": {
                "rules": [
                    {
                        "name": "admins-only",
                        "action": "deny",
                        "methods": ["POST"],
                        "paths": ["/admin/*"],
                        "claims": {"realm.roles": "!admin"},
                    }
                ]
            }
        }
    )
    authz = Authorizer(config.authz)
    admin = {"realm": {"roles": ["admin", "dev"]}}
    assert authz.decide("", "POST", "/admin/x", admin).allowed
    assert not authz.decide("", "POST", "/admin/x", {"realm": {"roles": ["dev"]}}).allowed
    assert not authz.decide("", "POST", "/admin/x", {}).allowed  # unauthenticated
    assert authz.decide("", "GET", "/admin/x", {}).allowed


async def test_the_bearer_scheme_is_case_insensitive_and_crit_headers_are_refused() -> None:
    h = simple()
    token = make_token(RSA, claims())
    response = await h.handler(make_request(headers=(("authorization", f"bearer {token}"),)))
    assert response.status == 200
    head = {"alg": "RS256", "kid": RSA.kid, "crit": ["exp"], "exp": 1}
    signing_input = f"{segment(head)}.{segment(claims())}".encode()
    crit = f"{signing_input.decode()}.{b64url(RSA.sign(signing_input))}"
    assert reason((await h.call(crit))[0]) == "malformed"


async def test_a_cached_verification_still_expires_with_its_token() -> None:
    now = [NOW]
    config = JwtConfig(providers=(provider(),))
    fetch = FakeJwks(jwks_json(RSA))
    auth = Authenticator(config, fetch=fetch, clock=ManualClock(), wall=lambda: now[0])
    handler = compose([jwt_layer(config, authenticator=auth)], ScriptedUpstream())
    token = make_token(RSA, claims(exp=NOW + 100))
    request = (("authorization", f"Bearer {token}"),)

    assert (await handler(make_request(headers=request))).status == 200
    assert (await handler(make_request(headers=request))).status == 200  # from the cache
    now[0] = NOW + 100 + 60  # past exp + skew
    response = await handler(make_request(headers=request))
    assert reason(response) == "expired"
    assert len(fetch.urls) == 1
