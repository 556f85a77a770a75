"""Pytest fixtures for the frontend's real path (a plugin, registered in conftest's
``pytest_plugins``): a real PostgREST 12 against the test cluster with Supabase's
settings, behind the same front door as the served functions.

- ``postgrest``: the PostgREST process, once per run (skips without the binary, fails in CI);
- ``supabase_stack``: the served process with ``/rest/v1`` (PostgREST) and ``/functions/v1``
  on one port; ``.url`` is what ``SUPABASE_URL`` would be, ``.anon_key`` the project's anon key;
- ``supabase_as(person)``: a supabase-py client as that signed-in user (``None``: signed out);
- ``rest(person)``: raw HTTP to ``/rest/v1`` as that user, for statuses and error codes.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from shared.ops.postgrest import INSTALL_HINT, Postgrest, api_keys, authenticator_uri, find_binary
from tests.functions_fixtures import JWT_SECRET, Answer, ServedFunctions, user_token
from tests.support import Person


IN_CI = os.environ.get("CI", "").lower() in ("true", "1")


def require_postgrest() -> None:
    """Skips without the PostgREST binary; in CI (CI=true) fails instead."""
    if find_binary() is None:
        reason = f"PostgREST is not installed ({INSTALL_HINT})"
        if IN_CI:
            pytest.fail(f"{reason}; CI must run every test")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def postgrest(database_url: str) -> Iterator[Postgrest]:
    """PostgREST 12 on the test cluster: authenticator login, anon role, the test JWT secret."""
    require_postgrest()
    with Postgrest(authenticator_uri(database_url), JWT_SECRET) as server:
        yield server


@dataclass(frozen=True)
class SupabaseStack:
    url: str  # SUPABASE_URL: /rest/v1 and /functions/v1 live under it
    anon_key: str
    service_key: str
    served: ServedFunctions

    @property
    def functions_url(self) -> str:
        return f"{self.url}/functions/v1"


@pytest.fixture(scope="session")
def supabase_stack(postgrest: Postgrest, serve_functions: Callable[..., ServedFunctions]) -> SupabaseStack:
    """The served functions with POSTGREST_URL set: one port for /rest/v1 and /functions/v1."""
    served = serve_functions(POSTGREST_URL=postgrest.url)
    keys = api_keys(JWT_SECRET)
    return SupabaseStack(f"http://127.0.0.1:{served.port}", keys["anon"], keys["service_role"], served)


@pytest.fixture
def supabase_as(supabase_stack: SupabaseStack) -> Callable[[Person | None], Any]:
    """`supabase_as(person)`: supabase-py's client with the anon key and that user's access token."""
    from supabase import create_client

    def make(person: Person | None, **token_claims: Any) -> Any:
        client = create_client(supabase_stack.url, supabase_stack.anon_key)
        if person is not None:
            client.postgrest.auth(user_token(person, **token_claims))
        return client
    return make


class RestClient:
    """Plain HTTP to /rest/v1 with the anon key and (optionally) a bearer token."""

    def __init__(self, stack: SupabaseStack, token: str | None):
        self.stack = stack
        self.token = token

    def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None, body: Any = None,
                headers: Mapping[str, str] | None = None) -> Answer:
        parts = urllib.parse.urlsplit(self.stack.url)
        query = urllib.parse.urlencode(params or {})
        sent = {"apikey": self.stack.anon_key, "Authorization": f"Bearer {self.token or self.stack.anon_key}",
                **({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})}
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            connection.request(method, f"/rest/v1/{path}" + (f"?{query}" if query else ""),
                               body=None if body is None else json.dumps(body, default=str), headers=sent)
            response = connection.getresponse()
            return Answer(response.status, dict(response.getheaders()), response.read())
        finally:
            connection.close()


@pytest.fixture
def rest(supabase_stack: SupabaseStack) -> Callable[..., RestClient]:
    """`rest(person)` (None: the anon key alone; token=…: any bearer token) → RestClient."""
    def make(person: Person | None = None, *, token: str | None = None, **token_claims: Any) -> RestClient:
        if token is None and person is not None:
            token = user_token(person, **token_claims)
        return RestClient(supabase_stack, token)
    return make
