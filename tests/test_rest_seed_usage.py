"""Seed 002's usage examples and seed 000's therapist dashboard, through the frontend's
real path: supabase-py → /rest/v1 on the served port → PostgREST 12 → PostgreSQL under
row-level security, each as the user the example is written for.

Each TypeScript snippet of seed 002 is rewritten with supabase-py as literally as the
schema allows (its `bookings` are our `sessions`). Data the example does not create is
committed beforehand as the superuser (PostgREST reads through its own connections).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from postgrest.exceptions import APIError

from tests.storage_fixtures import recording_path
from tests.support import create_person

pytestmark = pytest.mark.slow


@pytest.fixture
def people(committed_db):
    """A specialist, two clients and an admin, committed."""
    return {
        "specialist": create_person(committed_db, "specialist", full_name="Dr Rosa Lind", timezone="Europe/London"),
        "client": create_person(committed_db, "client", full_name="Alice Client", timezone="Europe/London"),
        "other_client": create_person(committed_db, "client", full_name="Bob Client"),
        "admin": create_person(committed_db, "admin", full_name="Ada Admin"),
    }


@pytest.fixture
def session_of(committed_db):
    """Inserts a committed session (confirmed unless said) and returns its row."""
    def make(specialist, client, *, starts_in=timedelta(days=3), minutes=50, **columns):
        starts_at = (datetime.now(timezone.utc) + starts_in).replace(microsecond=0)
        values = {"specialist_id": specialist.id, "client_id": client.id, "starts_at": starts_at,
                  "ends_at": starts_at + timedelta(minutes=minutes), **columns}
        return committed_db.execute(
            f"insert into public.sessions ({', '.join(values)}) values ({', '.join(['%s'] * len(values))}) "
            "returning *", list(values.values())).fetchone()
    return make


# -- 1. booking_cancellations: "Cancel a booking" ---------------------------------------------

def test_client_cancels_a_booking_by_insert_as_seed_002_writes_it(people, session_of, supabase_as, committed_db):
    session = session_of(people["specialist"], people["client"])
    supabase = supabase_as(people["client"])

    result = supabase.from_("booking_cancellations").insert({
        "booking_id": str(session["id"]),
        "cancelled_by": str(people["client"].id),
        "reason": "personal emergency",
        "cancellation_policy_applied": "no_refund",
    }).execute()

    assert result.data[0]["booking_id"] == str(session["id"])  # return=representation needs the read policy
    mine = supabase.from_("sessions").select("id, status, cancellation_reason").eq("id", str(session["id"])).single().execute()
    assert mine.data == {"id": str(session["id"]), "status": "cancelled", "cancellation_reason": "personal emergency"}
    history = committed_db.execute("select from_status, to_status from public.booking_status_history "
                                   "where session_id = %s order by changed_at, id", [session["id"]]).fetchall()
    assert [(h["from_status"], h["to_status"]) for h in history][-1] == ("confirmed", "cancelled")


def test_a_second_cancellation_of_one_booking_answers_409(people, session_of, supabase_as):
    session = session_of(people["specialist"], people["client"])
    supabase = supabase_as(people["client"])
    row = {"booking_id": str(session["id"]), "cancelled_by": str(people["client"].id), "reason": "twice"}
    supabase.from_("booking_cancellations").insert(row).execute()

    with pytest.raises(APIError) as refused:
        supabase.from_("booking_cancellations").insert(row).execute()
    assert refused.value.code in ("23505", "TB002")


def test_stranger_cannot_cancel_someone_elses_booking(people, session_of, supabase_as, committed_db):
    session = session_of(people["specialist"], people["client"])
    stranger = supabase_as(people["other_client"])

    with pytest.raises(APIError) as refused:
        stranger.from_("booking_cancellations").insert({
            "booking_id": str(session["id"]), "cancelled_by": str(people["other_client"].id), "reason": "no"}).execute()

    assert refused.value.code == "42501"
    assert committed_db.execute("select status from public.sessions where id = %s",
                                [session["id"]]).fetchone()["status"] == "confirmed"


# -- 2. booking_packages: "Create a package", "Get packages for a specialist" -----------------

def test_specialist_creates_a_package_and_clients_list_active_ones(people, supabase_as):
    specialist_id = str(people["specialist"].id)
    created = supabase_as(people["specialist"]).from_("booking_packages").insert({
        "specialist_id": specialist_id,
        "name": "Monthly Wellness Package",
        "description": "4 sessions per month with 20% discount",
        "session_count": 4,
        "price": 320.00,
        "discount_percentage": 20,
        "valid_for_days": 30,
        "is_active": True,
    }).execute()
    assert created.data[0]["currency"] == "USD"

    packages = (supabase_as(people["client"]).from_("booking_packages").select("*")
                .eq("specialist_id", specialist_id).eq("is_active", True).execute())

    assert [(p["name"], p["session_count"], float(p["price"])) for p in packages.data] == [
        ("Monthly Wellness Package", 4, 320.0)]


def test_client_cannot_create_a_package(people, supabase_as):
    with pytest.raises(APIError) as refused:
        supabase_as(people["client"]).from_("booking_packages").insert({
            "specialist_id": str(people["client"].id), "name": "Mine", "session_count": 1, "price": 1}).execute()
    assert refused.value.code == "42501"


# -- 3. recurring_bookings: "Create recurring booking", "List active recurring bookings" -----

def test_client_creates_a_recurring_booking_with_next_booking_date_and_lists_it(people, supabase_as, committed_db):
    committed_db.execute("insert into public.specialist_rates (specialist_id, amount, currency, duration_minutes, "
                         "effective_from) values (%s, 90, 'EUR', 50, now() - interval '1 day')",
                         [people["specialist"].id])
    # The booking rules check the recurrence's first occurrence against the specialist's hours.
    committed_db.execute("insert into public.availability_windows (specialist_id, day_of_week, start_time, end_time) "
                         "select %s, day, '08:00', '20:00' from generate_series(0, 6) day", [people["specialist"].id])
    start = date.today() + timedelta(days=7)
    supabase = supabase_as(people["client"])
    current_user_id = str(people["client"].id)

    created = supabase.from_("recurring_bookings").insert({
        "user_id": current_user_id,
        "specialist_id": str(people["specialist"].id),
        "frequency": "weekly",
        "start_date": start.isoformat(),
        "end_date": (start + timedelta(days=110)).isoformat(),
        "is_active": True,
        "next_booking_date": start.isoformat(),
    }).execute()
    assert created.data[0]["next_booking_date"] == start.isoformat()

    recurring = (supabase.from_("recurring_bookings").select("*")
                 .eq("user_id", current_user_id).eq("is_active", True).execute())
    assert [(r["frequency"], r["start_date"], r["duration_minutes"]) for r in recurring.data] == [
        ("weekly", start.isoformat(), 50)]


def test_next_booking_date_before_start_date_is_refused(people, supabase_as, committed_db):
    committed_db.execute("insert into public.specialist_rates (specialist_id, amount, currency, duration_minutes, "
                         "effective_from) values (%s, 90, 'EUR', 50, now() - interval '1 day')",
                         [people["specialist"].id])
    start = date.today() + timedelta(days=7)
    with pytest.raises(APIError) as refused:
        supabase_as(people["client"]).from_("recurring_bookings").insert({
            "user_id": str(people["client"].id), "specialist_id": str(people["specialist"].id),
            "frequency": "weekly", "start_date": start.isoformat(),
            "next_booking_date": (start - timedelta(days=7)).isoformat()}).execute()
    assert refused.value.code == "23514"
    assert committed_db.execute("select count(*) as n from public.recurring_bookings").fetchone()["n"] == 0


# -- 4. session_notes: create, provider retrieves, patient views ---------------------------

def test_provider_writes_notes_and_patient_reads_them_with_the_embedded_session(people, session_of, supabase_as):
    session = session_of(people["specialist"], people["client"], starts_in=timedelta(hours=-2))
    booking_id = str(session["id"])
    current_specialist_id = str(people["specialist"].id)
    provider = supabase_as(people["specialist"])

    provider.from_("session_notes").insert({
        "booking_id": booking_id,
        "provider_id": current_specialist_id,
        "notes": "Patient reported reduced anxiety. Discussed coping techniques.",
        "follow_up_actions": "Practice relaxation exercises daily",
        "next_session_recommendation": "Continue weekly sessions, consider journaling",
        "metadata": {"mood_level": 7, "engagement": "high", "homework_completion": True},
    }).execute()

    notes = (provider.from_("session_notes").select("*").eq("provider_id", current_specialist_id)
             .order("created_at", desc=True).execute())
    assert [(n["booking_id"], n["metadata"]["mood_level"]) for n in notes.data] == [(booking_id, 7)]

    user_booking_ids = [booking_id]
    patient = supabase_as(people["client"])
    my_notes = (patient.from_("session_notes").select("*, sessions!inner(id, starts_at, status)")
                .in_("booking_id", user_booking_ids).execute())
    assert [(n["notes"], n["sessions"]["id"], n["sessions"]["status"]) for n in my_notes.data] == [
        ("Patient reported reduced anxiety. Discussed coping techniques.", booking_id, "confirmed")]

    assert supabase_as(people["other_client"]).from_("session_notes").select("*").in_(
        "booking_id", user_booking_ids).execute().data == []


# -- 5. meeting_recordings: record metadata (admin post-processing), get with .single() ------

def test_recording_metadata_is_read_by_the_session_parties_with_single(people, session_of, supabase_as):
    session = session_of(people["specialist"], people["client"], starts_in=timedelta(hours=-2))
    booking_id = str(session["id"])
    # Seed 002's example path (sessions/2025-11/booking-xyz.mp4) made to name its own session,
    # as the database requires (sql/0045_recordings.sql).
    path = recording_path(session, "booking-xyz.mp4")
    supabase_as(people["admin"]).from_("meeting_recordings").insert({
        "booking_id": booking_id,
        "recording_url": "https://storage.example.test/signed/abc",
        "storage_path": path,
        "duration_seconds": 3600,
        "storage_size_bytes": 524288000,
        "file_format": "mp4",
        "is_encrypted": True,
        "expires_at": None,
    }).execute()

    for party in ("client", "specialist"):
        recording = (supabase_as(people[party]).from_("meeting_recordings").select("*")
                     .eq("booking_id", booking_id).single().execute())
        assert recording.data["storage_path"] == path

    with pytest.raises(APIError) as none:
        (supabase_as(people["other_client"]).from_("meeting_recordings").select("*")
         .eq("booking_id", booking_id).single().execute())
    assert none.value.code == "PGRST116"  # .single() over zero rows: 406


# -- 6. specialist_availability_exceptions: block days, query the next 30 days -------------

def test_specialist_blocks_days_and_a_client_reads_them_with_select_star(people, supabase_as):
    specialist_id = str(people["specialist"].id)
    specialist = supabase_as(people["specialist"])
    vacation = date.today() + timedelta(days=10)
    appointment = date.today() + timedelta(days=5)
    specialist.from_("specialist_availability_exceptions").insert({
        "specialist_id": specialist_id, "exception_date": vacation.isoformat(), "is_available": False,
        "reason": "vacation", "all_day": True}).execute()
    specialist.from_("specialist_availability_exceptions").insert({
        "specialist_id": specialist_id, "exception_date": appointment.isoformat(), "is_available": False,
        "reason": "personal", "all_day": False, "start_time": "14:00", "end_time": "15:30"}).execute()

    today, future_date = date.today(), date.today() + timedelta(days=30)
    exceptions = (supabase_as(people["client"]).from_("specialist_availability_exceptions").select("*")
                  .eq("specialist_id", specialist_id).eq("is_available", False)
                  .gte("exception_date", today.isoformat()).lte("exception_date", future_date.isoformat())
                  .order("exception_date").execute())

    assert [(e["exception_date"], e["all_day"], e["start_time"], e["end_time"], e["reason"])
            for e in exceptions.data] == [
        (appointment.isoformat(), False, "14:00:00", "15:30:00", "personal"),
        (vacation.isoformat(), True, None, None, "vacation"),
    ]


def test_client_cannot_block_a_specialists_day(people, supabase_as):
    with pytest.raises(APIError) as refused:
        supabase_as(people["client"]).from_("specialist_availability_exceptions").insert({
            "specialist_id": str(people["specialist"].id), "exception_date": date.today().isoformat(),
            "is_available": False, "reason": "other", "all_day": True}).execute()
    assert refused.value.code == "42501"


# -- seed 000: the therapist's dashboard ------------------------------------------------------

def test_therapist_dashboard_lists_upcoming_sessions_with_client_names_soonest_first(people, session_of, supabase_as):
    later = session_of(people["specialist"], people["other_client"], starts_in=timedelta(days=4))
    sooner = session_of(people["specialist"], people["client"], starts_in=timedelta(days=2))

    upcoming = supabase_as(people["specialist"]).from_("upcoming_sessions").select(
        "id, starts_at, local_date, local_start_time, client_name").execute()

    assert [(u["id"], u["client_name"]) for u in upcoming.data] == [
        (str(sooner["id"]), "Alice Client"), (str(later["id"]), "Bob Client")]


def test_therapist_without_upcoming_sessions_gets_an_empty_list(people, supabase_as):
    assert supabase_as(people["specialist"]).from_("upcoming_sessions").select("*").execute().data == []


def test_therapist_session_list_shows_status_and_client_name_of_past_and_cancelled_sessions(
        people, session_of, supabase_as):
    past = session_of(people["specialist"], people["client"], starts_in=timedelta(days=-7))
    cancelled = session_of(people["specialist"], people["other_client"], starts_in=timedelta(days=2))
    upcoming = session_of(people["specialist"], people["client"], starts_in=timedelta(days=3))
    supabase_as(people["other_client"]).from_("booking_cancellations").insert({
        "booking_id": str(cancelled["id"]), "cancelled_by": str(people["other_client"].id),
        "reason": "cannot make it"}).execute()

    sessions = (supabase_as(people["specialist"]).from_("session_list")
                .select("id, status, starts_at, client_name, specialist_name").order("starts_at").execute())

    assert [(s["id"], s["status"], s["client_name"], s["specialist_name"]) for s in sessions.data] == [
        (str(past["id"]), "confirmed", "Alice Client", "Dr Rosa Lind"),
        (str(cancelled["id"]), "cancelled", "Bob Client", "Dr Rosa Lind"),
        (str(upcoming["id"]), "confirmed", "Alice Client", "Dr Rosa Lind"),
    ]
    # A client's list holds their own sessions only, with their own name.
    mine = supabase_as(people["other_client"]).from_("session_list").select("id, client_name").execute()
    assert [(s["id"], s["client_name"]) for s in mine.data] == [(str(cancelled["id"]), "Bob Client")]


def test_embedding_the_clients_profile_in_sessions_stays_private_and_session_list_names_them(
        people, session_of, supabase_as):
    # The embed a frontend might write first: profiles' policies keep a client's row (email,
    # timezone) from the specialist, so the embedded client is null; session_list is the way.
    session = session_of(people["specialist"], people["client"], starts_in=timedelta(days=-3))
    specialist = supabase_as(people["specialist"])

    embedded = (specialist.from_("sessions").select("id, client:profiles!sessions_client_id_fkey(full_name, email)")
                .eq("id", str(session["id"])).execute())
    listed = specialist.from_("session_list").select("id, client_name").eq("id", str(session["id"])).execute()

    assert embedded.data == [{"id": str(session["id"]), "client": None}]
    assert listed.data == [{"id": str(session["id"]), "client_name": "Alice Client"}]


# -- free slots: the booking page's read (sql/0019), an RPC for anon and authenticated --------------

def test_a_booking_page_reads_free_slots_through_the_rpc_signed_in_or_not(people, supabase_as, session_of,
                                                                       committed_db):
    specialist, client = people["specialist"], people["client"]
    day = datetime.now(timezone.utc).date() + timedelta(days=5)
    committed_db.execute("""insert into public.specialist_rates (specialist_id, amount, currency, duration_minutes,
                                                                effective_from)
                            values (%s, 80, 'EUR', 50, now() - interval '1 day')""", [specialist.id])
    committed_db.execute("""insert into public.availability_windows (specialist_id, day_of_week, start_time, end_time)
                            values (%s, %s, '09:00', '12:00')""", [specialist.id, (day.weekday() + 1) % 7])
    # 50-minute sessions with 10 minutes kept free after each: slots every hour.
    committed_db.execute("update public.profiles set buffer_minutes = 10 where id = %s", [specialist.id])
    other_specialist = create_person(committed_db, "specialist")
    ten = datetime.fromisoformat(f"{day}T10:00:00").replace(tzinfo=ZoneInfo("Europe/London"))
    session_of(other_specialist, client, starts_in=ten - datetime.now(timezone.utc))  # the client is busy at 10:00
    args = {"specialist_id": str(specialist.id), "from_date": str(day), "to_date": str(day)}

    anonymous = supabase_as(None).rpc("available_slots", args).execute().data
    signed_in = supabase_as(client).rpc("available_slots", args).execute().data

    starts = lambda rows: [datetime.fromisoformat(r["starts_at"]).astimezone(ten.tzinfo).strftime("%H:%M")  # noqa: E731
                           for r in rows]
    assert starts(anonymous) == ["09:00", "10:00", "11:00"]
    assert starts(signed_in) == ["09:00", "11:00"]  # their own session clashes with 10:00
    assert all(set(r) == {"starts_at", "ends_at"} for r in anonymous)
    with pytest.raises(APIError) as refused:
        supabase_as(None).rpc("available_slots", {**args, "to_date": str(day + timedelta(days=70))}).execute()
    assert refused.value.code == "22023"
    assert "At most 62 days of free slots can be asked for at once" in refused.value.message
