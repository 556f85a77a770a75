"""intake-form: the session's client submits the intake form; the client or the specialist reads it."""

import functions_framework

from shared import db
from shared.auth import authenticate_user
from shared.http import json_endpoint
from shared.intake import forms
from shared.intake.answers import parse_read_request, parse_submit_request


@functions_framework.http
@json_endpoint("intake-form", methods=("GET", "POST"))
def intake_form(request):
    """POST stores the encrypted answers and consents; GET answers them decrypted (each read audited)."""
    caller = authenticate_user(request.headers, db.profile_role)
    if request.method == "GET":
        return forms.read(caller, parse_read_request(request))
    return forms.submit(caller, parse_submit_request(request))
