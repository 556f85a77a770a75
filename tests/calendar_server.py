"""A fake Google Calendar API v3 server on 127.0.0.1, for driving the real client library.

It speaks just enough of Google's protocol for our gateway:
- `POST /token`: the OAuth JWT-bearer grant that google-auth's service-account
  credentials send; the assertion's RS256 signature is checked against the keys of
  service accounts made with `make_service_account()`;
- `POST|GET|DELETE /calendar/v3/calendars/{cal}/events[/{id}]` with Google's status
  codes (409 for an existing id, 410 for an event deleted before, 404 for one that
  never existed) and Bearer-token checks;
- `POST /batch/calendar/v3`: multipart/mixed batches of the calls above.

Every request is recorded, and `fail(...)` makes the next requests answer an error
or stall, to exercise retries and timeouts.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import re
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["FakeCalendarServer", "RecordedRequest", "make_service_account_json"]

TOKEN_PATH = "/token"
DEFAULT_CLIENT_EMAIL = "calendar-sync@therapy-test.iam.gserviceaccount.com"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
BATCH_PATH = "/batch/calendar/v3"
_EVENTS_PATH = re.compile(r"^/calendar/v3/calendars/(?P<calendar>[^/]+)/events(?:/(?P<event>[^/]+))?$")
_EVENT_ID = re.compile(r"^[a-v0-9]{5,1024}$")
_REASONS = {
    400: "invalid",
    401: "authError",
    403: "forbidden",
    404: "notFound",
    405: "methodNotAllowed",
    409: "duplicate",
    410: "deleted",
    429: "rateLimitExceeded",
    500: "backendError",
    502: "backendError",
    503: "backendError",
}


def make_service_account_json(token_uri: str, client_email: str = DEFAULT_CLIENT_EMAIL) -> dict[str, Any]:
    """A service-account key file's content with a fresh RSA key, pointing its token_uri at `token_uri`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "therapy-test",
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem,
        "client_email": client_email,
        "client_id": str(uuid.uuid4().int)[:21],
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/" + client_email,
        "universe_domain": "googleapis.com",
    }


