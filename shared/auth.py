"""Who is calling: Supabase JWTs from `Authorization: Bearer <jwt>`, verified with PyJWT,
and, for the service, Supabase's secret API key in the `apikey` header.

Keys, by the token's `alg` header, and nothing else:
- HS256: the project's SUPABASE_JWT_SECRET (user tokens and the service key);
- ES256 / RS256: the key with the token's `kid` in the JWKS at SUPABASE_JWKS_URL
  (user tokens only).
Service callers (the scheduler) show either the legacy service-role JWT (HS256, as
above) or a secret API key `sb_secret_…` (not a JWT) in the `apikey` header, compared
in constant time with SUPABASE_SECRET_KEY. User tokens are always JWTs.
The algorithm list given to PyJWT is always exactly the one the chosen key is meant
for, so a public key can never be used as an HMAC secret (key confusion) and
`alg: none` never verifies.

A user's role (client / specialist / admin) comes from their profile row, which users
cannot write, through the `profile_lookup` the caller passes in; claims such as
`user_metadata` or `app_metadata` are never consulted for it.
"""

from __future__ import annotations

import hmac
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal
from collections.abc import Callable, Mapping

import jwt

from shared.errors import Forbidden, Unauthorized
from shared.settings import Settings, get_settings

__all__ = [
    "Caller",
    "ProfileLookup",
    "ServiceCaller",
    "authenticate_service",
    "authenticate_user",
    "bearer_token",
    "reset_auth_caches",
    "verify_service_token",
    "verify_user_token",
]

Role = Literal["client", "specialist", "admin"]
ProfileLookup = Callable[[uuid.UUID], "str | None"]

