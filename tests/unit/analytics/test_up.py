from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from analytics.settings import ApiTokenSpec, BootstrapTokenSpec, Settings, hash_token
from analytics.up import add_up_arguments, ensure_tokens


def test_first_start_generates_a_0600_operator_token_and_later_starts_reuse_it(
    tmp_path: Path,
) -> None:
    settings, files = ensure_tokens(Settings(), tmp_path, [])

    assert files.operator == tmp_path / "tokens" / "operator.token"
    token = files.operator.read_text().strip()
    assert len(token) >= 32 and files.new_operator_token == token
    assert files.operator.stat().st_mode & 0o777 == 0o600
    assert [(t.name, t.role, t.sha256) for t in settings.api_tokens] == [
        ("up-operator", "operator", hash_token(token))
    ]

    again, files2 = ensure_tokens(Settings(), tmp_path, [])
    assert files2.new_operator_token is None  # never printed twice
    assert again.api_tokens == settings.api_tokens


def test_configured_operator_and_bootstrap_tokens_are_kept(tmp_path: Path) -> None:
    ops = ApiTokenSpec.parse("ops:operator:" + "o" * 20)
    boot = BootstrapTokenSpec.parse("default/web:" + "w" * 20)
    base = Settings(api_tokens=(ops,), bootstrap_tokens=(boot,))

    settings, files = ensure_tokens(base, tmp_path, [("default", "web"), ("shop", "cart")])

    assert settings.api_tokens == (ops,) and files.operator is None
    assert files.bootstrap == (tmp_path / "tokens" / "bootstrap" / "shop.cart.token",)
    cart = files.bootstrap[0].read_text().strip()
    assert files.bootstrap[0].stat().st_mode & 0o777 == 0o600
    assert settings.bootstrap_tokens == (
        boot,
        BootstrapTokenSpec("shop", "cart", hash_token(cart)),
    )


def test_bootstrap_services_must_be_namespace_slash_service() -> None:
    parser = argparse.ArgumentParser()
    add_up_arguments(parser)
    args = parser.parse_args(["--bootstrap-services", "default/web, shop/cart"])
    assert args.bootstrap_services == [("default", "web"), ("shop", "cart")]
    assert args.http_port == 8686
    with pytest.raises(SystemExit):
        parser.parse_args(["--bootstrap-services", "web"])
