"""The token-cancel pages: plain server-rendered HTML that works without
JavaScript, escapes everything it shows, and reads well on a phone.
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


def confirm(session: SessionFacts, token: str) -> str:
    return _page(
        "Cancel this session?",
        _facts(session)
        + "<form method=\"post\">"
        f"<input type=\"hidden\" name=\"token\" value=\"{escape(token, quote=True)}\">"
        "<button type=\"submit\">Yes, cancel this session</button></form>"
        "<p class=\"note\">Nothing changes until you press the button. No refund is processed.</p>",
    )


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
