"""notifications: sends the emails the database queued (service caller only, every minute by pg_cron)."""

import functions_framework

from shared import notifications
from shared.auth import authenticate_service
from shared.http import json_endpoint


@functions_framework.http
@json_endpoint("notifications", methods=("POST",))
def notifications_run(request):
    """Queues due reminders, then sends due messages until none is left; reports the counts."""
    authenticate_service(request.headers)
    return {"success": True, **notifications.run()}
