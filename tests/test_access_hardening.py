"""Smaller access rules (sql/0038_access_hardening.sql and policies/): a demoted specialist
loses write access to their hours, rates, exceptions and packages at once; an anonymous
sign-in never acts as a person at the database (cancelling, recurring bookings, profile
edits); a note's metadata has a size limit.
"""

from __future__ import annotations

import json
from datetime import date, time, timedelta

import pytest

from tests.rls_fixtures import attempt, insert_row, with_claims

SPECIALIST_TABLES = {
    # table: (row of specialist S, column to change, new value)
    "availability_windows": (lambda db, s: insert_row(db, "availability_windows", specialist_id=s.id, day_of_week=2,
                                                      start_time=time(9), end_time=time(12)), "end_time", time(13)),
    "specialist_rates": (lambda db, s: insert_row(db, "specialist_rates", specialist_id=s.id, amount=90,
                                                  currency="EUR", duration_minutes=50), "amount", 10),
    "specialist_availability_exceptions": (lambda db, s: insert_row(
        db, "specialist_availability_exceptions", specialist_id=s.id, exception_date=date.today() + timedelta(days=9),
        reason="vacation"), "reason", "training"),
    "booking_packages": (lambda db, s: insert_row(db, "booking_packages", specialist_id=s.id, name="Five",
                                                  session_count=5, price=400), "price", 1),
}


@pytest.mark.parametrize("table", list(SPECIALIST_TABLES))
def test_a_demoted_specialist_can_no_longer_change_or_delete_their_rows(db, specialist_s, table: str) -> None:
    make, column, value = SPECIALIST_TABLES[table]
    row = make(db, specialist_s)
    before = attempt(db, specialist_s, f"update public.{table} set {column} = %s where id = %s", [value, row["id"]])
    db.execute("update public.profiles set role = 'client' where id = %s", [specialist_s.id])
    demoted = with_claims(specialist_s)  # the same token, still valid after the demotion

    updated = attempt(db, demoted, f"update public.{table} set {column} = %s where id = %s", [value, row["id"]])
    deleted = attempt(db, demoted, f"delete from public.{table} where id = %s", [row["id"]])

    assert before.rowcount == 1, "while a specialist, they could"
    assert (updated.error, updated.rowcount) == (None, 0)
    assert (deleted.error, deleted.rowcount) == (None, 0)
    assert db.execute(f"select count(*) as n from public.{table} where id = %s", [row["id"]]).fetchone()["n"] == 1


# -- anonymous sign-ins -----------------------------------------------------------------------

def anonymous(db, person, how: str):
    """The person as an anonymous sign-in: by the token's claim, or by their auth.users row."""
    if how == "claim":
        return with_claims(person, is_anonymous=True)
    db.execute("update auth.users set is_anonymous = true where id = %s", [person.id])
    return person


@pytest.mark.parametrize("how", ["claim", "auth.users"])
def test_an_anonymous_sign_in_cannot_cancel_a_session(db, client_a, specialist_s, make_session, how: str) -> None:
    session = make_session(specialist_s, client_a)

    result = attempt(db, anonymous(db, client_a, how), "insert into public.booking_cancellations "
                     "(booking_id, cancelled_by, reason) values (%s, %s, 'x')", [session["id"], client_a.id])

    assert result.message == ('new row violates row-level security policy "Anonymous sign-ins cannot cancel '
                              'sessions" for table "booking_cancellations"')
    assert db.execute("select status from public.sessions where id = %s", [session["id"]]).fetchone()["status"] == \
        "confirmed"


@pytest.mark.parametrize("how, refusal", [
    # The booking rules' trigger refuses the claim first (sql/0019_booking_rules.sql); the policy holds for both.
    ("claim", "Anonymous sign-ins cannot make recurring bookings; sign up first."),
    ("auth.users", 'new row violates row-level security policy "Anonymous sign-ins cannot create recurring '
                   'bookings" for table "recurring_bookings"'),
])
def test_an_anonymous_sign_in_cannot_create_change_or_end_recurring_bookings(db, client_a, specialist_s,
                                                                           how: str, refusal: str) -> None:
    insert_row(db, "specialist_rates", specialist_id=specialist_s.id, amount=90, currency="EUR", duration_minutes=50,
               effective_from=date.today() - timedelta(days=30))
    insert_row(db, "availability_windows", specialist_id=specialist_s.id, day_of_week=(date.today().isoweekday() + 1) % 7,
               start_time=time(0), end_time=time(23, 59))
    existing = insert_row(db, "recurring_bookings", user_id=client_a.id, specialist_id=specialist_s.id,
                          frequency="weekly", start_date=date.today() + timedelta(days=8), duration_minutes=50)
    who = anonymous(db, client_a, how)

    created = attempt(db, who, "insert into public.recurring_bookings (user_id, specialist_id, frequency, start_date, "
                      "duration_minutes) values (%s, %s, 'weekly', current_date + 8, 50)", [client_a.id, specialist_s.id])
    updated = attempt(db, who, "update public.recurring_bookings set frequency = 'biweekly' where id = %s",
                      [existing["id"]])
    deleted = attempt(db, who, "delete from public.recurring_bookings where id = %s", [existing["id"]])

    assert created.message == refusal
    assert (updated.error, updated.rowcount, deleted.error, deleted.rowcount) == (None, 0, None, 0)


def test_an_anonymous_sign_in_cannot_edit_a_profile_but_a_signed_in_user_can(db, client_a) -> None:
    as_anonymous = attempt(db, with_claims(client_a, is_anonymous=True),
                           "update public.profiles set full_name = 'Someone' where id = %s", [client_a.id])
    as_themselves = attempt(db, client_a, "update public.profiles set full_name = 'Alice A.' where id = %s",
                            [client_a.id])

    assert (as_anonymous.error, as_anonymous.rowcount) == (None, 0)
    assert (as_themselves.error, as_themselves.rowcount) == (None, 1)


# -- note metadata ------------------------------------------------------------------------------

def test_note_metadata_has_a_size_limit(db, specialist_s, client_a, make_session) -> None:
    session = make_session(specialist_s, client_a, starts_in=timedelta(days=-1))
    insert = "insert into public.session_notes (booking_id, provider_id, metadata) values (%s, %s, %s)"

    small = attempt(db, specialist_s, insert, [session["id"], specialist_s.id, json.dumps({"tags": ["a"] * 100})])
    large = attempt(db, specialist_s, insert, [session["id"], specialist_s.id, json.dumps({"blob": "x" * 10_000})])

    assert small.error is None
    assert large.sqlstate == "23514" and large.error.diag.constraint_name == "session_notes_metadata_size"
