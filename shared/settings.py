"""Process settings, read once from environment variables.

The numbers the booking rules depend on (notice, advance, cancellation notice,
dispatch horizon, …) are not here: the database holds them
(``private.practice_settings``, written from the environment by
``therapy-db migrate``; see shared/ops/practice_settings.py), because every door,
PostgREST included, must apply the same ones.

Everything the functions need from their environment goes through `get_settings()`.
Optional settings get their defaults here; required ones (the database URL, the JWT
secret, ...) are only required when a code path uses them, through
`Settings.require(...)`, so a function that never touches the calendar or the
database does not fail because their settings are missing.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from collections.abc import Mapping

__all__ = ["Settings", "SettingsError", "get_settings", "load_settings", "reset_settings"]

DEFAULT_CALENDAR_API_URL = "https://www.googleapis.com/calendar/v3/"
_CALENDAR_API_SUFFIX = "calendar/v3/"
DEFAULT_RECORDINGS_BUCKET = "meeting-recordings"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names the variable.

    Deliberately not an `AppError`: it is an operator's problem, so callers see a
    generic 500 while logs and Sentry get this message.
    """


@dataclass(frozen=True)
class Settings:
    """All settings; each field reads the environment variable of its name in capitals."""

    database_url: str | None = None
    supabase_jwt_secret: str | None = None
    # Supabase's secret API key (sb_secret_…), accepted from the scheduler in the apikey header.
    supabase_secret_key: str | None = None
    supabase_jwks_url: str | None = None
    # When set, user tokens must carry exactly this `iss` (e.g. https://<ref>.supabase.co/auth/v1).
    supabase_jwt_issuer: str | None = None
    public_functions_url: str | None = None
    cancellation_link_secret: str | None = None
    google_calendar_api_url: str = DEFAULT_CALENDAR_API_URL
    # Raw value: JSON text or a path to a JSON file. None means calendar sync is off.
    google_service_account_json: str | None = None
    # Impersonate the specialist (domain-wide delegation) instead of writing as the service account.
    google_calendar_delegate: bool = False
    google_calendar_timeout_seconds: float = 10.0
    google_calendar_num_retries: int = 3
    sentry_dsn: str | None = None
    # Proxies in front of the functions that append to X-Forwarded-For (1 behind Google's front end).
    trusted_proxy_hops: int = 0
    # Versioned keys of the intake forms' encryption (shared/intake/keys.py parses them).
    intake_encryption_keys: str | None = None
    # Where the local server forwards /rest/v1 (PostgREST); `therapy-db up` sets it. Unset = no /rest/v1.
    postgrest_url: str | None = None
    # smtp://user:pass@host:587 (STARTTLS) or smtps://user:pass@host:465 (TLS); None = email off.
    smtp_url: str | None = None
    # The From of every email, e.g. "Therapy Practice <bookings@example.com>"; None = email off.
    email_from: str | None = None
    # Supabase project URL (https://<ref>.supabase.co): Storage is reached at <url>/storage/v1.
    supabase_url: str | None = None
    # Signs recording links and removes expired recordings: the legacy service-role JWT, or an
    # sb_secret_… key (sent only as `apikey`, never as a Bearer token).
    supabase_service_role_key: str | None = None
    # The Storage bucket of session recordings.
    recordings_bucket: str = DEFAULT_RECORDINGS_BUCKET

    def require(self, name: str) -> Any:
        """Return setting `name` (a field name), or raise if it is not set."""
        value = getattr(self, name)
        if value is None or value == "":
            raise SettingsError(f"{name.upper()} is not set; it is required here")
        return value

    @property
    def calendar_sync_enabled(self) -> bool:
        return self.google_service_account_json is not None

    @property
    def google_calendar_batch_url(self) -> str:
        """Batch endpoint of the Calendar API, next to its root (`<host>/batch/calendar/v3`)."""
        root = self.google_calendar_api_url[: -len(_CALENDAR_API_SUFFIX)]
        return f"{root}batch/calendar/v3"

    def service_account_info(self) -> dict[str, Any]:
        """Parse GOOGLE_SERVICE_ACCOUNT_JSON (JSON text, or a path to a JSON file).

        Messages never quote the value: it holds a private key.
        """
        raw = self.require("google_service_account_json").strip()
        if raw.startswith("{"):
            text, origin = raw, "its JSON text"
        else:
            try:
                text = Path(raw).read_text(encoding="utf-8")
            except OSError as exc:
                raise SettingsError(
                    f"GOOGLE_SERVICE_ACCOUNT_JSON is neither JSON text nor a readable file "
                    f"({exc.strerror or exc.__class__.__name__}: {raw!r})"
                ) from None
            origin = f"the file {raw!r}"
        try:
            info = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(
                f"GOOGLE_SERVICE_ACCOUNT_JSON: {origin} is not valid JSON "
                f"(line {exc.lineno}, column {exc.colno})"
            ) from None
        if not isinstance(info, dict):
            raise SettingsError(f"GOOGLE_SERVICE_ACCOUNT_JSON: {origin} is not a JSON object")
        missing = [key for key in ("client_email", "private_key", "token_uri") if not info.get(key)]
        if missing:
            raise SettingsError(
                f"GOOGLE_SERVICE_ACCOUNT_JSON: {origin} lacks {', '.join(missing)}"
            )
        return info


