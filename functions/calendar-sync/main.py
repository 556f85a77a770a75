"""calendar-sync: the scheduled retry of calendar work that failed (service caller only)."""

import functions_framework

from shared import calendar_sync
from shared.auth import authenticate_service
from shared.http import json_endpoint


@functions_framework.http
@json_endpoint("calendar-sync", methods=("POST",))
def calendar_sync_run(request):
    """Retries due deletions and missing events in batches; reports deletions failing for over a day."""
    authenticate_service(request.headers)
    return {"success": True, **calendar_sync.run_job()}
