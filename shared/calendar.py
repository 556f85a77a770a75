"""Google Calendar gateway: one event per session, over google-api-python-client (v3).

Idempotence comes from the event id: it is derived from the session id, so a retried
insert answers 409 (already there) and a repeated delete answers 410 (already gone);
both count as success. A move is an `events.patch` of the start and end only (the
same event, its id kept); repeating it is harmless, and 404/410 mean there is no
event to move, which counts as done. Events say only "Therapy session <reference>" and the times:
no client name, no notes, no attendees (an attendee would get an email from Google).

With no GOOGLE_SERVICE_ACCOUNT_JSON the gateway is off: every call answers
`outcome="disabled"` and one log line per process says so.

Thread safety: functions-framework serves requests on several threads, and
`httplib2.Http` must not be shared between threads, so each thread gets its own
`AuthorizedHttp` (through the client's `requestBuilder` hook); the built service and
the credentials (and so the access token) are shared.
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from collections.abc import Callable, Iterable, Sequence

import google.auth.exceptions
import google_auth_httplib2
import httplib2
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import BatchError, HttpError
from googleapiclient.http import BatchHttpRequest, HttpRequest

from shared.errors import CalendarUnavailable
from shared.settings import Settings, SettingsError, get_settings

__all__ = [
    "BATCH_LIMIT",
    "CALENDAR_SCOPE",
    "BatchItemResult",
    "CalendarError",
    "CalendarGateway",
    "CalendarSession",
    "EventMove",
    "EventRef",
    "EventResult",
    "create_events_batch",
    "create_session_event",
    "delete_events_batch",
    "delete_session_event",
    "event_body",
    "patch_events_batch",
    "patch_session_event",
    "event_id_for",
    "get_gateway",
    "reset_gateway",
]

logger = logging.getLogger(__name__)

CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar"
# Google accepts up to 1000 calls per batch but recommends (and enforces for some
# APIs) 50; larger batches are also the first to be throttled.
BATCH_LIMIT = 50
_RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes TimeoutError / socket.timeout and ConnectionError
    http.client.HTTPException,
    httplib2.HttpLib2Error,
    google.auth.exceptions.TransportError,
)

# Sleep between retries (both the client's own `num_retries` backoff and our batch
# re-sends). Looked up at call time so tests can replace it with a no-op.
backoff_sleep: Callable[[float], None] = time.sleep

Outcome = Literal["created", "already_existed", "deleted", "already_gone", "patched", "disabled", "failed"]


class CalendarError(CalendarUnavailable):
    """The Calendar API could not be reached or kept failing (503 CALENDAR_UNAVAILABLE).

    `upstream_status` is Google's HTTP status when there was one (None for timeouts
    and connection errors); it is kept out of the answer to the caller.
    """

    def __init__(self, message: str, *, upstream_status: int | None = None, retryable: bool = True):
        super().__init__(message)
        self.upstream_status = upstream_status
        self.retryable = retryable


@dataclass(frozen=True)
class CalendarSession:
    """What the calendar needs to know about a session, and nothing more."""

    id: uuid.UUID
    calendar_id: str  # the specialist's google_calendar_id, or "primary"
    starts_at: datetime
    ends_at: datetime
    booking_reference: str
    # Needed only with GOOGLE_CALENDAR_DELEGATE: whose calendar we act as.
    specialist_email: str | None = None


@dataclass(frozen=True)
class EventRef:
    """An existing event, for deletion."""

    calendar_id: str
    event_id: str
    specialist_email: str | None = None


@dataclass(frozen=True)
class EventMove:
    """An existing event and the times it must show (a moved session)."""

    calendar_id: str
    event_id: str
    starts_at: datetime
    ends_at: datetime
    specialist_email: str | None = None


@dataclass(frozen=True)
class EventResult:
    """What happened to one event. `event_id` is None when sync is disabled."""

    outcome: Outcome
    event_id: str | None

    @property
    def synced(self) -> bool:
        return self.outcome not in ("disabled", "failed")


@dataclass(frozen=True)
class BatchItemResult:
    """One item of a batch, in the order given; `ok` covers idempotent repeats and "disabled"."""

    index: int
    calendar_id: str
    event_id: str
    outcome: Outcome
    upstream_status: int | None = None
    error: str | None = None
    # For failures: whether sending it again later may succeed (5xx, 429, no answer).
    retryable: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"


def event_id_for(session_id: uuid.UUID) -> str:
    """The calendar event id of a session: its UUID in hex (32 chars of [0-9a-f] ⊂ Google's [a-v0-9])."""
    return session_id.hex


def _rfc3339(moment: datetime, name: str) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment!r}")
    return moment.isoformat()


