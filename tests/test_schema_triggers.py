"""Triggers of the schema: timestamps, status history, permanent records, the
cancellation path and the 24-hour freeze of session notes. The superuser is
refused too: these rules hold for everyone, not only under row-level security."""

from __future__ import annotations

from datetime import date, time, timedelta

import psycopg
import pytest
from psycopg import sql

from tests.data_layer import cancel, insert_row, refused


def now(db):
    return db.execute("select now() as now").fetchone()["now"]


def history(db, session_id) -> list[dict]:
    return db.execute(
        "select from_status, to_status, changed_by, reason, changed_at from public.booking_status_history "
        "where session_id = %s order by id", [session_id]).fetchall()


def session_row(db, session_id) -> dict:
    return db.execute("select * from public.sessions where id = %s", [session_id]).fetchone()


# -- updated_at ----------------------------------------------------------------------

@pytest.fixture
def row_of(db, specialist_s, client_a, make_session):
    """A fresh row of the given table, and the column change an update makes to it."""
    def make(table: str) -> tuple[dict, str, object]:
        if table == "profiles":
            return {"id": specialist_s.id}, "full_name", "Samantha Specialist"
        if table == "sessions":
            return make_session(specialist_s, client_a), "special_requests", "Ground floor room, please."
        if table == "notification_preferences":  # made with the profile
            return (db.execute("select * from public.notification_preferences where user_id = %s",
                               [client_a.id]).fetchone(), "reminders_enabled", False)
        if table == "session_notes":
            session = make_session(specialist_s, client_a)
            row = insert_row(db, "session_notes", {"booking_id": session["id"], "provider_id": specialist_s.id,
                                                   "notes": "First notes."})
            return row, "notes", "Corrected notes."
        values, column, new = {
            "specialist_rates": ({"specialist_id": specialist_s.id, "amount": 80, "duration_minutes": 50},
                                 "amount", 90),
            "availability_windows": ({"specialist_id": specialist_s.id, "day_of_week": 1, "start_time": time(9),
                                      "end_time": time(17)}, "is_active", False),
            "specialist_availability_exceptions": ({"specialist_id": specialist_s.id,
                                                    "exception_date": date(2031, 3, 10)}, "reason", "training"),
            "booking_packages": ({"specialist_id": specialist_s.id, "name": "Five", "session_count": 5,
                                  "price": 400}, "name", "Five sessions"),
            "recurring_bookings": ({"user_id": client_a.id, "specialist_id": specialist_s.id, "frequency": "weekly",
                                    "start_date": date(2031, 3, 3), "duration_minutes": 50}, "is_active", False),
        }[table]
        return insert_row(db, table, values), column, new
    return make


TABLES_WITH_UPDATED_AT = ["profiles", "specialist_rates", "availability_windows", "specialist_availability_exceptions",
                          "booking_packages", "recurring_bookings", "sessions", "session_notes",
                          "notification_preferences"]


def backdate(db, table: str, row_id) -> None:
    """Sets updated_at an hour back, past the triggers, so a new stamp is visible
    inside the test's single transaction (where now() does not move)."""
    with db.transaction():
        db.execute("set local session_replication_role = replica")
        db.execute(sql.SQL("update {} set updated_at = now() - interval '1 hour' where id = %s")
                   .format(sql.Identifier("public", table)), [row_id])
        db.execute("set local session_replication_role = origin")


def test_every_table_with_updated_at_is_covered_here(db):
    tables = {row["table_name"] for row in db.execute(
        "select table_name from information_schema.columns "
        "where table_schema = 'public' and column_name = 'updated_at' "
        "and table_name in (select table_name from information_schema.tables "
        "                   where table_schema = 'public' and table_type = 'BASE TABLE')")}

    assert tables == set(TABLES_WITH_UPDATED_AT), "a table with updated_at needs its stamping test below"


@pytest.mark.parametrize("table", TABLES_WITH_UPDATED_AT)
def test_updated_at_is_stamped_on_update(db, row_of, table):
    row, column, new_value = row_of(table)
    backdate(db, table, row["id"])

    db.execute(sql.SQL("update {} set {} = %s where id = %s").format(
        sql.Identifier("public", table), sql.Identifier(column)), [new_value, row["id"]])

    stamped = db.execute(sql.SQL("select updated_at from {} where id = %s").format(
        sql.Identifier("public", table)), [row["id"]]).fetchone()["updated_at"]
    assert stamped == now(db), f"an update of {table} sets updated_at to the time of the change"


