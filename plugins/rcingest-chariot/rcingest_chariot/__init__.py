"""rcingest-chariot: keeps Chariot (Praetorian Guard) in step with a Bitbucket workspace.

Published the way any third-party rcingest plugin is: its own distribution,
one ``[project.entry-points.rcingest]`` line, and a ``register_sinks`` hook.

    sinks:
      - type: chariot
        config: {key_id: "${CHARIOT_KEY_ID}", key_secret: "${CHARIOT_KEY_SECRET}"}

Each ``Repository`` record becomes a ``repository`` asset with its facts as
attributes; each ``RepositoryScan`` opens a risk per secret found and
remediates those no longer found. See README.md for what is sent and when.

Importing this module is cheap (no aiohttp): rcingest imports every plugin for
``--help`` and ``validate``. The client (``rcingest_chariot.client``) and the fake
(``rcingest_chariot.fake``) are imported where they are used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rcingest
from rcingest_chariot.credentials import Credentials
from rcingest_chariot.errors import (
    ChariotAuthError,
    ChariotError,
    ChariotRejected,
    ChariotUnavailable,
)
from rcingest_chariot.sink import ChariotConfig, ChariotSink

__all__ = [
    "ChariotAuthError",
    "ChariotConfig",
    "ChariotError",
    "ChariotRejected",
    "ChariotSink",
    "ChariotUnavailable",
    "Credentials",
    "register_sinks",
]


@rcingest.hookimpl
def register_sinks(register: Callable[..., Any]) -> None:
    register("chariot", ChariotSink)