@dataclass
class RecordedRequest:
    """One request as the server saw it; a batch request lists its sub-requests in `parts`."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: bytes
    parts: list[RecordedRequest] = field(default_factory=list)
    status: int | None = None  # what the server answered

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def bearer_token(self) -> str | None:
        value = self.headers.get("authorization", "")
        return value[7:] if value.lower().startswith("bearer ") else None


@dataclass
class _FailureRule:
    status: int | None
    hang: float | None
    remaining: int | None  # None: until reset
    method: str | None
    path_prefix: str | None
    reason: str | None

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.path_prefix is not None:
            # Calendar ids travel percent-encoded (`@` as %40); accept either spelling.
            return path.startswith(self.path_prefix) or urllib.parse.unquote(path).startswith(self.path_prefix)
        # The token endpoint is only hit when asked for: most tests fail the API, not the login.
        return path != TOKEN_PATH


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=UTF-8"
    hang: float | None = None


def _json_answer(status: int, payload: Any) -> _Answer:
    return _Answer(status, json.dumps(payload).encode())


def _error(status: int, message: str, reason: str | None = None) -> _Answer:
    reason = reason or _REASONS.get(status, "error")
    detail = {"domain": "global", "reason": reason, "message": message}
    return _json_answer(status, {"error": {"errors": [detail], "code": status, "message": message}})


class FakeCalendarServer:
    """Google Calendar v3 on localhost: start(), point the client at `api_url`, inspect, reset()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, require_auth: bool = True):
        self.require_auth = require_auth
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self._release = threading.Event()
        self._trusted_keys: dict[str, Any] = {}
        self._tokens: dict[str, dict[str, Any]] = {}
        self._token_numbers = itertools.count(1)
        self._clear()

    # -- lifecycle --

    def start(self) -> FakeCalendarServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-calendar", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release_hangs()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeCalendarServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _clear(self) -> None:
        self._requests: list[RecordedRequest] = []
        self._grants: list[dict[str, Any]] = []
        self._rules: list[_FailureRule] = []
        self._events: dict[str, dict[str, dict[str, Any]]] = {}
        self._deleted: dict[str, set[str]] = {}

    def _release_hangs(self) -> None:
        with self._lock:
            release, self._release = self._release, threading.Event()
        release.set()

    def reset(self) -> None:
        """Forget requests, events and failure rules; wake stalled requests. Keys and tokens stay valid."""
        self._release_hangs()
        with self._lock:
            self._clear()

    # -- addresses --

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        """The value for GOOGLE_CALENDAR_API_URL."""
        return self.base_url + "/calendar/v3/"

    @property
    def token_uri(self) -> str:
        return self.base_url + TOKEN_PATH

    # -- set-up --

    def make_service_account(self, client_email: str = DEFAULT_CLIENT_EMAIL) -> dict[str, Any]:
        """A new service-account key whose token grants this server accepts."""
        info = make_service_account_json(self.token_uri, client_email)
        self.trust(info)
        return info

    def trust(self, info: dict[str, Any]) -> None:
        """Accept token grants signed by this service account's key."""
        private_key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        with self._lock:
            self._trusted_keys[info["client_email"]] = private_key.public_key()

    def fail(
        self,
        status: int | None = None,
        *,
        times: int | None = 1,
        hang: float | None = None,
        method: str | None = None,
        path_prefix: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Make the next `times` matching requests (None: all until reset) misbehave.

        `status`: answer it without doing anything. `hang`: do the work, then stall
        that many seconds before answering (the client gives up, the change stays).
        Rules match the method and path of plain requests, of a batch's outer POST,
        and of each request inside a batch; the token endpoint only via `path_prefix`.
        """
        if status is None and hang is None:
            raise ValueError("give a status, a hang, or both")
        with self._lock:
            self._rules.append(_FailureRule(status, hang, times, method, path_prefix, reason))

    def put_event(self, calendar_id: str, event: dict[str, Any]) -> None:
        """Store an event directly, as if created earlier."""
        with self._lock:
            self._events.setdefault(calendar_id, {})[event["id"]] = dict(event)

    # -- inspection --

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received since the last reset (token grants included), in order."""
        with self._lock:
            return list(self._requests)

    def api_calls(self, method: str | None = None) -> list[RecordedRequest]:
        """Calendar calls, with batches unpacked into their parts; token grants and batch envelopes left out."""
        calls: list[RecordedRequest] = []
        for request in self.requests:
            if request.path == TOKEN_PATH:
                continue
            for call in request.parts if request.path == BATCH_PATH else [request]:
                if method is None or call.method == method:
                    calls.append(call)
        return calls

    def batch_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == BATCH_PATH]

    @property
    def token_grants(self) -> list[dict[str, Any]]:
        """Verified claims of each JWT grant answered, with the access token issued."""
        with self._lock:
            return list(self._grants)

    def events(self, calendar_id: str) -> dict[str, dict[str, Any]]:
        """The live (not deleted) events of a calendar, by id."""
        with self._lock:
            return {k: dict(v) for k, v in self._events.get(calendar_id, {}).items()}

    def deleted_event_ids(self, calendar_id: str) -> set[str]:
        with self._lock:
            return set(self._deleted.get(calendar_id, set()))

    # -- request handling (called from server threads) --

    def _record(self, method: str, target: str, headers: dict[str, str], body: bytes) -> RecordedRequest:
        parsed = urllib.parse.urlsplit(target)
        record = RecordedRequest(
            method=method,
            path=parsed.path,
            query=urllib.parse.parse_qs(parsed.query),
            headers={k.lower(): v for k, v in headers.items()},
            body=body,
        )
        return record

    def _take_rule(self, method: str, path: str) -> _FailureRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            self._rules.remove(rule)
                    return rule
        return None

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Answer:
        request = self._record(method, target, headers, body)
        with self._lock:
            self._requests.append(request)
            release = self._release
        answer = self._answer(request, outer_authorization=None)
        request.status = answer.status
        if answer.hang:
            release.wait(answer.hang)
        return answer

    def _answer(self, request: RecordedRequest, outer_authorization: str | None) -> _Answer:
        rule = self._take_rule(request.method, request.path)
        if rule is not None and rule.hang is None:
            return _error(rule.status or 500, f"Injected failure {rule.status}", rule.reason)
        if request.path == TOKEN_PATH and request.method == "POST":
            answer = self._token(request)
        else:
            authorization = request.headers.get("authorization", outer_authorization)
            answer = self._check_auth(authorization) or self._route(request, authorization)
        if rule is not None:
            if rule.status is not None:
                answer = _error(rule.status, f"Injected failure {rule.status}", rule.reason)
            answer.hang = rule.hang
        return answer

    def _check_auth(self, authorization: str | None) -> _Answer | None:
        if not self.require_auth:
            return None
        token = authorization[7:] if authorization and authorization.lower().startswith("bearer ") else None
        with self._lock:
            known = token is not None and token in self._tokens
        if not known:
            return _error(401, "Request had invalid authentication credentials.")
        return None

    def _token(self, request: RecordedRequest) -> _Answer:
        form = urllib.parse.parse_qs(request.body.decode())
        grant_type = form.get("grant_type", [""])[0]
        assertion = form.get("assertion", [""])[0]
        if grant_type != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not assertion:
            return _json_answer(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."})
        try:
            issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
            with self._lock:
                key = self._trusted_keys.get(issuer)
            if key is None:
                raise jwt.InvalidTokenError(f"unknown service account {issuer!r}")
            # google-auth always addresses its grant to Google's token endpoint, whatever token_uri says.
            claims = jwt.decode(
                assertion, key, algorithms=["RS256"], audience=[GOOGLE_TOKEN_AUDIENCE, self.token_uri]
            )
        except jwt.InvalidTokenError as exc:
            return _json_answer(400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"})
        token = f"ya29.fake-{next(self._token_numbers)}-{uuid.uuid4().hex[:8]}"
        with self._lock:
            self._tokens[token] = claims
            self._grants.append({**claims, "access_token": token})
        return _json_answer(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    def _route(self, request: RecordedRequest, authorization: str | None) -> _Answer:
        if request.path == BATCH_PATH:
            if request.method != "POST":
                return _error(405, "Batch requests must be POST")
            return self._batch(request, authorization)
        match = _EVENTS_PATH.match(request.path)
        if match is None:
            return _error(404, f"Not Found: {request.path}")
        calendar_id = urllib.parse.unquote(match["calendar"])
        event_id = urllib.parse.unquote(match["event"]) if match["event"] else None
        if event_id is None and request.method == "POST":
            return self._insert(calendar_id, request)
        if event_id is None and request.method == "GET":
            return _json_answer(200, {"kind": "calendar#events", "items": list(self.events(calendar_id).values())})
        if event_id is not None and request.method == "GET":
            return self._get(calendar_id, event_id)
        if event_id is not None and request.method == "DELETE":
            return self._delete(calendar_id, event_id)
        if event_id is not None and request.method == "PATCH":
            return self._patch(calendar_id, event_id, request)
        return _error(405, f"{request.method} is not supported on {request.path}")

    def _insert(self, calendar_id: str, request: RecordedRequest) -> _Answer:
        try:
            event = request.json()
        except ValueError:
            return _error(400, "Parse Error", "parseError")
        if not isinstance(event, dict) or "start" not in event or "end" not in event:
            return _error(400, "Missing start or end time.", "required")
        event_id = event.get("id") or uuid.uuid4().hex
        if not _EVENT_ID.match(event_id):
            return _error(400, "Invalid resource id value.", "invalid")
        now = datetime.now(UTC).isoformat()
        with self._lock:
            calendar = self._events.setdefault(calendar_id, {})
            # Google keeps the ids of deleted events too: re-inserting one is a conflict.
            if event_id in calendar or event_id in self._deleted.get(calendar_id, set()):
                return _error(409, "The requested identifier already exists.")
            stored = {
                **event,
                "id": event_id,
                "kind": "calendar#event",
                "status": "confirmed",
                "etag": f'"{uuid.uuid4().int % 10**16}"',
                "created": now,
                "updated": now,
                "htmlLink": f"https://www.google.com/calendar/event?eid={event_id}",
            }
            calendar[event_id] = stored
        return _json_answer(200, stored)

    def _get(self, calendar_id: str, event_id: str) -> _Answer:
        with self._lock:
            event = self._events.get(calendar_id, {}).get(event_id)
            deleted = event_id in self._deleted.get(calendar_id, set())
        if event is not None:
            return _json_answer(200, event)
        if deleted:
            return _json_answer(200, {"kind": "calendar#event", "id": event_id, "status": "cancelled"})
        return _error(404, "Not Found")

    def _delete(self, calendar_id: str, event_id: str) -> _Answer:
        with self._lock:
            calendar = self._events.get(calendar_id, {})
            if event_id in calendar:
                del calendar[event_id]
                self._deleted.setdefault(calendar_id, set()).add(event_id)
                return _Answer(204)
            if event_id in self._deleted.get(calendar_id, set()):
                return _error(410, "Resource has been deleted")
        return _error(404, "Not Found")

    def _patch(self, calendar_id: str, event_id: str, request: RecordedRequest) -> _Answer:
        """events.patch: the fields sent replace the stored ones; a deleted event answers 410
        (as its delete does), one never created 404."""
        try:
            changes = request.json()
        except ValueError:
            return _error(400, "Parse Error", "parseError")
        if not isinstance(changes, dict) or "id" in changes and changes["id"] != event_id:
            return _error(400, "Invalid patch.", "invalid")
        with self._lock:
            event = self._events.get(calendar_id, {}).get(event_id)
            if event is None:
                if event_id in self._deleted.get(calendar_id, set()):
                    return _error(410, "Resource has been deleted")
                return _error(404, "Not Found")
            event.update(changes)
            event["updated"] = datetime.now(UTC).isoformat()
            event["sequence"] = event.get("sequence", 0) + 1
            event["etag"] = f'"{uuid.uuid4().int % 10**16}"'
            return _json_answer(200, dict(event))

    def _batch(self, request: RecordedRequest, authorization: str | None) -> _Answer:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/mixed"):
            return _error(400, "Batch requests must be multipart/mixed")
        message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + request.body
        )
        boundary = "batch_" + uuid.uuid4().hex
        chunks: list[str] = []
        hang = 0.0
        for part in message.get_payload():
            inner = self._parse_part(part.get_payload())
            request.parts.append(inner)
            answer = self._answer(inner, authorization)
            inner.status = answer.status
            hang = max(hang, answer.hang or 0.0)
            content_id = (part["Content-ID"] or "<>").strip()[1:-1]
            reason = HTTPStatus(answer.status).phrase if answer.status in HTTPStatus._value2member_map_ else ""
            chunks.append(
                f"--{boundary}\r\n"
                "Content-Type: application/http\r\n"
                f"Content-ID: <response-{content_id}>\r\n\r\n"
                f"HTTP/1.1 {answer.status} {reason}\r\n"
                f"Content-Type: {answer.content_type}\r\n"
                f"Content-Length: {len(answer.body)}\r\n\r\n"
                f"{answer.body.decode()}\r\n"
            )
        chunks.append(f"--{boundary}--\r\n")
        return _Answer(200, "".join(chunks).encode(), f"multipart/mixed; boundary={boundary}", hang or None)

    def _parse_part(self, payload: str) -> RecordedRequest:
        request_line, _, rest = payload.partition("\n")
        method, target, _version = request_line.strip().split(" ", 2)
        inner = email.parser.Parser(policy=email.policy.compat32).parsestr(rest)
        headers = {k: v for k, v in inner.items()}
        body = inner.get_payload()
        return self._record(method, target, headers, body.encode() if isinstance(body, str) else b"")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httplib2 expects

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fake: FakeCalendarServer = self.server.fake  # type: ignore[attr-defined]
        answer = fake.handle(self.command, self.path, dict(self.headers.items()), body)
        try:
            self.send_response(answer.status)
            if answer.body or answer.status != 204:
                self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a stalled answer after its timeout): nothing to tell it.
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded; stderr noise would only bury test output