@pytest.mark.parametrize("table", TABLES_WITH_UPDATED_AT)
def test_updated_at_cannot_be_set_by_hand(db, row_of, table):
    row, column, new_value = row_of(table)

    db.execute(sql.SQL("update {} set {} = %s, updated_at = '2000-01-01' where id = %s").format(
        sql.Identifier("public", table), sql.Identifier(column)), [new_value, row["id"]])

    stamped = db.execute(sql.SQL("select updated_at from {} where id = %s").format(
        sql.Identifier("public", table)), [row["id"]]).fetchone()["updated_at"]
    assert stamped == now(db), f"{table}.updated_at is the database's clock, not the caller's"


# -- status history ------------------------------------------------------------------

def test_a_new_session_gets_one_history_row_from_null_to_confirmed(db, make_session, specialist_s, client_a, admin):
    db.execute("select set_config('app.actor_id', %s, true)", [str(admin.id)])

    session = make_session(specialist_s, client_a)

    assert history(db, session["id"]) == [
        {"from_status": None, "to_status": "confirmed", "changed_by": admin.id, "reason": None,
         "changed_at": now(db)},
    ], "the first status is recorded once, with who acted"


def test_a_bulk_insert_gives_each_session_its_own_history_row(db, specialist_s, specialist_t, client_a, client_b):
    created = db.execute(
        "insert into public.sessions (specialist_id, client_id, starts_at, ends_at) "
        "select s, c, now() + interval '3 days' + d * interval '1 day', "
        "       now() + interval '3 days' + d * interval '1 day' + interval '50 minutes' "
        "from (values (%s::uuid, %s::uuid, 0), (%s, %s, 1), (%s, %s, 2)) v(s, c, d) returning id",
        [specialist_s.id, client_a.id, specialist_t.id, client_b.id, specialist_s.id, client_b.id]).fetchall()

    for row in created:
        assert [(h["from_status"], h["to_status"]) for h in history(db, row["id"])] == [(None, "confirmed")]


def test_cancelling_adds_exactly_one_history_row_with_who_and_why(db, make_session, specialist_s, client_a):
    session = make_session(specialist_s, client_a)

    cancel(db, session["id"], client_a.id, "Feeling unwell")

    assert history(db, session["id"])[1:] == [
        {"from_status": "confirmed", "to_status": "cancelled", "changed_by": client_a.id,
         "reason": "Feeling unwell", "changed_at": now(db)},
    ], "one row: confirmed -> cancelled, by the client, with the reason"


def test_an_update_that_keeps_the_status_adds_no_history(db, make_session, specialist_s, client_a):
    session = make_session(specialist_s, client_a)

    db.execute("update public.sessions set special_requests = 'Quiet room' where id = %s", [session["id"]])

    assert len(history(db, session["id"])) == 1, "only status changes are history"


# -- permanent records ------------------------------------------------------------------

PERMANENT_TABLES = {
    "booking_cancellations": ("booking_id", "reason",
                              "Booking cancellations are permanent and cannot be changed or deleted."),
    "booking_status_history": ("session_id", "reason", "The booking status history is append-only."),
    "audit_log": ("entity_id", "action", "The audit log is append-only."),
}
CHANGES = {
    "update": "update {table} set {column} = 'rewritten' where {key} = %s",
    "delete": "delete from {table} where {key} = %s",
    "truncate": "truncate {table}",
}


@pytest.fixture
def cancelled_session(db, make_session, specialist_s, client_a) -> dict:
    """A cancelled session: one row in each permanent table is about it."""
    session = make_session(specialist_s, client_a)
    cancel(db, session["id"], client_a.id, "Moving house")
    return session_row(db, session["id"])


@pytest.mark.parametrize("as_role", ["postgres", "service_role"])
@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("table", PERMANENT_TABLES)
def test_permanent_records_cannot_be_changed_or_deleted_by_anyone(db, cancelled_session, table, change, as_role):
    key, column, message = PERMANENT_TABLES[table]
    # Supabase's default grants give service_role everything; the trigger must still hold.
    db.execute(sql.SQL("grant all on table {} to service_role").format(sql.Identifier("public", table)))
    statement = sql.SQL(CHANGES[change]).format(
        table=sql.Identifier("public", table), column=sql.Identifier(column), key=sql.Identifier(key))

    count = sql.SQL("select count(*) as n from {} where {} = %s").format(
        sql.Identifier("public", table), sql.Identifier(key))
    before = db.execute(count, [cancelled_session["id"]]).fetchone()["n"]
    with pytest.raises(psycopg.Error) as caught:
        with db.transaction():
            db.execute(sql.SQL("set local role {}").format(sql.Identifier(as_role)))
            db.execute(statement, [cancelled_session["id"]] if change != "truncate" else None)

    assert caught.value.diag.message_primary == message, f"{change} of {table} is refused for {as_role}"
    assert caught.value.diag.sqlstate == "TB004"
    assert before >= 1, f"the test needs {table} rows of the session"
    assert db.execute(count, [cancelled_session["id"]]).fetchone()["n"] == before, "the record is all still there"


