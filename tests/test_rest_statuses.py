"""What a frontend sees over HTTP (/rest/v1 on the served port, PostgREST 12): the
status and PostgREST error code of each refusal, table by table and role by role,
and the JWT checks PostgREST makes itself. The emulated matrix (test_access_matrix.py)
covers every row outcome fast; this covers the wire those outcomes become.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone

import jwt
import pytest

from tests.functions_fixtures import JWT_SECRET, user_token
from tests.support import create_person

pytestmark = pytest.mark.slow

TABLES = ("profiles", "specialist_rates", "availability_windows", "specialist_availability_exceptions",
          "booking_packages", "recurring_bookings", "sessions", "booking_status_history",
          "booking_cancellations", "session_notes", "meeting_recordings", "audit_log")
VIEWS = ("specialist_directory", "specialist_time_off", "upcoming_sessions", "session_list",
         "sessions_needing_attention")
OPEN_TO_VISITORS = {"booking_packages", "specialist_directory"}
ROLES = ("anon", "client", "specialist", "admin")


@pytest.fixture
def people(committed_db):
    return {
        "client": create_person(committed_db, "client", full_name="Alice Client"),
        "other_client": create_person(committed_db, "client", full_name="Bob Client"),
        "specialist": create_person(committed_db, "specialist", full_name="Dr Rosa Lind"),
        "admin": create_person(committed_db, "admin", full_name="Ada Admin"),
    }


@pytest.fixture
def session(committed_db, people):
    starts_at = (datetime.now(timezone.utc) + timedelta(days=3)).replace(microsecond=0)
    return committed_db.execute(
        "insert into public.sessions (specialist_id, client_id, starts_at, ends_at) values (%s, %s, %s, %s) "
        "returning *", [people["specialist"].id, people["client"].id, starts_at, starts_at + timedelta(minutes=50)],
    ).fetchone()


def as_role(rest, people, role):
    return rest(None if role == "anon" else people[role])


def error_code(answer) -> str | None:
    return answer.json().get("code") if answer.body else None


# -- reads: every table and view, every role ------------------------------------------------

@pytest.mark.parametrize("table", TABLES + VIEWS)
def test_reads_answer_200_to_signed_in_users_and_401_to_visitors_of_closed_tables(rest, people, table):
    for role in ROLES:
        answer = as_role(rest, people, role).request("GET", table, params={"select": "*", "limit": "1"})
        if role == "anon" and table not in OPEN_TO_VISITORS:
            assert (answer.status, error_code(answer)) == (401, "42501"), f"{role} reading {table}"
        else:
            assert answer.status == 200 and isinstance(answer.json(), list), f"{role} reading {table}"


# -- writes refused: no grant (403 42501), or a policy's WITH CHECK (403 42501) ---------------

CLIENT_INSERTS = {
    # no insert grant at all
    "profiles": {"full_name": "Me again"},
    "sessions": {"starts_at": "2030-01-01T10:00:00Z", "ends_at": "2030-01-01T10:50:00Z"},
    "booking_status_history": {"to_status": "cancelled"},
    "audit_log": {"action": "forged", "entity_type": "session"},
    "upcoming_sessions": {"status": "confirmed"},
    "session_list": {"status": "confirmed"},
    "sessions_needing_attention": {"problem": "none"},
    "specialist_directory": {"full_name": "Fake Specialist"},
    "specialist_time_off": {"exception_date": "2030-01-01"},
    # a grant, but the policy is the specialist's (or an admin's) alone
    "specialist_rates": {"amount": 1, "currency": "EUR", "duration_minutes": 50},
    "availability_windows": {"day_of_week": 1, "start_time": "09:00", "end_time": "10:00"},
    "specialist_availability_exceptions": {"exception_date": "2030-01-01", "reason": "other"},
    "booking_packages": {"name": "Mine", "session_count": 1, "price": 1},
    "meeting_recordings": {"storage_path": "x.mp4", "file_format": "mp4"},
}


@pytest.mark.parametrize("table", sorted(CLIENT_INSERTS))
def test_client_inserts_the_api_refuses_answer_403_42501(rest, people, table, committed_db):
    body = dict(CLIENT_INSERTS[table])
    if table in ("specialist_rates", "availability_windows", "specialist_availability_exceptions", "booking_packages"):
        body["specialist_id"] = str(people["client"].id)  # in their own name: still not a specialist
    if table == "meeting_recordings":
        starts = datetime.now(timezone.utc) - timedelta(days=1)
        body["booking_id"] = str(committed_db.execute(
            "insert into public.sessions (specialist_id, client_id, starts_at, ends_at) values (%s, %s, %s, %s) "
            "returning id", [people["specialist"].id, people["client"].id, starts, starts + timedelta(minutes=50)],
        ).fetchone()["id"])
    if table == "meeting_recordings":  # the bucket's layout, which the database requires (sql/0045)
        body["storage_path"] = f"sessions/{starts:%Y-%m}/{body['booking_id']}.mp4"
    answer = rest(people["client"]).request("POST", table, body=body, headers={"Prefer": "return=minimal"})
    assert (answer.status, error_code(answer)) == (403, "42501"), answer.text


NO_INSERT_GRANT = ("profiles", "sessions", "booking_status_history", "audit_log", "upcoming_sessions",
                   "session_list", "sessions_needing_attention", "specialist_directory", "specialist_time_off")


@pytest.mark.parametrize("table", TABLES + VIEWS)
def test_visitors_writing_anything_answer_401(rest, table):
    body = CLIENT_INSERTS.get(table, {"created_at": "2030-01-01T00:00:00Z"})
    answer = rest(None).request("POST", table, body=body, headers={"Prefer": "return=minimal"})
    assert (answer.status, error_code(answer)) == (401, "42501"), answer.text


@pytest.mark.parametrize("role", ["specialist", "admin"])
@pytest.mark.parametrize("table", NO_INSERT_GRANT)
def test_specialists_and_admins_cannot_insert_where_nobody_may_403(rest, people, role, table):
    answer = as_role(rest, people, role).request("POST", table, body=CLIENT_INSERTS[table],
                                                 headers={"Prefer": "return=minimal"})
    assert (answer.status, error_code(answer)) == (403, "42501"), answer.text


@pytest.mark.parametrize("role", ["client", "specialist", "admin"])
def test_nobody_deletes_a_cancellation_or_the_history_403(rest, people, session, role):
    rest(people["client"]).request("POST", "booking_cancellations", body={
        "booking_id": str(session["id"]), "cancelled_by": str(people["client"].id), "reason": "away"})
    for table, column in (("booking_cancellations", "booking_id"), ("booking_status_history", "session_id")):
        answer = as_role(rest, people, role).request("DELETE", table, params={column: f"eq.{session['id']}"})
        assert (answer.status, error_code(answer)) == (403, "42501"), f"{role} deleting {table}: {answer.text}"


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_client_updates_and_deletes_of_sessions_answer_403(rest, people, session, method, committed_db):
    answer = rest(people["client"]).request(method, "sessions", params={"id": f"eq.{session['id']}"},
                                            body={"status": "cancelled"} if method == "PATCH" else None)
    assert (answer.status, error_code(answer)) == (403, "42501")
    assert committed_db.execute("select status from public.sessions where id = %s",
                                [session["id"]]).fetchone()["status"] == "confirmed"


def test_changing_a_row_the_policies_hide_changes_nothing_and_answers_an_empty_list(rest, people, committed_db):
    package = committed_db.execute(
        "insert into public.booking_packages (specialist_id, name, session_count, price) "
        "values (%s, 'Four', 4, 300) returning id", [people["specialist"].id]).fetchone()
    other_specialist = create_person(committed_db, "specialist")
    answer = rest(other_specialist).request("PATCH", "booking_packages", params={"id": f"eq.{package['id']}"},
                                           body={"name": "Stolen"}, headers={"Prefer": "return=representation"})
    assert (answer.status, answer.json()) == (200, [])
    assert committed_db.execute("select name from public.booking_packages where id = %s",
                                [package["id"]]).fetchone()["name"] == "Four"


# -- 409, 400, 404, 406: the other statuses a frontend must handle ------------------------------

def test_second_cancellation_of_a_session_answers_a_refusal_a_frontend_can_show(rest, people, session):
    body = {"booking_id": str(session["id"]), "cancelled_by": str(people["client"].id), "reason": "cannot come"}
    first = rest(people["client"]).request("POST", "booking_cancellations", body=body)
    second = rest(people["client"]).request("POST", "booking_cancellations", body=body)
    assert first.status == 201
    assert (second.status, error_code(second)) == (400, "TB002")
    assert second.json()["message"] == f"Session {session['id']} is already cancelled."


def test_concurrent_cancellations_of_one_session_let_exactly_one_through(rest, people, session, committed_db):
    # A double click: both requests at once. One cancels (201); the other is refused with the
    # already-cancelled sentence (400 TB002) or, had both passed the trigger, the unique key (409 23505).
    body = {"booking_id": str(session["id"]), "cancelled_by": str(people["client"].id), "reason": "double click"}
    barrier = threading.Barrier(2)

    def cancel():
        client = rest(people["client"])
        barrier.wait()
        return client.request("POST", "booking_cancellations", body=body, headers={"Prefer": "return=minimal"})

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: cancel(), range(2)))

    assert sorted(a.status for a in answers)[0] == 201
    loser = max(answers, key=lambda a: a.status)
    assert (loser.status, error_code(loser)) in ((400, "TB002"), (409, "23505"))
    assert committed_db.execute("select count(*) as n from public.booking_cancellations where booking_id = %s",
                                [session["id"]]).fetchone()["n"] == 1


def test_check_violation_answers_400_23514(rest, people, committed_db):
    committed_db.execute("insert into public.specialist_rates (specialist_id, amount, currency, duration_minutes, "
                         "effective_from) values (%s, 90, 'EUR', 50, now() - interval '1 day')",
                         [people["specialist"].id])
    start = date.today() + timedelta(days=7)
    answer = rest(people["client"]).request("POST", "recurring_bookings", body={
        "user_id": str(people["client"].id), "specialist_id": str(people["specialist"].id), "frequency": "weekly",
        "start_date": start.isoformat(), "next_booking_date": (start - timedelta(days=1)).isoformat()})
    assert (answer.status, error_code(answer)) == (400, "23514")


@pytest.mark.parametrize(("path", "params", "status", "code"), [
    ("sessions", {"id": "eq.not-a-uuid"}, 400, "22P02"),
    ("sessions", {"select": "no_such_column"}, 400, "42703"),
    ("sessions", {"id": "nonsense(filter"}, 400, "PGRST100"),
    ("no_such_table", {}, 404, "42P01"),
])
def test_malformed_requests_answer_400_and_unknown_tables_404(rest, people, path, params, status, code):
    answer = rest(people["client"]).request("GET", path, params=params)
    assert (answer.status, error_code(answer)) == (status, code), answer.text


def test_single_over_no_rows_answers_406_pgrst116(rest, people, session):
    answer = rest(people["other_client"]).request(
        "GET", "sessions", params={"id": f"eq.{session['id']}"},
        headers={"Accept": "application/vnd.pgrst.object+json"})
    assert (answer.status, error_code(answer)) == (406, "PGRST116")


def test_reads_are_capped_at_db_max_rows(rest, people, committed_db):
    committed_db.execute(
        "insert into public.booking_packages (specialist_id, name, session_count, price) "
        "select %s, 'Package ' || n, 1, 10 from generate_series(1, 1005) n", [people["specialist"].id])
    answer = rest(None).request("GET", "booking_packages", params={"select": "id"})
    assert answer.status == 200 and len(answer.json()) == 1000


# -- the JWT checks PostgREST makes itself ------------------------------------------------------

def forged(secret: str = JWT_SECRET, **claims) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "00000000-0000-0000-0000-000000000001", "role": "authenticated",
                       "aud": "authenticated", "iat": now, "exp": now + 600, **claims}, secret, algorithm="HS256")


@pytest.mark.parametrize(("case", "token", "status", "code"), [
    ("expired two minutes ago", lambda p: user_token(p, expires_in=-120), 401, "PGRST301"),
    ("wrong audience", lambda p: user_token(p, aud="someone-else"), 401, "PGRST301"),
    ("signed with another secret", lambda p: user_token(p, secret="x" * 40), 401, "PGRST301"),
    ("not a JWT", lambda p: "not-a-token", 401, "PGRST301"),
    ("role claim postgres", lambda p: forged(role="postgres", sub=str(p.id)), 403, "42501"),
    ("role claim service_role", lambda p: forged(role="service_role", sub=str(p.id)), 200, None),
])
def test_postgrest_checks_the_token_itself(rest, people, case, token, status, code):
    answer = rest(token=token(people["client"])).request("GET", "sessions", params={"select": "id"})
    assert (answer.status, error_code(answer) if status != 200 else None) == (status, code), f"{case}: {answer.text}"


def test_a_token_expired_seconds_ago_is_still_accepted_within_the_clock_skew(rest, people, session):
    answer = rest(token=user_token(people["client"], expires_in=-5)).request("GET", "sessions", params={"select": "id"})
    assert (answer.status, answer.json()) == (200, [{"id": str(session["id"])}])


def test_the_service_key_reads_every_row_and_the_anon_key_none(rest, supabase_stack, people, session):
    service = rest(token=supabase_stack.service_key).request("GET", "sessions", params={"select": "id"})
    assert session["id"] and {"id": str(session["id"])} in service.json()
    anon = rest(None).request("GET", "sessions", params={"select": "id"})
    assert anon.status == 401


def test_counts_and_head_requests_pass_through_the_front_door(supabase_as, people, committed_db):
    committed_db.execute(
        "insert into public.booking_packages (specialist_id, name, session_count, price) "
        "select %s, 'Package ' || n, 1, 10 from generate_series(1, 3) n", [people["specialist"].id])
    client = supabase_as(people["client"])

    counted = client.from_("booking_packages").select("*", count="exact").limit(1).execute()
    head = client.from_("booking_packages").select("*", count="exact", head=True).execute()

    assert (counted.count, len(counted.data)) == (3, 1)
    assert head.count == 3 and not head.data
