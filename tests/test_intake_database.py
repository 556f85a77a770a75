"""The intake_forms table at the database's own doors: the guard trigger's rules
(whoever writes), what API roles may read through PostgREST-style requests (the
status columns; never the ciphertext), and concurrent submissions.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from shared.intake.keys import KeyRing, parse_keys
from tests.functions_fixtures import INTAKE_KEYS, AppClient, FunctionsEnv
from tests.intake_support import answers, form, insert_session, intake_app, read, stored, submit
from tests.rls_fixtures import as_service_role, attempt, world  # noqa: F401  (world is a fixture)
from tests.support import acting_as, create_person

CIPHER_COLUMNS = ("ciphertext", "nonce", "key_version")
STATUS_COLUMNS = ("id", "booking_id", "client_id", "consent_treatment", "consent_confidentiality",
                  "consent_data_processing", "revision", "submitted_at")


def insert_form(db: psycopg.Connection, booking_id: uuid.UUID, client_id: uuid.UUID, **columns) -> dict:
    values = {"booking_id": booking_id, "client_id": client_id, "consent_treatment": True,
              "consent_confidentiality": True, "consent_data_processing": True, "key_version": 1,
              "nonce": bytes(12), "ciphertext": bytes(40), **columns}
    return db.execute(f"insert into public.intake_forms ({', '.join(values)}) values "
                      f"({', '.join(['%s'] * len(values))}) returning *", list(values.values())).fetchone()


def refusal(db: psycopg.Connection, statement: str, params: list) -> tuple[str, str]:
    with pytest.raises(psycopg.Error) as refused:
        with db.transaction():
            db.execute(statement, params)
    return refused.value.sqlstate, refused.value.diag.message_primary


# -- the guard, whoever writes ---------------------------------------------------------------------

def test_a_form_is_refused_for_a_session_that_has_started(db, client_a, specialist_s, make_session):
    started = make_session(specialist_s, client_a, starts_in=timedelta(minutes=-1))

    with pytest.raises(psycopg.Error) as refused:
        insert_form(db, started["id"], client_a.id)

    assert (refused.value.sqlstate, refused.value.diag.message_primary) == (
        "TB003", f"The intake form of session {started['id']} is frozen: the session has started.")


def test_a_form_is_refused_for_a_cancelled_session(db, client_a, specialist_s, make_session):
    session = make_session(specialist_s, client_a)
    db.execute("insert into public.booking_cancellations (booking_id, cancelled_by, reason) values (%s, %s, 'x')",
               [session["id"], client_a.id])

    with pytest.raises(psycopg.Error) as refused:
        insert_form(db, session["id"], client_a.id)

    assert (refused.value.sqlstate, refused.value.diag.message_primary) == (
        "TB002", f"Session {session['id']} is cancelled.")


def test_a_form_belongs_to_the_sessions_client(db, client_a, client_b, specialist_s, make_session):
    session = make_session(specialist_s, client_a)

    with pytest.raises(psycopg.Error) as refused:
        insert_form(db, session["id"], client_b.id)

    assert (refused.value.sqlstate, refused.value.diag.message_primary) == (
        "42501", "Only the session's client can submit its intake form.")


def test_consents_must_all_be_given(db, client_a, specialist_s, make_session):
    session = make_session(specialist_s, client_a)

    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        insert_form(db, session["id"], client_a.id, consent_data_processing=False)

    assert refused.value.diag.constraint_name == "intake_forms_consents_given"


def test_after_the_start_a_form_can_be_reencrypted_but_not_replaced(db, client_a, specialist_s, make_session):
    session = make_session(specialist_s, client_a)
    row = insert_form(db, session["id"], client_a.id)
    db.execute("update public.sessions set starts_at = now() - interval '5 minutes', "
               "ends_at = now() + interval '45 minutes' where id = %s", [session["id"]])

    db.execute("update public.intake_forms set key_version = 2, nonce = %s, ciphertext = %s where id = %s",
               [bytes([1] * 12), bytes([2] * 40), row["id"]])
    resubmitted = refusal(db, "update public.intake_forms set revision = revision + 1, submitted_at = now() "
                              "where id = %s", [row["id"]])
    moved = refusal(db, "update public.intake_forms set client_id = %s where id = %s",
                    [specialist_s.id, row["id"]])

    assert db.execute("select key_version from public.intake_forms where id = %s",
                      [row["id"]]).fetchone()["key_version"] == 2
    assert resubmitted == ("TB003", f"The intake form of session {session['id']} is frozen: the session has started.")
    assert moved == ("42501", "An intake form's session and client cannot be changed.")


# -- what API roles read -------------------------------------------------------------------------------

@pytest.mark.parametrize("column", CIPHER_COLUMNS)
@pytest.mark.parametrize("who", ["client_a", "specialist_s", "admin"])
def test_no_signed_in_user_can_read_the_ciphertext_columns(db, world, who, column):
    result = attempt(db, world.people[who], f"select {column} from public.intake_forms")

    assert result.sqlstate == "42501"
    assert result.message == "permission denied for table intake_forms"


@pytest.mark.parametrize("column", CIPHER_COLUMNS)
def test_the_service_role_cannot_read_the_ciphertext_either(db, world, column):
    with as_service_role(db):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute(f"select {column} from public.intake_forms")


def test_the_parties_read_whether_the_form_is_complete(db, world):
    with acting_as(db, world.people["specialist_s"]):
        rows = db.execute(f"select {', '.join(STATUS_COLUMNS)} from public.intake_forms").fetchall()

    assert [(r["booking_id"], r["consent_treatment"], r["consent_confidentiality"], r["consent_data_processing"],
             r["revision"]) for r in rows] == [(world.id("session_as_upcoming"), True, True, True, 1)]
    assert rows[0]["submitted_at"] is not None


def test_the_service_role_reads_the_status_of_every_form(db, world):
    with as_service_role(db):
        seen = {r["id"] for r in db.execute("select id, submitted_at from public.intake_forms")}

    assert seen == world.ids("intake_as", "intake_bt")


# -- concurrent submissions ------------------------------------------------------------------------------

def test_concurrent_submissions_leave_one_form_with_every_revision_counted(
        functions_env: FunctionsEnv, committed_db: psycopg.Connection, bookable_specialist):
    specialist = bookable_specialist()
    client = create_person(committed_db, "client")
    session_id = insert_session(committed_db, specialist.id, client.id, starts_in=timedelta(days=3))
    app = intake_app()
    go = threading.Barrier(8)
    statuses: list[int] = []

    def send(index: int) -> None:
        door = AppClient(app)
        go.wait()
        statuses.append(submit(door, client, form(session_id, marker=str(index))).status)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * 8
    (row,) = stored(committed_db)
    assert row["revision"] == 8
    final = read(AppClient(app), client, session_id).json()["answers"]
    assert final in [answers(str(i)) for i in range(8)]
    with psycopg.connect(functions_env.database_url, row_factory=dict_row) as conn:
        assert conn.execute("select count(*) as n from public.audit_log where action = 'intake_form_submitted'"
                            ).fetchone()["n"] == 8
    assert KeyRing(parse_keys(INTAKE_KEYS)).newest == row["key_version"]
