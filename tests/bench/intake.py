"""Intake forms: submit and read latency through the served intake-form function with
concurrent callers, and the re-encryption rate of ``therapy-db intake-reencrypt``.

    python -m tests.bench.intake            # 16 callers × 100 forms; re-encryption of 100,000 forms
    python -m tests.bench.intake --small    # 4 callers × 8 forms; 1,000 forms: a smoke run

Everything is started here and thrown away afterwards (tests.bench.stack): a
PostgreSQL cluster with every migration, the local Calendar API server, and all
functions served by shared.ops.serve in a gunicorn subprocess, whose key ring is
the tests' (version 1).

The data, set-based in SQL (the seeding of tests.bench.booking_cancel): S
specialists, 16 clients each, and per specialist N confirmed sessions an hour
apart from two days ahead, S × N = the re-encryption's number of forms.

1. Submit: caller i submits, as each session's client, the forms of specialist i's
   first sessions (a complete form of seed 001's steps, every free text filled);
2. Read: the same callers read them back, in turn as the client and as the
   specialist (each read decrypts and writes its audit row).
   Each caller's first call is a warm-up and is not measured; latency is the whole
   HTTP call as the caller sees it.
3. Re-encryption: every other session gets its form written directly (sealed here
   under version 1, as the function would, then COPY), a version 2 key is added,
   and ``shared.intake.reencrypt`` moves every form to it, in batches of 1,000;
   a sample is then decrypted with version 2 alone.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import time
import uuid
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from shared.intake.forms import plaintext
from shared.intake.keys import KeyRing, Sealed, parse_keys
from shared.intake.reencrypt import DEFAULT_BATCH_SIZE, reencrypt
from shared.ops.intake_openapi import EXAMPLE_ANSWERS, EXAMPLE_CONSENTS
from tests.bench.booking_cancel import SESSIONS_STEP, session_uuid
from tests.bench.booking_create import SEED_STEPS, client_uuid, specialist_uuid
from tests.bench.load import Answer, KeptAlive, Result, report, run_concurrently
from tests.bench.stack import served_stack
from tests.functions_fixtures import INTAKE_KEYS, user_token
from tests.intake_support import INTAKE_KEY_2

CLIENTS_PER_SPECIALIST = 16


@dataclass(frozen=True)
class Scale:
    callers: int  # concurrent callers; caller i works on specialist i's sessions
    forms_per_caller: int  # forms each caller submits, then reads
    specialists: int
    sessions_per_specialist: int  # specialists × this = the forms re-encrypted

    @property
    def forms(self) -> int:
        return self.specialists * self.sessions_per_specialist


FULL = Scale(callers=16, forms_per_caller=100, specialists=400, sessions_per_specialist=250)
SMALL = Scale(callers=4, forms_per_caller=8, specialists=4, sessions_per_specialist=250)


def seed(url: str, scale: Scale) -> int:
    params = {"specialists": scale.specialists, "clients": scale.specialists * CLIENTS_PER_SPECIALIST,
              "sessions_per_caller": scale.sessions_per_specialist,
              "clients_per_specialist": CLIENTS_PER_SPECIALIST, "minutes": 50}
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            for name, statement in SEED_STEPS:
                if name in ("users and profiles", "specialist roles"):
                    conn.execute(statement, params)
            # Imported as an operator would, booking rules off (no rates or weekly hours here).
            conn.execute("set local app.booking_rules = 'off'")
            conn.execute(SESSIONS_STEP, params)
        conn.execute("vacuum analyze")
        return conn.execute("select count(*) from public.sessions").fetchone()[0]


def client_of(i: int, j: int) -> uuid.UUID:
    return client_uuid(i * CLIENTS_PER_SPECIALIST + j % CLIENTS_PER_SPECIALIST)


def form_answers(i: int, j: int) -> dict:
    answers = json.loads(json.dumps(EXAMPLE_ANSWERS))
    answers["personal_info"]["medical_history"] = f"Benchmark history {i}-{j}: " + "asthma, migraines. " * 20
    answers["mental_health"]["severity_level"] = 1 + (i + j) % 10
    return answers


# -- the HTTP part ---------------------------------------------------------------------------------

class Connection(KeptAlive):
    def get(self, query: str, token: str) -> Answer:
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                self.connection.request("GET", f"{self.path}?{query}", headers={"Authorization": f"Bearer {token}"})
                response = self.connection.getresponse()
                text = response.read().decode()
                break
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                if attempt == 2:
                    raise
        return (time.perf_counter() - started) * 1000, response.status, text


class Caller:
    def __init__(self, index: int, base_url: str, jwt_secret: str):
        self.index = index
        self.specialist_token = user_token(specialist_uuid(index), secret=jwt_secret)
        self.client_tokens = {c: user_token(client_of(index, c), secret=jwt_secret)
                              for c in range(CLIENTS_PER_SPECIALIST)}
        self.http = Connection(f"{base_url}/intake-form")

    def submit(self, j: int) -> Answer:
        body = {"booking_id": str(session_uuid(self.index, j)), "answers": form_answers(self.index, j),
                "consents": EXAMPLE_CONSENTS}
        return self.http.post_json(body, self.client_tokens[j % CLIENTS_PER_SPECIALIST])

    def read(self, j: int) -> Answer:
        token = self.specialist_token if j % 2 else self.client_tokens[j % CLIENTS_PER_SPECIALIST]
        return self.http.get(f"booking_id={session_uuid(self.index, j)}", token)


def over_http(scale: Scale, base_url: str, jwt_secret: str) -> tuple[Result, Result]:
    callers = [Caller(i, base_url, jwt_secret) for i in range(scale.callers)]
    more = lambda j, _elapsed: j < scale.forms_per_caller  # noqa: E731
    return run_concurrently(callers, Caller.submit, more), run_concurrently(callers, Caller.read, more)


# -- re-encryption -------------------------------------------------------------------------------------

def write_forms_directly(url: str, scale: Scale, ring: KeyRing) -> int:
    """Every session without a form gets one, sealed here exactly as the function seals it."""
    with psycopg.connect(url) as conn:
        have = {row[0] for row in conn.execute("select booking_id from public.intake_forms")}
        with conn.cursor().copy("copy public.intake_forms (booking_id, client_id, consent_treatment, "
                                "consent_confidentiality, consent_data_processing, key_version, nonce, ciphertext) "
                                "from stdin") as copy:
            written = 0
            for i in range(scale.specialists):
                for j in range(scale.sessions_per_specialist):
                    session_id = session_uuid(i, j)
                    if session_id in have:
                        continue
                    sealed = ring.seal(plaintext(form_answers(i, j)), session_id, client_of(i, j))
                    copy.write_row((session_id, client_of(i, j), True, True, True, sealed.key_version,
                                    sealed.nonce, sealed.ciphertext))
                    written += 1
        conn.commit()
        conn.execute("analyze public.intake_forms")
    return written


def check_sample(url: str, newest_only: KeyRing, sample: int = 200) -> int:
    """Decrypts a random sample with the newest key alone; returns how many read back as written."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        rows = conn.execute("select booking_id, client_id, key_version, nonce, ciphertext from public.intake_forms "
                            "order by random() limit %s", [sample]).fetchall()
    good = 0
    for row in rows:
        opened = json.loads(newest_only.open(Sealed(row["key_version"], row["nonce"], row["ciphertext"]),
                                             row["booking_id"], row["client_id"]))
        good += opened["answers"]["personal_info"]["medical_history"].startswith("Benchmark history")
    return good


