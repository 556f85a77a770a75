"""booking-cancel: the session's client or specialist (or an admin) cancels it."""

import functions_framework

from shared import db
from shared.auth import authenticate_user
from shared.booking_cancel import cancel_booking, parse_cancel_request
from shared.http import json_endpoint


@functions_framework.http
@json_endpoint("booking-cancel", methods=("POST",))
def booking_cancel(request):
    """Cancels a confirmed, future session; the calendar event follows (retried until deleted)."""
    caller = authenticate_user(request.headers, db.profile_role)
    return cancel_booking(caller, parse_cancel_request(request))
