"""Who Google believes we are (sql/0035_calendar_identity.sql): the delegation subject is
the specialist's verified sign-in email and the target calendar a mapping only admins and
the service set; nothing a user writes (profiles.email, their own google_calendar_id)
reaches Google, for bookings, for the retry job, and for deletions already queued.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
import pytest

from shared import calendar_sync
from tests.functions_fixtures import FunctionsEnv, bearer
from tests.rls_fixtures import attempt
from tests.support import Person, create_person

CEO = "ceo@clinic.example"


def verify_email(conn: psycopg.Connection, person: Person) -> None:
    conn.execute("update auth.users set email_confirmed_at = now() where id = %s", [person.id])


def cancel(conn: psycopg.Connection, session_id: uuid.UUID, by: uuid.UUID) -> None:
    """Cancels at the database door (the trigger queues the event's deletion)."""
    conn.execute("insert into public.booking_cancellations (booking_id, cancelled_by) values (%s, %s)",
                 [session_id, by])


# -- the mapping is the admins' -----------------------------------------------------------

def test_a_specialist_cannot_choose_the_calendar_their_sessions_go_to(db, specialist_s, admin) -> None:
    own = attempt(db, specialist_s, "update public.profiles set google_calendar_id = %s where id = %s",
                  [CEO, specialist_s.id])
    contact = attempt(db, specialist_s, "update public.profiles set email = %s where id = %s", [CEO, specialist_s.id])
    by_admin = attempt(db, admin, "update public.profiles set google_calendar_id = %s where id = %s",
                       ["rosa.lind@clinic.example", specialist_s.id])

    assert (own.sqlstate, own.message) == (
        "42501", "Only an admin can change which calendar a specialist's sessions go to.")
    assert contact.error is None and contact.rowcount == 1, "the contact address stays the user's own"
    assert by_admin.error is None and by_admin.rowcount == 1


def test_the_subject_is_the_verified_sign_in_email_never_the_profile_email(db, specialist_s) -> None:
    db.execute("update public.profiles set email = %s where id = %s", [CEO, specialist_s.id])
    subject = lambda: db.execute("select private.calendar_subject(%s) as s", [specialist_s.id]).fetchone()["s"]  # noqa: E731

    unverified = subject()
    verify_email(db, specialist_s)

    assert unverified is None
    assert subject() == specialist_s.email


# -- queued deletions -------------------------------------------------------------------------

def test_queued_deletions_act_as_the_verified_email_whatever_was_queued(db, specialist_s, client_a,
                                                                       make_session) -> None:
    verify_email(db, specialist_s)
    db.execute("update public.profiles set email = %s where id = %s", [CEO, specialist_s.id])
    cancelled = make_session(specialist_s, client_a, google_calendar_event_id=uuid.uuid4().hex)
    orphan_id = uuid.uuid4()  # a booking rolled back after its event was made

    cancel(db, cancelled["id"], client_a.id)
    db.execute("""insert into private.calendar_deletions (session_id, calendar_id, event_id, specialist_email)
                  values (%s, 'primary', 'e1', %s)""", [orphan_id, CEO])  # old code's way of queuing
    db.execute("""insert into private.calendar_deletions (session_id, calendar_id, event_id, specialist_id)
                  values (%s, 'primary', 'e2', %s)""", [uuid.uuid4(), specialist_s.id])
    db.execute("update private.calendar_deletions set specialist_email = %s", [CEO])  # and nobody can rewrite it

    subjects = {r["event_id"]: r["specialist_email"] for r in db.execute(
        "select event_id, specialist_email from private.calendar_deletions")}
    assert subjects == {cancelled["google_calendar_event_id"]: specialist_s.email, "e1": None,
                        "e2": specialist_s.email}


# -- end to end, with domain-wide delegation ---------------------------------------------------

@pytest.fixture
def delegating(functions_env: FunctionsEnv) -> FunctionsEnv:
    functions_env.set(GOOGLE_CALENDAR_DELEGATE="true")
    return functions_env


def test_booking_with_delegation_acts_as_the_verified_email_not_the_email_the_specialist_wrote(
        delegating: FunctionsEnv, committed_db: psycopg.Connection, bookable_specialist, booking_app) -> None:
    specialist = bookable_specialist(calendar_id="primary")
    verify_email(committed_db, specialist.person)
    committed_db.execute("update public.profiles set email = %s where id = %s", [CEO, specialist.id])
    client = create_person(committed_db, "client")

    answer = booking_app.post("/", json={"specialist_id": str(specialist.id),
                                         "starts_at": specialist.slot(days_ahead=3).isoformat()},
                              headers=bearer(client))

    assert answer.status_code == 200, answer.get_json()
    assert [grant["sub"] for grant in delegating.server.token_grants] == [specialist.person.email]


def test_the_retry_job_deletes_as_the_verified_email(delegating: FunctionsEnv, committed_db: psycopg.Connection,
                                                    bookable_specialist, booked_session) -> None:
    specialist = bookable_specialist(calendar_id="primary")
    verify_email(committed_db, specialist.person)
    client = create_person(committed_db, "client")
    session = booked_session(specialist, client, starts_in=timedelta(days=4))
    committed_db.execute("update public.profiles set email = %s where id = %s", [CEO, specialist.id])
    # Cancelled at the database door: the deletion waits in the queue for the retry job.
    cancel(committed_db, session["id"], client.id)

    outcome = calendar_sync.process_due()

    assert outcome == {"deleted": 1, "failed": 0}
    assert [grant["sub"] for grant in delegating.server.token_grants] == [specialist.person.email]