# -- the command ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a smoke run: 4 callers × 8 forms; 1,000 forms")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads of the served functions")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="re-encryption batch size")
    args = parser.parse_args(argv)
    scale = SMALL if args.small else FULL
    random.seed(1)

    with served_stack(args.threads) as stack:
        sessions = seed(stack.database_url, scale)
        print(f"seeded {scale.specialists} specialists, {scale.specialists * CLIENTS_PER_SPECIALIST} clients, "
              f"{sessions} confirmed sessions")
        print(f"intake-form: {scale.callers} concurrent callers, {scale.forms_per_caller} forms each, "
              f"served with {args.threads} gunicorn threads")
        submitted, read = over_http(scale, stack.served.base_url, stack.jwt_secret)
        print("-- submit (POST)")
        report(submitted, "submissions")
        print("-- read (GET, decrypted and audited)")
        report(read, "reads")
        with psycopg.connect(stack.database_url) as conn:
            audited = conn.execute("select count(*) from public.audit_log where action = 'intake_form_read'"
                                   ).fetchone()[0]
        print(f"checked: {audited} audit rows for {read.succeeded + read.warmed} reads")

        old_ring = KeyRing(parse_keys(INTAKE_KEYS))
        written = write_forms_directly(stack.database_url, scale, old_ring)
        print(f"-- re-encryption: {written} more forms written under key version 1 "
              f"({scale.forms} in all), then key version 2 added")
        rotated = KeyRing(parse_keys(f"{INTAKE_KEYS},2:{INTAKE_KEY_2}"))
        result = reencrypt(stack.database_url, rotated, batch_size=args.batch_size, log=lambda _line: None)
        print(f"re-encrypted: {result.reencrypted} forms in {result.batches} batches of up to {args.batch_size}, "
              f"{result.seconds:.2f} s: {result.rows_per_second:,.0f} rows/s; left on older keys: "
              f"{result.left_on_older_keys}, unreadable: {len(result.unreadable)}")
        good = check_sample(stack.database_url, KeyRing(parse_keys(f"2:{INTAKE_KEY_2}")))
        print(f"checked: a sample of {good} forms decrypts with key version 2 alone")

        ok = (not submitted.failures and not read.failures
              and submitted.succeeded + submitted.warmed == scale.callers * scale.forms_per_caller
              and audited == read.succeeded + read.warmed
              and result.reencrypted == scale.forms and result.complete and good > 0)
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
