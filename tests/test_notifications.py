"""Email through every door: each message kind is caused through its real door
(booking-create, the dispatcher, a service insert, booking-cancel, the
cancellation link, a frontend's insert into booking_cancellations, a move),
sent by the notifications function to a real SMTP server, and read back there:
exact recipients, the parts, and the parsed ``.ics`` (UID, SEQUENCE, METHOD, times).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import psycopg
import pytest

from shared.links import cancellation_url
from tests.dispatcher_support import add_recurrence, specialist_with_rate
from tests.functions_fixtures import (
    AppClient, BookableSpecialist, FunctionsApi, _create_app, bearer, fetch, service_bearer,
)
from tests.notifications_fixtures import (
    EMAIL_FROM, MailEnv, event_of, html_of, invitation_of, send_due, subject_of, text_of, to,
)
from tests.support import Person, create_person, request_as

UID_DOMAIN = "calm-practice.test"


@pytest.fixture
def client(committed_db: psycopg.Connection) -> Person:
    return create_person(committed_db, "client", full_name="Alice Client", timezone="Europe/Paris")


@pytest.fixture
def specialist(bookable_specialist) -> BookableSpecialist:
    return bookable_specialist(full_name="Dr Rosa Lind", timezone="America/New_York")


def insert_session(conn: psycopg.Connection, specialist_id: uuid.UUID, client_id: uuid.UUID, *,
                   starts_in: timedelta, created_ago: timedelta = timedelta(0), minutes: int = 50,
                   **columns) -> dict:
    """A confirmed session written by the service (committed), booked `created_ago` ago."""
    starts_at = (datetime.now(timezone.utc) + starts_in).replace(microsecond=0)
    values = {"specialist_id": specialist_id, "client_id": client_id, "starts_at": starts_at,
              "ends_at": starts_at + timedelta(minutes=minutes),
              "created_at": datetime.now(timezone.utc) - created_ago, **columns}
    return conn.execute(
        f"insert into public.sessions ({', '.join(values)}) values ({', '.join(['%s'] * len(values))}) returning *",
        list(values.values())).fetchone()


def outbox_of(conn: psycopg.Connection, session_id) -> list[dict]:
    return conn.execute("select * from private.email_outbox where session_id = %s order by id",
                        [session_id]).fetchall()


def assert_invitation(received, *, method: str, session_id, starts_at: datetime, ends_at: datetime,
                      zone: str, sequence: int | None = None) -> int:
    calendar = invitation_of(received)
    assert calendar is not None, "the email carries an .ics"
    assert str(calendar["METHOD"]) == method
    event = event_of(calendar)
    assert str(event["UID"]) == f"session-{session_id}@{UID_DOMAIN}"
    start, end = event.decoded("DTSTART"), event.decoded("DTEND")
    assert (start, end) == (starts_at, ends_at)
    assert str(start.tzinfo) == zone, "times in the recipient's timezone"
    # The zone's definition travels with it (UTC needs none: its times end in Z).
    assert [str(tz["TZID"]) for tz in calendar.walk("VTIMEZONE")] == ([] if zone == "UTC" else [zone])
    assert str(event["STATUS"]) == ("CANCELLED" if method == "CANCEL" else "CONFIRMED")
    if sequence is not None:
        assert int(event["SEQUENCE"]) == sequence
    return int(event["SEQUENCE"])


# -- confirmations, through every door that creates sessions ----------------------------

def test_booking_create_confirms_to_the_client_and_notifies_the_specialist(
        functions_api: FunctionsApi, mail_env: MailEnv, notifications_app, client: Person,
        specialist: BookableSpecialist, committed_db: psycopg.Connection) -> None:
    answer = functions_api.booking_create.post_json(
        {"specialist_id": str(specialist.id), "starts_at": specialist.slot(days_ahead=4).isoformat(),
         "session_type": "emergency", "special_requests": "Panic attacks at night"},
        headers=bearer(client))
    assert answer.status == 200, answer.text
    booked = answer.json()
    session_id = uuid.UUID(booked["session_id"])
    starts_at = datetime.fromisoformat(booked["starts_at"])
    ends_at = datetime.fromisoformat(booked["ends_at"])

    assert send_due(notifications_app)["sent"] == 2
    received = mail_env.server.messages()

    assert sorted(r.rcpt_tos for r in received) == sorted([(client.email,), (specialist.person.email,)])
    (to_client,), (to_specialist,) = to(received, client.email), to(received, specialist.person.email)
    for message in received:
        assert message.message["From"] == EMAIL_FROM
        assert subject_of(message).endswith(f"({booked['booking_reference']})")
    # The client: their own timezone, the specialist's name, the reference, the link that was answered.
    body = text_of(to_client)
    assert "Dr Rosa Lind" in body and booked["booking_reference"] in body
    assert "Monday" in body or "day " in body
    local = starts_at.astimezone(ZoneInfo("Europe/Paris"))
    assert f"{local:%H:%M}" in body and "Europe/Paris" in body
    assert booked["cancel_url"] in body
    assert f'href="{booked["cancel_url"].replace("&", "&amp;")}"' in html_of(to_client)
    assert_invitation(to_client, method="REQUEST", session_id=session_id, starts_at=starts_at, ends_at=ends_at,
                      zone="Europe/Paris", sequence=0)
    # The specialist: their timezone and the client's name; no cancellation link.
    specialist_body = text_of(to_specialist)
    assert "Alice Client" in specialist_body and "token-cancel" not in specialist_body
    assert "America/New_York" in specialist_body
    assert_invitation(to_specialist, method="REQUEST", session_id=session_id, starts_at=starts_at,
                      ends_at=ends_at, zone="America/New_York", sequence=0)
    # No clinical detail anywhere.
    for message in received:
        whole = message.message.as_string()
        assert "Panic" not in whole and "emergency" not in whole.lower()
    # The link in the email works: it opens the cancellation page of this session.
    if functions_api.transport == "served":
        page = fetch(booked["cancel_url"])
        assert page.status == 200 and "Dr Rosa Lind" in page.text
    assert send_due(notifications_app)["sent"] == 0, "nothing is sent twice"


def test_a_dispatched_session_is_confirmed_like_a_booked_one(
        mail_env: MailEnv, notifications_app, committed_db: psycopg.Connection) -> None:
    dispatcher = AppClient(_create_app("recurring-dispatcher", "recurring_dispatcher"))
    client = create_person(committed_db, "client", full_name="Carl Client", timezone="UTC")
    specialist = specialist_with_rate(committed_db, zone="UTC")
    add_recurrence(committed_db, client, specialist, zone="UTC",
                   start_date=committed_db.execute("select current_date + 2 as d").fetchone()["d"])

    answer = dispatcher.post_json({}, headers=service_bearer())
    assert answer.status == 200 and answer.json()["count"] == 1, answer.text
    (session,) = committed_db.execute("select * from public.sessions where client_id = %s", [client.id]).fetchall()

    assert send_due(notifications_app)["sent"] == 2
    received = mail_env.server.messages()
    assert sorted(r.rcpt_tos for r in received) == sorted([(client.email,), (specialist.email,)])
    (to_client,) = to(received, client.email)
    assert cancellation_url(session["id"]) in text_of(to_client)
    assert_invitation(to_client, method="REQUEST", session_id=session["id"], starts_at=session["starts_at"],
                      ends_at=session["ends_at"], zone="UTC", sequence=0)


def test_a_session_inserted_by_the_service_is_confirmed_and_a_past_one_is_not(
        mail_env: MailEnv, notifications_app, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    ahead = insert_session(committed_db, specialist.id, client.id, starts_in=timedelta(days=2))
    insert_session(committed_db, specialist.id, client.id, starts_in=timedelta(days=-2))  # an import of the past

    assert send_due(notifications_app)["sent"] == 2
    assert {r.rcpt_tos for r in mail_env.server.messages()} == {(client.email,), (specialist.person.email,)}
    assert {row["session_id"] for row in committed_db.execute("select session_id from private.email_outbox")} == {
        ahead["id"]}


# -- cancellations, through every door that cancels -----------------------------------------

def _cancel_by_function(api: FunctionsApi, session: dict, client: Person) -> None:
    answer = api.booking_cancel.post_json({"booking_id": str(session["id"]), "reason": "Away"},
                                          headers=bearer(client))
    assert answer.status == 200, answer.text


def _cancel_by_link(api: FunctionsApi, session: dict, client: Person) -> None:
    query = urlsplit(cancellation_url(session["id"])).query
    token = query.split("=", 1)[1]
    answer = api.token_cancel.request("POST", query=query, body=f"token={token}",
                                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status == 200, answer.text


def _cancel_by_frontend_insert(api: FunctionsApi, session: dict, client: Person) -> None:
    with request_as(api_database_url(api), client) as conn:
        conn.execute("insert into public.booking_cancellations (booking_id, reason) values (%s, 'Away')",
                     [session["id"]])


def api_database_url(api: FunctionsApi) -> str:
    import os

    return os.environ["DATABASE_URL"]


CANCEL_DOORS = {"booking-cancel": _cancel_by_function, "token-cancel": _cancel_by_link,
                "insert into booking_cancellations": _cancel_by_frontend_insert}


@pytest.mark.parametrize("door", list(CANCEL_DOORS))
def test_every_cancellation_door_sends_both_parties_a_cancel_with_the_same_uid_and_a_higher_sequence(
        door: str, functions_api: FunctionsApi, mail_env: MailEnv, notifications_app,
        committed_db: psycopg.Connection, client: Person, specialist: BookableSpecialist) -> None:
    session = insert_session(committed_db, specialist.id, client.id, starts_in=timedelta(days=3),
                             created_ago=timedelta(seconds=30))
    assert send_due(notifications_app)["sent"] == 2
    confirmations = mail_env.server.messages()
    mail_env.server.clear()

    CANCEL_DOORS[door](functions_api, session, client)

    assert send_due(notifications_app)["sent"] == 2
    received = mail_env.server.messages()
    assert sorted(r.rcpt_tos for r in received) == sorted([(client.email,), (specialist.person.email,)])
    for party, zone in ((client.email, "Europe/Paris"), (specialist.person.email, "America/New_York")):
        (cancel,) = to(received, party)
        (confirmation,) = to(confirmations, party)
        sequence = assert_invitation(cancel, method="CANCEL", session_id=session["id"],
                                     starts_at=session["starts_at"], ends_at=session["ends_at"], zone=zone)
        assert sequence > int(event_of(invitation_of(confirmation))["SEQUENCE"]) == 0
        assert "is cancelled" in text_of(cancel)
        assert cancel.message_id != confirmation.message_id


# -- reminders ------------------------------------------------------------------------------

def test_a_session_booked_130_minutes_ahead_gets_the_two_hour_reminder_only(
        mail_env: MailEnv, notifications_app, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    session = insert_session(committed_db, specialist.id, client.id, starts_in=timedelta(minutes=100),
                             created_ago=timedelta(minutes=30))

    result = send_due(notifications_app)

    assert (result["reminders_queued"], result["sent"]) == (1, 3), "two confirmations and one reminder"
    (reminder,) = [r for r in to(mail_env.server.messages(), client.email)
                   if subject_of(r).startswith("Reminder")]
    assert invitation_of(reminder) is None
    assert cancellation_url(session["id"]) in text_of(reminder)
    assert [(r["kind"], r["offset_minutes"]) for r in outbox_of(committed_db, session["id"])
            if r["kind"] == "reminder"] == [("reminder", 120)], "not the 24-hour one: its moment came before booking"
    assert subject_of(to(mail_env.server.messages(), specialist.person.email)[0]).startswith("Your session")
    assert send_due(notifications_app)["sent"] == 0


def test_sender_down_across_every_reminder_moment_sends_one_reminder_the_latest(
        mail_env: MailEnv, notifications_app, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    session = insert_session(committed_db, specialist.id, client.id, starts_in=timedelta(minutes=10),
                             created_ago=timedelta(days=2))
    committed_db.execute("update private.email_outbox set status = 'sent' where session_id = %s", [session["id"]])

    first, second = send_due(notifications_app), send_due(notifications_app)

    assert (first["reminders_queued"], first["sent"]) == (1, 1)
    assert (second["reminders_queued"], second["sent"]) == (0, 0)
    (reminder,) = mail_env.server.messages()
    assert reminder.rcpt_tos == (client.email,)
    assert [r["offset_minutes"] for r in outbox_of(committed_db, session["id"]) if r["kind"] == "reminder"] == [15]


def test_a_pending_reminder_overtaken_by_a_later_one_is_not_sent(
        mail_env: MailEnv, notifications_app, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    """SMTP failed while the two-hour reminder waited; by the time it is back the 15-minute one is due."""
    session = insert_session(committed_db, specialist.id, client.id, starts_in=timedelta(minutes=10),
                             created_ago=timedelta(days=2))
    committed_db.execute("update private.email_outbox set status = 'sent' where session_id = %s", [session["id"]])
    committed_db.execute(
        """insert into private.email_outbox (kind, session_id, recipient_id, for_starts_at, offset_minutes)
           values ('reminder', %s, %s, %s, 120)""", [session["id"], client.id, session["starts_at"]])

    result = send_due(notifications_app)

    assert (result["reminders_queued"], result["sent"], result["skipped"]) == (1, 1, 1)
    (reminder,) = mail_env.server.messages()
    statuses = {r["offset_minutes"]: (r["status"], r["last_error"])
                for r in outbox_of(committed_db, session["id"]) if r["kind"] == "reminder"}
    assert statuses == {120: ("skipped", "A later reminder for this session replaces it."), 15: ("sent", None)}


def test_a_moved_session_gets_a_moved_notice_and_its_reminders_again_for_the_new_time(
        mail_env: MailEnv, notifications_app, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    session = insert_session(committed_db, specialist.id, client.id, starts_in=timedelta(minutes=10),
                             created_ago=timedelta(days=2))
    send_due(notifications_app)  # the confirmations and the 15-minute reminder for the first time
    mail_env.server.clear()
    new_start = session["starts_at"] + timedelta(hours=1)
    committed_db.execute("update public.sessions set starts_at = %s, ends_at = %s where id = %s",
                         [new_start, new_start + timedelta(minutes=50), session["id"]])
    # As if the move had been made a day ago: every reminder moment of the new time came after it.
    committed_db.execute("update public.sessions set start_set_at = now() - interval '1 day' where id = %s",
                         [session["id"]])

    result = send_due(notifications_app)

    assert result["sent"] == 3, "the moved notice to both parties and one reminder for the new time"
    received = mail_env.server.messages()
    (moved_to_client,) = [r for r in to(received, client.email) if "moved" in subject_of(r)]
    sequence = assert_invitation(moved_to_client, method="REQUEST", session_id=session["id"], starts_at=new_start,
                                 ends_at=new_start + timedelta(minutes=50), zone="Europe/Paris")
    assert sequence > 0
    reminders = [(r["offset_minutes"], r["for_starts_at"], r["status"])
                 for r in outbox_of(committed_db, session["id"]) if r["kind"] == "reminder"]
    assert reminders == [(15, session["starts_at"], "sent"), (120, new_start, "sent")]


def test_a_cancelled_session_gets_no_reminder(mail_env: MailEnv, notifications_app,
                                              committed_db: psycopg.Connection, client: Person,
                                              specialist: BookableSpecialist) -> None:
    session = insert_session(committed_db, specialist.id, client.id, starts_in=timedelta(minutes=10),
                             created_ago=timedelta(days=2))
    committed_db.execute("insert into public.booking_cancellations (booking_id, cancelled_by) values (%s, %s)",
                         [session["id"], client.id])

    result = send_due(notifications_app)

    assert result["reminders_queued"] == 0
    kinds = sorted(subject_of(r).split(" ")[0] for r in mail_env.server.messages())
    assert len(mail_env.server.messages()) == 2 and all("cancelled" in subject_of(r)
                                                        for r in mail_env.server.messages()), kinds


# -- preferences ------------------------------------------------------------------------------

def test_a_client_who_switched_off_the_15_minute_reminder_gets_confirmations_but_not_it(
        mail_env: MailEnv, notifications_app, committed_db: psycopg.Connection, database_url: str,
        client: Person, specialist: BookableSpecialist) -> None:
    with request_as(database_url, client) as conn:  # as the frontend, under RLS
        changed = conn.execute("update public.notification_preferences set muted_reminder_minutes = '{15}'")
        assert changed.rowcount == 1, "the client's own row, and only theirs"
    insert_session(committed_db, specialist.id, client.id, starts_in=timedelta(minutes=10),
                   created_ago=timedelta(days=2))

    result = send_due(notifications_app)

    assert (result["reminders_queued"], result["sent"]) == (0, 2)
    assert all(not subject_of(r).startswith("Reminder") for r in mail_env.server.messages())


def test_a_client_with_reminders_off_gets_none_and_another_client_is_unaffected(
        mail_env: MailEnv, notifications_app, committed_db: psycopg.Connection, database_url: str,
        client: Person, specialist: BookableSpecialist) -> None:
    other = create_person(committed_db, "client", full_name="Olga Other")
    with request_as(database_url, client) as conn:
        conn.execute("update public.notification_preferences set reminders_enabled = false")
    for who, hours in ((client, 0), (other, 2)):
        insert_session(committed_db, specialist.id, who.id, starts_in=timedelta(hours=hours, minutes=10),
                       created_ago=timedelta(days=2))

    send_due(notifications_app)

    reminded = [r.rcpt_tos for r in mail_env.server.messages() if subject_of(r).startswith("Reminder")]
    assert reminded == [(other.email,)]


def test_users_cannot_write_preferences_for_someone_else(database_url: str, committed_db: psycopg.Connection,
                                                          client: Person) -> None:
    other = create_person(committed_db, "client")
    with request_as(database_url, client) as conn:
        changed = conn.execute("update public.notification_preferences set reminders_enabled = false "
                               "where user_id = %s", [other.id])
        assert changed.rowcount == 0
    assert committed_db.execute("select reminders_enabled from public.notification_preferences where user_id = %s",
                                [other.id]).fetchone()["reminders_enabled"] is True
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        with request_as(database_url, client) as conn:
            conn.execute("insert into public.notification_preferences (user_id) values (%s)", [other.id])


@pytest.mark.parametrize(("muted", "constraint"), [
    ("{0}", "notification_preferences_muted_reminder_minutes_check"),
    ("{15,null}", "notification_preferences_muted_reminder_minutes_check"),
    ("{99999}", "notification_preferences_muted_reminder_minutes_check"),
])
def test_bad_preferences_are_refused(database_url: str, client: Person, muted: str, constraint: str) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match=constraint):
        with request_as(database_url, client) as conn:
            conn.execute("update public.notification_preferences set muted_reminder_minutes = %s", [muted])


# -- content ----------------------------------------------------------------------------------

def test_names_with_markup_and_non_latin_letters_arrive_escaped_and_readable(
        mail_env: MailEnv, notifications_app, committed_db: psycopg.Connection) -> None:
    client = create_person(committed_db, "client", full_name="<script>alert('x')</script> Zoë Łukasz 山田",
                           timezone="Asia/Tokyo")
    specialist = specialist_with_rate(committed_db, zone="UTC")
    committed_db.execute("update public.profiles set full_name = %s where id = %s",
                         ["Dr <b>Ørsted</b> & Søn Иван", specialist.id])
    insert_session(committed_db, specialist.id, client.id, starts_in=timedelta(days=2))

    send_due(notifications_app)

    (to_client,) = to(mail_env.server.messages(), client.email)
    (to_specialist,) = to(mail_env.server.messages(), specialist.email)
    html = html_of(to_client)
    assert "Dr &lt;b&gt;Ørsted&lt;/b&gt; &amp; Søn Иван" in html and "<b>Ørsted" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Zoë Łukasz 山田" in html
    assert "<script>" not in html
    assert "Dr <b>Ørsted</b> & Søn Иван" in text_of(to_client), "plain text shows the name as written"
    assert "<script>alert('x')</script> Zoë Łukasz 山田" in text_of(to_specialist)
    assert "&lt;script&gt;" in html_of(to_specialist)
    assert str(event_of(invitation_of(to_client))["SUMMARY"]).startswith("Session with Dr <b>Ørsted</b> & Søn Иван")


def test_emails_go_to_the_auth_address_never_the_profile_field(
        mail_env: MailEnv, notifications_app, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, database_url: str) -> None:
    with request_as(database_url, client) as conn:  # a user may edit their profile's email freely
        conn.execute("update public.profiles set email = 'attacker@evil.test' where id = %s", [client.id])
    insert_session(committed_db, specialist.id, client.id, starts_in=timedelta(days=2))

    send_due(notifications_app)

    recipients = {address for r in mail_env.server.messages() for address in r.rcpt_tos}
    assert recipients == {client.email, specialist.person.email}
    assert all("evil.test" not in r.message.as_string() for r in mail_env.server.messages())


def test_every_kind_has_both_templates_and_no_clinical_field_reaches_them() -> None:
    from shared.notifications import render

    for kind in render.KINDS:
        for extension in ("txt", "html"):
            source = (render.TEMPLATES / f"{kind}.{extension}").read_text()
            for field in ("notes", "session_type", "special_requests"):
                assert field not in source
    assert {f.name for f in __import__("dataclasses").fields(render.Message)}.isdisjoint(
        {"notes", "session_type", "special_requests"})


def test_the_notifications_function_refuses_a_user_token(mail_env: MailEnv, notifications_app,
                                                         client: Person) -> None:
    response = notifications_app.post("/", json={}, headers=bearer(client))
    assert response.status_code == 401
    assert json.loads(response.get_data())["error"] == "UNAUTHORIZED"
