"""The outbox side of sending: claiming due messages, reading what they need,
and recording each outcome (private.email_outbox, sql/0050_notifications.sql).

A claim is a short transaction: the oldest due pending rows are locked with
``for update skip locked`` (a concurrent run takes others) and leased, by
moving their ``next_attempt_at`` a few minutes ahead, so a run that dies
mid-way leaves them to the next one. Each message is then sent in its own
transaction, which first locks its session row (``for share``): a
cancellation that commits before it is seen (the reminder is skipped), and one
that comes after waits the milliseconds the send takes. The outcome is written
in that same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from shared.notifications.render import Message

LEASE = timedelta(minutes=5)
MAX_BACKOFF = timedelta(hours=1)

CLAIM_QUERY = """
with due as (
  select id from private.email_outbox
  where status = 'pending' and next_attempt_at <= now()
  order by next_attempt_at
  limit %(limit)s
  for update skip locked
)
update private.email_outbox o
   set attempts = o.attempts + 1, next_attempt_at = now() + %(lease)s
  from due
 where o.id = due.id
returning o.id
"""

DETAILS_QUERY = """
select o.id, o.kind, o.session_id, o.for_starts_at, o.offset_minutes, o.ics_sequence, o.attempts,
       case when o.recipient_id = s.client_id then 'client' else 'specialist' end as audience,
       u.email as recipient_email,
       coalesce(me.full_name, '') as recipient_name,
       coalesce(me.timezone, 'UTC') as recipient_timezone,
       coalesce(other.full_name, '') as other_party_name,
       s.booking_reference,
       o.for_starts_at + (s.ends_at - s.starts_at) as for_ends_at
from private.email_outbox o
join public.sessions s on s.id = o.session_id
left join auth.users u on u.id = o.recipient_id
left join public.profiles me on me.id = o.recipient_id
left join public.profiles other
       on other.id = case when o.recipient_id = s.client_id then s.specialist_id else s.client_id end
where o.id = any(%(ids)s)
order by o.id
"""

# Locks the session for the length of one send, and says whether the message still stands.
CHECK_QUERY = """
select s.status, s.starts_at, s.starts_at <= now() as started,
       exists (select 1 from private.email_outbox r
               where r.kind = 'reminder' and r.session_id = s.id and r.for_starts_at = %(for_starts_at)s
                 and r.offset_minutes < %(offset)s) as superseded
from public.sessions s
where s.id = %(session_id)s
for share of s
"""

STATS_QUERY = """
select (select count(*) from private.email_outbox where status = 'pending') as backlog,
       (select min(created_at) from private.email_outbox where status = 'pending') as oldest_unsent_at,
       (select count(*) from private.email_outbox
        where status = 'failed' and created_at > now() - interval '7 days') as refused_7d
"""


@dataclass(frozen=True)
class Claimed:
    """A claimed outbox row with what its email needs."""

    message: Message
    offset_minutes: int | None
    attempts: int  # including this one


def backoff(attempts: int) -> timedelta:
    """1, 2, 4, … minutes after each failed attempt, at most an hour."""
    return min(timedelta(minutes=2 ** min(max(attempts - 1, 0), 6)), MAX_BACKOFF)


def queue_due_reminders(conn: psycopg.Connection) -> int:
    return conn.execute("select private.queue_due_reminders() as queued").fetchone()["queued"]


def claim(conn: psycopg.Connection, limit: int) -> list[Claimed]:
    """Leases up to `limit` due messages (committed by the caller's transaction) and reads them."""
    ids = [row["id"] for row in conn.execute(CLAIM_QUERY, {"limit": limit, "lease": LEASE}).fetchall()]
    if not ids:
        return []
    claimed = []
    rows = conn.execute(DETAILS_QUERY, {"ids": ids}).fetchall()
    for orphan in set(ids) - {row["id"] for row in rows}:
        record_final(conn, orphan, "skipped", "The session does not exist.")
    for row in rows:
        other = row["other_party_name"] or ("your specialist" if row["audience"] == "client" else "your client")
        claimed.append(Claimed(
            message=Message(
                id=row["id"], kind=row["kind"], session_id=row["session_id"], audience=row["audience"],
                recipient_email=row["recipient_email"] or "", recipient_name=row["recipient_name"] or "there",
                recipient_timezone=row["recipient_timezone"], other_party_name=other,
                booking_reference=row["booking_reference"], starts_at=row["for_starts_at"],
                ends_at=row["for_ends_at"], ics_sequence=row["ics_sequence"],
            ),
            offset_minutes=row["offset_minutes"], attempts=row["attempts"],
        ))
    return claimed


def reason_to_skip(conn: psycopg.Connection, claimed: Claimed) -> str | None:
    """Locks the session; why the message must not be sent now, or None."""
    message = claimed.message
    state = conn.execute(CHECK_QUERY, {"session_id": message.session_id, "for_starts_at": message.starts_at,
                                       "offset": claimed.offset_minutes}).fetchone()
    if state is None:
        return "The session does not exist."
    if message.kind == "booking_cancelled":
        return None  # a cancellation notice always goes
    if state["status"] != "confirmed":
        return "The session was cancelled."
    if state["starts_at"] != message.starts_at:
        return "The session has moved."
    if state["started"]:
        return "The session has started."
    if state["superseded"]:
        return "A later reminder for this session replaces it."
    return None


def record_sent(conn: psycopg.Connection, outbox_id: int) -> None:
    conn.execute("update private.email_outbox set status = 'sent', sent_at = now(), last_error = null "
                 "where id = %s", [outbox_id])


def record_final(conn: psycopg.Connection, outbox_id: int, status: str, reason: str) -> None:
    """skipped (no longer needed) or failed (refused for good): never tried again."""
    conn.execute("update private.email_outbox set status = %s, last_error = %s where id = %s",
                 [status, reason[:500], outbox_id])


def record_retry(conn: psycopg.Connection, outbox_id: int, attempts: int, error: str) -> None:
    conn.execute("update private.email_outbox set next_attempt_at = now() + %s, last_error = %s where id = %s",
                 [backoff(attempts), error[:500], outbox_id])


def release(conn: psycopg.Connection, claimed: list[Claimed], error: str) -> None:
    """Messages claimed but not tried (the server went away): due again after their backoff."""
    for item in claimed:
        record_retry(conn, item.message.id, item.attempts, error)


def stats(conn: psycopg.Connection) -> dict[str, object]:
    row = conn.execute(STATS_QUERY).fetchone()
    oldest: datetime | None = row["oldest_unsent_at"]
    return {"backlog": row["backlog"], "oldest_unsent_at": oldest.isoformat() if oldest else None,
            "refused_7d": row["refused_7d"]}


def session_messages(conn: psycopg.Connection, session_id: uuid.UUID) -> list[dict]:
    """Every outbox row of one session, oldest first (operators and tests)."""
    return conn.execute("select * from private.email_outbox where session_id = %s order by id",
                        [session_id]).fetchall()