@pytest.mark.parametrize("statement", [
    pytest.param("delete from public.sessions where id = %s", id="delete"),
    pytest.param("truncate public.sessions cascade", id="truncate-cascade"),
])
def test_sessions_cannot_be_deleted(db, make_session, specialist_s, client_a, statement):
    session = make_session(specialist_s, client_a)

    error = refused(db, statement, [session["id"]] if "%s" in statement else None)

    assert error.diag.message_primary == "Sessions are never deleted; cancel them instead."
    assert session_row(db, session["id"]) is not None, "the session is still there"


# -- the cancellation path -------------------------------------------------------------

def test_inserting_a_cancellation_cancels_its_session_in_the_same_transaction(
        db, make_session, specialist_s, client_a):
    session = make_session(specialist_s, client_a)

    cancellation = cancel(db, session["id"], client_a.id, "Feeling unwell")

    after = session_row(db, session["id"])
    assert after["status"] == "cancelled"
    assert after["cancelled_at"] == cancellation["created_at"] == now(db)
    assert after["cancelled_by"] == client_a.id
    assert after["cancellation_reason"] == "Feeling unwell"
    assert [(h["from_status"], h["to_status"]) for h in history(db, session["id"])] == \
        [(None, "confirmed"), ("confirmed", "cancelled")]
    audit = db.execute("select * from public.audit_log where entity_id = %s", [session["id"]]).fetchall()
    assert len(audit) == 1, "one audit entry for the cancellation"
    assert audit[0]["action"] == "session_cancelled"
    assert audit[0]["actor_id"] == client_a.id
    assert audit[0]["actor_role"] == "client"
    assert audit[0]["entity_type"] == "session"
    assert audit[0]["status"] == "success"
    assert audit[0]["old_values"] == {"status": "confirmed"}
    assert audit[0]["new_values"]["status"] == "cancelled"
    assert audit[0]["new_values"]["cancellation_id"] == str(cancellation["id"])


def test_a_cancellation_without_a_canceller_is_in_the_actors_name(db, make_session, specialist_s, client_a):
    session = make_session(specialist_s, client_a)
    db.execute("select set_config('app.actor_id', %s, true)", [str(specialist_s.id)])

    cancellation = cancel(db, session["id"])

    assert cancellation["cancelled_by"] == specialist_s.id
    assert session_row(db, session["id"])["cancelled_by"] == specialist_s.id


@pytest.mark.parametrize("starts_in, minutes", [
    pytest.param(timedelta(minutes=-10), 50, id="in-progress"),
    pytest.param(timedelta(days=-2), 50, id="ended"),
])
def test_a_session_that_has_started_or_ended_cannot_be_cancelled(
        db, make_session, specialist_s, client_a, starts_in, minutes):
    session = make_session(specialist_s, client_a, starts_in=starts_in, minutes=minutes)

    error = refused(db, "insert into public.booking_cancellations (booking_id, cancelled_by) values (%s, %s)",
                    [session["id"], client_a.id])

    assert error.diag.message_primary == \
        f"Session {session['id']} has already started and can no longer be cancelled."
    assert error.diag.sqlstate == "TB003"
    assert session_row(db, session["id"])["status"] == "confirmed", "the session is unchanged"


def test_a_session_cannot_be_cancelled_twice(db, make_session, specialist_s, client_a):
    session = make_session(specialist_s, client_a)
    cancel(db, session["id"], client_a.id, "First")

    error = refused(db, "insert into public.booking_cancellations (booking_id, cancelled_by, reason) "
                        "values (%s, %s, 'Second')", [session["id"], specialist_s.id])

    assert error.diag.message_primary == f"Session {session['id']} is already cancelled."
    assert error.diag.sqlstate == "TB002"
    assert session_row(db, session["id"])["cancellation_reason"] == "First", "the first cancellation stands"


def test_a_cancellation_of_an_unknown_session_is_refused(db):
    missing = "00000000-0000-0000-0000-0000000000aa"

    error = refused(db, "insert into public.booking_cancellations (booking_id) values (%s)", [missing])

    assert error.diag.message_primary == f"Session {missing} does not exist."


@pytest.mark.parametrize("as_role", ["postgres", "service_role"])
def test_setting_status_to_cancelled_by_update_is_refused(db, make_session, specialist_s, client_a, as_role):
    session = make_session(specialist_s, client_a)
    db.execute("grant select, update on table public.sessions to service_role")

    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        with db.transaction():
            db.execute(sql.SQL("set local role {}").format(sql.Identifier(as_role)))
            db.execute("update public.sessions set status = 'cancelled', cancelled_at = now() where id = %s",
                       [session["id"]])

    assert caught.value.diag.message_primary == \
        "Sessions are cancelled by inserting a row into booking_cancellations."
    assert session_row(db, session["id"])["status"] == "confirmed"


