"""Caller authentication: which tokens get in, which are refused, and why."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from collections.abc import Callable, Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.auth import Caller, authenticate_service, authenticate_user, reset_auth_caches
from shared.errors import Unauthorized
from shared.settings import Settings, SettingsError, reset_settings

# 64 bytes, so PyJWT has no key-length warning even for the HS512 case.
SECRET = "super-secret-jwt-token-with-at-least-32-characters-long-0123456789"
WRONG_SECRET = "another-secret-that-is-not-the-projects-secret-at-all-0123456789"
USER_ID = uuid.UUID("6f1f3c2e-8d5b-4a8e-9a51-1c2b3d4e5f60")
EC_KID = "ec-key-2026"
RSA_KID = "rsa-key-2026"


# -- key material and a JWKS endpoint --------------------------------------------


@dataclass(frozen=True)
class Keys:
    ec_private: ec.EllipticCurvePrivateKey
    rsa_private: rsa.RSAPrivateKey
    jwks_url: str

    @property
    def ec_public_pem(self) -> bytes:
        return self.ec_private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _jwk(public_key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.ECAlgorithm if alg == "ES256" else jwt.algorithms.RSAAlgorithm
    return {**algorithm.to_jwk(public_key, as_dict=True), "kid": kid, "alg": alg, "use": "sig"}


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    """An EC and an RSA signing key, published as a JWKS on a local HTTP server."""
    ec_private = ec.generate_private_key(ec.SECP256R1())
    rsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    document = json.dumps(
        {"keys": [_jwk(ec_private.public_key(), EC_KID, "ES256"), _jwk(rsa_private.public_key(), RSA_KID, "RS256")]}
    ).encode()

    class JwksHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/auth/v1/.well-known/jwks.json" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Keys(ec_private, rsa_private, f"http://127.0.0.1:{server.server_port}/auth/v1/.well-known/jwks.json")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _fresh_auth_caches() -> Iterator[None]:
    reset_auth_caches()
    yield
    reset_auth_caches()


@pytest.fixture
def settings(keys: Keys) -> Settings:
    return Settings(supabase_jwt_secret=SECRET, supabase_jwks_url=keys.jwks_url)


# -- token builders --------------------------------------------------------------


def user_claims(**overrides: Any) -> dict[str, Any]:
    """Claims of a Supabase access token for a signed-in user."""
    now = int(time.time())
    claims = {
        "iss": "https://abcdefghijklmnop.supabase.co/auth/v1",
        "sub": str(USER_ID),
        "aud": "authenticated",
        "role": "authenticated",
        "email": "client@example.com",
        "iat": now - 60,
        "exp": now + 3600,
        "session_id": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def service_claims(**overrides: Any) -> dict[str, Any]:
    """Claims of Supabase's service key: no sub, no aud."""
    now = int(time.time())
    claims = {"iss": "supabase", "ref": "abcdefghijklmnop", "role": "service_role", "iat": now - 60, "exp": now + 3600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def hs256(claims: dict[str, Any], secret: str | bytes = SECRET, **headers: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers or None)


def hs256_raw(claims: dict[str, Any], secret: bytes, **headers: Any) -> str:
    """HS256 by hand: PyJWT refuses a PEM public key as HMAC secret, an attacker does not."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', **headers})}.{part(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def lookup_returning(role: str | None) -> Callable[[uuid.UUID], str | None]:
    return lambda _user_id: role


# -- user tokens: a table of token -> outcome ------------------------------------

TokenFactory = Callable[[Keys], str]

REFUSED_USER_TOKENS: list[tuple[str, TokenFactory, str]] = [
    ("alg_none", lambda k: jwt.encode(user_claims(), None, algorithm="none"), "algorithm 'none' is not accepted"),
    ("wrong_secret", lambda k: hs256(user_claims(), WRONG_SECRET), "signature is invalid"),
    ("expired", lambda k: hs256(user_claims(exp=int(time.time()) - 120)), "expired"),
    ("nbf_in_future", lambda k: hs256(user_claims(nbf=int(time.time()) + 600)), "not valid yet"),
    ("iat_in_future", lambda k: hs256(user_claims(iat=int(time.time()) + 600)), "not valid yet"),
    ("wrong_audience", lambda k: hs256(user_claims(aud="anon")), "audience must be 'authenticated'"),
    ("missing_exp", lambda k: hs256(user_claims(exp=None)), "claim 'exp'"),
    ("missing_aud", lambda k: hs256(user_claims(aud=None)), "claim 'aud'"),
    ("missing_sub", lambda k: hs256(user_claims(sub=None)), "claim 'sub'"),
    ("sub_not_a_uuid", lambda k: hs256(user_claims(sub="admin")), "not a user id"),
    ("anon_role", lambda k: hs256(user_claims(role="anon")), "role is 'anon'"),
    ("hs512_right_secret", lambda k: jwt.encode(user_claims(), SECRET, algorithm="HS512"), "'HS512' is not accepted"),
    ("service_key_as_user", lambda k: hs256(service_claims()), "claim"),
    (
        "es256_unknown_kid",
        lambda k: jwt.encode(user_claims(), k.ec_private, "ES256", headers={"kid": "nope"}),
        "unknown key",
    ),
    ("es256_without_kid", lambda k: jwt.encode(user_claims(), k.ec_private, "ES256"), "must name its signing key"),
    (
        "es256_signed_by_another_key",
        lambda k: jwt.encode(user_claims(), ec.generate_private_key(ec.SECP256R1()), "ES256", headers={"kid": EC_KID}),
        "signature is invalid",
    ),
    (
        "rs256_header_naming_the_ec_key",
        lambda k: jwt.encode(user_claims(), k.rsa_private, "RS256", headers={"kid": EC_KID}),
        "does not match its key",
    ),
    (
        "key_confusion_hs256_with_public_pem_and_published_kid",
        lambda k: hs256_raw(user_claims(), k.ec_public_pem, kid=EC_KID),
        "cannot use the published key",
    ),
    (
        "key_confusion_hs256_with_public_pem_without_kid",
        lambda k: hs256_raw(user_claims(), k.ec_public_pem),
        "signature is invalid",
    ),
    (
        "expired_es256",
        lambda k: jwt.encode(user_claims(exp=int(time.time()) - 120), k.ec_private, "ES256", headers={"kid": EC_KID}),
        "expired",
    ),
]


@pytest.mark.parametrize(
    ("make_token", "message"),
    [pytest.param(make, message, id=name) for name, make, message in REFUSED_USER_TOKENS],
)
def test_bad_user_token_is_refused(keys: Keys, settings: Settings, make_token: TokenFactory, message: str) -> None:
    with pytest.raises(Unauthorized) as refused:
        authenticate_user(bearer(make_token(keys)), lookup_returning("client"), settings)
    assert message in refused.value.message
    assert refused.value.code == "UNAUTHORIZED" and refused.value.http_status == 401


ACCEPTED_USER_TOKENS: list[tuple[str, TokenFactory]] = [
    ("hs256_with_project_secret", lambda k: hs256(user_claims())),
    ("hs256_with_unpublished_kid", lambda k: hs256(user_claims(), kid="legacy-hs-key")),
    ("es256_from_jwks", lambda k: jwt.encode(user_claims(), k.ec_private, "ES256", headers={"kid": EC_KID})),
    ("rs256_from_jwks", lambda k: jwt.encode(user_claims(), k.rsa_private, "RS256", headers={"kid": RSA_KID})),
    ("expired_within_clock_leeway", lambda k: hs256(user_claims(exp=int(time.time()) - 2))),
]


@pytest.mark.parametrize(
    "make_token", [pytest.param(make, id=name) for name, make in ACCEPTED_USER_TOKENS]
)
def test_valid_user_token_is_accepted(keys: Keys, settings: Settings, make_token: TokenFactory) -> None:
    caller = authenticate_user(bearer(make_token(keys)), lookup_returning("specialist"), settings)
    assert caller == Caller(user_id=USER_ID, role="specialist", claims=caller.claims)
    assert caller.claims["sub"] == str(USER_ID)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        pytest.param({}, "Missing Authorization header", id="no_header"),
        pytest.param({"Authorization": ""}, "Missing Authorization header", id="empty_header"),
        pytest.param({"Authorization": "Bearer"}, "no token after 'Bearer'", id="bearer_without_token"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, "scheme must be Bearer", id="basic_scheme"),
        pytest.param({"Authorization": "eyJhbGciOiJIUzI1NiJ9.e30.sig"}, "must be Bearer", id="token_without_bearer"),
        pytest.param({"Authorization": "Bearer garbage"}, "not a JWT", id="garbage"),
        pytest.param({"Authorization": "Bearer a.b c.d"}, "not a JWT", id="token_with_space"),
        pytest.param({"Authorization": "Bearer !!.@@.##"}, "malformed", id="undecodable_jwt"),
    ],
)
def test_malformed_authorization_header_is_refused(settings: Settings, headers: dict[str, str], message: str) -> None:
    with pytest.raises(Unauthorized) as refused:
        authenticate_user(headers, lookup_returning("client"), settings)
    assert message in refused.value.message


def test_header_name_and_scheme_are_case_insensitive(settings: Settings) -> None:
    headers = {"authorization": f"bearer {hs256(user_claims())}"}
    caller = authenticate_user(headers, lookup_returning("client"), settings)
    assert caller.user_id == USER_ID


def test_asymmetric_token_is_refused_when_no_jwks_is_configured(keys: Keys) -> None:
    token = jwt.encode(user_claims(), keys.ec_private, "ES256", headers={"kid": EC_KID})
    with pytest.raises(Unauthorized, match="no SUPABASE_JWKS_URL"):
        authenticate_user(bearer(token), lookup_returning("client"), Settings(supabase_jwt_secret=SECRET))


def test_unreachable_jwks_refuses_asymmetric_tokens(keys: Keys) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = Settings(supabase_jwt_secret=SECRET, supabase_jwks_url=f"http://127.0.0.1:{port}/jwks.json")
    token = jwt.encode(user_claims(), keys.ec_private, "ES256", headers={"kid": EC_KID})
    with pytest.raises(Unauthorized, match="Signing keys are unavailable"):
        authenticate_user(bearer(token), lookup_returning("client"), unreachable)


def test_issuer_is_checked_when_configured(settings: Settings) -> None:
    with_issuer = replace(settings, supabase_jwt_issuer="https://abcdefghijklmnop.supabase.co/auth/v1")
    assert authenticate_user(bearer(hs256(user_claims())), lookup_returning("client"), with_issuer).user_id == USER_ID
    forged = hs256(user_claims(iss="https://evil.example/auth/v1"))
    with pytest.raises(Unauthorized, match="issuer must be"):
        authenticate_user(bearer(forged), lookup_returning("client"), with_issuer)


# -- roles come from the profile, never from the token ------------------------------


def test_user_without_profile_is_refused(settings: Settings) -> None:
    with pytest.raises(Unauthorized, match="No profile for this user"):
        authenticate_user(bearer(hs256(user_claims())), lookup_returning(None), settings)


def test_admin_claims_in_metadata_do_not_make_an_admin(settings: Settings) -> None:
    token = hs256(user_claims(app_metadata={"role": "admin"}, user_metadata={"role": "admin", "is_admin": True}))
    looked_up: list[uuid.UUID] = []

    def profile_lookup(user_id: uuid.UUID) -> str:
        looked_up.append(user_id)
        return "client"

    caller = authenticate_user(bearer(token), profile_lookup, settings)
    assert caller.role == "client"
    assert not caller.is_admin
    assert looked_up == [USER_ID]


def test_admin_comes_from_the_profile(settings: Settings) -> None:
    caller = authenticate_user(bearer(hs256(user_claims())), lookup_returning("admin"), settings)
    assert caller.role == "admin" and caller.is_admin


def test_unknown_profile_role_is_refused(settings: Settings) -> None:
    with pytest.raises(Unauthorized, match="'superuser' is not recognised"):
        authenticate_user(bearer(hs256(user_claims())), lookup_returning("superuser"), settings)


# -- service tokens ----------------------------------------------------------------


def test_service_key_is_accepted_as_service(settings: Settings) -> None:
    service = authenticate_service(bearer(hs256(service_claims())), settings)
    assert service.claims["role"] == "service_role"
    assert service.claims["ref"] == "abcdefghijklmnop"


REFUSED_SERVICE_TOKENS: list[tuple[str, TokenFactory, str]] = [
    ("user_token", lambda k: hs256(user_claims()), "needs the service role"),
    ("wrong_secret", lambda k: hs256(service_claims(), WRONG_SECRET), "signature is invalid"),
    (
        "user_token_forging_service_role_with_wrong_key",
        lambda k: hs256(user_claims(role="service_role"), WRONG_SECRET),
        "signature is invalid",
    ),
    ("expired", lambda k: hs256(service_claims(exp=int(time.time()) - 120)), "expired"),
    ("missing_exp", lambda k: hs256(service_claims(exp=None)), "claim 'exp'"),
    ("missing_role", lambda k: hs256(service_claims(role=None)), "claim 'role'"),
    ("alg_none", lambda k: jwt.encode(service_claims(), None, algorithm="none"), "must be HS256"),
    (
        "es256_from_jwks",
        lambda k: jwt.encode(service_claims(), k.ec_private, "ES256", headers={"kid": EC_KID}),
        "must be HS256",
    ),
    ("public_pem_as_hmac_secret", lambda k: hs256_raw(service_claims(), k.ec_public_pem), "signature is invalid"),
]


@pytest.mark.parametrize(
    ("make_token", "message"),
    [pytest.param(make, message, id=name) for name, make, message in REFUSED_SERVICE_TOKENS],
)
def test_bad_service_token_is_refused(keys: Keys, settings: Settings, make_token: TokenFactory, message: str) -> None:
    with pytest.raises(Unauthorized) as refused:
        authenticate_service(bearer(make_token(keys)), settings)
    assert message in refused.value.message


def test_service_key_ignores_the_user_issuer_setting(settings: Settings) -> None:
    with_issuer = replace(settings, supabase_jwt_issuer="https://abcdefghijklmnop.supabase.co/auth/v1")
    assert authenticate_service(bearer(hs256(service_claims())), with_issuer).claims["iss"] == "supabase"


# -- settings from the environment ----------------------------------------------------


def test_secret_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_JWT_SECRET", SECRET)
    monkeypatch.delenv("SUPABASE_JWKS_URL", raising=False)
    monkeypatch.delenv("SUPABASE_JWT_ISSUER", raising=False)
    reset_settings()
    try:
        assert authenticate_user(bearer(hs256(user_claims())), lookup_returning("client")).user_id == USER_ID
    finally:
        monkeypatch.undo()
        reset_settings()


def test_missing_secret_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="SUPABASE_JWT_SECRET is not set"):
        authenticate_user(bearer(hs256(user_claims())), lookup_returning("client"), Settings())
