"""Clinical records are never deleted without trace (sql/0037_clinical_record_deletions.sql):
every deletion of a session note or a recording's row is audited, by any door; nobody
deletes a recording's row through the API (an admin expires it); the service never
deletes one whose file Supabase Storage still lists; truncating either table is refused.
"""

from __future__ import annotations

from datetime import timedelta, timezone

import psycopg
import pytest

from tests.rls_fixtures import as_service_role, attempt, insert_row

NOTE_TEXT = "Client spoke about their brother's illness"


@pytest.fixture
def past_session(make_session, specialist_s, client_a) -> dict:
    return make_session(specialist_s, client_a, starts_in=timedelta(days=-2))


@pytest.fixture
def note(db, past_session, specialist_s) -> dict:
    return insert_row(db, "session_notes", booking_id=past_session["id"], provider_id=specialist_s.id, notes=NOTE_TEXT)


def path_of(session: dict) -> str:
    """The bucket's layout, which the database requires (sql/0045): sessions/<yyyy-mm>/<session id>…"""
    return f"sessions/{session['starts_at'].astimezone(timezone.utc):%Y-%m}/{session['id']}.mp4"


@pytest.fixture
def recording(db, past_session) -> dict:
    row = insert_row(db, "meeting_recordings", booking_id=past_session["id"], storage_path=path_of(past_session),
                     file_format="mp4", duration_seconds=3000)
    db.execute("update public.meeting_recordings set created_at = now() - interval '1 day' where id = %s", [row["id"]])
    return row


def audit_rows(conn: psycopg.Connection, entity_id) -> list[dict]:
    return conn.execute("""select action, actor_id, actor_role, entity_type, old_values, new_values
                           from public.audit_log where entity_id = %s""", [entity_id]).fetchall()


def test_an_admin_deleting_a_note_is_audited_without_its_text(db, note, admin, past_session, specialist_s) -> None:
    seen: list[dict] = []
    result = attempt(db, admin, "delete from public.session_notes where id = %s", [note["id"]],
                     then=lambda conn: seen.extend(audit_rows(conn, note["id"])))

    assert result.error is None and result.rowcount == 1
    [row] = seen
    assert (row["action"], row["actor_id"], row["actor_role"], row["entity_type"]) == (
        "session_note_deleted", admin.id, "admin", "session_note")
    assert row["old_values"]["booking_id"] == str(past_session["id"])
    assert row["old_values"]["provider_id"] == str(specialist_s.id)
    assert NOTE_TEXT not in str(row)


def test_the_service_deleting_a_note_is_audited_too(db, note) -> None:
    with as_service_role(db):
        db.execute("delete from public.session_notes where id = %s", [note["id"]])
        [row] = audit_rows(db, note["id"])

    assert (row["action"], row["actor_id"], row["actor_role"]) == ("session_note_deleted", None, "service")


def test_nobody_deletes_a_recording_through_the_api_and_an_admin_expires_it_instead(db, recording, admin) -> None:
    deleted = attempt(db, admin, "delete from public.meeting_recordings where id = %s", [recording["id"]])
    expired = attempt(db, admin, "update public.meeting_recordings set expires_at = now() where id = %s returning id",
                      [recording["id"]])

    assert deleted.sqlstate == "42501"
    assert db.execute("select count(*) as n from public.meeting_recordings where id = %s",
                      [recording["id"]]).fetchone()["n"] == 1
    assert expired.error is None and expired.rowcount == 1


def test_the_api_roles_cannot_delete_a_recording_even_with_a_broad_grant(db, recording, admin) -> None:
    """Supabase grants ALL on new public tables to the API roles by default: the trigger still refuses."""
    db.execute("grant delete on public.meeting_recordings to authenticated")
    db.execute("""create policy "Test: anyone may delete" on public.meeting_recordings
                  for delete to authenticated using (true)""")

    result = attempt(db, admin, "delete from public.meeting_recordings where id = %s", [recording["id"]])

    assert (result.sqlstate, result.message) == ("42501", "Recordings cannot be deleted through the API; set "
                                                 "expires_at to now and the expiry job removes the file, then the row.")


def test_the_service_deleting_a_recording_whose_file_is_gone_is_audited(db, recording, past_session) -> None:
    with as_service_role(db):
        db.execute("select set_config('app.channel', 'recordings-expiry', true)")
        db.execute("delete from public.meeting_recordings where id = %s", [recording["id"]])
        [row] = audit_rows(db, recording["id"])

    assert (row["action"], row["actor_role"], row["entity_type"]) == ("meeting_recording_deleted", "service",
                                                                      "meeting_recording")
    assert row["old_values"]["storage_path"] == path_of(past_session)
    assert row["new_values"] == {"channel": "recordings-expiry"}


def test_a_recording_row_stays_while_storage_still_lists_its_file(db, recording) -> None:
    # Supabase Storage's own table, as it is in a Supabase database (the columns used here).
    db.execute("create schema storage")
    db.execute("create table storage.objects (id uuid primary key default gen_random_uuid(), bucket_id text, name text)")
    db.execute("insert into storage.objects (bucket_id, name) values ('meeting-recordings', %s)",
               [recording["storage_path"]])

    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
        with db.transaction():
            db.execute("delete from public.meeting_recordings where id = %s", [recording["id"]])
    db.execute("delete from storage.objects")
    db.execute("delete from public.meeting_recordings where id = %s", [recording["id"]])

    assert refused.value.diag.message_primary == (
        f"Recording {recording['id']} still has its file in Storage; remove the file first.")
    assert [r["action"] for r in audit_rows(db, recording["id"])] == ["meeting_recording_deleted"]


@pytest.mark.parametrize("table", ["session_notes", "meeting_recordings"])
def test_truncating_clinical_records_is_refused(db, table: str, note, recording) -> None:
    with pytest.raises(psycopg.Error) as refused:
        with db.transaction():
            db.execute(f"truncate public.{table}")

    assert refused.value.sqlstate == "TB004"
    assert db.execute(f"select count(*) as n from public.{table}").fetchone()["n"] == 1
