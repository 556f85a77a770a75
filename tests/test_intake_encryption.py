"""The intake forms' encryption: what the database holds, and how each failure
behaves (tampered ciphertext, swapped rows, a wrong key, rotated keys, a key
retired after re-encryption), the re-encryption command, and that no answer
reaches a database dump, a log or a Sentry event.
"""

from __future__ import annotations

import logging
import subprocess
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from shared.intake import reencrypt as reencryption
from shared.intake.keys import KeyRing, parse_keys
from shared.ops import cli
from shared.settings import SettingsError
from tests.functions_fixtures import (
    INTAKE_KEY_1, AppClient, FunctionClient, FunctionsEnv, ServedClient, bearer,
)
from tests.intake_support import (
    INTAKE_KEY_2, INTAKE_KEY_3, answers, audit_rows, form, insert_session, intake_app, read, stored, submit,
)
from tests.support import Person, create_person
from tests.test_sentry import CaptureTransport, sentry  # noqa: F401  (sentry is a fixture)

UNREADABLE = (500, "INTAKE_UNREADABLE")


@pytest.fixture(scope="module")
def _app() -> Any:
    return intake_app()


@pytest.fixture
def door(functions_env: FunctionsEnv, _app: Any) -> FunctionClient:
    """In this process, where the key ring can be changed (functions_env.set) and Sentry captured."""
    return AppClient(_app)


@pytest.fixture
def people(committed_db: psycopg.Connection, bookable_specialist) -> dict[str, Any]:
    specialist = bookable_specialist()
    client = create_person(committed_db, "client", full_name="Alice Client")
    other = create_person(committed_db, "client", full_name="Bob Client")
    return {"specialist": specialist.person, "client": client, "other": other}


def session_of(db: psycopg.Connection, people: dict[str, Any], client: str = "client", days: int = 3) -> uuid.UUID:
    return insert_session(db, people["specialist"].id, people[client].id, starts_in=timedelta(days=days))


def keys(*entries: tuple[int, str]) -> str:
    return ",".join(f"{version}:{key}" for version, key in entries)


# -- the key setting ----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, message", [
    ("", "entry 1 must be <version>:<base64 key>"),
    (f"one:{INTAKE_KEY_1}", "entry 1 has no whole version number"),
    (f"0:{INTAKE_KEY_1}", "entry 1: versions start at 1, got 0"),
    (f"1:{INTAKE_KEY_1},1:{INTAKE_KEY_2}", "key version 1 is listed twice"),
    ("1:c2hvcnQ=", "key version 1 must be 32 bytes, got 5"),
    ("1:not base64!", "key version 1 is not base64"),
])
def test_a_malformed_key_setting_names_the_entry_and_never_quotes_a_key(raw: str, message: str):
    with pytest.raises(SettingsError) as refused:
        parse_keys(raw)

    assert str(refused.value) == f"INTAKE_ENCRYPTION_KEYS: {message}"
    assert INTAKE_KEY_1 not in str(refused.value) and INTAKE_KEY_2 not in str(refused.value)


def test_the_newest_version_writes_and_url_safe_keys_are_accepted():
    url_safe = INTAKE_KEY_2.replace("+", "-").replace("/", "_").rstrip("=")
    ring = KeyRing(parse_keys(f" 2:{url_safe} , 1:{INTAKE_KEY_1}"))

    assert (ring.newest, ring.versions) == (2, (1, 2))
    assert parse_keys(f"2:{url_safe}")[2] == parse_keys(f"2:{INTAKE_KEY_2}")[2]


def test_without_keys_a_submission_is_a_bare_500_reported_with_the_settings_name_and_nothing_is_stored(
        sentry: CaptureTransport, door: FunctionClient, functions_env: FunctionsEnv,  # noqa: F811
        committed_db: psycopg.Connection, people):
    functions_env.set(INTAKE_ENCRYPTION_KEYS=None)
    session_id = session_of(committed_db, people)

    answer = submit(door, people["client"], form(session_id, marker="NO-KEY-MARKER"))

    assert (answer.status, answer.json()["error"]) == (500, "INTERNAL_ERROR")
    assert stored(committed_db) == []
    (event,) = sentry.events
    assert event["exception"]["values"][-1]["value"] == "INTAKE_ENCRYPTION_KEYS is not set; it is required here"
    assert "NO-KEY-MARKER" not in sentry.serialized()


# -- what the database holds, and what happens when it is altered --------------------------------------

