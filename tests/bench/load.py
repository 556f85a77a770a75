"""Concurrent callers against a served function, as the function benchmarks drive
them: each caller has its own kept-alive HTTP connection, makes one warm-up call,
waits at a barrier with the others, then calls until told to stop; throughput and
latency are counted from the barrier on."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

Caller = TypeVar("Caller")
Answer = tuple[float, int, str]  # latency in ms, HTTP status, body


@dataclass
class Result:
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    succeeded: int = 0
    warmed: int = 0
    elapsed: float = 0.0


class KeptAlive:
    """One caller's connection to a function URL; a connection the server closed is reopened once."""

    def __init__(self, function_url: str):
        url = urllib.parse.urlsplit(function_url)
        self.path = url.path
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)

    def post_json(self, body: dict[str, Any], token: str) -> Answer:
        payload = json.dumps(body)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                self.connection.request("POST", self.path, body=payload, headers=headers)
                response = self.connection.getresponse()
                text = response.read().decode()
                break
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                if attempt == 2:
                    raise
        return (time.perf_counter() - started) * 1000, response.status, text


def run_concurrently(callers: Sequence[Caller], call: Callable[[Caller, int], Answer],
                     more: Callable[[int, float], bool]) -> Result:
    """Each caller makes call(caller, 0) to warm up, then, from the common start,
    call(caller, j) for j = 1, 2, … while more(j, seconds since the start) holds
    (asked under one lock, so it may count across callers) and call does not raise
    StopIteration. A call that raises anything else counts as a failure."""
    result = Result()
    lock = threading.Lock()
    clock: dict[str, float] = {}
    go = threading.Barrier(len(callers) + 1, action=lambda: clock.setdefault("started", time.perf_counter()))

    def attempt(caller: Caller, j: int) -> bool:
        try:
            ms, status, text = call(caller, j)
        except StopIteration:
            return False
        except Exception as exc:  # counted, not fatal: the report says what went wrong
            ms, status, text = 0.0, 0, repr(exc)
        with lock:
            if status == 200 and j:
                result.succeeded += 1
                result.latencies_ms.append(ms)
            elif status == 200:
                result.warmed += 1
            else:
                result.failures.append(f"{'' if j else 'warm-up '}{status}: {text[:200]}")
        return True

    def run(caller: Caller) -> None:
        attempt(caller, 0)
        go.wait()
        j = 1
        while True:
            with lock:
                if not more(j, time.perf_counter() - clock["started"]):
                    return
            if not attempt(caller, j):
                return
            j += 1

    threads = [threading.Thread(target=run, args=(caller,), name=f"bench-{i}") for i, caller in enumerate(callers)]
    for thread in threads:
        thread.start()
    go.wait()
    for thread in threads:
        thread.join()
    result.elapsed = time.perf_counter() - clock["started"]
    return result


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def report(result: Result, what: str, out: Callable[[str], None] = print) -> None:
    """`what` is the plural of one call's outcome, e.g. "bookings"."""
    out(f"warm-up: {result.warmed} {what} (not measured)")
    out(f"{what}: {result.succeeded} succeeded, {len(result.failures)} failed")
    for failure in result.failures[:5]:
        out(f"  failure: {failure}")
    out(f"throughput: {result.succeeded / result.elapsed:.1f} {what}/s over {result.elapsed:.1f} s")
    if result.latencies_ms:
        ms = result.latencies_ms
        out(f"latency ms: p50 {percentile(ms, 50):.1f}, p95 {percentile(ms, 95):.1f}, "
            f"p99 {percentile(ms, 99):.1f}, mean {statistics.mean(ms):.1f}")
