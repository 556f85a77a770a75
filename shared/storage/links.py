"""recording-url: a short-lived signed link to a session's recording.

Who may have one is decided by the policies of `meeting_recordings`, evaluated as
the caller exactly as PostgREST would (one transaction with `role` set to
`authenticated` and the caller's verified claims in `request.jwt.claims`), never
re-implemented here: a row the caller cannot read answers NOT_FOUND, like one that
does not exist. A link lives at most 24 hours and never past the recording's
`expires_at`. It is a bearer credential, so it is never stored; each issued link
writes an audit row (who, which recording, until when), and only once that row is
committed is the link handed out.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from datetime import datetime, timedelta, timezone

from psycopg.types.json import Jsonb

from shared import db, monitoring
from shared.auth import Caller
from shared.errors import NotFound, RecordingExpired, StorageUnavailable
from shared.inputs import a_uuid, fields, json_object
from shared.storage import client

log = logging.getLogger("functions")

MAX_LINK_SECONDS = 24 * 60 * 60
AUDIT_ACTION = "recording_link_issued"


def parse_link_request(request) -> uuid.UUID:
    return fields(json_object(request), required={"recording_id": a_uuid}, optional={})["recording_id"]


def _readable_recording(caller: Caller, recording_id: uuid.UUID) -> dict | None:
    """The recording as the caller's own policies show it (None: missing, or not theirs)."""
    with db.transaction() as conn:
        conn.execute("select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                     [json.dumps(dict(caller.claims))])
        return conn.execute(
            """select id, booking_id, storage_path, expires_at, deleted_at
               from public.meeting_recordings where id = %s""", [recording_id]).fetchone()


def link_lifetime(expires_at: datetime | None, now: datetime) -> int:
    """Whole seconds the link may live: 24 hours, or less so as to end by `expires_at`."""
    if expires_at is None:
        return MAX_LINK_SECONDS
    return max(0, min(MAX_LINK_SECONDS, math.floor((expires_at - now).total_seconds())))


def issue_link(caller: Caller, recording_id: uuid.UUID) -> dict:
    recording = _readable_recording(caller, recording_id)
    if recording is None:
        raise NotFound(f"No recording with id {recording_id}")
    monitoring.tag_session(recording["booking_id"])
    now = datetime.now(timezone.utc)
    lifetime = 0 if recording["deleted_at"] else link_lifetime(recording["expires_at"], now)
    if lifetime < 1:
        raise RecordingExpired(f"Recording {recording_id} expired at {recording['expires_at'].isoformat()}; "
                               "its file is deleted and no link can be made")
    try:
        url = client.bucket().sign(recording["storage_path"], lifetime)
    except client.StorageError as exc:
        if exc.missing:
            monitoring.report_message(f"Recording {recording_id} has no file at {recording['storage_path']!r}",
                                      level="error", error_code="NOT_FOUND")
            raise NotFound(f"The file of recording {recording_id} is missing from storage") from None
        log.warning("signing a link to recording %s failed: %s", recording_id, exc)
        raise StorageUnavailable() from exc
    link_expires_at = now + timedelta(seconds=lifetime)
    with db.transaction(actor_id=caller.user_id, channel="recording-url") as conn:
        conn.execute(
            """insert into public.audit_log (action, actor_id, actor_role, entity_type, entity_id, new_values)
               values (%s, %s, %s, 'meeting_recording', %s, %s)""",
            [AUDIT_ACTION, caller.user_id, caller.role, recording_id,
             Jsonb({"session_id": str(recording["booking_id"]), "link_expires_at": link_expires_at.isoformat(),
                    "lifetime_seconds": lifetime, "channel": "recording-url"})])
    return {"success": True, "signed_url": url, "expires_at": link_expires_at.isoformat()}