def test_the_row_holds_nonce_ciphertext_and_key_version_but_no_answer(
        door: FunctionClient, committed_db: psycopg.Connection, people):
    session_id = session_of(committed_db, people)
    assert submit(door, people["client"], form(session_id, marker="MARKER-ROW")).status == 200

    (row,) = stored(committed_db)
    assert (row["key_version"], len(row["nonce"]), row["client_id"]) == (1, 12, people["client"].id)
    as_text = committed_db.execute("select f::text as t from public.intake_forms f").fetchone()["t"]
    assert "MARKER-ROW" not in as_text and "Sertraline" not in as_text
    assert b"Sertraline" not in bytes(row["ciphertext"])


def test_a_tampered_ciphertext_answers_intake_unreadable_and_is_not_audited(
        door: FunctionClient, committed_db: psycopg.Connection, people):
    session_id = session_of(committed_db, people)
    assert submit(door, people["client"], form(session_id)).status == 200
    committed_db.execute("update public.intake_forms set ciphertext = set_byte(ciphertext, 5, "
                         "get_byte(ciphertext, 5) # 1)")

    answer = read(door, people["specialist"], session_id)

    assert (answer.status, answer.json()["error"]) == UNREADABLE
    assert "answers" not in answer.json()
    assert audit_rows(committed_db, "intake_form_read") == []


def test_a_ciphertext_swapped_into_another_row_does_not_decrypt(
        door: FunctionClient, committed_db: psycopg.Connection, people):
    mine, theirs = session_of(committed_db, people), session_of(committed_db, people, "other", days=4)
    assert submit(door, people["client"], form(mine, marker="mine")).status == 200
    assert submit(door, people["other"], form(theirs, marker="theirs")).status == 200
    # Bob's row gets Alice's nonce and ciphertext: the associated data names Bob's session and Bob
    committed_db.execute(
        """update public.intake_forms t set nonce = m.nonce, ciphertext = m.ciphertext
           from public.intake_forms m where m.booking_id = %s and t.booking_id = %s""", [mine, theirs])

    assert (read(door, people["other"], theirs).status, read(door, people["other"], theirs).json()["error"]) == \
        UNREADABLE
    assert read(door, people["client"], mine).json()["answers"] == answers("mine")


def test_a_row_moved_to_another_session_does_not_decrypt(
        door: FunctionClient, committed_db: psycopg.Connection, people):
    first, second = session_of(committed_db, people), session_of(committed_db, people, days=5)
    assert submit(door, people["client"], form(first)).status == 200
    committed_db.execute("set session_replication_role = replica")  # past the guard, as an attacker with SQL
    committed_db.execute("update public.intake_forms set booking_id = %s", [second])
    committed_db.execute("set session_replication_role = origin")

    answer = read(door, people["client"], second)

    assert (answer.status, answer.json()["error"]) == UNREADABLE


def test_a_wrong_key_answers_intake_unreadable(door: FunctionClient, functions_env: FunctionsEnv,
                                               committed_db: psycopg.Connection, people):
    session_id = session_of(committed_db, people)
    assert submit(door, people["client"], form(session_id)).status == 200
    functions_env.set(INTAKE_ENCRYPTION_KEYS=keys((1, INTAKE_KEY_2)))  # version 1, but another key

    answer = read(door, people["client"], session_id)

    assert (answer.status, answer.json()["error"]) == UNREADABLE
    assert answer.json()["message"] == (
        f"The intake form of session {session_id} cannot be decrypted with key version 1: the key is wrong or "
        "the stored form was altered; the practice has been notified")


def test_after_rotation_new_forms_use_the_newest_key_and_old_ones_still_read(
        door: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection, people):
    old, new = session_of(committed_db, people), session_of(committed_db, people, days=4)
    assert submit(door, people["client"], form(old, marker="old")).status == 200
    functions_env.set(INTAKE_ENCRYPTION_KEYS=keys((1, INTAKE_KEY_1), (2, INTAKE_KEY_2)))

    assert submit(door, people["client"], form(new, marker="new")).status == 200

    versions = {row["booking_id"]: row["key_version"] for row in stored(committed_db)}
    assert versions == {old: 1, new: 2}
    assert read(door, people["client"], old).json()["answers"] == answers("old")
    assert read(door, people["client"], new).json()["answers"] == answers("new")
    assert submit(door, people["client"], form(old, marker="again")).status == 200  # a resubmission moves it too
    assert {row["key_version"] for row in stored(committed_db)} == {2}


