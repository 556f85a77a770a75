"""Settings from environment variables: defaults, validation, and errors that name the variable."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from shared.settings import Settings, SettingsError, get_settings, load_settings, reset_settings

SERVICE_ACCOUNT = {
    "type": "service_account",
    "client_email": "sync@project.iam.gserviceaccount.com",
    "private_key": "-----BEGIN PRIVATE KEY-----\nMIIsecret\n-----END PRIVATE KEY-----\n",
    "token_uri": "https://oauth2.googleapis.com/token",
}


def test_defaults_apply_when_nothing_is_set() -> None:
    settings = load_settings({})
    assert settings.google_calendar_num_retries == 3
    assert settings.trusted_proxy_hops == 0
    assert settings.google_calendar_delegate is False
    assert settings.google_calendar_timeout_seconds == 10.0
    assert settings.calendar_sync_enabled is False
    assert settings.google_calendar_api_url == "https://www.googleapis.com/calendar/v3/"
    assert settings.google_calendar_batch_url == "https://www.googleapis.com/batch/calendar/v3"


def test_values_are_read_and_converted() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://app@db/therapy",
            "SUPABASE_JWT_ISSUER": "https://ref.supabase.co/auth/v1",
            "GOOGLE_CALENDAR_NUM_RETRIES": "2",
            "TRUSTED_PROXY_HOPS": "1",
            "GOOGLE_CALENDAR_DELEGATE": "True",
            "GOOGLE_CALENDAR_TIMEOUT_SECONDS": "2.5",
            "GOOGLE_CALENDAR_API_URL": "http://127.0.0.1:8099/calendar/v3",
        }
    )
    assert settings.database_url == "postgresql://app@db/therapy"
    assert settings.supabase_jwt_issuer == "https://ref.supabase.co/auth/v1"
    assert (settings.google_calendar_num_retries, settings.trusted_proxy_hops) == (2, 1)
    assert settings.google_calendar_delegate is True
    assert settings.google_calendar_timeout_seconds == 2.5
    assert settings.google_calendar_api_url == "http://127.0.0.1:8099/calendar/v3/"
    assert settings.google_calendar_batch_url == "http://127.0.0.1:8099/batch/calendar/v3"


def test_empty_value_counts_as_unset() -> None:
    settings = load_settings({"SENTRY_DSN": "", "GOOGLE_SERVICE_ACCOUNT_JSON": "  ", "TRUSTED_PROXY_HOPS": ""})
    assert settings.sentry_dsn is None
    assert settings.calendar_sync_enabled is False
    assert settings.trusted_proxy_hops == 0


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TRUSTED_PROXY_HOPS", "one", "TRUSTED_PROXY_HOPS must be a whole number, got 'one'"),
        ("TRUSTED_PROXY_HOPS", "-1", "TRUSTED_PROXY_HOPS must be at least 0, got -1"),
        ("GOOGLE_CALENDAR_DELEGATE", "maybe", "GOOGLE_CALENDAR_DELEGATE must be true or false, got 'maybe'"),
        ("GOOGLE_CALENDAR_TIMEOUT_SECONDS", "0", "GOOGLE_CALENDAR_TIMEOUT_SECONDS must be positive"),
        (
            "GOOGLE_CALENDAR_API_URL",
            "http://127.0.0.1:8099/",
            "GOOGLE_CALENDAR_API_URL must be an http(s) URL ending in /calendar/v3/",
        ),
    ],
)
def test_malformed_value_names_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({variable: value})
    assert message in str(error.value)


def test_missing_required_setting_names_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^DATABASE_URL is not set"):
        Settings().require("database_url")
    assert Settings(database_url="postgresql:///x").require("database_url") == "postgresql:///x"


def test_service_account_is_read_from_json_text() -> None:
    settings = load_settings({"GOOGLE_SERVICE_ACCOUNT_JSON": json.dumps(SERVICE_ACCOUNT)})
    assert settings.calendar_sync_enabled
    assert settings.service_account_info() == SERVICE_ACCOUNT


def test_service_account_is_read_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(SERVICE_ACCOUNT))
    settings = load_settings({"GOOGLE_SERVICE_ACCOUNT_JSON": str(key_file)})
    assert settings.service_account_info()["client_email"] == SERVICE_ACCOUNT["client_email"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"private_key": "MIIsecret", ', "is not valid JSON"),
        ("/nonexistent/sa.json", "neither JSON text nor a readable file"),
        (json.dumps({"private_key": "MIIsecret"}), "lacks client_email, token_uri"),
    ],
)
def test_bad_service_account_is_reported_without_leaking_the_key(value: str, message: str) -> None:
    settings = load_settings({"GOOGLE_SERVICE_ACCOUNT_JSON": value})
    with pytest.raises(SettingsError) as error:
        settings.service_account_info()
    assert message in str(error.value)
    assert "GOOGLE_SERVICE_ACCOUNT_JSON" in str(error.value)
    assert "MIIsecret" not in str(error.value)


def test_settings_are_cached_until_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTED_PROXY_HOPS", "5")
    reset_settings()
    try:
        first = get_settings()
        monkeypatch.setenv("TRUSTED_PROXY_HOPS", "6")
        assert get_settings() is first
        reset_settings()
        assert get_settings().trusted_proxy_hops == 6
    finally:
        monkeypatch.undo()
        reset_settings()


def test_the_booking_rules_numbers_are_not_process_settings() -> None:
    """They live in the database (private.practice_settings), which every door reads."""
    names = {f.name for f in fields(Settings)}
    assert not names & {"booking_min_notice_hours", "booking_max_advance_days", "cancellation_min_notice_hours",
                        "dispatch_horizon_days"}
