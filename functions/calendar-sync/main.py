"""calendar-sync: the scheduled retry of calendar deletions that failed (service caller only)."""

import functions_framework

from shared import calendar_sync
from shared.auth import authenticate_service
from shared.http import json_endpoint


@functions_framework.http
@json_endpoint("calendar-sync", methods=("POST",))
def calendar_sync_run(request):
    """Retries every due deletion in batches; reports those failing for over a day."""
    authenticate_service(request.headers)
    return {"success": True, **calendar_sync.process_due()}
