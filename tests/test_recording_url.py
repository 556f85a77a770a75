"""recording-url: who gets a link (the policies of meeting_recordings, evaluated as the
caller), how long it lives, and what happens when Storage fails. The real supabase
client talks to the fake Storage of tests/storage_server.py through SUPABASE_URL;
each test runs through functions-framework's app and through the served process.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import functions_framework
import jwt
import psycopg
import pytest
from psycopg import sql

from shared.storage.links import MAX_LINK_SECONDS
from tests.functions_fixtures import AppClient, FunctionClient, FunctionsEnv, ServedClient, bearer, service_bearer
from tests.storage_fixtures import BUCKET, STORAGE_SECRET_KEY
from tests.storage_server import FakeStorageServer
from tests.support import Person, create_person

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def _recording_url_app():
    return functions_framework.create_app("recording_url", str(REPO_ROOT / "functions/recording-url/main.py"))


@pytest.fixture(params=["app", "served"])
def recording_url_api(request, functions_env: FunctionsEnv, storage: FakeStorageServer) -> FunctionClient:
    """recording-url through functions-framework's app, and (a second run) through the served process."""
    if request.param == "served":
        return ServedClient(request.getfixturevalue("served_functions").base_url, "recording-url")
    return AppClient(request.getfixturevalue("_recording_url_app"))


@pytest.fixture
def app_api(functions_env: FunctionsEnv, storage: FakeStorageServer, _recording_url_app) -> FunctionClient:
    """recording-url in this process only (for tests that change its settings)."""
    return AppClient(_recording_url_app)


@pytest.fixture
def practice(committed_db: psycopg.Connection) -> dict[str, Person]:
    return {
        "client": create_person(committed_db, "client", full_name="Alice Client"),
        "specialist": create_person(committed_db, "specialist", full_name="Sam Specialist"),
        "other client": create_person(committed_db, "client", full_name="Bob Client"),
        "other specialist": create_person(committed_db, "specialist", full_name="Tess Specialist"),
        "admin": create_person(committed_db, "admin", full_name="Ada Admin"),
    }


@pytest.fixture
def past_session(committed_db: psycopg.Connection, practice) -> dict:
    starts_at = (datetime.now(timezone.utc) - timedelta(days=2)).replace(microsecond=0)
    return committed_db.execute(
        """insert into public.sessions (specialist_id, client_id, starts_at, ends_at)
           values (%s, %s, %s, %s) returning *""",
        [practice["specialist"].id, practice["client"].id, starts_at, starts_at + timedelta(minutes=50)]).fetchone()


def ask(api: FunctionClient, who: Person | None, recording_id: uuid.UUID | str, **headers: str):
    return api.post_json({"recording_id": str(recording_id)}, headers={**(bearer(who) if who else {}), **headers})


def issued_audit(conn: psycopg.Connection, recording_id: uuid.UUID) -> list[dict]:
    return conn.execute("""select actor_id, actor_role, new_values from public.audit_log
                           where action = 'recording_link_issued' and entity_id = %s""", [recording_id]).fetchall()


