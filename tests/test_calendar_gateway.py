"""The calendar gateway, driving the real google-api-python-client against the fake server."""

from __future__ import annotations

import json
import logging
import re
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from shared import calendar
from shared.calendar import CalendarError, CalendarSession, EventRef, event_id_for
from shared.errors import error_response
from tests.calendar_fixtures import NUM_RETRIES, CalendarEnv
from tests.calendar_server import FakeCalendarServer, RecordedRequest, make_service_account_json

CALENDAR_ID = "specialist-7@group.calendar.google.com"
STARTS_AT = datetime(2026, 12, 1, 9, 30, tzinfo=timezone(timedelta(hours=1)))


def a_session(reference: str = "TB-7Q4K-2M9X", **overrides: object) -> CalendarSession:
    fields: dict[str, object] = {
        "id": uuid.uuid4(),
        "calendar_id": CALENDAR_ID,
        "starts_at": STARTS_AT,
        "ends_at": STARTS_AT + timedelta(minutes=50),
        "booking_reference": reference,
    }
    fields.update(overrides)
    return CalendarSession(**fields)  # type: ignore[arg-type]


def inserts(server: FakeCalendarServer) -> list[RecordedRequest]:
    return [c for c in server.api_calls("POST") if c.path.endswith("/events")]


def closed_port() -> int:
    """A local port nobody listens on: connections to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- event ids and contents ----------------------------------------------------------


def test_event_id_is_a_valid_google_event_id() -> None:
    session_id = uuid.UUID("0f8e2a4c-1b3d-4e5f-8a9b-0c1d2e3f4a5b")
    assert event_id_for(session_id) == "0f8e2a4c1b3d4e5f8a9b0c1d2e3f4a5b"
    assert re.fullmatch(r"[a-v0-9]{5,1024}", event_id_for(uuid.uuid4()))


def test_create_makes_one_event_with_our_id_and_a_token_from_the_token_endpoint(calendar_env: CalendarEnv) -> None:
    server = calendar_env.server
    session = a_session()

    result = calendar.create_session_event(session)

    assert (result.outcome, result.event_id) == ("created", session.id.hex)
    assert list(server.events(CALENDAR_ID)) == [session.id.hex]
    [grant] = server.token_grants
    assert grant["iss"] == calendar_env.service_account["client_email"]
    assert grant["scope"] == calendar.CALENDAR_SCOPE
    assert "sub" not in grant  # no delegation unless asked for
    [insert] = inserts(server)
    assert insert.bearer_token == grant["access_token"]
    assert insert.query["sendUpdates"] == ["none"]


def test_event_carries_no_personal_or_clinical_detail(calendar_env: CalendarEnv) -> None:
    session = a_session("TB-7Q4K-2M9X")

    calendar.create_session_event(session)

    [insert] = inserts(calendar_env.server)
    body = insert.json()
    assert set(body) == {"id", "summary", "start", "end", "visibility", "transparency"}
    assert body["summary"] == "Therapy session TB-7Q4K-2M9X"
    assert body["visibility"] == "private"
    assert datetime.fromisoformat(body["start"]["dateTime"]) == session.starts_at
    assert datetime.fromisoformat(body["end"]["dateTime"]) == session.ends_at


def test_naive_times_are_refused_before_anything_is_sent(calendar_env: CalendarEnv) -> None:
    with pytest.raises(ValueError, match="starts_at must be timezone-aware"):
        calendar.create_session_event(a_session(starts_at=datetime(2026, 12, 1, 9, 30)))
    assert calendar_env.server.requests == []


def test_service_and_token_are_reused_across_calls(calendar_env: CalendarEnv) -> None:
    calendar.create_session_event(a_session())
    calendar.create_session_event(a_session())

    assert len(calendar_env.server.token_grants) == 1
    assert len(calendar_env.server.events(CALENDAR_ID)) == 2


# -- idempotence -------------------------------------------------------------------------


def test_retry_after_a_timeout_does_not_create_a_second_event(calendar_env: CalendarEnv) -> None:
    server = calendar_env.server
    # The server stores the event, then answers too late for the 0.5 s client timeout.
    server.fail(hang=2.0, method="POST")
    session = a_session()

    result = calendar.create_session_event(session)

    assert result.outcome == "already_existed"
    assert list(server.events(CALENDAR_ID)) == [session.id.hex]
    assert [call.status for call in inserts(server)] == [200, 409]


def test_creating_again_after_a_timed_out_attempt_is_harmless(calendar_env: CalendarEnv) -> None:
    calendar_env.set(GOOGLE_CALENDAR_NUM_RETRIES="0")
    server = calendar_env.server
    server.fail(hang=2.0, method="POST")
    session = a_session()

    with pytest.raises(CalendarError) as failed:
        calendar.create_session_event(session)
    assert failed.value.upstream_status is None
    assert "TimeoutError" in failed.value.message

    assert calendar.create_session_event(session).outcome == "already_existed"
    assert list(server.events(CALENDAR_ID)) == [session.id.hex]


def test_deleting_twice_is_harmless(calendar_env: CalendarEnv) -> None:
    session = a_session()
    calendar.create_session_event(session)

    first = calendar.delete_session_event(CALENDAR_ID, session.id.hex)
    second = calendar.delete_session_event(CALENDAR_ID, session.id.hex)

    assert (first.outcome, second.outcome) == ("deleted", "already_gone")
    assert [c.status for c in calendar_env.server.api_calls("DELETE")] == [204, 410]
    assert calendar_env.server.events(CALENDAR_ID) == {}


def test_deleting_an_event_that_never_existed_succeeds(calendar_env: CalendarEnv) -> None:
    result = calendar.delete_session_event(CALENDAR_ID, uuid.uuid4().hex)

    assert result.outcome == "already_gone"
    assert [c.status for c in calendar_env.server.api_calls("DELETE")] == [404]


# -- retries and failures ------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_errors_are_retried_until_success(calendar_env: CalendarEnv, status: int) -> None:
    calendar_env.server.fail(status, times=2, method="POST")
    session = a_session()

    result = calendar.create_session_event(session)

    assert result.outcome == "created"
    assert [c.status for c in inserts(calendar_env.server)] == [status, status, 200]
    assert len(calendar_env.backoff_sleeps) == 2
    assert list(calendar_env.server.events(CALENDAR_ID)) == [session.id.hex]


def test_persistent_server_error_raises_calendar_error(calendar_env: CalendarEnv) -> None:
    calendar_env.server.fail(500, times=None)

    with pytest.raises(CalendarError) as failed:
        calendar.create_session_event(a_session())

    assert failed.value.upstream_status == 500
    assert len(inserts(calendar_env.server)) == NUM_RETRIES + 1
    assert calendar_env.server.events(CALENDAR_ID) == {}
    body, status = error_response(failed.value)
    assert (status, body["error"]) == (503, "CALENDAR_UNAVAILABLE")
    assert "HTTP 500" in body["message"]


def test_persistent_error_on_delete_raises_calendar_error(calendar_env: CalendarEnv) -> None:
    calendar_env.server.fail(503, times=None, method="DELETE")

    with pytest.raises(CalendarError) as failed:
        calendar.delete_session_event(CALENDAR_ID, uuid.uuid4().hex)

    assert failed.value.upstream_status == 503 and failed.value.retryable


def test_client_error_is_not_retried(calendar_env: CalendarEnv) -> None:
    calendar_env.server.fail(403, method="POST", reason="forbiddenForServiceAccounts")

    with pytest.raises(CalendarError) as failed:
        calendar.create_session_event(a_session())

    assert failed.value.upstream_status == 403 and not failed.value.retryable
    assert len(inserts(calendar_env.server)) == 1


def test_unreachable_calendar_api_raises_calendar_error(calendar_env: CalendarEnv) -> None:
    calendar_env.set(GOOGLE_CALENDAR_API_URL=f"http://127.0.0.1:{closed_port()}/calendar/v3/")

    with pytest.raises(CalendarError) as failed:
        calendar.create_session_event(a_session())

    assert failed.value.upstream_status is None
    assert len(calendar_env.backoff_sleeps) == NUM_RETRIES


def test_refused_credentials_raise_a_non_retryable_calendar_error(calendar_env: CalendarEnv) -> None:
    untrusted_key = make_service_account_json(calendar_env.server.token_uri)
    calendar_env.set(GOOGLE_SERVICE_ACCOUNT_JSON=json.dumps(untrusted_key))

    with pytest.raises(CalendarError, match="refused the calendar credentials") as failed:
        calendar.create_session_event(a_session())

    assert not failed.value.retryable
    assert inserts(calendar_env.server) == []


def test_concurrent_creates_from_many_threads_each_make_their_event(calendar_env: CalendarEnv) -> None:
    sessions = [a_session(f"TB-{n}") for n in range(16)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda s: calendar.create_session_event(s).outcome, sessions))

    assert outcomes == ["created"] * 16
    assert sorted(calendar_env.server.events(CALENDAR_ID)) == sorted(s.id.hex for s in sessions)


# -- delegation ---------------------------------------------------------------------------


def test_delegation_acts_as_the_specialist(calendar_env: CalendarEnv) -> None:
    calendar_env.set(GOOGLE_CALENDAR_DELEGATE="true")

    calendar.create_session_event(a_session(calendar_id="primary", specialist_email="dr.ines@practice.example"))

    [grant] = calendar_env.server.token_grants
    assert grant["sub"] == "dr.ines@practice.example"
    assert len(calendar_env.server.events("primary")) == 1


def test_delegation_without_specialist_email_sends_nothing(calendar_env: CalendarEnv) -> None:
    calendar_env.set(GOOGLE_CALENDAR_DELEGATE="true")

    with pytest.raises(CalendarError, match="no specialist email"):
        calendar.create_session_event(a_session(calendar_id="primary"))
    assert calendar_env.server.requests == []


# -- batches ------------------------------------------------------------------------------


def test_batch_of_120_deletes_is_sent_as_three_batches_of_at_most_50(calendar_env: CalendarEnv) -> None:
    server = calendar_env.server
    refs = []
    for _ in range(120):
        event_id = uuid.uuid4().hex
        server.put_event(CALENDAR_ID, {"id": event_id, "summary": "Therapy session"})
        refs.append(EventRef(CALENDAR_ID, event_id))

    results = calendar.delete_events_batch(refs)

    assert [len(batch.parts) for batch in server.batch_requests()] == [50, 50, 20]
    assert [r.event_id for r in results] == [ref.event_id for ref in refs]
    assert all(r.outcome == "deleted" for r in results)
    assert server.events(CALENDAR_ID) == {}


def test_batch_delete_reports_each_item_and_treats_gone_as_success(calendar_env: CalendarEnv) -> None:
    server = calendar_env.server
    live, deleted_before, never_existed, refused = (uuid.uuid4().hex for _ in range(4))
    for event_id in (live, deleted_before, refused):
        server.put_event(CALENDAR_ID, {"id": event_id})
    calendar.delete_session_event(CALENDAR_ID, deleted_before)
    server.fail(403, method="DELETE", path_prefix=f"/calendar/v3/calendars/{CALENDAR_ID}/events/{refused}")

    results = calendar.delete_events_batch(
        [EventRef(CALENDAR_ID, e) for e in (live, deleted_before, never_existed, refused)]
    )

    assert [(r.outcome, r.upstream_status) for r in results] == [
        ("deleted", None),
        ("already_gone", None),
        ("already_gone", None),
        ("failed", 403),
    ]
    assert [r.ok for r in results] == [True, True, True, False]
    assert list(server.events(CALENDAR_ID)) == [refused]


def test_batch_create_treats_existing_events_as_success(calendar_env: CalendarEnv) -> None:
    sessions = [a_session(f"TB-{n}") for n in range(3)]
    calendar.create_session_event(sessions[0])

    results = calendar.create_events_batch(sessions)

    assert [r.outcome for r in results] == ["already_existed", "created", "created"]
    assert sorted(calendar_env.server.events(CALENDAR_ID)) == sorted(s.id.hex for s in sessions)
    [batch] = calendar_env.server.batch_requests()
    assert sorted(part.json()["summary"] for part in batch.parts) == [f"Therapy session TB-{n}" for n in range(3)]


def test_batch_resends_items_that_failed_transiently(calendar_env: CalendarEnv) -> None:
    server = calendar_env.server
    sessions = [a_session(f"TB-{n}") for n in range(3)]
    # Only the first insert inside the batch fails; the batch envelope itself is fine.
    server.fail(503, method="POST", path_prefix="/calendar/v3/")

    results = calendar.create_events_batch(sessions)

    assert [r.outcome for r in results] == ["created", "created", "created"]
    assert [len(batch.parts) for batch in server.batch_requests()] == [3, 1]
    assert len(calendar_env.backoff_sleeps) == 1
    assert len(server.events(CALENDAR_ID)) == 3


def test_batch_that_keeps_failing_reports_every_item_failed(calendar_env: CalendarEnv) -> None:
    calendar_env.server.fail(500, times=None, path_prefix="/batch/")

    results = calendar.delete_events_batch([EventRef(CALENDAR_ID, uuid.uuid4().hex) for _ in range(3)])

    assert [(r.outcome, r.upstream_status) for r in results] == [("failed", 500)] * 3
    assert len(calendar_env.server.batch_requests()) == NUM_RETRIES + 1


# -- sync off ---------------------------------------------------------------------------


def test_sync_off_reports_disabled_and_logs_once(
    calendar_disabled: None, calendar_server: FakeCalendarServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shared.calendar")

    created = calendar.create_session_event(a_session())
    deleted = calendar.delete_session_event(CALENDAR_ID, uuid.uuid4().hex)
    batch = calendar.delete_events_batch([EventRef(CALENDAR_ID, uuid.uuid4().hex)])

    assert (created.outcome, created.event_id) == ("disabled", None)
    assert deleted.outcome == "disabled" and not deleted.synced
    assert [(r.outcome, r.ok) for r in batch] == [("disabled", True)]
    sync_off_lines = [r for r in caplog.records if "sync is off" in r.getMessage()]
    assert len(sync_off_lines) == 1
    assert calendar_server.requests == []


# -- moving events (rescheduled sessions) -------------------------------------------------------


def a_move(session: CalendarSession, hours: int = 26, **overrides: object) -> calendar.EventMove:
    fields: dict[str, object] = {"calendar_id": session.calendar_id, "event_id": session.id.hex,
                                 "starts_at": session.starts_at + timedelta(hours=hours),
                                 "ends_at": session.ends_at + timedelta(hours=hours)}
    fields.update(overrides)
    return calendar.EventMove(**fields)  # type: ignore[arg-type]


def test_a_patch_moves_the_event_in_place_sending_only_its_times(calendar_env: CalendarEnv) -> None:
    server = calendar_env.server
    session = a_session()
    calendar.create_session_event(session)
    move = a_move(session)

    result = calendar.patch_session_event(move)

    assert (result.outcome, result.event_id) == ("patched", session.id.hex)
    [patch] = server.api_calls("PATCH")
    assert patch.path.endswith(f"/events/{session.id.hex}") and patch.query["sendUpdates"] == ["none"]
    assert patch.json() == {"start": {"dateTime": move.starts_at.isoformat()},
                            "end": {"dateTime": move.ends_at.isoformat()}}
    event = server.events(CALENDAR_ID)[session.id.hex]
    assert (event["start"]["dateTime"], event["summary"]) == (move.starts_at.isoformat(),
                                                               "Therapy session TB-7Q4K-2M9X")
    assert list(server.events(CALENDAR_ID)) == [session.id.hex]


def test_patching_an_event_that_is_gone_or_never_existed_is_done(calendar_env: CalendarEnv) -> None:
    deleted, never = a_session(), a_session()
    calendar.create_session_event(deleted)
    calendar.delete_session_event(CALENDAR_ID, deleted.id.hex)

    assert calendar.patch_session_event(a_move(deleted)).outcome == "already_gone"
    assert calendar.patch_session_event(a_move(never)).outcome == "already_gone"
    assert [c.status for c in calendar_env.server.api_calls("PATCH")] == [410, 404]
    assert calendar_env.server.events(CALENDAR_ID) == {}, "a patch never re-creates an event"


def test_a_patch_failing_on_every_try_raises_a_retryable_calendar_error(calendar_env: CalendarEnv) -> None:
    session = a_session()
    calendar.create_session_event(session)
    calendar_env.server.fail(503, times=None, method="PATCH")

    with pytest.raises(CalendarError) as raised:
        calendar.patch_session_event(a_move(session))

    assert raised.value.retryable and raised.value.upstream_status == 503
    assert len(calendar_env.server.api_calls("PATCH")) == 1 + NUM_RETRIES
    assert calendar_env.server.events(CALENDAR_ID)[session.id.hex]["start"]["dateTime"] == STARTS_AT.isoformat()


def test_a_patch_with_its_end_before_its_start_is_refused_before_anything_is_sent(calendar_env: CalendarEnv) -> None:
    session = a_session()

    with pytest.raises(ValueError):
        calendar.patch_session_event(a_move(session, ends_at=session.starts_at))

    assert calendar_env.server.requests == []


def test_batch_patch_reports_each_item_and_treats_gone_as_success(calendar_env: CalendarEnv) -> None:
    live, gone = a_session(), a_session()
    calendar.create_session_event(live)
    calendar_env.server.fail(500, times=1, method="PATCH")  # the first part fails once, then is re-sent

    results = calendar.patch_events_batch([a_move(live), a_move(gone)])

    assert [(r.event_id, r.outcome, r.ok) for r in results] == [(live.id.hex, "patched", True),
                                                                (gone.id.hex, "already_gone", True)]
    assert calendar_env.server.events(CALENDAR_ID)[live.id.hex]["start"]["dateTime"] == \
        (STARTS_AT + timedelta(hours=26)).isoformat()
    assert len(calendar_env.server.batch_requests()) == 2


def test_a_patch_with_delegation_acts_as_the_specialist_and_without_an_email_sends_nothing(
        calendar_env: CalendarEnv) -> None:
    calendar_env.set(GOOGLE_CALENDAR_DELEGATE="true")
    session = a_session(calendar_id="primary", specialist_email="dr.ines@practice.example")
    calendar.create_session_event(session)

    calendar.patch_session_event(a_move(session, specialist_email="dr.ines@practice.example"))
    with pytest.raises(CalendarError, match="no specialist email"):
        calendar.patch_session_event(a_move(session))

    assert {grant["sub"] for grant in calendar_env.server.token_grants} == {"dr.ines@practice.example"}
    assert len(calendar_env.server.api_calls("PATCH")) == 1