def event_body(session: CalendarSession) -> dict[str, Any]:
    """The event resource for a session: a reference and the times, no personal or clinical data."""
    start = _rfc3339(session.starts_at, "starts_at")
    end = _rfc3339(session.ends_at, "ends_at")
    if session.ends_at <= session.starts_at:
        raise ValueError(f"session {session.id} ends ({session.ends_at}) before it starts ({session.starts_at})")
    return {
        "id": event_id_for(session.id),
        "summary": f"Therapy session {session.booking_reference}",
        "start": {"dateTime": start},
        "end": {"dateTime": end},
        # Others who can see the specialist's calendar see "busy", not the summary.
        "visibility": "private",
        "transparency": "opaque",
    }


def event_times(starts_at: datetime, ends_at: datetime) -> dict[str, Any]:
    """The part of an event a move changes: its start and end, nothing else."""
    if ends_at <= starts_at:
        raise ValueError(f"an event cannot end ({ends_at}) before it starts ({starts_at})")
    return {"start": {"dateTime": _rfc3339(starts_at, "starts_at")}, "end": {"dateTime": _rfc3339(ends_at, "ends_at")}}


def _status_of(exc: HttpError) -> int:
    return int(exc.resp.status)


# --- The gateway --------------------------------------------------------------------


class CalendarGateway:
    """Calendar operations for one configuration; build one per process via `get_gateway()`."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._credentials: service_account.Credentials | None = None
        self._delegated: dict[str, service_account.Credentials] = {}
        self._services: dict[str | None, Any] = {}
        self._local = threading.local()
        self._disabled_logged = False

    @property
    def enabled(self) -> bool:
        return self._settings.calendar_sync_enabled

    # -- plumbing --

    def _note_disabled(self) -> None:
        with self._lock:
            if self._disabled_logged:
                return
            self._disabled_logged = True
        logger.warning("Google Calendar sync is off: GOOGLE_SERVICE_ACCOUNT_JSON is not set")

    def _subject(self, specialist_email: str | None, event: str) -> str | None:
        if not self._settings.google_calendar_delegate:
            return None
        if not specialist_email:
            # Without a subject we would write to the service account's own calendar,
            # which nobody reads: refuse rather than lose the event silently.
            raise CalendarError(
                f"GOOGLE_CALENDAR_DELEGATE is on but no specialist email was given for event {event}",
                retryable=False,
            )
        return specialist_email

    def _credentials_for(self, subject: str | None) -> service_account.Credentials:
        with self._lock:
            if self._credentials is None:
                info = self._settings.service_account_info()
                try:
                    self._credentials = service_account.Credentials.from_service_account_info(
                        info, scopes=[CALENDAR_SCOPE]
                    )
                except ValueError as exc:
                    raise SettingsError(
                        f"GOOGLE_SERVICE_ACCOUNT_JSON is not a usable service-account key "
                        f"({exc.__class__.__name__})"
                    ) from None
            if subject is None:
                return self._credentials
            delegated = self._delegated.get(subject)
            if delegated is None:
                delegated = self._delegated[subject] = self._credentials.with_subject(subject)
            return delegated

    def _http(self, subject: str | None) -> google_auth_httplib2.AuthorizedHttp:
        """This thread's authorised HTTP client for `subject`."""
        https: dict[str | None, google_auth_httplib2.AuthorizedHttp] | None = getattr(self._local, "https", None)
        if https is None:
            https = self._local.https = {}
        authorized = https.get(subject)
        if authorized is None:
            authorized = https[subject] = google_auth_httplib2.AuthorizedHttp(
                self._credentials_for(subject),
                http=httplib2.Http(timeout=self._settings.google_calendar_timeout_seconds),
            )
        return authorized

    def _service(self, subject: str | None) -> Any:
        with self._lock:
            service = self._services.get(subject)
        if service is not None:
            return service

        def request_builder(_shared_http: Any, *args: Any, **kwargs: Any) -> HttpRequest:
            request = HttpRequest(self._http(subject), *args, **kwargs)
            # HttpRequest has no public hook for its retry backoff; `_sleep` is the
            # attribute its execute(num_retries=...) calls between attempts.
            request._sleep = lambda seconds: backoff_sleep(seconds)
            return request

        # `http=` rather than `credentials=`: build() would otherwise make its own
        # httplib2.Http with a 60 s timeout, and it refuses both arguments together.
        service = build(
            "calendar",
            "v3",
            http=self._http(subject),
            requestBuilder=request_builder,
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": self._settings.google_calendar_api_url},
        )
        with self._lock:
            return self._services.setdefault(subject, service)

    def _execute(self, request: HttpRequest, action: str) -> Any:
        """Run `request` with retries; HttpError passes through, transport failures become CalendarError."""
        try:
            return request.execute(num_retries=self._settings.google_calendar_num_retries)
        except HttpError:
            raise
        except google.auth.exceptions.RefreshError as exc:
            # google-auth has already retried the token endpoint; it marks outages as
            # retryable, refusals (bad key, delegation not granted) as not.
            if getattr(exc, "retryable", False):
                raise CalendarError(f"Google's token endpoint did not answer while {action}") from exc
            raise CalendarError(f"Google refused the calendar credentials while {action}", retryable=False) from exc
        except _TRANSPORT_ERRORS as exc:
            raise CalendarError(
                f"Google Calendar did not answer while {action} ({exc.__class__.__name__})"
            ) from exc

    @staticmethod
    def _http_failure(exc: HttpError, action: str) -> CalendarError:
        status = _status_of(exc)
        return CalendarError(
            f"Google Calendar answered HTTP {status} while {action}",
            upstream_status=status,
            retryable=status in _RETRYABLE_STATUSES,
        )

    # -- single events --

    def create_session_event(self, session: CalendarSession) -> EventResult:
        """Create the session's event; an event that already exists (409) is success."""
        if not self.enabled:
            self._note_disabled()
            return EventResult("disabled", None)
        body = event_body(session)
        event_id = body["id"]
        action = f"creating event {event_id}"
        service = self._service(self._subject(session.specialist_email, event_id))
        request = service.events().insert(calendarId=session.calendar_id, body=body, sendUpdates="none")
        try:
            self._execute(request, action)
        except HttpError as exc:
            if _status_of(exc) == 409:
                logger.info("Calendar event %s already existed; treating the insert as done", event_id)
                return EventResult("already_existed", event_id)
            raise self._http_failure(exc, action) from exc
        return EventResult("created", event_id)

    def delete_session_event(
        self, calendar_id: str, event_id: str, *, specialist_email: str | None = None
    ) -> EventResult:
        """Delete an event; one already deleted (410) or never created (404) is success."""
        if not self.enabled:
            self._note_disabled()
            return EventResult("disabled", None)
        action = f"deleting event {event_id}"
        service = self._service(self._subject(specialist_email, event_id))
        request = service.events().delete(calendarId=calendar_id, eventId=event_id, sendUpdates="none")
        try:
            self._execute(request, action)
        except HttpError as exc:
            if _status_of(exc) in (404, 410):
                return EventResult("already_gone", event_id)
            raise self._http_failure(exc, action) from exc
        return EventResult("deleted", event_id)

    def patch_session_event(self, move: EventMove) -> EventResult:
        """Move an event to new times (events.patch: only start and end are sent); an event
        that is gone (410) or was never created (404) has nothing to move, which is success."""
        if not self.enabled:
            self._note_disabled()
            return EventResult("disabled", None)
        action = f"moving event {move.event_id}"
        service = self._service(self._subject(move.specialist_email, move.event_id))
        request = service.events().patch(calendarId=move.calendar_id, eventId=move.event_id,
                                         body=event_times(move.starts_at, move.ends_at), sendUpdates="none")
        try:
            self._execute(request, action)
        except HttpError as exc:
            if _status_of(exc) in (404, 410):
                return EventResult("already_gone", move.event_id)
            raise self._http_failure(exc, action) from exc
        return EventResult("patched", move.event_id)

    # -- batches --

    def create_events_batch(self, sessions: Sequence[CalendarSession]) -> list[BatchItemResult]:
        """Create many events in batches of at most 50; a result per session, in order."""
        # Bodies first, so a malformed session fails before anything is sent.
        bodies = [event_body(session) for session in sessions]
        items = [
            _BatchItem(
                index=i,
                calendar_id=session.calendar_id,
                event_id=body["id"],
                specialist_email=session.specialist_email,
                make_request=lambda service, s=session, b=body: service.events().insert(
                    calendarId=s.calendar_id, body=b, sendUpdates="none"
                ),
                done_outcome="created",
                repeat_statuses=frozenset({409}),
                repeat_outcome="already_existed",
            )
            for i, (session, body) in enumerate(zip(sessions, bodies, strict=True))
        ]
        return self._run_batches(items, "creating events")

    def delete_events_batch(self, refs: Sequence[EventRef]) -> list[BatchItemResult]:
        """Delete many events in batches of at most 50; a result per event, in order."""
        items = [
            _BatchItem(
                index=i,
                calendar_id=ref.calendar_id,
                event_id=ref.event_id,
                specialist_email=ref.specialist_email,
                make_request=lambda service, r=ref: service.events().delete(
                    calendarId=r.calendar_id, eventId=r.event_id, sendUpdates="none"
                ),
                done_outcome="deleted",
                repeat_statuses=frozenset({404, 410}),
                repeat_outcome="already_gone",
            )
            for i, ref in enumerate(refs)
        ]
        return self._run_batches(items, "deleting events")

    def patch_events_batch(self, moves: Sequence[EventMove]) -> list[BatchItemResult]:
        """Move many events in batches of at most 50; a result per event, in order."""
        bodies = [event_times(move.starts_at, move.ends_at) for move in moves]
        items = [
            _BatchItem(
                index=i,
                calendar_id=move.calendar_id,
                event_id=move.event_id,
                specialist_email=move.specialist_email,
                make_request=lambda service, m=move, b=body: service.events().patch(
                    calendarId=m.calendar_id, eventId=m.event_id, body=b, sendUpdates="none"
                ),
                done_outcome="patched",
                repeat_statuses=frozenset({404, 410}),
                repeat_outcome="already_gone",
            )
            for i, (move, body) in enumerate(zip(moves, bodies, strict=True))
        ]
        return self._run_batches(items, "moving events")

    def _run_batches(self, items: list[_BatchItem], action: str) -> list[BatchItemResult]:
        if not self.enabled:
            self._note_disabled()
            return [BatchItemResult(it.index, it.calendar_id, it.event_id, "disabled") for it in items]
        results: dict[int, BatchItemResult] = {}
        pending: list[_BatchItem] = []
        for item in items:
            if item.specialist_email is None and self._settings.google_calendar_delegate:
                results[item.index] = item.failed(
                    None, "GOOGLE_CALENDAR_DELEGATE is on but no specialist email was given", retryable=False
                )
            else:
                pending.append(item)
        # Batches have no num_retries of their own: re-send retryable failures ourselves.
        for attempt in range(self._settings.google_calendar_num_retries + 1):
            if attempt:
                backoff_sleep(random.random() * 2**attempt)
            for subject, group in _group_by_subject(pending, self._settings.google_calendar_delegate):
                for start in range(0, len(group), BATCH_LIMIT):
                    chunk = group[start : start + BATCH_LIMIT]
                    results.update(self._send_batch(subject, chunk, action))
            pending = [it for it in pending if results[it.index].retryable]
            if not pending:
                break
        ordered = [results[item.index] for item in items]
        failures = sum(1 for r in ordered if not r.ok)
        if failures:
            logger.warning("Calendar batch %s: %d of %d items failed", action, failures, len(ordered))
        return ordered

    def _send_batch(
        self, subject: str | None, chunk: list[_BatchItem], action: str
    ) -> dict[int, BatchItemResult]:
        results: dict[int, BatchItemResult] = {}
        by_id = {str(item.index): item for item in chunk}

        def on_response(request_id: str, _response: Any, exception: Exception | None) -> None:
            item = by_id[request_id]
            if exception is None:
                results[item.index] = item.succeeded(item.done_outcome)
            elif isinstance(exception, HttpError) and _status_of(exception) in item.repeat_statuses:
                results[item.index] = item.succeeded(item.repeat_outcome)
            elif isinstance(exception, HttpError):
                results[item.index] = item.failed(_status_of(exception), f"HTTP {_status_of(exception)}")
            else:
                results[item.index] = item.failed(None, exception.__class__.__name__)

        try:
            service = self._service(subject)
            batch = BatchHttpRequest(callback=on_response, batch_uri=self._settings.google_calendar_batch_url)
            for item in chunk:
                batch.add(item.make_request(service), request_id=str(item.index))
            batch.execute(http=self._http(subject))
        except HttpError as exc:
            status = _status_of(exc)
            return {item.index: item.failed(status, f"batch answered HTTP {status}") for item in chunk}
        except google.auth.exceptions.RefreshError as exc:
            retryable = bool(getattr(exc, "retryable", False))
            error = "token endpoint did not answer" if retryable else "credentials refused"
            return {item.index: item.failed(None, error, retryable=retryable) for item in chunk}
        except (BatchError, *_TRANSPORT_ERRORS) as exc:
            logger.warning("Calendar batch %s failed as a whole: %s", action, exc.__class__.__name__)
            return {item.index: item.failed(None, exc.__class__.__name__) for item in chunk}
        for item in chunk:
            if item.index not in results:  # a part the server left unanswered
                results[item.index] = item.failed(None, "no answer for this part of the batch")
        return results