def download(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # no header: the link is the credential
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def token_of(signed_url: str) -> dict:
    return jwt.decode(parse_qs(urlsplit(signed_url).query)["token"][0], options={"verify_signature": False})


# -- who gets a link ------------------------------------------------------------------------------

@pytest.mark.parametrize("who", ["client", "specialist", "admin"])
def test_the_sessions_parties_and_admins_get_a_working_link_and_it_is_audited(
        who, recording_url_api, practice, past_session, recording, storage, committed_db):
    row = recording(past_session)
    before = datetime.now(timezone.utc)

    answer = ask(recording_url_api, practice[who], row["id"])

    assert answer.status == 200, answer.json()
    body = answer.json()
    assert set(body) == {"success", "signed_url", "expires_at"}
    assert body["signed_url"].startswith(f"{storage.url}/storage/v1/object/sign/{BUCKET}/{row['storage_path']}?token=")
    assert download(body["signed_url"]) == (200, b"\x00\x00\x00\x18ftypmp42")
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(seconds=MAX_LINK_SECONDS - 5) <= expires_at <= datetime.now(timezone.utc) + timedelta(
        seconds=MAX_LINK_SECONDS)
    (audit,) = issued_audit(committed_db, row["id"])
    assert (audit["actor_id"], audit["actor_role"]) == (practice[who].id, who)
    assert audit["new_values"]["session_id"] == str(past_session["id"])
    assert datetime.fromisoformat(audit["new_values"]["link_expires_at"]) == expires_at


@pytest.mark.parametrize("who", ["other client", "other specialist"])
def test_anyone_else_hears_not_found_exactly_as_for_a_missing_recording(
        who, recording_url_api, practice, past_session, recording, storage, committed_db):
    row = recording(past_session)
    missing = uuid.uuid4()

    theirs = ask(recording_url_api, practice[who], row["id"])
    nothing = ask(recording_url_api, practice[who], missing)

    assert (theirs.status, nothing.status) == (404, 404)
    assert theirs.json() == {"success": False, "error": "NOT_FOUND", "message": f"No recording with id {row['id']}"}
    assert nothing.json() == {"success": False, "error": "NOT_FOUND", "message": f"No recording with id {missing}"}
    assert storage.recorded("POST") == [], "nothing is signed for them"
    assert issued_audit(committed_db, row["id"]) == []


def test_the_anon_key_and_no_token_are_refused(recording_url_api, past_session, recording, storage, committed_db):
    row = recording(past_session)
    from tests.functions_fixtures import service_token
    for headers in ({}, {"Authorization": f"Bearer {service_token(role='anon')}"}):
        answer = recording_url_api.post_json({"recording_id": str(row["id"])}, headers=headers)
        assert (answer.status, answer.json()["error"]) == (401, "UNAUTHORIZED")
    assert storage.recorded("POST") == []
    assert issued_audit(committed_db, row["id"]) == []


def test_the_service_key_is_not_a_signed_in_user(recording_url_api, past_session, recording, storage):
    row = recording(past_session)
    answer = recording_url_api.post_json({"recording_id": str(row["id"])}, headers=service_bearer())
    assert (answer.status, answer.json()["error"]) == (401, "UNAUTHORIZED")


def test_an_anonymous_sign_in_of_a_party_is_refused(recording_url_api, practice, past_session, recording, storage):
    row = recording(past_session)
    answer = ask(recording_url_api, None, row["id"], **bearer(practice["client"], is_anonymous=True))
    assert (answer.status, answer.json()["error"]) == (403, "FORBIDDEN")


def test_access_follows_the_policies_when_an_admin_is_demoted(
        app_api, practice, past_session, recording, storage, committed_db):
    """Decided by the database at the time of asking, not by anything the function keeps."""
    row = recording(past_session)
    assert ask(app_api, practice["admin"], row["id"]).status == 200
    committed_db.execute("update public.profiles set role = 'client' where id = %s", [practice["admin"].id])
    assert ask(app_api, practice["admin"], row["id"]).status == 404


def test_the_answer_follows_the_policies_of_the_table_not_code_of_its_own(
        app_api, practice, past_session, recording, storage, committed_db):
    """A policy added to meeting_recordings changes who gets a link, with no change to the function."""
    row = recording(past_session)
    outsider = practice["other specialist"]
    assert ask(app_api, outsider, row["id"]).status == 404
    committed_db.execute(sql.SQL(
        """create policy "Test: one specialist reads every recording" on public.meeting_recordings
           for select to authenticated using ((select auth.uid()) = {}::uuid)""").format(sql.Literal(str(outsider.id))))
    try:
        assert ask(app_api, outsider, row["id"]).status == 200
    finally:
        committed_db.execute('drop policy "Test: one specialist reads every recording" on public.meeting_recordings')
    assert ask(app_api, outsider, row["id"]).status == 404


# -- how long a link lives ------------------------------------------------------------------------------

def test_a_recording_without_expiry_gets_a_24_hour_link(recording_url_api, practice, past_session, recording,
                                                         storage):
    row = recording(past_session)
    answer = ask(recording_url_api, practice["client"], row["id"])
    (signing,) = storage.recorded("POST", "/storage/v1/object/sign/")
    assert signing.json() == {"expiresIn": str(MAX_LINK_SECONDS)}
    claims = token_of(answer.json()["signed_url"])
    assert claims["exp"] - claims["iat"] == MAX_LINK_SECONDS


def test_the_link_never_outlives_the_recording(recording_url_api, practice, past_session, recording, storage):
    row = recording(past_session, expires_in=timedelta(hours=2))

    answer = ask(recording_url_api, practice["client"], row["id"])

    assert answer.status == 200
    (signing,) = storage.recorded("POST", "/storage/v1/object/sign/")
    lifetime = int(signing.json()["expiresIn"])
    assert 2 * 3600 - 60 <= lifetime <= 2 * 3600
    assert datetime.fromisoformat(answer.json()["expires_at"]) <= row["expires_at"]
    assert token_of(answer.json()["signed_url"])["exp"] <= row["expires_at"].timestamp() + 1  # Storage's whole seconds


def test_an_expired_recording_answers_a_clear_error_and_signs_nothing(
        recording_url_api, practice, past_session, recording, storage, committed_db):
    row = recording(past_session, created_ago=timedelta(days=3), expires_in=timedelta(hours=-1))

    answer = ask(recording_url_api, practice["client"], row["id"])

    assert answer.status == 410
    assert answer.json()["error"] == "RECORDING_EXPIRED"
    assert answer.json()["message"].startswith(f"Recording {row['id']} expired at ")
    assert storage.recorded("POST") == []
    assert issued_audit(committed_db, row["id"]) == []


def test_an_expired_recording_of_someone_else_is_still_not_found(
        recording_url_api, practice, past_session, recording, storage):
    row = recording(past_session, created_ago=timedelta(days=3), expires_in=timedelta(hours=-1))
    answer = ask(recording_url_api, practice["other client"], row["id"])
    assert (answer.status, answer.json()["error"]) == (404, "NOT_FOUND")


# -- when Storage fails ---------------------------------------------------------------------------------

def test_storage_failing_answers_503_and_nothing_is_audited_as_issued(
        recording_url_api, practice, past_session, recording, storage, committed_db):
    row = recording(past_session)
    storage.fail(503, times=None)

    answer = ask(recording_url_api, practice["client"], row["id"])

    assert answer.status == 503
    assert answer.json() == {"success": False, "error": "STORAGE_UNAVAILABLE",
                             "message": "The recording storage is unavailable; try again shortly"}
    assert issued_audit(committed_db, row["id"]) == []


def test_storage_unreachable_answers_503(app_api, functions_env, practice, past_session, recording, committed_db):
    row = recording(past_session)
    from shared.ops.localpg import free_port
    functions_env.set(SUPABASE_URL=f"http://127.0.0.1:{free_port()}")  # nothing listens there

    answer = ask(app_api, practice["client"], row["id"])

    assert (answer.status, answer.json()["error"]) == (503, "STORAGE_UNAVAILABLE")
    assert issued_audit(committed_db, row["id"]) == []


def test_a_recording_whose_file_is_missing_answers_not_found(
        recording_url_api, practice, past_session, recording, storage, committed_db):
    row = recording(past_session, with_object=False)

    answer = ask(recording_url_api, practice["client"], row["id"])

    assert answer.status == 404
    assert answer.json()["message"] == f"The file of recording {row['id']} is missing from storage"
    (signing,) = storage.recorded("POST")
    assert signing.status == 400  # Storage's way of saying 404
    assert issued_audit(committed_db, row["id"]) == []


# -- the service key on the wire ------------------------------------------------------------------------

def test_the_legacy_service_key_goes_as_apikey_and_bearer(app_api, practice, past_session, recording, storage):
    row = recording(past_session)
    assert ask(app_api, practice["client"], row["id"]).status == 200
    (signing,) = storage.recorded("POST")
    assert signing.headers["authorization"] == f"Bearer {signing.headers['apikey']}"
    assert jwt.decode(signing.headers["apikey"], options={"verify_signature": False})["role"] == "service_role"


def test_a_secret_key_goes_as_apikey_only_never_as_bearer(app_api, functions_env, practice, past_session, recording,
                                                          storage):
    row = recording(past_session)
    functions_env.set(SUPABASE_SERVICE_ROLE_KEY=STORAGE_SECRET_KEY)

    answer = ask(app_api, practice["client"], row["id"])

    assert answer.status == 200, answer.json()
    (signing,) = storage.recorded("POST")
    assert signing.headers["apikey"] == STORAGE_SECRET_KEY
    assert "authorization" not in signing.headers
    assert download(answer.json()["signed_url"])[0] == 200


def test_a_publishable_key_is_an_operators_mistake(app_api, functions_env, practice, past_session, recording,
                                                   storage):
    row = recording(past_session)
    functions_env.set(SUPABASE_SERVICE_ROLE_KEY="sb_publishable_abc")
    answer = ask(app_api, practice["client"], row["id"])
    assert (answer.status, answer.json()["error"]) == (500, "INTERNAL_ERROR")
    assert storage.recorded() == []


# -- what is kept -------------------------------------------------------------------------------------

def test_no_signed_url_is_stored_anywhere(app_api, practice, past_session, recording, storage, committed_db):
    row = recording(past_session)
    token = parse_qs(urlsplit(ask(app_api, practice["client"], row["id"]).json()["signed_url"]).query)["token"][0]
    stored = committed_db.execute(
        """select (select count(*) from public.audit_log where new_values::text like %s)
                + (select count(*) from public.meeting_recordings where recording_url like %s) as n""",
        [f"%{token[:40]}%", f"%{token[:40]}%"]).fetchone()["n"]
    assert stored == 0
    assert committed_db.execute("select recording_url from public.meeting_recordings where id = %s",
                                [row["id"]]).fetchone()["recording_url"] is None


def test_each_link_is_audited_once(app_api, practice, past_session, recording, storage, committed_db):
    row = recording(past_session)
    for _ in range(3):
        assert ask(app_api, practice["specialist"], row["id"]).status == 200
    assert len(issued_audit(committed_db, row["id"])) == 3


# -- bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, field", [
    ({}, "recording_id"),
    ({"recording_id": None}, "recording_id"),
    ({"recording_id": "recording-1"}, "recording_id"),
    ({"recording_id": 7}, "recording_id"),
    ({"recording_id": str(uuid.UUID(int=1)), "expires_in": 60}, "expires_in"),
])
def test_bad_input_is_refused_naming_the_field(body, field, recording_url_api, practice, storage):
    answer = recording_url_api.post_json(body, headers=bearer(practice["client"]))
    assert (answer.status, answer.json()["error"], answer.json()["details"]) == (400, "INVALID_REQUEST",
                                                                                 {"field": field})
    assert storage.recorded() == []


