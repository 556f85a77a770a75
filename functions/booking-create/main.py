"""booking-create: a signed-in client books a slot with a specialist."""

import functions_framework

from shared import db
from shared.auth import authenticate_user
from shared.booking import create_booking, parse_booking_request
from shared.http import json_endpoint


@functions_framework.http
@json_endpoint("booking-create", methods=("POST",))
def booking_create(request):
    """Checks the slot, creates the calendar event and the confirmed session; answers with the cancel link."""
    caller = authenticate_user(request.headers, db.profile_role)
    return create_booking(caller, parse_booking_request(request))
