"""Signature and shared-secret checks: a vector computed here, one-character changes fail."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from rcingest.webhooks.verify import (
    AuthError,
    authenticate,
    sign,
    verify_secret_header,
    verify_signature,
)

SECRET = "It's a Secret to Everybody"
BODY = b'{"push":{"changes":[]},"repository":{"full_name":"ws/repo"}}'
# Computed independently with the standard library, not with rcingest.
VECTOR = "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()


def test_vector_matches_and_sign_agrees() -> None:
    assert sign(BODY, SECRET) == VECTOR
    assert verify_signature(BODY, VECTOR, SECRET)


def test_known_answer() -> None:
    # RFC 4231-style fixed vector: HMAC-SHA256(key="key", "The quick brown fox...").
    body = b"The quick brown fox jumps over the lazy dog"
    expected = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    assert verify_signature(body, f"sha256={expected}", "key")


def test_one_character_change_in_body_fails() -> None:
    changed = BODY.replace(b"ws/repo", b"ws/repp")
    assert not verify_signature(changed, VECTOR, SECRET)


def test_one_character_change_in_signature_fails() -> None:
    last = VECTOR[-1]
    tampered = VECTOR[:-1] + ("0" if last != "0" else "1")
    assert not verify_signature(BODY, tampered, SECRET)


def test_one_character_change_in_secret_fails() -> None:
    assert not verify_signature(BODY, VECTOR, SECRET[:-1] + "X")


def test_hex_in_either_case() -> None:
    algo, hexdigest = VECTOR.split("=", 1)
    assert verify_signature(BODY, f"{algo}={hexdigest.upper()}", SECRET)
    assert verify_signature(BODY, f"SHA256={hexdigest}", SECRET)


@pytest.mark.parametrize(
    "header",
    [None, "", "sha256", "sha256=", "sha256=zz", "md5=" + "0" * 32, "sha1=" + "0" * 40, "garbage"],
)
def test_malformed_headers_fail(header: str | None) -> None:
    assert not verify_signature(BODY, header, SECRET)


def test_other_sha2_algorithms_accepted() -> None:
    assert verify_signature(BODY, sign(BODY, SECRET, "sha512"), SECRET)


def test_authenticate_missing_and_wrong() -> None:
    with pytest.raises(AuthError, match="missing X-Hub-Signature"):
        authenticate({}, BODY, secret=SECRET)
    with pytest.raises(AuthError, match="invalid X-Hub-Signature"):
        authenticate({"X-Hub-Signature": VECTOR[:-1] + "0"}, BODY + b" ", secret=SECRET)
    authenticate({"x-hub-signature": VECTOR}, BODY, secret=SECRET)  # plain dict, any case


def test_secret_header_only_when_enabled() -> None:
    headers = {"X-Webhook-Secret": SECRET}
    with pytest.raises(AuthError):
        authenticate(headers, BODY, secret=SECRET)
    authenticate(headers, BODY, secret=SECRET, accept_secret_header=True)
    with pytest.raises(AuthError, match="invalid X-Webhook-Secret"):
        authenticate(
            {"X-Webhook-Secret": SECRET + "x"}, BODY, secret=SECRET, accept_secret_header=True
        )
    assert verify_secret_header(SECRET, SECRET)
    assert not verify_secret_header(SECRET[:-1], SECRET)
    assert not verify_secret_header(None, SECRET)


def test_a_wrong_signature_wins_over_a_right_secret_header() -> None:
    headers = {"X-Hub-Signature": "sha256=" + "0" * 64, "X-Webhook-Secret": SECRET}
    with pytest.raises(AuthError):
        authenticate(headers, BODY, secret=SECRET, accept_secret_header=True)


def test_no_secret_accepts_everything() -> None:
    authenticate({}, BODY, secret=None)


def test_errors_never_carry_the_secret_or_the_signature() -> None:
    for headers in ({}, {"X-Hub-Signature": VECTOR + "0"}, {"X-Webhook-Secret": SECRET + "!"}):
        with pytest.raises(AuthError) as info:
            authenticate(headers, BODY, secret=SECRET, accept_secret_header=True)
        assert SECRET not in str(info.value)
        assert VECTOR.split("=")[1] not in str(info.value)


@pytest.mark.parametrize("value", ["\udcff\udcfe", SECRET[:-1] + "\udcff", "é"])
def test_a_secret_header_that_is_not_utf8_fails_the_check(value: str) -> None:
    # aiohttp hands over undecodable header bytes as surrogates: a failed check, not a crash.
    assert not verify_secret_header(value, SECRET)
    with pytest.raises(AuthError, match="invalid X-Webhook-Secret"):
        authenticate({"X-Webhook-Secret": value}, BODY, secret=SECRET, accept_secret_header=True)