USER_AUDIENCE = "authenticated"
SERVICE_ROLE = "service_role"
HMAC_ALGORITHM = "HS256"
JWKS_ALGORITHMS = frozenset({"ES256", "RS256"})
ROLES: frozenset[str] = frozenset({"client", "specialist", "admin"})
# Tolerated clock difference between Supabase Auth and us, for exp / nbf / iat.
LEEWAY_SECONDS = 10
JWKS_CACHE_SECONDS = 300
JWKS_FETCH_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class Caller:
    """A signed-in user with a profile."""

    user_id: uuid.UUID
    role: Role
    claims: Mapping[str, Any] = field(repr=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class ServiceCaller:
    """A trusted back-end caller (the scheduler) holding the service key."""

    claims: Mapping[str, Any] = field(repr=False)


# --- Authorization header ---------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    # Plain dicts are case-sensitive; HTTP header names are not.
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of an `Authorization: Bearer <token>` header, or Unauthorized."""
    value = _header(headers, "Authorization")
    if value is None or not value.strip():
        raise Unauthorized("Missing Authorization header; send 'Authorization: Bearer <token>'")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized(
            f"Authorization scheme must be Bearer, got {scheme[:20]!r}; send 'Authorization: Bearer <token>'"
        )
    token = token.strip()
    if not token:
        raise Unauthorized("Authorization header has no token after 'Bearer'")
    if token.count(".") != 2 or any(ch.isspace() for ch in token):
        raise Unauthorized("Bearer token is not a JWT")
    return token


# --- JWKS ---------------------------------------------------------------------------

_jwks_clients: dict[str, jwt.PyJWKClient] = {}
_jwks_lock = threading.Lock()


def _jwks_client(url: str) -> jwt.PyJWKClient:
    with _jwks_lock:
        client = _jwks_clients.get(url)
        if client is None:
            client = jwt.PyJWKClient(
                url,
                cache_jwk_set=True,
                lifespan=JWKS_CACHE_SECONDS,
                cache_keys=True,
                timeout=JWKS_FETCH_TIMEOUT_SECONDS,
            )
            _jwks_clients[url] = client
        return client


def reset_auth_caches() -> None:
    """Forget cached JWKS clients (and the keys they hold). For tests and key rotation drills."""
    with _jwks_lock:
        _jwks_clients.clear()


def _jwks_key(settings: Settings, kid: str | None, alg: str) -> jwt.PyJWK:
    if not settings.supabase_jwks_url:
        raise Unauthorized(f"Tokens signed with {alg} are not accepted here (no SUPABASE_JWKS_URL)")
    if not kid:
        raise Unauthorized(f"A {alg} token must name its signing key (kid)")
    try:
        key = _jwks_client(settings.supabase_jwks_url).get_signing_key(kid)
    except jwt.PyJWKClientConnectionError:
        raise Unauthorized("Signing keys are unavailable right now; try again shortly") from None
    except (jwt.PyJWKClientError, jwt.PyJWKError):
        raise Unauthorized(f"Token is signed with an unknown key (kid {kid[:64]!r})") from None
    if key.algorithm_name not in JWKS_ALGORITHMS or key.algorithm_name != alg:
        raise Unauthorized(
            f"Token algorithm {alg} does not match its key (kid {kid[:64]!r}, {key.algorithm_name})"
        )
    return key


def _kid_is_published(settings: Settings, kid: str) -> bool:
    """Whether `kid` names a key in the JWKS: an HS256 token must never claim one."""
    try:
        keys = _jwks_client(settings.supabase_jwks_url or "").get_signing_keys()
    except jwt.PyJWKClientConnectionError:
        # Fail closed: without the key set we cannot rule out a key-confusion attempt.
        raise Unauthorized("Signing keys are unavailable right now; try again shortly") from None
    except jwt.PyJWKClientError:
        return False  # the set holds no signing keys
    return any(key.key_id == kid for key in keys)


# --- Verification -------------------------------------------------------------------


def _decode(
    token: str,
    key: Any,
    algorithm: str,
    *,
    audience: str | None,
    issuer: str | None,
    required: list[str],
) -> dict[str, Any]:
    options: dict[str, Any] = {"require": required}
    if audience is None:
        # Service keys carry no `aud`; PyJWT would otherwise refuse any token that has one.
        options["verify_aud"] = False
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options=options,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("Token has expired; sign in again") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("Token is not valid yet (nbf or iat is in the future)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(f"Token lacks the required claim {exc.claim!r}") from None
    except jwt.InvalidAudienceError:
        raise Unauthorized(f"Token audience must be {audience!r}") from None
    except jwt.InvalidIssuerError:
        raise Unauthorized(f"Token issuer must be {issuer!r}") from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("Token signature is invalid") from None
    except jwt.InvalidAlgorithmError:
        raise Unauthorized(f"Token algorithm is not accepted (expected {algorithm})") from None
    except jwt.DecodeError:
        raise Unauthorized("Token is malformed") from None
    except (jwt.InvalidTokenError, jwt.PyJWKError) as exc:
        raise Unauthorized(f"Token is invalid ({exc.__class__.__name__})") from None
    if not isinstance(claims, dict):  # pragma: no cover - PyJWT always returns a dict
        raise Unauthorized("Token payload is not a JSON object")
    return claims


def _unverified_header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError:
        raise Unauthorized("Token is malformed") from None
    except jwt.InvalidTokenError as exc:
        # PyJWT checks some header fields while reading it (e.g. a `kid` that is not a string).
        raise Unauthorized(f"Token header is malformed ({str(exc)[:80]})") from None
    if not isinstance(header.get("alg"), str):
        raise Unauthorized("Token header has no algorithm")
    return header


def verify_user_token(token: str, settings: Settings | None = None) -> dict[str, Any]:
    """Verified claims of a signed-in user's token (HS256 secret or JWKS key)."""
    settings = settings or get_settings()
    header = _unverified_header(token)
    alg, kid = header["alg"], header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Unauthorized("Token header has a malformed kid")
    if alg == HMAC_ALGORITHM:
        if kid and settings.supabase_jwks_url and _kid_is_published(settings, kid):
            raise Unauthorized(f"An HS256 token cannot use the published key {kid[:64]!r}")
        key: Any = settings.require("supabase_jwt_secret")
    elif alg in JWKS_ALGORITHMS:
        key = _jwks_key(settings, kid, alg)
    else:
        raise Unauthorized(f"Token algorithm {alg[:20]!r} is not accepted")
    return _decode(
        token,
        key,
        alg,
        audience=USER_AUDIENCE,
        issuer=settings.supabase_jwt_issuer,
        required=["exp", "sub", "aud"],
    )


def verify_service_token(token: str, settings: Settings | None = None) -> dict[str, Any]:
    """Verified claims of the service key: HS256 with the project secret, role service_role.

    No JWKS here: service keys are only ever signed with the shared secret. The issuer
    setting applies to user tokens only (the legacy service key says `iss: supabase`).
    """
    settings = settings or get_settings()
    header = _unverified_header(token)
    if header["alg"] != HMAC_ALGORITHM:
        raise Unauthorized(f"Service tokens must be HS256, got {header['alg'][:20]!r}")
    claims = _decode(
        token,
        settings.require("supabase_jwt_secret"),
        HMAC_ALGORITHM,
        audience=None,
        issuer=None,
        required=["exp", "role"],
    )
    if claims.get("role") != SERVICE_ROLE:
        raise Unauthorized(f"This needs the service role; the token's role is {str(claims.get('role'))[:40]!r}")
    return claims


# --- Callers ------------------------------------------------------------------------


def authenticate_user(
    headers: Mapping[str, str],
    profile_lookup: ProfileLookup,
    settings: Settings | None = None,
) -> Caller:
    """The signed-in user behind the request, with the role stored in their profile."""
    claims = verify_user_token(bearer_token(headers), settings)
    if claims.get("role") != "authenticated":
        raise Unauthorized(f"A signed-in user's token is needed; its role is {str(claims.get('role'))[:40]!r}")
    if claims.get("is_anonymous") is True:
        # Supabase's anonymous sign-ins hold real tokens; nobody books or cancels without an account.
        raise Forbidden("Anonymous accounts cannot book or cancel sessions; sign in with your account")
    try:
        user_id = uuid.UUID(str(claims["sub"]))
    except ValueError:
        raise Unauthorized("Token subject is not a user id") from None
    role = profile_lookup(user_id)
    if role is None:
        raise Unauthorized("No profile for this user")
    if role not in ROLES:
        raise Unauthorized(f"Profile role {role!r} is not recognised")
    return Caller(user_id=user_id, role=role, claims=claims)  # type: ignore[arg-type]


SECRET_KEY_PREFIX = "sb_secret_"
PUBLISHABLE_KEY_PREFIX = "sb_publishable_"


def _same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison (header text is Latin-1 from WSGI; any text is safe here)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def verify_secret_key(api_key: str, settings: Settings | None = None) -> dict[str, Any]:
    """Claims-like facts of a valid secret API key (`sb_secret_…`), or Unauthorized."""
    settings = settings or get_settings()
    if not settings.supabase_secret_key:
        raise Unauthorized("Secret API keys are not accepted here (SUPABASE_SECRET_KEY is not set); "
                           "use the service-role JWT")
    if not _same_secret(api_key, settings.supabase_secret_key):
        raise Unauthorized("The apikey is not this project's secret key")
    return {"role": SERVICE_ROLE, "key": "secret"}


def authenticate_service(
    headers: Mapping[str, str], settings: Settings | None = None
) -> ServiceCaller:
    """The service caller (scheduler) behind the request, or Unauthorized: a secret API
    key in `apikey`, or the legacy service-role JWT as `Authorization: Bearer`."""
    api_key = (_header(headers, "apikey") or "").strip()
    if api_key.startswith(SECRET_KEY_PREFIX):
        return ServiceCaller(claims=verify_secret_key(api_key, settings))
    authorization = (_header(headers, "Authorization") or "").strip()
    if authorization.partition(" ")[2].strip().startswith((SECRET_KEY_PREFIX, PUBLISHABLE_KEY_PREFIX)):
        raise Unauthorized("API keys (sb_…) go in the apikey header, never as a Bearer token")
    return ServiceCaller(claims=verify_service_token(bearer_token(headers), settings))
