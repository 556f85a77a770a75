"""The practice settings row (``private.practice_settings``): the numbers the
booking rules read inside the database, fed from the environment at deploy time.

Each column has an environment variable of the same name in capitals
(``booking_min_notice_hours`` ← ``BOOKING_MIN_NOTICE_HOURS``). ``apply`` writes
every such variable that is set; unset or empty ones leave the stored value alone,
and ``null`` clears a setting that may be empty (``SLOT_STEP_MINUTES=null``). The
database checks each value (its columns carry check constraints), so a bad value
is refused here, at deploy time, with the constraint's name in the sentence.
Later migrations add columns; this module finds them by reading the table, so a
new setting needs no code here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

TABLE = "private.practice_settings"
_BOOKKEEPING_COLUMNS = {"singleton", "updated_at"}


class PracticeSettingsError(RuntimeError):
    """A value from the environment was refused; the message names the variable."""


def columns(conn: psycopg.Connection) -> dict[str, str]:
    """Setting name → SQL type, in table order."""
    rows = conn.cursor(row_factory=dict_row).execute(
        """select a.attname as name, format_type(a.atttypid, a.atttypmod) as type
           from pg_attribute a
           where a.attrelid = 'private.practice_settings'::regclass and a.attnum > 0 and not a.attisdropped
           order by a.attnum"""
    ).fetchall()
    return {r["name"]: r["type"] for r in rows if r["name"] not in _BOOKKEEPING_COLUMNS}


def environment_names(conn: psycopg.Connection) -> list[str]:
    return [name.upper() for name in columns(conn)]


def _value(raw: str, type_: str) -> str | None:
    """An environment value as text for the column's input function; 'null' = NULL."""
    text = raw.strip()
    if text.lower() == "null":
        return None
    if type_.endswith("[]") and not text.startswith("{"):
        # Lists are written as comma-separated values: REMINDER_OFFSETS_MINUTES=1440,120,15
        return "{" + ",".join(part.strip() for part in text.split(",")) + "}"
    return text


def apply(conn: psycopg.Connection, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Writes every setting found in ``environ``; returns name → value written."""
    env = os.environ if environ is None else environ
    written: dict[str, str] = {}
    for name, type_ in columns(conn).items():
        variable = name.upper()
        if not env.get(variable, "").strip():
            continue  # unset, or empty as .env files and deploy tools write "no value": leave it alone
        value = _value(env[variable], type_)
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("update private.practice_settings set {} = {}::" + type_).format(
                        sql.Identifier(name), sql.Literal(value)))
        except psycopg.errors.CheckViolation:
            raise PracticeSettingsError(f"{variable}={env[variable]!r} is out of range for {name}") from None
        except psycopg.errors.NotNullViolation:
            raise PracticeSettingsError(f"{variable} cannot be empty") from None
        except (psycopg.errors.InvalidTextRepresentation, psycopg.errors.NumericValueOutOfRange,
                psycopg.errors.InvalidDatetimeFormat, psycopg.errors.DatatypeMismatch):
            raise PracticeSettingsError(f"{variable}={env[variable]!r} is not a valid {type_}") from None
        written[name] = "" if value is None else value
    return written


def current(conn: psycopg.Connection) -> dict[str, object]:
    row = conn.cursor(row_factory=dict_row).execute("select * from private.practice_settings").fetchone()
    return {name: row[name] for name in columns(conn)}
