"""The token-cancel pages: plain server-rendered HTML that works without
JavaScript, escapes everything it shows, and reads well on a phone. The
session's page has two forms: cancel, and move to one of the free times listed
(one folded <details> per day).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

SECURITY_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    # No scripts at all; the one form posts back to this same URL.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",  # the link is a credential; never pass it on
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
}

_STYLE = """
body{margin:0;font:17px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;background:#f5f7fa}
main{max-width:32rem;margin:0 auto;padding:2rem 1.25rem}
.card{background:#fff;border-radius:12px;padding:1.5rem;box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{font-size:1.4rem;line-height:1.3;margin:0 0 1rem}
dl{margin:0 0 1.25rem}dt{font-weight:600;color:#52606d;font-size:.9rem}dd{margin:0 0 .75rem}
form{margin:0 0 1rem}
button{width:100%;padding:.9rem;font:inherit;font-size:1.05rem;font-weight:600;border:0;border-radius:8px;background:#c62828;color:#fff;cursor:pointer}
p{margin:0 0 1rem}.note{color:#52606d;font-size:.95rem}
h2{font-size:1.15rem;margin:1.75rem 0 .75rem;padding-top:1.25rem;border-top:1px solid #e4e7eb}
details{border:1px solid #cbd2d9;border-radius:8px;margin:0 0 .5rem;padding:.25rem .75rem}
summary{padding:.6rem 0;font-weight:600;cursor:pointer}
label.slot{display:block;padding:.65rem .25rem;border-top:1px solid #e4e7eb}label.slot input{margin-right:.6rem}
button.move{background:#1f5fa8;margin-top:.75rem}
.alert{background:#fff4e5;border-left:4px solid #c05621;padding:.75rem;margin:0 0 1rem}
"""


@dataclass(frozen=True)
class SessionFacts:
    """What the pages show about a session, already formatted in the reader's timezone."""

    date: str  # e.g. "Tuesday 1 December 2026"
    time: str  # e.g. "10:00–10:50 (Europe/London)"
    specialist_name: str


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><div class=\"card\"><h1>{escape(title)}</h1>{body}</div></main></body></html>"
    )


def _facts(session: SessionFacts) -> str:
    return (
        "<dl>"
        f"<dt>Date</dt><dd>{escape(session.date)}</dd>"
        f"<dt>Time</dt><dd>{escape(session.time)}</dd>"
        f"<dt>With</dt><dd>{escape(session.specialist_name)}</dd>"
        "</dl>"
    )


@dataclass(frozen=True)
class SlotDay:
    """One day of free times to move a session to, in the reader's timezone."""

    label: str  # e.g. "Monday 7 December"
    slots: tuple[tuple[str, str], ...]  # (the start as sent back, e.g. 2026-12-07T10:00:00+00:00; "10:00–10:50")


def _move_form(token: str, days: tuple[SlotDay, ...] | None, days_ahead: int) -> str:
    """The "Reschedule" part: the free times of the coming days, one form that moves the session."""
    if days is None:
        return ""
    heading = "<h2>Or move it to another time</h2>"
    if not days:
        return heading + f"<p>No other time is free in the next {days_ahead} days. Please contact your specialist.</p>"
    choices = "".join(
        f"<details{' open' if index == 0 else ''}><summary>{escape(day.label)}</summary>"
        + "".join(f"<label class=\"slot\"><input type=\"radio\" name=\"starts_at\" "
                  f"value=\"{escape(value, quote=True)}\" required> {escape(shown)}</label>"
                  for value, shown in day.slots)
        + "</details>"
        for index, day in enumerate(days))
    return (
        heading
        + "<form method=\"post\">"
        f"<input type=\"hidden\" name=\"token\" value=\"{escape(token, quote=True)}\">"
        "<input type=\"hidden\" name=\"action\" value=\"reschedule\">"
        + choices
        + "<button type=\"submit\" class=\"move\">Move my session to this time</button></form>"
        "<p class=\"note\">Times are in your timezone. Your session keeps its length; "
        "nothing changes until you press the button.</p>"
    )


def confirm(session: SessionFacts, token: str, *, move_days: tuple[SlotDay, ...] | None = None,
            days_ahead: int = 14) -> str:
    return _page(
        "Cancel this session?",
        _facts(session)
        + "<form method=\"post\">"
        f"<input type=\"hidden\" name=\"token\" value=\"{escape(token, quote=True)}\">"
        "<button type=\"submit\">Yes, cancel this session</button></form>"
        "<p class=\"note\">Nothing changes until you press the button. No refund is processed.</p>"
        + _move_form(token, move_days, days_ahead),
    )


def choose_again(title: str, reason: str, session: SessionFacts, token: str, move_days: tuple[SlotDay, ...],
                 days_ahead: int = 14) -> str:
    """A move that could not be made: why, the session as it still is, and the free times now."""
    return _page(
        title,
        f"<p class=\"alert\">{escape(reason)}. Your session has not been changed.</p>"
        + _facts(session) + _move_form(token, move_days, days_ahead),
    )


def moved(session: SessionFacts, previous: SessionFacts) -> str:
    return _page(
        "Your session has moved",
        _facts(session)
        + f"<p>It was on {escape(previous.date)} at {escape(previous.time)}. Both of you get an email with "
          "the new time and an updated calendar invitation; the link in your emails still opens this session.</p>",
    )


def too_late_to_move(session: SessionFacts, reason: str) -> str:
    return _page("It is too late to move this session online",
                 _facts(session) + f"<p>{escape(reason)}.</p><p>Your session has not been changed.</p>")


def cancelled(session: SessionFacts, *, calendar_event: bool = True) -> str:
    """``calendar_event``: the session had an event (calendar sync was on when it was booked)."""
    removed = "It has been removed from your specialist's calendar. " if calendar_event else ""
    return _page(
        "Your session is cancelled",
        _facts(session) + f"<p>{removed}No refund is processed.</p>",
    )


def already_cancelled(session: SessionFacts) -> str:
    return _page("This session was already cancelled",
                 _facts(session) + "<p>There is nothing more to do.</p>")


def already_started(session: SessionFacts) -> str:
    return _page("This session can no longer be cancelled",
                 _facts(session) + "<p>It has already started or is over. "
                                   "Please contact your specialist directly.</p>")


def too_late(session: SessionFacts, reason: str) -> str:
    return _page("It is too late to cancel this session online",
                 _facts(session) + f"<p>{escape(reason)}.</p>"
                                   "<p>Your session has not been changed.</p>")


def invalid_link() -> str:
    return _page("This cancellation link is not valid",
                 "<p>The link may be incomplete, altered, or no longer in use. "
                 "Please use the link from your most recent email, or contact your specialist.</p>")


def too_many_attempts() -> str:
    return _page("Too many attempts",
                 "<p>Too many invalid links were opened from your connection. "
                 "Please wait a few minutes and try again.</p>")


def too_large() -> str:
    return _page("This request is too large",
                 "<p>Nothing was changed. Open the link from your email and use its button.</p>")


def server_error() -> str:
    return _page("Something went wrong",
                 "<p>Your session has not been changed. Please try again in a few minutes.</p>")


def method_not_allowed() -> str:
    return _page("This page cannot do that", "<p>Open the link from your email to see your session.</p>")