def test_a_retired_key_makes_its_forms_unreadable_until_they_are_reencrypted(
        door: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection, people, caplog):
    sessions = [session_of(committed_db, people, days=day) for day in (3, 4, 5)]
    for index, session_id in enumerate(sessions):
        assert submit(door, people["client"], form(session_id, marker=str(index))).status == 200
    functions_env.set(INTAKE_ENCRYPTION_KEYS=keys((2, INTAKE_KEY_2)))  # version 1 retired too early

    early = read(door, people["client"], sessions[0])
    assert (early.status, early.json()["error"]) == UNREADABLE
    message = (f"The intake form of session {sessions[0]} cannot be decrypted: it was encrypted with key version 1, "
               "which is not configured; the practice has been notified")
    assert early.json()["message"] == message
    assert f"INTAKE_UNREADABLE: {message}" in caplog.text

    report = reencryption.reencrypt(functions_env.database_url, KeyRing(parse_keys(
        keys((1, INTAKE_KEY_1), (2, INTAKE_KEY_2)))), batch_size=2, log=lambda _line: None)

    assert (report.reencrypted, report.batches, report.complete) == (3, 2, True)
    assert {row["key_version"] for row in stored(committed_db)} == {2}
    for index, session_id in enumerate(sessions):  # with version 2 alone
        assert read(door, people["client"], session_id).json()["answers"] == answers(str(index))


# -- the re-encryption command --------------------------------------------------------------------------

def test_reencryption_resumes_after_an_interruption_and_is_idempotent(
        door: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection, people):
    sessions = [session_of(committed_db, people, days=2 + day) for day in range(5)]
    for session_id in sessions:
        assert submit(door, people["client"], form(session_id)).status == 200
    before = {row["id"]: bytes(row["ciphertext"]) for row in stored(committed_db)}
    ring = KeyRing(parse_keys(keys((1, INTAKE_KEY_1), (2, INTAKE_KEY_2))))

    def crash(line: str) -> None:
        raise KeyboardInterrupt(line)  # the operator's Ctrl-C, right after the first batch committed

    with pytest.raises(KeyboardInterrupt):
        reencryption.reencrypt(functions_env.database_url, ring, batch_size=2, log=crash)
    assert sorted(row["key_version"] for row in stored(committed_db)) == [1, 1, 1, 2, 2]

    resumed = reencryption.reencrypt(functions_env.database_url, ring, batch_size=2, log=lambda _line: None)
    again = reencryption.reencrypt(functions_env.database_url, ring, batch_size=2, log=lambda _line: None)

    assert (resumed.reencrypted, resumed.complete) == (3, True)
    assert (again.reencrypted, again.batches, again.complete) == (0, 0, True)
    after = {row["id"]: bytes(row["ciphertext"]) for row in stored(committed_db)}
    assert after.keys() == before.keys() and all(after[i] != before[i] for i in before)
    functions_env.set(INTAKE_ENCRYPTION_KEYS=keys((2, INTAKE_KEY_2)))
    assert all(read(door, people["client"], s).status == 200 for s in sessions)
    logged = audit_rows(committed_db, "intake_forms_reencrypted")
    assert [row["new_values"] for row in logged] == [
        {"rows": 3, "key_version": 2, "unreadable": 0}]  # the interrupted run committed its batch, not its summary


def test_reencryption_leaves_an_unreadable_form_alone_and_says_so(
        door: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection, people):
    good, bad = session_of(committed_db, people), session_of(committed_db, people, days=4)
    for session_id in (good, bad):
        assert submit(door, people["client"], form(session_id)).status == 200
    committed_db.execute("update public.intake_forms set ciphertext = set_byte(ciphertext, 0, "
                         "get_byte(ciphertext, 0) # 255) where booking_id = %s", [bad])
    ring = KeyRing(parse_keys(keys((1, INTAKE_KEY_1), (2, INTAKE_KEY_2))))

    report = reencryption.reencrypt(functions_env.database_url, ring, log=lambda _line: None)

    assert (report.reencrypted, report.unreadable, report.left_on_older_keys, report.complete) == (
        1, [bad], 1, False)
    assert {row["booking_id"]: row["key_version"] for row in stored(committed_db)} == {good: 2, bad: 1}


def test_the_command_line_reencrypts_and_exits_non_zero_while_forms_are_left(
        door: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection, people, capsys):
    sessions = [session_of(committed_db, people, days=day) for day in (3, 4)]
    for session_id in sessions:
        assert submit(door, people["client"], form(session_id)).status == 200
    committed_db.execute("update public.intake_forms set nonce = decode(repeat('00', 12), 'hex') "
                         "where booking_id = %s", [sessions[1]])
    functions_env.set(INTAKE_ENCRYPTION_KEYS=keys((1, INTAKE_KEY_1), (3, INTAKE_KEY_3)))

    status = cli.main(["--database-url", functions_env.database_url, "intake-reencrypt", "--batch-size", "1"])

    out, err = capsys.readouterr()
    assert status == 1
    assert "forms by key version before: {1: 2}; newest key: 3" in out
    assert "forms by key version after: {1: 1, 3: 1}" in out
    assert f"the intake form of session {sessions[1]} cannot be decrypted" in err
    assert "1 form(s) still under an older key" in err

    committed_db.execute("delete from public.intake_forms where booking_id = %s", [sessions[1]])
    assert cli.main(["--database-url", functions_env.database_url, "intake-reencrypt"]) == 0
    assert "every form is under key version 3" in capsys.readouterr().out


