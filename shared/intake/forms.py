"""Submitting and reading intake forms.

Submitting (intake-form POST, or booking-create's optional ``intake`` in the
booking's own transaction): only the session's client, while the session is
confirmed and has not started (the database's trigger holds the same rule at
every door). A new submission replaces the previous one in place: the row gets a
fresh nonce and ciphertext under the newest key and its revision goes up by
one; the older answers are not kept (see README, "Intake forms").

Reading (intake-form GET): the session's client or specialist. Each successful
read writes an audit_log row (action ``intake_form_read``: who, in which role,
which session, when) in the same transaction as the read, so an answer is never
sent without its audit row. Anyone else, admins included, hears NOT_FOUND,
exactly as for a session that does not exist.

Audit rows and Sentry events name sessions, revisions and key versions, never
an answer.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from shared import db, monitoring
from shared.auth import Caller
from shared.errors import AlreadyCancelled, BookingInPast, NotFound
from shared.intake.answers import CONSENTS, IntakeSubmission, SubmitRequest
from shared.intake.keys import Sealed, key_ring

CHANNEL = "intake-form"

# SQLSTATEs raised by private.guard_intake_form() (sql/0040_intake_forms.sql).
_REFUSALS = {
    "TB001": lambda session_id: NotFound(f"No session with id {session_id} among yours"),
    "TB002": lambda session_id: AlreadyCancelled(
        f"Session {session_id} is cancelled; its intake form can no longer be submitted"),
    "TB003": lambda session_id: BookingInPast(f"Session {session_id} has started; its intake form is frozen"),
}

UPSERT = """
insert into public.intake_forms as f
  (booking_id, client_id, consent_treatment, consent_confidentiality, consent_data_processing,
   key_version, nonce, ciphertext)
values (%(booking_id)s, %(client_id)s, true, true, true, %(key_version)s, %(nonce)s, %(ciphertext)s)
on conflict (booking_id) do update
  set key_version = excluded.key_version, nonce = excluded.nonce, ciphertext = excluded.ciphertext,
      consent_treatment = true, consent_confidentiality = true, consent_data_processing = true,
      revision = f.revision + 1, submitted_at = now()
returning revision, submitted_at, key_version
"""

READ = """
select s.id, s.client_id, s.specialist_id, f.key_version, f.nonce, f.ciphertext, f.revision, f.submitted_at,
       f.consent_treatment, f.consent_confidentiality, f.consent_data_processing
from public.sessions s left join public.intake_forms f on f.booking_id = s.id
where s.id = %s
"""

AUDIT = """
insert into public.audit_log (action, actor_id, actor_role, entity_type, entity_id, new_values)
values (%s, %s, %s, 'session', %s, %s)
"""


def plaintext(answers: dict[str, Any]) -> bytes:
    return json.dumps({"answers": answers}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def store(conn: psycopg.Connection, booking_id: uuid.UUID, client_id: uuid.UUID,
          intake: IntakeSubmission, *, actor_role: str = "client") -> dict[str, Any]:
    """Encrypts and stores (or replaces) the session's form in the caller's transaction,
    with its audit row; the session's rules are the trigger's (mapped to our errors)."""
    sealed = key_ring().seal(plaintext(intake.answers), booking_id, client_id)
    try:
        with conn.transaction():  # a savepoint: a refused write leaves the outer transaction usable
            row = conn.execute(UPSERT, {"booking_id": booking_id, "client_id": client_id,
                                        "key_version": sealed.key_version, "nonce": sealed.nonce,
                                        "ciphertext": sealed.ciphertext}).fetchone()
    except psycopg.Error as exc:
        refusal = _REFUSALS.get(exc.sqlstate or "")
        if refusal is None:
            raise
        raise refusal(booking_id) from None
    conn.execute(AUDIT, ["intake_form_submitted", client_id, actor_role, booking_id,
                         Jsonb({"revision": row["revision"], "key_version": row["key_version"]})])
    return row


def store_with_booking(conn: psycopg.Connection, session_id: uuid.UUID, client_id: uuid.UUID,
                       intake: IntakeSubmission | None) -> None:
    """booking-create's hook: the optional form, in the booking's transaction (nothing
    is stored when the booking is refused, since the whole transaction rolls back)."""
    if intake is not None:
        store(conn, session_id, client_id, intake)


def submit(caller: Caller, request: SubmitRequest, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(timezone.utc)
    with db.transaction(actor_id=caller.user_id, channel=CHANNEL) as conn:
        session = conn.execute(
            "select id, client_id, status, starts_at from public.sessions where id = %s for share",
            [request.booking_id]).fetchone()
        if session is None or session["client_id"] != caller.user_id:
            raise NotFound(f"No session with id {request.booking_id} among yours")
        monitoring.tag_session(session["id"])
        if session["status"] == "cancelled":
            raise AlreadyCancelled(f"Session {session['id']} is cancelled; its intake form can no longer be "
                                   "submitted")
        if session["starts_at"] <= now:
            raise BookingInPast(f"Session {session['id']} has started; its intake form is frozen")
        row = store(conn, session["id"], caller.user_id, request.intake)
    return {"success": True, "booking_id": str(request.booking_id), "revision": row["revision"],
            "submitted_at": row["submitted_at"].isoformat()}


def read(caller: Caller, booking_id: uuid.UUID) -> dict[str, Any]:
    with db.transaction(actor_id=caller.user_id, channel=CHANNEL) as conn:
        row = conn.execute(READ, [booking_id]).fetchone()
        if row is None or caller.user_id not in (row["client_id"], row["specialist_id"]):
            raise NotFound(f"No session with id {booking_id} among yours")
        monitoring.tag_session(booking_id)
        if row["ciphertext"] is None:
            raise NotFound(f"Session {booking_id} has no intake form yet")
        sealed = Sealed(row["key_version"], row["nonce"], row["ciphertext"])
        answers = json.loads(key_ring().open(sealed, booking_id, row["client_id"]))["answers"]
        role = "client" if caller.user_id == row["client_id"] else "specialist"
        conn.execute(AUDIT, ["intake_form_read", caller.user_id, role, booking_id,
                             Jsonb({"revision": row["revision"]})])
    return {
        "success": True,
        "booking_id": str(booking_id),
        "answers": answers,
        "consents": {name: row[f"consent_{name}"] for name in CONSENTS},
        "revision": row["revision"],
        "submitted_at": row["submitted_at"].isoformat(),
    }
