"""Cancellation links.

A link carries the session id signed with ``CANCELLATION_LINK_SECRET``
(itsdangerous, HMAC-SHA256). Nothing is stored: the same link can be produced
again at any time (reminder emails), nothing in the database lets its reader
cancel a session, and rotating the secret revokes every link ever sent.
"""

from __future__ import annotations

import hashlib
import uuid
from urllib.parse import urlencode

from itsdangerous import BadData, URLSafeSerializer

from shared.settings import get_settings

_SALT = "cancel-session-v1"  # distinct from any other use of the same secret


def _serializer() -> URLSafeSerializer:
    secret = get_settings().require("cancellation_link_secret")
    return URLSafeSerializer(secret, salt=_SALT, signer_kwargs={"digest_method": hashlib.sha256})


def cancellation_token(session_id: uuid.UUID) -> str:
    return _serializer().dumps(session_id.hex)


def cancellation_url(session_id: uuid.UUID) -> str:
    base = get_settings().require("public_functions_url").rstrip("/")
    return f"{base}/token-cancel?{urlencode({'token': cancellation_token(session_id)})}"


def session_id_from_token(token: str) -> uuid.UUID | None:
    """The session a token was made for, or None when it is invalid or tampered with."""
    if not token or len(token) > 200:
        return None
    try:
        value = _serializer().loads(token)
        return uuid.UUID(hex=value)
    except (BadData, ValueError, TypeError, AttributeError):
        return None
