"""Moving every intake form to the newest key (``therapy-db intake-reencrypt``).

Rows not yet under the newest key are taken in batches, in id order, each batch
in its own transaction (``for update skip locked``: a submission in progress is
never waited for; it writes under the newest key itself). Each row is decrypted
with its own version's key and sealed again under the newest, with a fresh nonce,
in one set-based UPDATE per batch. A batch commits as a whole, so an interrupted
run loses at most the batch in flight, and running the command again continues
with the rows still under an older key: it is resumable and idempotent.

A row that cannot be decrypted (its key is missing or wrong, or it was altered)
is left as it is and counted; the command then exits non-zero and names the
sessions (never any content). Once it reports nothing left under an older key,
the old key can be removed from INTAKE_ENCRYPTION_KEYS.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from shared.intake.keys import IntakeUnreadable, KeyRing, Sealed

DEFAULT_BATCH_SIZE = 1000

NEXT_BATCH = """
select id, booking_id, client_id, key_version, nonce, ciphertext
from public.intake_forms
where key_version = %(version)s and id > %(after)s
order by id -- along the (key_version, id) index
limit %(limit)s
for update skip locked
"""

WRITE_BATCH = """
update public.intake_forms f
set key_version = %(newest)s, nonce = v.nonce, ciphertext = v.ciphertext
from unnest(%(ids)s::uuid[], %(nonces)s::bytea[], %(ciphertexts)s::bytea[]) as v (id, nonce, ciphertext)
where f.id = v.id
"""


@dataclass
class Report:
    newest: int
    reencrypted: int = 0
    batches: int = 0
    unreadable: list[uuid.UUID] = field(default_factory=list)  # sessions whose form could not be decrypted
    left_on_older_keys: int = 0
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.reencrypted / self.seconds if self.seconds else 0.0

    @property
    def complete(self) -> bool:
        return not self.unreadable and self.left_on_older_keys == 0


def versions_in_use(conn: psycopg.Connection) -> dict[int, int]:
    """{key version: number of forms}."""
    with conn.cursor(row_factory=tuple_row) as cursor:
        return dict(cursor.execute(
            "select key_version, count(*) from public.intake_forms group by key_version order by key_version"))


def _reencrypt_batch(conn: psycopg.Connection, ring: KeyRing, rows: list[dict], report: Report) -> None:
    ids, nonces, ciphertexts = [], [], []
    for row in rows:
        try:
            plaintext = ring.open(Sealed(row["key_version"], row["nonce"], row["ciphertext"]),
                                  row["booking_id"], row["client_id"])
        except IntakeUnreadable:
            report.unreadable.append(row["booking_id"])
            continue
        sealed = ring.seal_padded(plaintext, row["booking_id"], row["client_id"])
        ids.append(row["id"])
        nonces.append(sealed.nonce)
        ciphertexts.append(sealed.ciphertext)
    if ids:
        conn.execute(WRITE_BATCH, {"newest": ring.newest, "ids": ids, "nonces": nonces, "ciphertexts": ciphertexts})
    report.reencrypted += len(ids)
    report.batches += 1


def reencrypt(url: str, ring: KeyRing, *, batch_size: int = DEFAULT_BATCH_SIZE,
              log: Callable[[str], None] = print) -> Report:
    report = Report(ring.newest)
    started = time.perf_counter()
    # autocommit: each `conn.transaction()` below is a transaction of its own, committed as it ends
    with psycopg.connect(url, row_factory=dict_row, autocommit=True) as conn:
        for version in [v for v in versions_in_use(conn) if v != ring.newest]:
            after = uuid.UUID(int=0)
            while True:
                with conn.transaction():
                    rows = conn.execute(NEXT_BATCH, {"version": version, "after": after, "limit": batch_size}
                                        ).fetchall()
                    if not rows:
                        break
                    after = rows[-1]["id"]
                    _reencrypt_batch(conn, ring, rows, report)
                log(f"batch {report.batches}: {report.reencrypted} forms re-encrypted so far")
                if len(rows) < batch_size:
                    break
        report.seconds = time.perf_counter() - started
        with conn.transaction():
            report.left_on_older_keys = conn.execute(
                "select count(*) as n from public.intake_forms where key_version <> %s", [ring.newest]
            ).fetchone()["n"]
            if report.reencrypted:
                conn.execute(
                    """insert into public.audit_log (action, actor_role, entity_type, new_values)
                       values ('intake_forms_reencrypted', 'system', 'intake_form', %s)""",
                    [Jsonb({"rows": report.reencrypted, "key_version": ring.newest,
                            "unreadable": len(report.unreadable)})])
    return report
