from __future__ import annotations

from pathlib import Path

import pytest

from analytics.settings import ApiTokenSpec, BootstrapTokenSpec, Settings, SettingsError, hash_token


def test_from_env_reads_only_mesh_analytics_variables() -> None:
    env = {
        "MESH_ANALYTICS_STORE_URL": "chdb:///var/lib/meshlens",
        "MESH_ANALYTICS_HTTP_PORT": "0",
        "MESH_ANALYTICS_TRUST_DOMAIN": "prod.example",
        "MESH_ANALYTICS_LEASE_TTL_S": "9",
        "MESH_ANALYTICS_API_TOKENS": (
            f"alice:operator:op-secret-0123456789,bob:viewer:sha256:{'a' * 64}"
        ),
        "MESH_ANALYTICS_BOOTSTRAP_TOKENS": "shop/orders:boot-secret-0123456",
        "MESH_ANALYTICS_CA_CERT_FILE": "/etc/ca.pem",
        "MESH_ANALYTICS_CA_KEY_FILE": "/etc/ca.key",
        "OTHER": "ignored",
    }
    settings = Settings.from_env(env)
    assert settings.store_url == "chdb:///var/lib/meshlens"
    assert (settings.http_port, settings.trust_domain, settings.lease_ttl_s) == (
        0,
        "prod.example",
        9.0,
    )
    assert settings.api_tokens == (
        ApiTokenSpec("alice", "operator", hash_token("op-secret-0123456789")),
        ApiTokenSpec("bob", "viewer", "a" * 64),
    )
    assert settings.bootstrap_tokens == (
        BootstrapTokenSpec("shop", "orders", hash_token("boot-secret-0123456")),
    )
    assert settings.ca_cert_file == Path("/etc/ca.pem")
    assert "op-secret" not in repr(settings)


def test_from_env_lists_every_bad_variable() -> None:
    env = {
        "MESH_ANALYTICS_HTTP_PORT": "http",
        "MESH_ANALYTICS_API_TOKENS": "alice:admin:op-secret-0123456789",
        "MESH_ANALYTICS_BOOTSTRAP_TOKENS": "orders:short",
    }
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    message = str(info.value)
    for key in ("HTTP_PORT", "API_TOKENS", "BOOTSTRAP_TOKENS"):
        assert key in message


def test_invariants_are_checked_together() -> None:
    with pytest.raises(SettingsError) as info:
        Settings(lease_ttl_s=0, trust_domain="Bad Domain", ca_cert_file=Path("x"))
    message = str(info.value)
    assert "lease_ttl_s" in message and "trust_domain" in message and "ca_key_file" in message
