"""The Bitbucket webhook receiver: sans-I/O core plus the aiohttp daemon.

For embedding in another framework, ``receive(headers, body, secret=...)``
is the whole policy (size, signature, decoding) and returns a ``Verdict``;
``docs/webhooks.md`` shows FastAPI and Flask.
"""

from rcingest.webhooks.decode import BackfillJob, Decoded, DecodeError, decode
from rcingest.webhooks.receive import DEFAULT_MAX_BODY_BYTES, Verdict, receive
from rcingest.webhooks.verify import AuthError, authenticate, sign, verify_signature

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "AuthError",
    "BackfillJob",
    "DecodeError",
    "Decoded",
    "Verdict",
    "authenticate",
    "decode",
    "receive",
    "sign",
    "verify_signature",
]
