"""recording-url: a party of the session (or an admin) gets a short-lived link to its recording."""

import functions_framework

from shared import db
from shared.auth import authenticate_user
from shared.http import json_endpoint
from shared.storage.links import issue_link, parse_link_request


@functions_framework.http
@json_endpoint("recording-url", methods=("POST",))
def recording_url(request):
    """Signs a Storage link of at most 24 hours (never past the recording's expiry), audited, never stored."""
    caller = authenticate_user(request.headers, db.profile_role)
    return issue_link(caller, parse_link_request(request))
