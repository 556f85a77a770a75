"""The functions' database access: one lazily created connection pool per
process, and transactions that say who is acting.

Functions connect as the service (``DATABASE_URL``); inside a transaction they
set ``app.actor_id`` (read by ``private.current_actor()``) and ``app.channel``
so that triggers record who did what, and through which door.
"""

from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from typing import Iterator

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from shared.settings import get_settings

_pool: ConnectionPool | None = None
_pool_lock = threading.Lock()

POOL_MAX_SIZE = 10  # gunicorn serves a function with 4 threads per CPU; a few spare


def pool() -> ConnectionPool:
    """The process's pool, opened on first use and reused across invocations."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                created = ConnectionPool(
                    get_settings().require("database_url"),
                    min_size=1,
                    max_size=POOL_MAX_SIZE,
                    kwargs={"row_factory": dict_row, "prepare_threshold": None},
                    open=False,
                    name="functions",
                )
                created.open(wait=False)
                _pool = created
    return _pool


def close_pool() -> None:
    """Closes the pool (tests, and settings changes)."""
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.close()
            _pool = None


@contextmanager
def transaction(*, actor_id: uuid.UUID | None = None, channel: str | None = None) -> Iterator[psycopg.Connection]:
    """One transaction: committed when the block ends normally, rolled back on error."""
    with pool().connection() as conn:
        with conn.transaction():
            if actor_id is not None or channel is not None:
                conn.execute(
                    "select set_config('app.actor_id', %s, true), set_config('app.channel', %s, true)",
                    [str(actor_id) if actor_id else "", channel or ""],
                )
            yield conn


def profile_role(user_id: uuid.UUID) -> str | None:
    """The role in the user's profile, or None when they have none."""
    with pool().connection() as conn:
        row = conn.execute("select role from public.profiles where id = %s", [user_id]).fetchone()
    return row["role"] if row else None
