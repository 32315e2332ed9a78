"""Where the Chariot API URL, API key and tenant come from.

In order, the first that has a value wins, field by field, except that the key
id and its secret always come from the same place (one profile's id with
another's secret would only fail at the token exchange):

1. the sink's ``config:`` (``${VAR}`` there is substituted by rcingest and the
   value joins the run's secrets);
2. ``CHARIOT_API``, ``CHARIOT_KEY_ID``, ``CHARIOT_KEY_SECRET``, ``CHARIOT_ACCOUNT``;
3. praetorian-cli's own variables ``PRAETORIAN_CLI_API``,
   ``PRAETORIAN_CLI_API_KEY_ID``, ``PRAETORIAN_CLI_API_KEY_SECRET``;
4. praetorian-cli's keychain INI (``~/.praetorian/keychain.ini``, or
   ``keychain:``/``CHARIOT_KEYCHAIN``), section ``profile:``/``CHARIOT_PROFILE``
   (default ``United States``, the CLI's default), keys ``api``, ``api_key_id``,
   ``api_key_secret`` and ``account``.

Without an API URL anywhere, the CLI's default (the US API) is used.
"""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from pathlib import Path

import msgspec

__all__ = [
    "DEFAULT_API",
    "DEFAULT_KEYCHAIN",
    "DEFAULT_PROFILE",
    "Credentials",
    "CredentialsError",
    "HalfKeyError",
    "resolve",
]

#: praetorian-cli's defaults (``sdk/keychain.py``).
DEFAULT_API = "https://d0qcl2e18h.execute-api.us-east-2.amazonaws.com/chariot"
DEFAULT_PROFILE = "United States"
DEFAULT_KEYCHAIN = "~/.praetorian/keychain.ini"


class CredentialsError(ValueError):
    """No usable API key; the message says where it was looked for, never a value."""


class HalfKeyError(CredentialsError):
    """A key id without its secret or a secret without its id: wrong wherever it is read."""


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    """What the client needs; ``origin`` says where the key came from (for messages)."""

    api: str
    key_id: str
    key_secret: str = msgspec.field(default="")
    account: str | None = None
    origin: str = "config"

    def __repr__(self) -> str:  # the secret must not reach a log through a repr
        return f"Credentials(api={self.api!r}, account={self.account!r}, origin={self.origin!r})"


class _Partial(msgspec.Struct, kw_only=True):
    api: str | None = None
    key_id: str | None = None
    key_secret: str | None = None
    account: str | None = None


def _places(
    environ: Mapping[str, str],
    *,
    api: str | None = None,
    key_id: str | None = None,
    key_secret: str | None = None,
    account: str | None = None,
) -> tuple[list[tuple[str, _Partial]], str | None, str | None]:
    """The places to look, in order, without the keychain (which needs the disk).

    Returns the candidates and the keychain path and profile the environment
    names (``None``: not named there).
    """
    places = [
        ("config", _Partial(api=api, key_id=key_id, key_secret=key_secret, account=account)),
        (
            "CHARIOT_* variables",
            _Partial(
                api=environ.get("CHARIOT_API"),
                key_id=environ.get("CHARIOT_KEY_ID"),
                key_secret=environ.get("CHARIOT_KEY_SECRET"),
                account=environ.get("CHARIOT_ACCOUNT"),
            ),
        ),
        (
            "PRAETORIAN_CLI_* variables",
            _Partial(
                api=environ.get("PRAETORIAN_CLI_API"),
                key_id=environ.get("PRAETORIAN_CLI_API_KEY_ID"),
                key_secret=environ.get("PRAETORIAN_CLI_API_KEY_SECRET"),
            ),
        ),
    ]
    return places, environ.get("CHARIOT_KEYCHAIN"), environ.get("CHARIOT_PROFILE")


def _keychain(path: Path, profile: str) -> _Partial | None:
    """The profile's section of praetorian-cli's keychain INI, or ``None`` without one."""
    if not path.is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise CredentialsError(
            f"keychain {path}: not a readable INI file ({type(exc).__name__})"
        ) from None
    if not parser.has_section(profile):
        return None
    section = parser[profile]
    return _Partial(
        api=section.get("api") or None,
        key_id=section.get("api_key_id") or None,
        key_secret=section.get("api_key_secret") or None,
        account=section.get("account") or None,
    )


def resolve(
    environ: Mapping[str, str],
    *,
    api: str | None = None,
    key_id: str | None = None,
    key_secret: str | None = None,
    account: str | None = None,
    keychain: str | None = None,
    profile: str | None = None,
    read_keychain: bool = True,
) -> Credentials:
    """The credentials to use; ``CredentialsError`` when no API key is found.

    ``read_keychain=False`` looks only at the config and the environment (no
    disk access), for a constructor that must not do I/O.
    """
    places, env_keychain, env_profile = _places(
        environ, api=api, key_id=key_id, key_secret=key_secret, account=account
    )
    chain_path = Path(keychain or env_keychain or DEFAULT_KEYCHAIN).expanduser()
    chain_profile = profile or env_profile or DEFAULT_PROFILE
    looked = [name for name, _ in places]
    if read_keychain:
        looked.append(f"keychain {chain_path} [{chain_profile}]")
        found = _keychain(chain_path, chain_profile)
        if found is not None:
            places.append((looked[-1], found))
    pick_api = next((p.api for _, p in places if p.api), None) or DEFAULT_API
    pick_account = next((p.account for _, p in places if p.account), None)
    for origin, place in places:
        if place.key_id:
            if not place.key_secret:
                raise HalfKeyError(_half(origin, "key_id", "key_secret", "id", "secret"))
            return Credentials(
                api=pick_api.rstrip("/"),
                key_id=place.key_id,
                key_secret=place.key_secret,
                account=pick_account,
                origin=origin,
            )
        if place.key_secret:
            raise HalfKeyError(_half(origin, "key_secret", "key_id", "secret", "id"))
    raise CredentialsError(
        "no Chariot API key: set key_id and key_secret in the sink's config, "
        "CHARIOT_KEY_ID and CHARIOT_KEY_SECRET, or a praetorian-cli keychain profile "
        f"(looked in: {', '.join(looked)})"
    )


def _half(origin: str, field: str, other: str, given: str, missing: str) -> str:
    # "key_id: ..." is located by rcingest validate under the config field it names.
    if origin == "config":
        return f"{field}: set without {other}"
    return f"{origin}: an API key {given} without its {missing}"
