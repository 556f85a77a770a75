"""recurring-dispatcher: turns due recurring bookings into sessions (service caller only, daily by pg_cron)."""

import functions_framework

from shared.auth import authenticate_service
from shared.dispatcher import dispatch, parse_dispatch_request
from shared.http import json_endpoint


@functions_framework.http
@json_endpoint("recurring-dispatcher", methods=("POST",))
def recurring_dispatcher(request):
    """Creates every due occurrence up to the horizon; reports what could not be booked."""
    authenticate_service(request.headers)
    return dispatch(**parse_dispatch_request(request))
