"""Cancelling from the emailed link (token-cancel), with no login.

Mail scanners open every link, so opening it (GET) only shows the session, a
button and the free times to move it to; only a POST from that page cancels
(or, with ``action=reschedule`` and a chosen ``starts_at``, moves the session:
shared/rescheduling/link.py). The link proves it was issued
for the session's client, so the cancellation is recorded in the client's name.

Guessing is slowed down without locking anyone out: a validly signed link is
always honoured; only invalid links are counted, per address (an IPv6 client
per /64, the block one subscriber gets), and an address with too many recent
failures gets 429 for further invalid links, without any session lookup. The
body is capped at MAX_BODY_BYTES before it is read (the form holds one token).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import flask

from shared import cancellation, db, monitoring, pages
from shared.errors import AlreadyCancelled, BookingInPast, CancellationTooLate, NotFound, PayloadTooLarge
from shared.inputs import limit_body, read_body, settle_body
from shared.links import session_id_from_token
from shared.rescheduling import link as link_reschedule
from shared.settings import get_settings

MAX_FAILURES = 10  # invalid links per address …
FAILURE_WINDOW_MINUTES = 15  # … within this many minutes
LINK_REASON = "Cancelled by the client through the emailed link"
MAX_BODY_BYTES = 1024  # the forms send one token of at most 200 characters (and an action and a time)
IPV6_PREFIX = 64


@dataclass(frozen=True)
class Page:
    status: int
    html: str


def address_block(address: str) -> str:
    """What failures are counted by: an IPv4 address, or the /64 of an IPv6 one
    (rotating inside its own /64 is free for a client, so it must not reset the count)."""
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_PREFIX), strict=False))
    return str(parsed)


def _client_key(address: str) -> str:
    secret = get_settings().require("cancellation_link_secret").encode()
    return hmac.new(secret, f"address:{address_block(address)}".encode(), hashlib.sha256).hexdigest()[:32]


def _too_many_failures(conn, key: str) -> bool:
    row = conn.execute(
        """select count(*) as failures from private.cancel_link_failures
           where client_key = %s and failed_at > now() - make_interval(mins => %s)""",
        [key, FAILURE_WINDOW_MINUTES],
    ).fetchone()
    return row["failures"] >= MAX_FAILURES


def _record_failure(key: str) -> None:
    with db.transaction() as conn:
        conn.execute("insert into private.cancel_link_failures (client_key) values (%s)", [key])
        conn.execute("delete from private.cancel_link_failures where failed_at < now() - interval '1 day'")


def _facts(row: dict) -> pages.SessionFacts:
    zone = ZoneInfo(row["timezone"])
    start, end = row["starts_at"].astimezone(zone), row["ends_at"].astimezone(zone)
    return pages.SessionFacts(
        date=f"{start:%A} {start.day} {start:%B %Y}",
        time=f"{start:%H:%M}–{end:%H:%M} ({row['timezone']})",
        specialist_name=row["specialist_name"] or "your specialist",
    )


SESSION_QUERY = """
select s.id, s.client_id, s.status, s.starts_at, s.ends_at, c.timezone, sp.full_name as specialist_name,
       s.google_calendar_event_id is not null as has_calendar_event,
       s.specialist_id, sp.timezone as specialist_timezone
