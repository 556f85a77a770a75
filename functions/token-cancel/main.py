"""token-cancel: the emailed cancellation link. GET shows the session; only the page's POST cancels."""

import functions_framework

from shared import link_cancel


@functions_framework.http
def token_cancel(request):
    """Shows the session behind a link, and cancels it when the page's button is pressed."""
    return link_cancel.respond(request)
