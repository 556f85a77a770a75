"""Supabase's new API keys: the scheduler may call the service functions with a secret key
(`sb_secret_…`, not a JWT) in the `apikey` header, compared with SUPABASE_SECRET_KEY; the
legacy service-role JWT keeps working; a secret key never passes as a Bearer token, and
never makes anyone a signed-in user (user tokens stay JWTs, verified as before).
"""

from __future__ import annotations

import pytest

from shared.settings import SettingsError, load_settings
from tests.functions_fixtures import FunctionsApi, service_bearer

SECRET_KEY = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz"
OTHER_SECRET_KEY = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvZ"  # one character differs
JSON = {"Content-Type": "application/json"}


@pytest.fixture(params=["app", "served"])
def api(request, configured_functions_api) -> FunctionsApi:
    return configured_functions_api(request.param, SUPABASE_SECRET_KEY=SECRET_KEY)


def test_a_secret_key_in_apikey_calls_calendar_sync(api: FunctionsApi) -> None:
    answer = api.calendar_sync.request("POST", body="{}", headers={**JSON, "apikey": SECRET_KEY})

    assert answer.status == 200, answer.body[:300]
    assert answer.json()["success"] is True


def test_the_legacy_service_jwt_still_works_beside_it(api: FunctionsApi) -> None:
    answer = api.calendar_sync.request("POST", body="{}", headers={**JSON, **service_bearer()})

    assert answer.status == 200, answer.body[:300]


@pytest.mark.parametrize("headers, message", [
    ({"apikey": OTHER_SECRET_KEY}, "The apikey is not this project's secret key"),
    ({"Authorization": f"Bearer {SECRET_KEY}"}, "API keys (sb_…) go in the apikey header, never as a Bearer token"),
    ({"apikey": "sb_publishable_abc123"}, "Missing Authorization header; send 'Authorization: Bearer <token>'"),
], ids=["another secret key", "secret key as Bearer", "publishable key"])
def test_anything_but_the_secret_key_in_apikey_is_refused(headers: dict, message: str, api: FunctionsApi) -> None:
    answer = api.calendar_sync.request("POST", body="{}", headers={**JSON, **headers})

    assert (answer.status, answer.json()) == (401, {"success": False, "error": "UNAUTHORIZED", "message": message})


def test_a_secret_key_is_refused_where_none_is_configured(configured_functions_api) -> None:
    api = configured_functions_api("app")

    answer = api.calendar_sync.request("POST", body="{}", headers={**JSON, "apikey": SECRET_KEY})

    assert answer.status == 401
    assert answer.json()["message"] == ("Secret API keys are not accepted here (SUPABASE_SECRET_KEY is not set); "
                                        "use the service-role JWT")


def test_a_secret_key_never_makes_a_signed_in_user(api: FunctionsApi) -> None:
    answer = api.booking_create.request("POST", body="{}", headers={**JSON, "apikey": SECRET_KEY})

    assert (answer.status, answer.json()["error"]) == (401, "UNAUTHORIZED")


@pytest.mark.parametrize("value", ["eyJhbGciOiJIUzI1NiJ9.e30.x", "sb_publishable_abcdefghijklmnop", "sb_secret_x"])
def test_supabase_secret_key_must_be_a_secret_key(value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"SUPABASE_SECRET_KEY": value})

    assert str(raised.value) == "SUPABASE_SECRET_KEY must be a Supabase secret key (sb_secret_…)"
    assert value not in str(raised.value)  # the value is never quoted