# -- settings -----------------------------------------------------------------------------------------

def test_storage_settings_are_read_with_their_default_bucket():
    from shared.settings import load_settings
    settings = load_settings({"SUPABASE_URL": "https://ref.supabase.co/", "SUPABASE_SERVICE_ROLE_KEY": "sb_secret_x"})
    assert (settings.supabase_url, settings.supabase_service_role_key, settings.recordings_bucket) == (
        "https://ref.supabase.co", "sb_secret_x", "meeting-recordings")
    assert load_settings({"RECORDINGS_BUCKET": "archive"}).recordings_bucket == "archive"


def test_a_supabase_url_without_its_scheme_is_refused_naming_the_variable():
    from shared.settings import SettingsError, load_settings
    with pytest.raises(SettingsError, match=r"^SUPABASE_URL must be an http\(s\) URL \(https://<ref>\.supabase\.co\), "
                                            r"got 'ref\.supabase\.co'$"):
        load_settings({"SUPABASE_URL": "ref.supabase.co"})


def test_without_storage_settings_a_link_is_an_operators_error(app_api, functions_env, practice, past_session,
                                                               recording):
    row = recording(past_session)
    functions_env.set(SUPABASE_URL=None)
    answer = ask(app_api, practice["client"], row["id"])
    assert (answer.status, answer.json()["error"]) == (500, "INTERNAL_ERROR")
