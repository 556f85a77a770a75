"""``therapy-db demo``: a small practice in the local database, to book against at once.

One specialist (Europe/London, every day 08:00–18:00, 80.00 EUR for 50 minutes) and two
clients, created as the auth trigger creates users, then access tokens for all three
as Supabase Auth would issue them (HS256 with the project's JWT secret, valid for a day).
Running it again reuses the same people (found by email) and prints fresh tokens.
The output is ``export NAME=value`` lines, for ``eval "$(therapy-db demo)"``.
"""

from __future__ import annotations

import json
import shlex
import time
import uuid
from dataclasses import dataclass

import psycopg

# Fixed ids, so that documents (the OpenAPI examples) can name the demo specialist.
SPECIALIST_ID = uuid.UUID("d3e0c0de-0000-4000-8000-000000000001")
SPECIALIST = ("specialist@demo.test", "Dr Maya Okafor", "Europe/London")
CLIENTS = ((uuid.UUID("d3e0c0de-0000-4000-8000-000000000002"), "alex@demo.test", "Alex Morgan"),
           (uuid.UUID("d3e0c0de-0000-4000-8000-000000000003"), "jordan@demo.test", "Jordan Lee"))
HOURS = ("08:00", "18:00")
RATE = ("80.00", "EUR", 50)
TOKEN_SECONDS = 86400


@dataclass(frozen=True)
class DemoPerson:
    id: uuid.UUID
    email: str
    full_name: str


def _user(conn: psycopg.Connection, user_id: uuid.UUID, email: str, full_name: str) -> DemoPerson:
    row = conn.execute("select id from auth.users where email = %s", [email]).fetchone()
    if row is None:
        row = conn.execute(
            "insert into auth.users (id, email, aud, role, raw_user_meta_data, email_confirmed_at) "
            "values (%s, %s, 'authenticated', 'authenticated', %s, now()) returning id",
            [user_id, email, json.dumps({"full_name": full_name})]).fetchone()
    return DemoPerson(row[0], email, full_name)


def seed(url: str) -> tuple[DemoPerson, list[DemoPerson]]:
    """Creates (or finds) the demo people, the specialist's hours and rate; one transaction."""
    with psycopg.connect(url) as conn:
        email, name, zone = SPECIALIST
        specialist = _user(conn, SPECIALIST_ID, email, name)
        conn.execute("update public.profiles set role = 'specialist', timezone = %s where id = %s",
                     [zone, specialist.id])
        conn.execute(
            """insert into public.availability_windows (specialist_id, day_of_week, start_time, end_time)
               select %s, day, %s, %s from generate_series(0, 6) day
               where not exists (select 1 from public.availability_windows where specialist_id = %s)""",
            [specialist.id, HOURS[0], HOURS[1], specialist.id])
        conn.execute(
            """insert into public.specialist_rates (specialist_id, amount, currency, duration_minutes, effective_from)
               select %s, %s, %s, %s, now() - interval '1 day'
               where not exists (select 1 from public.specialist_rates where specialist_id = %s)""",
            [specialist.id, *RATE, specialist.id])
        clients = [_user(conn, user_id, email, name) for user_id, email, name in CLIENTS]
    return specialist, clients


def access_token(person: DemoPerson, secret: str, base_url: str, *, seconds: int = TOKEN_SECONDS) -> str:
    """A user's access token with the claims Supabase Auth (GoTrue) puts in it."""
    import jwt

    now = int(time.time())
    return jwt.encode({
        "iss": f"{base_url}/auth/v1", "sub": str(person.id), "aud": "authenticated", "role": "authenticated",
        "email": person.email, "iat": now, "exp": now + seconds, "aal": "aal1", "is_anonymous": False,
        "session_id": str(uuid.uuid4()), "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {"full_name": person.full_name},
    }, secret, algorithm="HS256")


def exports(url: str, secret: str, base_url: str) -> list[str]:
    """The `export NAME=value` lines `therapy-db demo` prints."""
    from shared.ops.postgrest import api_keys

    specialist, (client, second) = seed(url)
    values = {
        "SUPABASE_URL": base_url,
        "FUNCTIONS_URL": f"{base_url}/functions/v1",
        "SUPABASE_ANON_KEY": api_keys(secret)["anon"],
        "SPECIALIST_ID": str(specialist.id),
        "SPECIALIST_TOKEN": access_token(specialist, secret, base_url),
        "CLIENT_ID": str(client.id),
        "CLIENT_TOKEN": access_token(client, secret, base_url),
        "SECOND_CLIENT_ID": str(second.id),
        "SECOND_CLIENT_TOKEN": access_token(second, secret, base_url),
    }
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