def test_the_cancelling_flag_cannot_be_set_by_hand_to_skip_the_cancellation_record(
        db, make_session, specialist_s, client_a):
    """Any role can set a custom setting; the guard must not trust it on its own."""
    session = make_session(specialist_s, client_a)
    db.execute("grant select, update on table public.sessions to service_role")

    with pytest.raises(psycopg.Error) as caught:
        with db.transaction():
            db.execute("set local role service_role")
            db.execute("select set_config('private.cancelling_session', %s, true)", [str(session["id"])])
            db.execute("update public.sessions set status = 'cancelled', cancelled_at = now() where id = %s",
                       [session["id"]])

    assert caught.value.diag.message_primary == \
        "Sessions are cancelled by inserting a row into booking_cancellations."


def test_a_cancelled_session_cannot_be_confirmed_again(db, make_session, specialist_s, client_a):
    session = make_session(specialist_s, client_a)
    cancel(db, session["id"], client_a.id)

    error = refused(db, "update public.sessions set status = 'confirmed', cancelled_at = null where id = %s",
                    [session["id"]])

    assert error.diag.message_primary == f"Session {session['id']} is cancelled and cannot be confirmed again."
    assert session_row(db, session["id"])["status"] == "cancelled"


@pytest.mark.parametrize("column", ["specialist_id", "client_id", "booking_reference"])
def test_a_sessions_parties_and_reference_are_fixed(db, make_session, specialist_s, specialist_t, client_a, column):
    session = make_session(specialist_s, client_a)
    new_value = {"specialist_id": specialist_t.id, "client_id": specialist_t.id,
                 "booking_reference": "BK-2031-999999"}[column]

    error = refused(db, sql.SQL("update public.sessions set {} = %s where id = %s").format(sql.Identifier(column)),
                    [new_value, session["id"]])

    assert error.diag.message_primary == "A session's id, parties and booking reference cannot be changed."


# -- session notes ---------------------------------------------------------------------

def note(db, session, author, written_ago: timedelta) -> dict:
    return db.execute(
        "insert into public.session_notes (booking_id, provider_id, notes, created_at, updated_at) "
        "values (%s, %s, 'Initial notes.', now() - %s, now() - %s) returning *",
        [session["id"], author.id, written_ago, written_ago]).fetchone()


def test_session_notes_can_be_edited_within_24_hours(db, make_session, specialist_s, client_a):
    written = note(db, make_session(specialist_s, client_a), specialist_s, timedelta(hours=23))

    db.execute("update public.session_notes set notes = 'Amended.' where id = %s", [written["id"]])

    after = db.execute("select notes, updated_at from public.session_notes where id = %s", [written["id"]]).fetchone()
    assert after == {"notes": "Amended.", "updated_at": now(db)}


def test_session_notes_cannot_be_edited_24_hours_after_they_were_written(db, make_session, specialist_s, client_a):
    written = note(db, make_session(specialist_s, client_a), specialist_s, timedelta(hours=25))

    error = refused(db, "update public.session_notes set notes = 'Rewritten.' where id = %s", [written["id"]])

    assert error.diag.message_primary == "Session notes can no longer be edited 24 hours after they were written."
    assert error.diag.sqlstate == "TB005"


@pytest.mark.parametrize("column, value", [
    pytest.param("created_at", "2031-01-01", id="created_at"),
    pytest.param("provider_id", None, id="provider_id"),
])
def test_a_notes_author_and_creation_time_are_fixed(db, make_session, specialist_s, client_a, column, value):
    written = note(db, make_session(specialist_s, client_a), specialist_s, timedelta(hours=1))

    error = refused(db, sql.SQL("update public.session_notes set {} = %s where id = %s").format(sql.Identifier(column)),
                    [value if value is not None else client_a.id, written["id"]])

    assert error.diag.message_primary == "A note's session, author and creation time cannot be changed."


@pytest.mark.parametrize("author", ["specialist_t", "client_a", "admin"])
def test_a_note_by_someone_other_than_the_sessions_specialist_is_refused(
        db, make_session, specialist_s, client_a, request, author):
    session = make_session(specialist_s, client_a)
    someone_else = request.getfixturevalue(author)

    error = refused(db, "insert into public.session_notes (booking_id, provider_id, notes) values (%s, %s, 'x')",
                    [session["id"], someone_else.id])

    assert isinstance(error, psycopg.errors.InsufficientPrivilege)
    assert error.diag.message_primary == f"Notes on session {session['id']} can only be written by its specialist."