@dataclass(frozen=True)
class _BatchItem:
    index: int
    calendar_id: str
    event_id: str
    specialist_email: str | None
    make_request: Callable[[Any], HttpRequest]
    done_outcome: Outcome
    repeat_statuses: frozenset[int]
    repeat_outcome: Outcome

    def succeeded(self, outcome: Outcome) -> BatchItemResult:
        return BatchItemResult(self.index, self.calendar_id, self.event_id, outcome)

    def failed(self, status: int | None, error: str, *, retryable: bool | None = None) -> BatchItemResult:
        if retryable is None:
            # No status means no answer (timeout, connection): worth another try.
            retryable = status is None or status in _RETRYABLE_STATUSES
        return BatchItemResult(self.index, self.calendar_id, self.event_id, "failed", status, error, retryable)


def _group_by_subject(
    items: Iterable[_BatchItem], delegate: bool
) -> list[tuple[str | None, list[_BatchItem]]]:
    # One batch carries one access token, so with delegation each specialist gets their own batches.
    groups: dict[str | None, list[_BatchItem]] = {}
    for item in items:
        groups.setdefault(item.specialist_email if delegate else None, []).append(item)
    return list(groups.items())


# --- The process-wide gateway -------------------------------------------------------

_gateway: CalendarGateway | None = None
_gateway_lock = threading.Lock()


