"""A fake Supabase Storage on 127.0.0.1, for driving the real supabase client (storage3).

It speaks Storage's wire contract for what the project uses:
- `POST /storage/v1/object/sign/{bucket}/{path}` with `{"expiresIn": "<seconds>"}` (a
  string, as storage3 sends it) and the service key → `200 {"signedURL":
  "/object/sign/{bucket}/{path}?token=<JWT with url and exp>"}`;
- `GET /storage/v1/object/sign/{bucket}/{path}?token=…`: the object's bytes, no
  header needed; a token for another path → `InvalidSignature`, an expired one
  → `InvalidJWT`;
- `DELETE /storage/v1/object/{bucket}` with `{"prefixes": [paths]}` → `200` and the
  list of objects removed (objects already gone are simply not listed);
- errors as Storage sends them: HTTP 400 with `{"statusCode": "404", "error":
  "not_found", "message": "Object not found"}` and the like.

Keys, as Supabase's gateway takes them: the legacy service-role JWT (HS256, role
`service_role`) as `apikey` and as `Authorization: Bearer`; an `sb_secret_…` key as
`apikey` only (sent as a Bearer token it is refused, as it is not a JWT).

Every request is recorded; `fail(...)` makes the next matching requests answer an
error, and `delay` slows removals so that concurrent runs overlap.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt

__all__ = ["FakeStorageServer", "StorageRequest"]

SIGN_PREFIX = "/storage/v1/object/sign/"
OBJECT_PREFIX = "/storage/v1/object/"
_URL_SIGNING_SECRET = "fake-storage-url-signing-secret-0123456789abcdef"


@dataclass
class StorageRequest:
    method: str
    path: str  # decoded
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int | None = None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class _Failure:
    status: int
    body: dict[str, Any]
    remaining: int | None
    method: str | None
    after: int  # matching requests let through first
    done_anyway: bool  # do what was asked, then answer the error (a reply lost on the way back)


@dataclass
class _Bucket:
    objects: dict[str, bytes] = field(default_factory=dict)


class FakeStorageServer:
    """Storage on localhost: start(), point SUPABASE_URL at `url`, put() objects, inspect, reset()."""

    def __init__(self, *, jwt_secret: str, secret_key: str | None = None, host: str = "127.0.0.1"):
        self.jwt_secret = jwt_secret  # verifies the legacy service-role key
        self.secret_key = secret_key  # an sb_secret_… key also accepted
        self.delay = 0.0  # seconds each removal takes (to overlap concurrent runs)
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._failures: list[_Failure] = []
        self.requests: list[StorageRequest] = []
        self.removals: Counter[tuple[str, str]] = Counter()  # (bucket, path) -> times removed
        self._httpd = ThreadingHTTPServer((host, 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """What SUPABASE_URL is set to."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeStorageServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-storage", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()
            self._failures.clear()
            self.requests.clear()
            self.removals.clear()
            self.delay = 0.0

    # -- state --------------------------------------------------------------------------

    def put(self, bucket: str, path: str, content: bytes = b"\x00\x00\x00\x18ftypmp42") -> None:
        with self._lock:
            self._buckets.setdefault(bucket, _Bucket()).objects[path] = content

    def exists(self, bucket: str, path: str) -> bool:
        with self._lock:
            return path in self._buckets.get(bucket, _Bucket()).objects

    def fail(self, status: int = 503, *, times: int | None = 1, method: str | None = None, after: int = 0,
             body: dict[str, Any] | None = None, done_anyway: bool = False) -> None:
        """The next `times` matching requests (None: all), after `after` that pass, answer `status`;
        with `done_anyway`, after doing what they asked."""
        with self._lock:
            self._failures.append(_Failure(status, body or {"statusCode": str(status), "error": "internal",
                                                            "message": "Storage is failing"},
                                           times, method, after, done_anyway))

    def recorded(self, method: str | None = None, prefix: str = "") -> list[StorageRequest]:
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method) and r.path.startswith(prefix)]

    # -- protocol -----------------------------------------------------------------------

    def _failure_for(self, method: str) -> _Failure | None:
        with self._lock:
            for rule in self._failures:
                if rule.method not in (None, method) or rule.remaining == 0:
                    continue
                if rule.after > 0:
                    rule.after -= 1
                    return None
                if rule.remaining is not None:
                    rule.remaining -= 1
                return rule
        return None

    def _authorized(self, request: StorageRequest) -> tuple[int, dict[str, Any]] | None:
        """None when the key is acceptable; else Storage's answer."""
        apikey = request.headers.get("apikey")
        authorization = request.headers.get("authorization")
        if not apikey:
            return 400, {"statusCode": "403", "error": "Unauthorized", "message": "No API key found in request"}
        if self.secret_key and apikey == self.secret_key:
            if authorization is not None:
                return 400, {"statusCode": "403", "error": "Unauthorized",
                             "message": "Secret API keys cannot be used as a Bearer token"}
            return None
        token = authorization[7:] if authorization and authorization.lower().startswith("bearer ") else None
        if token != apikey:
            return 400, {"statusCode": "403", "error": "Unauthorized", "message": "Invalid API key"}
        try:
            claims = jwt.decode(token, self.jwt_secret, algorithms=["HS256"], options={"verify_aud": False})
        except jwt.InvalidTokenError:
            return 400, {"statusCode": "403", "error": "Unauthorized", "message": "invalid signature"}
        if claims.get("role") != "service_role":
            return 400, {"statusCode": "403", "error": "Unauthorized",
                         "message": "new row violates row-level security policy"}
        return None

    def handle(self, request: StorageRequest) -> tuple[int, Any, str]:
        """(status, body, content type) for one request."""
        rule = self._failure_for(request.method)
        if rule is not None and not rule.done_anyway:
            return rule.status, rule.body, "application/json"
        answer = self._answer(request)
        return (rule.status, rule.body, "application/json") if rule is not None else answer

    def _answer(self, request: StorageRequest) -> tuple[int, Any, str]:
        if request.method == "GET" and request.path.startswith(SIGN_PREFIX):
            return self._download(request)
        refused = self._authorized(request)
        if refused is not None:
            return *refused, "application/json"
        if request.method == "POST" and request.path.startswith(SIGN_PREFIX):
            return self._sign(request)
        if request.method == "DELETE" and request.path.startswith(OBJECT_PREFIX):
            return self._remove(request)
        return 400, {"statusCode": "404", "error": "not_found", "message": "Route not found"}, "application/json"

    def _sign(self, request: StorageRequest) -> tuple[int, Any, str]:
        bucket, _, path = request.path[len(SIGN_PREFIX):].partition("/")
        body = request.json() or {}
        expires_in = body.get("expiresIn")
        if not isinstance(expires_in, (str, int)) or not str(expires_in).isdigit() or int(expires_in) < 1:
            return 400, {"statusCode": "400", "error": "InvalidRequest",
                         "message": "body/expiresIn must be >= 1"}, "application/json"
        if not self.exists(bucket, path):
            return 400, {"statusCode": "404", "error": "not_found", "message": "Object not found"}, "application/json"
        now = int(time.time())
        token = jwt.encode({"url": f"{bucket}/{path}", "iat": now, "exp": now + int(expires_in)},
                           _URL_SIGNING_SECRET, algorithm="HS256")
        quoted = urllib.parse.quote(f"{bucket}/{path}")
        return 200, {"signedURL": f"/object/sign/{quoted}?token={token}"}, "application/json"

    def _download(self, request: StorageRequest) -> tuple[int, Any, str]:
        bucket, _, path = request.path[len(SIGN_PREFIX):].partition("/")
        token = (request.query.get("token") or [""])[0]
        try:
            claims = jwt.decode(token, _URL_SIGNING_SECRET, algorithms=["HS256"])
        except jwt.ExpiredSignatureError:
            return 400, {"statusCode": "400", "error": "InvalidJWT", "message": "jwt expired"}, "application/json"
        except jwt.InvalidTokenError:
            return 400, {"statusCode": "400", "error": "InvalidJWT", "message": "invalid token"}, "application/json"
        if claims.get("url") != f"{bucket}/{path}":
            return 400, {"statusCode": "400", "error": "InvalidSignature",
                         "message": "The url do not match the signature"}, "application/json"
        with self._lock:
            content = self._buckets.get(bucket, _Bucket()).objects.get(path)
        if content is None:
            return 400, {"statusCode": "404", "error": "not_found", "message": "Object not found"}, "application/json"
        return 200, content, "video/mp4"

    def _remove(self, request: StorageRequest) -> tuple[int, Any, str]:
        bucket = request.path[len(OBJECT_PREFIX):]
        body = request.json() or {}
        prefixes = body.get("prefixes")
        if not isinstance(prefixes, list) or not prefixes or not all(isinstance(p, str) for p in prefixes):
            return 400, {"statusCode": "400", "error": "InvalidRequest",
                         "message": "body/prefixes must NOT have fewer than 1 items"}, "application/json"
        if self.delay:
            time.sleep(self.delay)
        removed = []
        with self._lock:
            objects = self._buckets.get(bucket, _Bucket()).objects
            for path in prefixes:
                if objects.pop(path, None) is not None:
                    self.removals[(bucket, path)] += 1
                    removed.append({"name": path, "bucket_id": bucket, "id": None, "metadata": {}})
        return 200, removed, "application/json"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm and the
        # client's delayed ACK hold every kept-alive answer back by 40 ms.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _serve(self) -> None:
        fake: FakeStorageServer = self.server.fake  # type: ignore[attr-defined]
        parts = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = StorageRequest(self.command, urllib.parse.unquote(parts.path), urllib.parse.parse_qs(parts.query),
                                 {k.lower(): v for k, v in self.headers.items()},
                                 self.rfile.read(length) if length else b"")
        with fake._lock:
            fake.requests.append(request)
        status, body, content_type = fake.handle(request)
        request.status = status
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = _serve
