"""recording-expiry: removes recordings past their expiry from Storage, then marks their rows (service only, daily)."""

import functions_framework

from shared.auth import authenticate_service
from shared.http import json_endpoint
from shared.storage.expiry import run_expiry


@functions_framework.http
@json_endpoint("recording-expiry", methods=("POST",))
def recording_expiry(request):
    """Removes due objects batch by batch; what Storage refuses is retried by the next run."""
    authenticate_service(request.headers)
    return {"success": True, **run_expiry()}