def _text(environ: Mapping[str, str], name: str) -> str | None:
    # An empty value counts as unset: .env files and deploy tools write `X=` for "no value".
    value = environ.get(name, "").strip()
    return value or None


def _integer(environ: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = _text(environ, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = _text(environ, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise SettingsError(f"{name} must be positive, got {raw!r}")
    return value


def _flag(environ: Mapping[str, str], name: str) -> bool:
    raw = _text(environ, name)
    if raw is None:
        return False
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _calendar_api_url(environ: Mapping[str, str]) -> str:
    raw = _text(environ, "GOOGLE_CALENDAR_API_URL")
    if raw is None:
        return DEFAULT_CALENDAR_API_URL
    url = raw if raw.endswith("/") else raw + "/"
    # The client library appends resource paths to this root, and the batch endpoint
    # is derived from it, so a root without calendar/v3/ would silently hit wrong paths.
    if not url.endswith("/" + _CALENDAR_API_SUFFIX) or "://" not in url:
        raise SettingsError(
            f"GOOGLE_CALENDAR_API_URL must be an http(s) URL ending in /calendar/v3/, got {raw!r}"
        )
    return url


def _secret_key(environ: Mapping[str, str]) -> str | None:
    raw = _text(environ, "SUPABASE_SECRET_KEY")
    if raw is not None and (not raw.startswith("sb_secret_") or len(raw) < 20):
        # Never quote the value: it is a secret, and a near-miss is almost the real one.
        raise SettingsError("SUPABASE_SECRET_KEY must be a Supabase secret key (sb_secret_…)")
    return raw
def _supabase_url(environ: Mapping[str, str]) -> str | None:
    raw = _text(environ, "SUPABASE_URL")
    if raw is not None and not raw.startswith(("http://", "https://")):
        raise SettingsError(f"SUPABASE_URL must be an http(s) URL (https://<ref>.supabase.co), got {raw!r}")
    return raw.rstrip("/") if raw else None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from `environ` (default: os.environ), validating the optional ones."""
    env = os.environ if environ is None else environ
    return Settings(
        database_url=_text(env, "DATABASE_URL"),
        supabase_jwt_secret=_text(env, "SUPABASE_JWT_SECRET"),
        supabase_secret_key=_secret_key(env),
        supabase_jwks_url=_text(env, "SUPABASE_JWKS_URL"),
        supabase_jwt_issuer=_text(env, "SUPABASE_JWT_ISSUER"),
        public_functions_url=_text(env, "PUBLIC_FUNCTIONS_URL"),
        cancellation_link_secret=_text(env, "CANCELLATION_LINK_SECRET"),
        google_calendar_api_url=_calendar_api_url(env),
        google_service_account_json=_text(env, "GOOGLE_SERVICE_ACCOUNT_JSON"),
        google_calendar_delegate=_flag(env, "GOOGLE_CALENDAR_DELEGATE"),
        google_calendar_timeout_seconds=_seconds(env, "GOOGLE_CALENDAR_TIMEOUT_SECONDS", 10.0),
        google_calendar_num_retries=_integer(env, "GOOGLE_CALENDAR_NUM_RETRIES", 3),
        sentry_dsn=_text(env, "SENTRY_DSN"),
        trusted_proxy_hops=_integer(env, "TRUSTED_PROXY_HOPS", 0),
        intake_encryption_keys=_text(env, "INTAKE_ENCRYPTION_KEYS"),
        postgrest_url=_text(env, "POSTGREST_URL"),
        smtp_url=_text(env, "SMTP_URL"),
        email_from=_text(env, "EMAIL_FROM"),
        supabase_url=_supabase_url(env),
        supabase_service_role_key=_text(env, "SUPABASE_SERVICE_ROLE_KEY"),
        recordings_bucket=_text(env, "RECORDINGS_BUCKET") or DEFAULT_RECORDINGS_BUCKET,
    )


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings so the next `get_settings()` re-reads the environment."""
    get_settings.cache_clear()


ENVIRONMENT_VARIABLES: tuple[str, ...] = tuple(field.name.upper() for field in fields(Settings))
