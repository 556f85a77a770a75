"""The dispatch benchmark (tests/bench/dispatch.py) at its smoke size, so its seeding,
its served call, its memory reading and its report cannot rot. Timings are not
checked here; run ``python -m tests.bench.dispatch`` for those.
"""

from __future__ import annotations

import pytest

from tests.bench import dispatch as bench

SIZE = bench.SMALL_SIZES[0]
STEPS = ["due recurrences", "occurrences and their checks", "overlaps within the batch", "insert sessions",
         "move recurrences on", "answer"]


@pytest.fixture(scope="module")
def measured(pg_cluster) -> tuple[bench.SizeResult, list[str]]:
    log: list[str] = []
    return bench.measure_size(pg_cluster, SIZE, breakdown=True, floor=True, log=log.append), log


def test_every_seeded_recurrence_is_dispatched_once_and_the_second_run_makes_nothing(measured):
    result, _log = measured
    assert bench.check(result) == []
    assert (result.first.count, result.first.errors, result.sessions) == (SIZE, 0, SIZE)
    assert (result.second.count, result.second.errors) == (0, 0)


def test_seed_makes_ten_recurrences_per_specialist_each_with_its_own_client(measured):
    _result, log = measured
    assert any(f"seeded {SIZE:,} recurring bookings over {SIZE // 10:,} specialists and {SIZE:,} distinct clients"
               in line for line in log)


def test_peak_memory_of_the_function_process_is_read(measured):
    result, _log = measured
    assert 10 * 1024 < result.peak_kib_before <= result.peak_kib_after, "VmHWM of the gunicorn worker, in KiB"


def test_breakdown_names_every_step_of_the_sql_function(measured):
    result, _log = measured
    assert [name for name, _seconds in result.breakdown] == STEPS
    assert all(seconds >= 0 for _name, seconds in result.breakdown)


def test_floor_times_the_bare_table_with_and_without_the_exclusion_constraints(measured):
    result, _log = measured
    assert [name for name, _seconds in result.floor] == [
        "primary key only", "primary key and the two no-overlap constraints"]
    assert all(seconds > 0 for _name, seconds in result.floor)


def test_report_prints_time_second_run_and_memory(measured):
    result, _log = measured
    lines: list[str] = []
    bench.report(result, out=lines.append)
    assert lines[0] == f"{SIZE:,} due recurring bookings:"
    assert lines[1].startswith(f"  dispatch: {SIZE:,} sessions created, 0 errors,")
    assert lines[2].startswith("  immediate second run: 0 created")
    assert "peak memory (VmHWM)" in lines[3]
    assert len(lines) == 5 + len(STEPS) + 3
    assert lines[-3] == f"  lower bound: the same {SIZE:,} rows into a bare table (one INSERT ... SELECT):"
