"""Where the API key comes from: config, CHARIOT_*, PRAETORIAN_CLI_*, the keychain INI."""

from __future__ import annotations

from pathlib import Path

import pytest
from rcingest_chariot.credentials import DEFAULT_API, CredentialsError, resolve

KEYCHAIN = str(Path(__file__).parent / "fixtures" / "keychain.ini")


def test_config_wins_over_the_environment() -> None:
    env = {
        "CHARIOT_KEY_ID": "env-id",
        "CHARIOT_KEY_SECRET": "env-secret",
        "CHARIOT_API": "https://e",
    }
    creds = resolve(env, key_id="cfg-id", key_secret="cfg-secret", keychain=KEYCHAIN)
    assert (creds.key_id, creds.key_secret, creds.origin) == ("cfg-id", "cfg-secret", "config")
    assert creds.api == "https://e"  # field by field: the API URL from the environment


def test_chariot_then_praetorian_cli_variables() -> None:
    env = {"PRAETORIAN_CLI_API_KEY_ID": "p-id", "PRAETORIAN_CLI_API_KEY_SECRET": "p-secret"}
    creds = resolve(env, keychain="/nonexistent/keychain.ini")
    assert (creds.key_id, creds.origin, creds.api) == (
        "p-id",
        "PRAETORIAN_CLI_* variables",
        DEFAULT_API,
    )
    env |= {"CHARIOT_KEY_ID": "c-id", "CHARIOT_KEY_SECRET": "c-secret", "CHARIOT_ACCOUNT": "t@x"}
    creds = resolve(env, keychain="/nonexistent/keychain.ini")
    assert (creds.key_id, creds.account) == ("c-id", "t@x")


def test_keychain_profiles() -> None:
    creds = resolve({}, keychain=KEYCHAIN)
    assert (creds.key_id, creds.key_secret) == ("kc-us-key-id", "kc-us-secret-0b1c")
    assert creds.api == DEFAULT_API and creds.account is None
    creds = resolve({"CHARIOT_PROFILE": "Tenant B", "CHARIOT_KEYCHAIN": KEYCHAIN})
    assert creds.api == "https://chariot.example.test/chariot"
    assert (creds.key_id, creds.account) == ("kc-b-key-id", "tenant-b@example.com")


def test_without_the_keychain_nothing_is_read() -> None:
    with pytest.raises(CredentialsError, match="no Chariot API key"):
        resolve({}, keychain=KEYCHAIN, read_keychain=False)


def test_half_a_key_is_refused_without_its_value() -> None:
    with pytest.raises(CredentialsError, match="id without its secret") as info:
        resolve({}, keychain=KEYCHAIN, profile="Half")
    assert "kc-half-key-id" not in str(info.value)
    with pytest.raises(CredentialsError, match="secret without its id") as info:
        resolve({"CHARIOT_KEY_SECRET": "lonely-secret"}, keychain=KEYCHAIN)
    assert "lonely-secret" not in str(info.value)
    with pytest.raises(CredentialsError, match=r"^key_id: set without key_secret$"):
        resolve({}, key_id="cfg-id", keychain=KEYCHAIN)


def test_repr_hides_the_secret() -> None:
    creds = resolve({}, key_id="id", key_secret="very-secret-value")
    assert "very-secret-value" not in repr(creds) and "very-secret-value" not in str(creds)