def get_gateway() -> CalendarGateway:
    """The process-wide gateway, built from the settings on first use."""
    global _gateway
    with _gateway_lock:
        if _gateway is None:
            _gateway = CalendarGateway(get_settings())
        return _gateway


def reset_gateway() -> None:
    """Drop the cached gateway (services, credentials, the "disabled" log flag). For tests."""
    global _gateway
    with _gateway_lock:
        _gateway = None


def create_session_event(session: CalendarSession) -> EventResult:
    """Create the session's event (idempotent). Raises CalendarError when Google keeps failing."""
    return get_gateway().create_session_event(session)


def delete_session_event(calendar_id: str, event_id: str, *, specialist_email: str | None = None) -> EventResult:
    """Delete an event (idempotent). Raises CalendarError when Google keeps failing."""
    return get_gateway().delete_session_event(calendar_id, event_id, specialist_email=specialist_email)


def patch_session_event(move: EventMove) -> EventResult:
    """Move an event to new times (idempotent). Raises CalendarError when Google keeps failing."""
    return get_gateway().patch_session_event(move)


def patch_events_batch(moves: Sequence[EventMove]) -> list[BatchItemResult]:
    """Move events in batches of at most 50; never raises for per-item failures."""
    return get_gateway().patch_events_batch(moves)


def create_events_batch(sessions: Sequence[CalendarSession]) -> list[BatchItemResult]:
    """Create events in batches of at most 50; never raises for per-item failures."""
    return get_gateway().create_events_batch(sessions)


def delete_events_batch(refs: Sequence[EventRef]) -> list[BatchItemResult]:
    """Delete events in batches of at most 50; never raises for per-item failures."""
    return get_gateway().delete_events_batch(refs)
