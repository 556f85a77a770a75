"""booking-reschedule: the session's client or specialist (or an admin) moves it in place."""

import functions_framework

from shared import db
from shared.auth import authenticate_user
from shared.http import json_endpoint
from shared.rescheduling.api import parse_reschedule_request, reschedule_booking


@functions_framework.http
@json_endpoint("booking-reschedule", methods=("POST",))
def booking_reschedule(request):
    """Moves a confirmed, future session to a new start (same length); the calendar event follows."""
    caller = authenticate_user(request.headers, db.profile_role)
    return reschedule_booking(caller, parse_reschedule_request(request))
