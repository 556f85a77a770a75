"""What the database holds of recordings, whoever writes (the service, an admin through
the API): storage paths under the bucket's sessions/<yyyy-mm>/<session id> layout of the
recording's own session, the practice's default retention, no signed links at rest, and
records of deleted files that do not change.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from shared.ops import practice_settings
from tests.data_layer import refused
from tests.storage_fixtures import recording_path
from tests.support import acting_as


@pytest.fixture
def session(db, make_session, specialist_s, client_a) -> dict:
    return make_session(specialist_s, client_a, starts_in=timedelta(days=-3))


@pytest.fixture
def other_session(db, make_session, specialist_t, client_b) -> dict:
    return make_session(specialist_t, client_b, starts_in=timedelta(days=-40))


def add(conn: psycopg.Connection, session: dict, path: str | None = None, **columns) -> dict:
    values = {"booking_id": session["id"], "storage_path": path or recording_path(session), "file_format": "mp4",
              **columns}
    return conn.execute(
        f"insert into public.meeting_recordings ({', '.join(values)}) values ({', '.join(['%s'] * len(values))}) "
        "returning *", list(values.values())).fetchone()


def month(session: dict) -> str:
    return session["starts_at"].astimezone(timezone.utc).strftime("%Y-%m")


# -- storage paths ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["recording.mp4", "2026-12-01T10-00.webm", "part-1/camera.mkv"])
def test_a_path_under_the_sessions_own_folder_is_accepted(db, session, name):
    assert add(db, session, recording_path(session, name))["storage_path"].endswith(name)


def test_a_file_named_after_the_session_is_accepted(db, session):
    path = f"sessions/{month(session)}/{session['id']}.mp4"
    assert add(db, session, path)["storage_path"] == path


@pytest.mark.parametrize("path", [
    "recordings/one.mp4",
    "sessions/one.mp4",
    "sessions/2026-13/{id}/one.mp4",
    "sessions/26-01/{id}/one.mp4",
    "/sessions/{month}/{id}/one.mp4",
    "sessions/{month}/{id}/../other/one.mp4",
    "sessions/{month}/{id}//one.mp4",
    "sessions/{month}/{id}/one two.mp4",
    "sessions/{month}/not-a-session/one.mp4",
    "sessions/{month}/{ID}/one.mp4",
])
def test_a_path_outside_the_layout_is_refused(db, session, path):
    path = path.format(id=session["id"], ID=str(session["id"]).upper(), month=month(session))
    error = refused(db, "insert into public.meeting_recordings (booking_id, storage_path, file_format) "
                        "values (%s, %s, 'mp4')", [session["id"], path])
    assert error.sqlstate == "TR001"
    assert error.diag.message_primary == (
        f"Recording path {path} must be sessions/<yyyy-mm>/<session id> followed by a file name.")


def test_a_path_of_another_session_is_refused(db, session, other_session):
    path = recording_path(other_session)
    error = refused(db, "insert into public.meeting_recordings (booking_id, storage_path, file_format) "
                        "values (%s, %s, 'mp4')", [session["id"], path])
    assert error.sqlstate == "TR002"
    assert error.diag.message_primary == (
        f"Recording path {path} does not belong to session {session['id']} "
        f"(expected sessions/{month(session)}/{session['id']}…).")


def test_a_path_in_another_month_is_refused(db, session):
    starts = session["starts_at"].astimezone(timezone.utc)
    wrong = (starts.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    path = f"sessions/{wrong}/{session['id']}/one.mp4"
    error = refused(db, "insert into public.meeting_recordings (booking_id, storage_path, file_format) "
                        "values (%s, %s, 'mp4')", [session["id"], path])
    assert error.sqlstate == "TR002"


def test_a_recording_of_a_session_that_does_not_exist_is_refused(db):
    missing = uuid.uuid4()
    path = f"sessions/2026-01/{missing}/one.mp4"
    error = refused(db, "insert into public.meeting_recordings (booking_id, storage_path, file_format) "
                        "values (%s, %s, 'mp4')", [missing, path])
    assert (error.sqlstate, error.diag.message_primary) == ("TB001", f"Session {missing} does not exist.")


def test_moving_a_recording_to_another_sessions_path_is_refused(db, session, other_session):
    row = add(db, session)
    error = refused(db, "update public.meeting_recordings set storage_path = %s where id = %s",
                    [recording_path(other_session), row["id"]])
    assert error.sqlstate == "TR002"


def test_an_admin_through_the_api_is_held_to_the_layout_too(db, session, admin):
    with acting_as(db, admin) as conn:
        error = refused(conn, "insert into public.meeting_recordings (booking_id, storage_path, file_format) "
                              "values (%s, 'recordings/x.mp4', 'mp4')", [session["id"]])
    assert error.sqlstate == "TR001"
    with acting_as(db, admin) as conn:
        assert add(conn, session)["booking_id"] == session["id"]


def test_the_service_role_inserts_recordings(db, session):
    with db.transaction(force_rollback=True):
        db.execute("select set_config('role', 'service_role', true)")
        assert add(db, session)["booking_id"] == session["id"]


# -- retention --------------------------------------------------------------------------------------

def test_without_a_retention_setting_recordings_are_kept(db, session):
    assert db.execute("select (private.practice_settings()).recording_retention_days as d").fetchone()["d"] is None
    assert add(db, session)["expires_at"] is None


def test_the_practice_retention_fills_expires_at_of_new_recordings(db, session):
    db.execute("update private.practice_settings set recording_retention_days = 30")
    created = datetime.now(timezone.utc) - timedelta(hours=1)
    row = add(db, session, created_at=created)
    assert row["expires_at"] == row["created_at"] + timedelta(days=30)


def test_an_explicit_expiry_wins_over_the_retention(db, session):
    db.execute("update private.practice_settings set recording_retention_days = 30")
    chosen = datetime.now(timezone.utc) + timedelta(days=3)
    assert add(db, session, expires_at=chosen)["expires_at"] == chosen


@pytest.mark.parametrize("value", [0, -1, 3651])
def test_a_retention_out_of_range_is_refused(db, value):
    error = refused(db, "update private.practice_settings set recording_retention_days = %s", [value])
    assert error.diag.constraint_name == "practice_settings_recording_retention_days_check"


def test_the_retention_comes_from_the_environment(db):
    assert practice_settings.apply(db, {"RECORDING_RETENTION_DAYS": "90"}) == {"recording_retention_days": "90"}
    assert practice_settings.current(db)["recording_retention_days"] == 90
    practice_settings.apply(db, {"RECORDING_RETENTION_DAYS": ""})  # empty: left alone
    assert practice_settings.current(db)["recording_retention_days"] == 90
    practice_settings.apply(db, {"RECORDING_RETENTION_DAYS": "null"})  # back to keeping recordings
    assert practice_settings.current(db)["recording_retention_days"] is None


# -- no links at rest; deleted files -------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "https://ref.supabase.co/storage/v1/object/sign/meeting-recordings/sessions/x.mp4?token=eyJhbGciOi",
    "https://bucket.s3.amazonaws.com/x.mp4?X-Amz-Signature=abc",
    "https://example.test/x.mp4?a=1&sig=abc",
])
def test_a_signed_link_cannot_be_stored(db, session, url):
    error = refused(db, "insert into public.meeting_recordings (booking_id, storage_path, file_format, recording_url) "
                        "values (%s, %s, 'mp4', %s)", [session["id"], recording_path(session), url])
    assert error.diag.constraint_name == "meeting_recordings_recording_url_unsigned"


def test_an_unsigned_address_may_be_kept_for_reference(db, session):
    address = "meeting-recordings/" + recording_path(session)
    assert add(db, session, recording_url=address)["recording_url"] == address


def test_the_record_of_a_deleted_file_cannot_change(db, session):
    row = add(db, session, created_at=datetime.now(timezone.utc) - timedelta(days=2),
              expires_at=datetime.now(timezone.utc) - timedelta(days=1))
    db.execute("update public.meeting_recordings set deleted_at = now() where id = %s", [row["id"]])
    for change in ("expires_at = now() + interval '1 year'", "deleted_at = null",
                   f"storage_path = '{recording_path(session, 'other.mp4')}'"):
        error = refused(db, f"update public.meeting_recordings set {change} where id = %s", [row["id"]])
        assert error.sqlstate == "TR003"
        assert error.diag.message_primary.startswith(f"Recording {row['id']} was deleted from storage on ")
    db.execute("update public.meeting_recordings set duration_seconds = 10 where id = %s", [row["id"]])


def test_a_file_cannot_be_marked_deleted_before_it_expires(db, session):
    row = add(db, session)
    error = refused(db, "update public.meeting_recordings set deleted_at = now() where id = %s", [row["id"]])
    assert error.diag.constraint_name == "meeting_recordings_deleted_after_expiry"


def test_nobody_marks_a_deletion_through_the_api(db, session, admin):
    row = add(db, session, created_at=datetime.now(timezone.utc) - timedelta(days=2),
              expires_at=datetime.now(timezone.utc) - timedelta(days=1))
    with acting_as(db, admin) as conn:
        error = refused(conn, "update public.meeting_recordings set deleted_at = now() where id = %s", [row["id"]])
    assert error.sqlstate == "42501"


def test_a_new_recording_cannot_arrive_marked_deleted(db, session):
    row = add(db, session, created_at=datetime.now(timezone.utc) - timedelta(days=2),
              expires_at=datetime.now(timezone.utc) - timedelta(days=1), deleted_at=datetime.now(timezone.utc))
    assert row["deleted_at"] is None
