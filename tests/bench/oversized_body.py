"""What an oversized request body costs the served functions: a chunked body of
--megabytes MiB (no Content-Length) is streamed to token-cancel and to booking-create,
and the gunicorn worker's peak resident memory (VmHWM) is read before and after each
(after a small warm-up request, so imports and the pool are not counted). "reset"
means the worker answered 413 and closed the connection while the client still sent.

    .venv/bin/python -m tests.bench.oversized_body              # 200 MiB per request
    .venv/bin/python -m tests.bench.oversized_body --small      # 8 MiB (the smoke run)
"""

from __future__ import annotations

import argparse
import http.client
import time
import uuid
from pathlib import Path

from tests.bench.stack import served_stack
from tests.functions_fixtures import user_token

CHUNK = b"x" * (1024 * 1024)


def _worker_pids(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for process {pid}")


def _stream(port: int, path: str, headers: dict[str, str], prefix: bytes, megabytes: int) -> tuple[int, float]:
    """Sends the body chunked; returns the status and the seconds until the answer."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request("POST", path, body=iter([prefix] + [CHUNK] * megabytes), headers=headers,
                           encode_chunked=True)
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    except (ConnectionResetError, BrokenPipeError):
        return 0, time.perf_counter() - started
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--small", action="store_true", help="8 MiB per request")
    args = parser.parse_args()
    megabytes = 8 if args.small else args.megabytes

    with served_stack(threads=4) as stack:
        master = stack.served._process.pid  # noqa: SLF001 - the benchmark owns the process
        [worker] = _worker_pids(master)
        token = user_token(uuid.uuid4(), secret=stack.jwt_secret)
        cases = [
            ("token-cancel", {"Content-Type": "application/x-www-form-urlencoded"}, b"token="),
            ("booking-create", {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
             b'{"special_requests": "'),
        ]
        print(f"oversized body: {megabytes} MiB chunked per request, gunicorn worker {worker}")
        print(f"{'function':16} {'status':>6} {'seconds':>8} {'peak RSS before':>16} {'after':>10} {'growth':>10}")
        for name, headers, prefix in cases:
            _stream(stack.served.port, f"/functions/v1/{name}", headers, prefix, 0)  # warm up: imports, pool
            before = _peak_kib(worker)
            status, seconds = _stream(stack.served.port, f"/functions/v1/{name}", headers, prefix, megabytes)
            after = _peak_kib(worker)
            shown = status or "reset"  # the server answered 413 and closed while the client still sent
            print(f"{name:16} {shown:>6} {seconds:>8.2f} {before / 1024:>13.1f} MiB {after / 1024:>6.1f} MiB "
                  f"{(after - before) / 1024:>6.1f} MiB")


if __name__ == "__main__":
    main()