# -- nothing in clear anywhere ---------------------------------------------------------------------------------

def test_no_answer_reaches_a_database_dump_a_log_or_a_sentry_event(
        sentry: CaptureTransport, door: FunctionClient, functions_env: FunctionsEnv,  # noqa: F811
        committed_db: psycopg.Connection, people, served_functions, pg_cluster, bookable_specialist, caplog):
    marker = f"MARKER-{uuid.uuid4().hex}"
    control = f"CONTROL-{uuid.uuid4().hex}"  # written in clear on purpose: the dump must show it
    caplog.set_level(logging.DEBUG)
    client, specialist = people["client"], people["specialist"]
    in_process, resubmitted, tampered = (session_of(committed_db, people, days=d) for d in (3, 4, 5))
    served = ServedClient(served_functions.base_url, "intake-form")

    # in this process (Sentry captured): submit, resubmit, read, a refused submission, a tampered read
    assert submit(door, client, form(in_process, marker)).status == 200
    assert submit(door, client, form(resubmitted, marker)).status == 200
    assert submit(door, client, form(resubmitted, marker + "-2")).status == 200
    assert read(door, specialist, in_process).json()["answers"] == answers(marker)
    refused = submit(door, client, form(in_process, marker, consents={"treatment": True}))
    assert refused.status == 400
    assert submit(door, client, form(tampered, marker)).status == 200
    committed_db.execute("update public.intake_forms set ciphertext = set_byte(ciphertext, 3, 0) "
                         "where booking_id = %s", [tampered])
    assert read(door, specialist, tampered).status == 500
    # through the served process: a submission, a read, and a booking that carries its intake
    over_http = session_of(committed_db, people, days=6)
    assert submit(served, client, form(over_http, marker)).status == 200
    assert read(served, specialist, over_http).status == 200
    bookable = bookable_specialist(full_name="Dr Booked")
    booked = ServedClient(served_functions.base_url, "booking-create").post_json(
        {"specialist_id": str(bookable.id), "starts_at": bookable.slot(days_ahead=7).isoformat(),
         "special_requests": control, "intake": {"answers": answers(marker), "consents": form(in_process)["consents"]}},
        headers=bearer(client))
    assert booked.status == 200, booked.json()

    dump = subprocess.run([pg_cluster.binaries.tool("pg_dump"), "--dbname", functions_env.database_url],
                          capture_output=True, text=True, check=True).stdout
    assert control in dump and str(over_http) in dump, "the dump holds the data written in clear"
    assert marker not in dump
    assert "Sertraline" not in dump and "panic attacks" not in dump
    assert len(stored(committed_db)) == 5
    assert sentry.events, "the tampered read is an event"
    assert marker not in sentry.serialized()
    assert all(marker not in str(crumb) for crumb in sentry.breadcrumbs)
    assert marker not in caplog.text
    assert marker not in "".join(served_functions.log)
    assert marker not in pg_cluster.logfile.read_text(errors="replace")


def test_an_unreadable_form_is_one_sentry_event_tagged_without_any_answer(
        sentry: CaptureTransport, door: FunctionClient, committed_db: psycopg.Connection, people):  # noqa: F811
    session_id = session_of(committed_db, people)
    assert submit(door, people["client"], form(session_id, marker="SECRET-SYMPTOM")).status == 200
    committed_db.execute("update public.intake_forms set nonce = decode(repeat('01', 12), 'hex')")

    answer = read(door, people["specialist"], session_id)

    assert (answer.status, answer.json()["error"]) == UNREADABLE
    (event,) = sentry.events
    assert dict(event["tags"]) == {"function": "intake-form", "session_id": str(session_id),
                                   "error_code": "INTAKE_UNREADABLE"}
    assert event["exception"]["values"][-1]["type"] == "IntakeUnreadable"
    assert event["exception"]["values"][-1]["value"] == (
        f"The intake form of session {session_id} cannot be decrypted with key version 1: the key is wrong or "
        "the stored form was altered; the practice has been notified")
    assert "SECRET-SYMPTOM" not in sentry.serialized() and "Sertraline" not in sentry.serialized()
