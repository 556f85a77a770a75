"""Turning one outbox row into an email: subject, plain text and HTML from the
template files (Jinja2; HTML autoescaped, so a name is always text), and, for
confirmations, moves and cancellations, an iCalendar invitation.

What an email may say: the date and time in the recipient's timezone, the other
party's name, the booking reference and (to the client) the cancellation link.
Never a note, the session type or special requests: the row handed to the
templates holds nothing else.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from email.message import Message as MimeMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, format_datetime, parseaddr
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import jinja2

from shared.links import cancellation_url

TEMPLATES = Path(__file__).parent / "templates"
PRODID = "-//Therapy booking//Sessions//EN"

# Per kind: the subject and the iCalendar method of the attached invitation (None: no invitation).
KINDS = {
    "booking_confirmed": ("Your session on {when} is booked ({reference})", "REQUEST"),
    "session_moved": ("Your session has moved to {when} ({reference})", "REQUEST"),
    "booking_cancelled": ("Your session on {when} is cancelled ({reference})", "CANCEL"),
    "reminder": ("Reminder: your session on {when} ({reference})", None),
}

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    auto_reload=False,  # templates are part of the release; no stat() per email
)
# What may stand alone in a To header: one address, no spaces, quotes, brackets or line breaks.
_ADDRESS = re.compile(r"[^\s@<>,;:\"()\[\]\\]+@[^\s@<>,;:\"()\[\]\\]+")


@dataclass(frozen=True)
class Message:
    """One outbox row with what its email needs (read when it is sent)."""

    id: int
    kind: str
    session_id: uuid.UUID
    audience: str  # client or specialist
    recipient_email: str
    recipient_name: str
    recipient_timezone: str
    other_party_name: str  # the specialist for a client, the client for a specialist
    booking_reference: str
    starts_at: datetime  # the start this message is about
    ends_at: datetime
    ics_sequence: int


def sender_domain(email_from: str) -> str:
    address = parseaddr(email_from)[1]
    return address.rpartition("@")[2] or "localhost"


def message_id(outbox_id: int, email_from: str) -> str:
    """Derived from the outbox row: a retried send is the same message, never a second one."""
    return f"<notification-{outbox_id}@{sender_domain(email_from)}>"


def event_uid(session_id: uuid.UUID, email_from: str) -> str:
    """One UID per session, for both parties and every revision (RFC 5545)."""
    return f"session-{session_id}@{sender_domain(email_from)}"


def local_time(moment: datetime, zone_name: str) -> datetime:
    try:
        zone = ZoneInfo(zone_name)
    except (KeyError, ValueError):
        zone = ZoneInfo("UTC")
    return moment.astimezone(zone)


def when_text(moment: datetime) -> str:
    """'Tuesday 8 December 2026, 10:00' (English, whatever the machine's locale)."""
    days = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
    months = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December")
    return f"{days[moment.weekday()]} {moment.day} {months[moment.month - 1]} {moment.year}, {moment:%H:%M}"


def invitation(message: Message, email_from: str, method: str) -> bytes:
    """The .ics: METHOD:REQUEST (new or moved) or METHOD:CANCEL, same UID, growing SEQUENCE,
    times in the recipient's timezone with its VTIMEZONE."""
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", method)
    event = icalendar.Event()
    event.add("uid", event_uid(message.session_id, email_from))
    event.add("sequence", message.ics_sequence)
    event.add("dtstamp", datetime.now(timezone.utc))
    event.add("dtstart", local_time(message.starts_at, message.recipient_timezone))
    event.add("dtend", local_time(message.ends_at, message.recipient_timezone))
    event.add("summary", f"Session with {message.other_party_name} ({message.booking_reference})")
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    organizer = icalendar.vCalAddress(f"mailto:{parseaddr(email_from)[1]}")
    event.add("organizer", organizer)
    attendee = icalendar.vCalAddress(f"mailto:{message.recipient_email}")
    attendee.params["ROLE"] = icalendar.vText("REQ-PARTICIPANT")
    event.add("attendee", attendee)
    calendar.add_component(event)
    text = calendar.to_ical()
    starts = local_time(message.starts_at, message.recipient_timezone)
    if str(starts.tzinfo) == "UTC":  # UTC times are written with Z and need no definition
        return text
    # The zone's definition goes before the event (RFC 5545 allows any order; clients expect this one).
    head, marker, tail = text.partition(b"BEGIN:VEVENT")
    return head + _vtimezone(str(starts.tzinfo), starts.year) + marker + tail


@functools.lru_cache(maxsize=256)
def _vtimezone(zone_name: str, year: int) -> bytes:
    """The VTIMEZONE of a zone around `year`, serialized: its rules over the years that matter (not
    1970-2038, icalendar's default, which costs ~20 ms per email), once per zone, year and process."""
    component = icalendar.Timezone.from_tzinfo(ZoneInfo(zone_name), tzid=zone_name,
                                               first_date=date(year - 1, 1, 1), last_date=date(year + 2, 1, 1))
    return component.to_ical()


def compose(message: Message, email_from: str) -> MimeMessage:
    """The whole email for one outbox row: multipart/mixed of (plain text | HTML) and the .ics.

    Built with the compat32 MIME classes: the modern EmailMessage API parses every
    header it sets and made composing ten times slower.
    """
    if not _ADDRESS.fullmatch(message.recipient_email):
        raise ValueError("The recipient's address cannot be used in an email header.")
    subject_format, method = KINDS[message.kind]
    starts = local_time(message.starts_at, message.recipient_timezone)
    context = {
        "audience": message.audience,
        "recipient_name": message.recipient_name,
        "other_party_name": message.other_party_name,
        "booking_reference": message.booking_reference,
        "when": when_text(starts),
        "timezone": str(starts.tzinfo),
        "minutes": int((message.ends_at - message.starts_at).total_seconds() // 60),
        # Only the client may cancel by link; the specialist cancels in the app.
        "cancel_url": cancellation_url(message.session_id) if message.audience == "client" else None,
    }
    body = MIMEMultipart("alternative")
    body.attach(MIMEText(_environment.get_template(f"{message.kind}.txt").render(context), "plain", "utf-8"))
    body.attach(MIMEText(_environment.get_template(f"{message.kind}.html").render(context), "html", "utf-8"))
    if method is None:
        email: MimeMessage = body
    else:
        email = MIMEMultipart("mixed")
        email.attach(body)
        # As text with its charset declared: names come in any script.
        ics = MIMEText(invitation(message, email_from, method).decode("utf-8"), "calendar", "utf-8")
        ics.set_param("method", method)
        ics.add_header("Content-Disposition", "attachment", filename="session.ics")
        email.attach(ics)
    name, address = parseaddr(email_from)
    email["From"] = formataddr((name, address), charset="utf-8")
    email["To"] = message.recipient_email
    # No names in the subject: it is the one part mail clients show unescaped everywhere.
    email["Subject"] = subject_format.format(when=when_text(starts), reference=message.booking_reference)
    email["Message-ID"] = message_id(message.id, email_from)
    email["Date"] = format_datetime(datetime.now(timezone.utc))
    email["Auto-Submitted"] = "auto-generated"
    return email
