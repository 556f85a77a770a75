"""Small helpers for the data-layer tests: run a statement that must be refused,
insert a row from a dict, and a scratch database on the test cluster."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator

import psycopg
import pytest
from psycopg import sql


def refused(conn: psycopg.Connection, statement: str | sql.Composable, params=None) -> psycopg.Error:
    """Runs ``statement`` in a savepoint and returns the error it raised; fails the
    test when it succeeds. The savepoint keeps the test's transaction usable."""
    with pytest.raises(psycopg.Error) as caught:
        with conn.transaction():
            conn.execute(statement, params)
    return caught.value


def insert_row(conn: psycopg.Connection, table: str, values: dict) -> dict:
    """``insert into public.<table> (<keys>) values (<values>) returning *``."""
    query = sql.SQL("insert into {} ({}) values ({}) returning *").format(
        sql.Identifier("public", table),
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() * len(values)),
    )
    return conn.execute(query, list(values.values())).fetchone()


def cancel(conn: psycopg.Connection, session_id, cancelled_by=None, reason: str | None = None) -> dict:
    """Cancels a session the one supported way: a row in booking_cancellations."""
    return insert_row(conn, "booking_cancellations",
                      {"booking_id": session_id, "cancelled_by": cancelled_by, "reason": reason})


@contextmanager
def scratch_database(cluster) -> Iterator[str]:
    """An empty database (from template0) on the test cluster; dropped afterwards."""
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("create database {} template template0").format(sql.Identifier(name)))
        try:
            yield cluster.url(name)
        finally:
            admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