from public.sessions s
join public.profiles c on c.id = s.client_id
join public.profiles sp on sp.id = s.specialist_id
where s.id = %s
"""


def handle(token: str | None, address: str, confirm: bool, action: str | None = None,
           choice: str | None = None) -> Page:
    """Shows (``confirm`` False) or cancels (``confirm`` True) the session of a link; with
    ``action`` "reschedule", moves it to start at ``choice`` instead."""
    session_id = session_id_from_token(token or "")
    if session_id is None:  # an invalid link: counted, and refused outright past the limit
        key = _client_key(address)
        with db.transaction() as conn:
            if _too_many_failures(conn, key):
                return Page(429, pages.too_many_attempts())
        _record_failure(key)
        return Page(404, pages.invalid_link())
    with db.transaction() as conn:
        row = conn.execute(SESSION_QUERY, [session_id]).fetchone()
    if row is None:  # pragma: no cover - signed by us for a session that never existed: not a guess
        return Page(404, pages.invalid_link())
    monitoring.tag_session(session_id)
    facts = _facts(row)
    if row["status"] == "cancelled":
        return Page(409, pages.already_cancelled(facts))
    if row["starts_at"] <= datetime.now(timezone.utc):
        return Page(409, pages.already_started(facts))
    if not confirm:
        # The rules are the database's: ask it whether the cancellation would be
        # accepted now (the client's minimum notice) before offering the button.
        with db.transaction(actor_id=row["client_id"], channel="token-cancel") as conn:
            refused = cancellation.refusal_of(conn, session_id, cancelled_by=row["client_id"])
        if isinstance(refused, CancellationTooLate):
            return Page(409, pages.too_late(facts, refused.message))
        return Page(200, pages.confirm(facts, token or "", move_days=link_reschedule.offer(row),
                                       days_ahead=link_reschedule.DAYS_AHEAD))
    if action == "reschedule":
        return Page(*link_reschedule.move(row, token or "", choice, _facts))
    if action not in (None, "cancel"):  # only the page's two forms change anything
        return Page(400, pages.method_not_allowed())
    try:
        with db.transaction(actor_id=row["client_id"], channel="token-cancel") as conn:
            cancellation.cancel_session(conn, session_id, cancelled_by=row["client_id"], reason=LINK_REASON)
    except AlreadyCancelled:
        return Page(409, pages.already_cancelled(facts))
    except BookingInPast:
        return Page(409, pages.already_started(facts))
    except CancellationTooLate as refused:
        return Page(409, pages.too_late(facts, refused.message))
    except NotFound:  # pragma: no cover - the row was just read; sessions are never deleted
        return Page(404, pages.invalid_link())
    cancellation.after_commit(session_id)
    return Page(200, pages.cancelled(facts, calendar_event=row["has_calendar_event"]))


def client_address(request) -> str:
    """The caller's address. With TRUSTED_PROXY_HOPS = N, the Nth entry from the right
    of X-Forwarded-For (the one our own front end appended, which the caller cannot
    forge); with 0 (the default), the socket's peer, ignoring the header."""
    hops_trusted = get_settings().trusted_proxy_hops
    if hops_trusted:
        hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
        if len(hops) >= hops_trusted:
            return hops[-hops_trusted]
    return request.remote_addr or "unknown"


def respond(request) -> flask.Response:
    """The HTTP side: GET shows, POST (the page's form) cancels; every answer is a page."""
    with monitoring.scope("token-cancel"):
        try:
            limit_body(request, MAX_BODY_BYTES)  # before anything reads it
            if request.method not in ("GET", "POST"):
                page = Page(405, pages.method_not_allowed())
            else:
                page = handle(_token(request), client_address(request), confirm=request.method == "POST",
                              action=_form_field(request, "action"), choice=_form_field(request, "starts_at"))
        except PayloadTooLarge:
            page = Page(413, pages.too_large())
        except Exception as exc:  # the caller gets a page; we get the report
            monitoring.record_error(exc, "INTERNAL_ERROR")
            page = Page(500, pages.server_error())
        finally:
            settle_body(request)
            monitoring.flush()
    headers = dict(pages.SECURITY_HEADERS)
    if page.status == 405:
        headers["Allow"] = "GET, POST"
    return flask.Response(page.html, status=page.status, headers=headers)


def _form_field(request, name: str) -> str | None:
    """A field of the page's form (POST only; the body was read within MAX_BODY_BYTES by _token)."""
    if request.method != "POST":
        return None
    value = request.form.get(name)
    return value[:100] if value else None


def _token(request) -> str | None:
    """The link's token: the form's (POST, read within MAX_BODY_BYTES) or the query's."""
    if request.method != "POST":
        return request.args.get("token")
    read_body(request)  # within the cap; the form is parsed from what was read
    try:
        token = request.form.get("token")
    except Exception as exc:  # werkzeug's 413 if the form was larger after all
        if getattr(exc, "code", None) == 413:
            raise PayloadTooLarge() from None
        raise
    return token or request.args.get("token")
