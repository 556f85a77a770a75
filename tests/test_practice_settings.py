"""The practice settings row: defaults, values from the environment, refusals."""

from __future__ import annotations

import psycopg
import pytest

from shared.ops import practice_settings
from shared.ops.cli import main as cli


def test_defaults_are_the_documented_ones(db):
    assert practice_settings.current(db) == {
        **practice_settings.current(db),
        "booking_min_notice_hours": 24,
        "booking_max_advance_days": 30,
        "cancellation_min_notice_hours": 0,
        "dispatch_horizon_days": 7,
    }


def test_set_variables_are_written_and_unset_ones_left_alone(db):
    written = practice_settings.apply(db, {"BOOKING_MIN_NOTICE_HOURS": "48", "UNRELATED": "x",
                                           "BOOKING_MAX_ADVANCE_DAYS": " "})
    assert written == {"booking_min_notice_hours": "48"}
    now = practice_settings.current(db)
    assert now["booking_min_notice_hours"] == 48
    assert now["booking_max_advance_days"] == 30


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("BOOKING_MIN_NOTICE_HOURS", "a day", "BOOKING_MIN_NOTICE_HOURS='a day' is not a valid integer"),
        ("BOOKING_MIN_NOTICE_HOURS", "-1", "BOOKING_MIN_NOTICE_HOURS='-1' is out of range for booking_min_notice_hours"),
        ("BOOKING_MAX_ADVANCE_DAYS", "0", "BOOKING_MAX_ADVANCE_DAYS='0' is out of range for booking_max_advance_days"),
        ("BOOKING_MAX_ADVANCE_DAYS", "null", "BOOKING_MAX_ADVANCE_DAYS cannot be empty"),
    ],
)
def test_bad_values_are_refused_and_change_nothing(db, variable, value, message):
    before = practice_settings.current(db)
    with pytest.raises(practice_settings.PracticeSettingsError) as refused:
        practice_settings.apply(db, {variable: value})
    assert str(refused.value) == message
    assert practice_settings.current(db) == before


def test_api_roles_can_neither_read_nor_write_the_settings(db):
    for role in ("anon", "authenticated"):
        db.execute("savepoint api")
        db.execute(f"set local role {role}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("select * from private.practice_settings")
        db.execute("rollback to savepoint api")


def test_the_row_cannot_be_deleted_or_duplicated(db):
    with pytest.raises(psycopg.Error, match="cannot be deleted"):
        db.execute("delete from private.practice_settings")
    db.rollback()
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute("insert into private.practice_settings default values")
    db.rollback()


def test_settings_command_applies_the_environment_and_prints_every_setting(database_url, monkeypatch, capsys):
    import psycopg as pg

    monkeypatch.setenv("BOOKING_MAX_ADVANCE_DAYS", "45")
    try:
        assert cli(["--database-url", database_url, "settings"]) == 0
        printed = capsys.readouterr().out.splitlines()
        assert "BOOKING_MAX_ADVANCE_DAYS=45" in printed
        assert "BOOKING_MIN_NOTICE_HOURS=24" in printed
    finally:
        with pg.connect(database_url, autocommit=True) as conn:
            conn.execute("update private.practice_settings set booking_max_advance_days = 30")


def test_null_clears_a_setting_that_may_be_empty(db):
    practice_settings.apply(db, {"SLOT_STEP_MINUTES": "15"})
    assert practice_settings.current(db)["slot_step_minutes"] == 15
    practice_settings.apply(db, {"SLOT_STEP_MINUTES": "null"})
    assert practice_settings.current(db)["slot_step_minutes"] is None
