"""recording-expiry: the recordings past their `expires_at` leave Storage, then
their rows are marked (`deleted_at`) and kept as the record.

Batch by batch, each in one transaction: the rows are locked (`for update skip
locked`), their objects removed from Storage, then the rows marked and the removal
audited, and the transaction commits. So
- a row is marked only after Storage removed its object; if the commit fails after
  that, the row is still due and the next run removes it again (Storage answers
  that nothing was left to remove) and marks it;
- a batch Storage refuses is rolled back whole and the run stops: the next run
  starts from what is left;
- two runs at once never take the same rows, so each object is removed once.
A due row cannot be given a link (recording-url answers RECORDING_EXPIRED from
`expires_at`), so no row ever offers an object that is gone.
"""

from __future__ import annotations

import logging

from shared import db
from shared.errors import StorageUnavailable
from shared.storage import client

log = logging.getLogger("functions")

# Objects per Storage call (Storage accepts up to 1,000 prefixes per removal).
BATCH_SIZE = 100


def _remove_batch(limit: int) -> int:
    """One batch: lock, remove, mark, audit. Returns how many recordings it took (0: none due)."""
    with db.transaction(channel="recording-expiry") as conn:
        rows = conn.execute(
            """select id, storage_path from public.meeting_recordings
               where deleted_at is null and expires_at <= now()
               order by expires_at, id
               limit %s
               for update skip locked""", [limit]).fetchall()
        if not rows:
            return 0
        client.bucket().remove([row["storage_path"] for row in rows])
        conn.execute(
            """with marked as (
                 update public.meeting_recordings set deleted_at = now()
                 where id = any(%s) and deleted_at is null
                 returning id, booking_id, storage_path, expires_at, deleted_at)
               insert into public.audit_log (action, actor_role, entity_type, entity_id, old_values, new_values)
               select 'recording_deleted', 'system', 'meeting_recording', id,
                      jsonb_build_object('expires_at', expires_at),
                      jsonb_build_object('deleted_at', deleted_at, 'session_id', booking_id,
                                         'storage_path', storage_path, 'channel', 'recording-expiry')
               from marked""", [[row["id"] for row in rows]])
    return len(rows)


def run_expiry(batch_size: int | None = None) -> dict[str, int]:
    """Removes every due recording; a Storage failure stops the run with STORAGE_UNAVAILABLE."""
    removed = 0
    while True:
        try:
            taken = _remove_batch(batch_size or BATCH_SIZE)
        except client.StorageError as exc:
            log.warning("recording expiry stopped after %d removals: %s", removed, exc)
            raise StorageUnavailable(
                f"Storage failed while removing expired recordings ({exc}); {removed} were removed in this "
                "run, the rest are retried on the next") from exc
        if taken == 0:
            return {"removed": removed}
        removed += taken
