"""The recordings bucket through supabase's own Storage client (storage3), created
once per process from SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY and RECORDINGS_BUCKET.

The service key goes out as Supabase expects it: a legacy service-role JWT as both
`apikey` and `Authorization: Bearer`; a new `sb_secret_…` key only as `apikey` (it
is not a JWT, and Supabase refuses it as a Bearer token). Errors of any kind
(Storage's answers, the network) become one `StorageError`.
"""

from __future__ import annotations

import threading

import httpx
from storage3.exceptions import StorageApiError, StorageException
from supabase import ClientOptions, create_client

from shared.settings import SettingsError, get_settings

__all__ = ["RecordingsBucket", "StorageError", "bucket", "reset_bucket"]

STORAGE_TIMEOUT_SECONDS = 10
SECRET_KEY_PREFIX = "sb_secret_"
PUBLISHABLE_KEY_PREFIX = "sb_publishable_"


class StorageError(Exception):
    """Storage did not do what was asked; `missing` when it said the object does not exist."""

    def __init__(self, message: str, *, missing: bool = False):
        super().__init__(message)
        self.missing = missing


def _describe(exc: Exception) -> StorageError:
    if isinstance(exc, StorageApiError):
        # Storage answers errors as HTTP 400 carrying the real status in `statusCode`.
        return StorageError(f"Storage answered {exc.status} {exc.code}: {exc.message}",
                            missing=str(exc.status) == "404")
    if isinstance(exc, httpx.TimeoutException):
        return StorageError(f"Storage did not answer within {STORAGE_TIMEOUT_SECONDS} s")
    if isinstance(exc, httpx.HTTPError):
        return StorageError(f"Storage could not be reached ({exc.__class__.__name__}: {exc})")
    return StorageError(f"Storage failed ({exc.__class__.__name__}: {exc})")


class RecordingsBucket:
    """The two things the project asks of Storage: a signed link, and removal."""

    def __init__(self, files_api, name: str):
        self._files = files_api
        self.name = name

    def sign(self, path: str, seconds: int) -> str:
        """A URL that fetches `path` without credentials for `seconds` seconds."""
        try:
            answer = self._files.create_signed_url(path, seconds)
        except (StorageException, httpx.HTTPError, ValueError) as exc:
            raise _describe(exc) from exc
        url = answer.get("signedURL")
        if not url:
            raise StorageError("Storage answered without a signed URL")
        return url

    def remove(self, paths: list[str]) -> list[str]:
        """Removes the objects; those already gone are not an error. Returns the names Storage removed."""
        try:
            removed = self._files.remove(paths)
        except (StorageException, httpx.HTTPError, ValueError) as exc:
            raise _describe(exc) from exc
        return [item.get("name") for item in removed if isinstance(item, dict)] if isinstance(removed, list) else []


_bucket: RecordingsBucket | None = None
_lock = threading.Lock()


def _storage_client(url: str, key: str):
    if key.startswith(PUBLISHABLE_KEY_PREFIX):
        raise SettingsError("SUPABASE_SERVICE_ROLE_KEY holds a publishable key; it needs the service-role "
                            "JWT or an sb_secret_… key")
    client = create_client(url, key, options=ClientOptions(
        auto_refresh_token=False, persist_session=False,
        httpx_client=httpx.Client(timeout=STORAGE_TIMEOUT_SECONDS, follow_redirects=False)))
    if key.startswith(SECRET_KEY_PREFIX):
        # supabase-py also sends every key as `Authorization: Bearer`; a secret key must go as `apikey` only.
        # The Storage client is built from these headers on first use, below.
        client.options.headers.pop("Authorization", None)
    return client.storage


def bucket() -> RecordingsBucket:
    """The process's recordings bucket, made on first use and reused."""
    global _bucket
    if _bucket is None:
        with _lock:
            if _bucket is None:
                settings = get_settings()
                storage = _storage_client(settings.require("supabase_url"),
                                          settings.require("supabase_service_role_key"))
                _bucket = RecordingsBucket(storage.from_(settings.recordings_bucket), settings.recordings_bucket)
    return _bucket


def reset_bucket() -> None:
    """Forget the client (tests, and settings changes)."""
    global _bucket
    with _lock:
        _bucket = None
