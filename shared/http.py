"""The HTTP door of every function: methods, CORS, and the one place where
errors become SPEC's body ``{"success": false, "error": CODE, "message": text}``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Iterable

import flask

from shared import monitoring
from shared.errors import AppError, MethodNotAllowed, error_response
from shared.inputs import MAX_BODY_BYTES, limit_body, settle_body

log = logging.getLogger("functions")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",  # callers authenticate with a bearer token, never cookies
    "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Max-Age": "86400",
}

Handler = Callable[[flask.Request], Any]


def json_endpoint(function_name: str, methods: Iterable[str] = ("POST",)) -> Callable[[Handler], Handler]:
    """Wraps a handler that returns a dict (or a dict and a status) as a JSON endpoint."""
    allowed = tuple(methods)

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def endpoint(request: flask.Request) -> flask.Response:
            if request.method == "OPTIONS":
                request.max_content_length = MAX_BODY_BYTES
                settle_body(request)
                return flask.Response(status=204, headers=CORS_HEADERS)
            with monitoring.scope(function_name):
                try:
                    # Before anything reads the body: no function reads more than this.
                    limit_body(request, MAX_BODY_BYTES)
                    if request.method not in allowed:
                        raise MethodNotAllowed(request.method, allowed)
                    result = handler(request)
                    body, status = result if isinstance(result, tuple) else (result, 200)
                    headers: dict[str, str] = {}
                except Exception as exc:  # the one place errors become answers
                    body, status = error_response(exc)
                    headers = exc.headers if isinstance(exc, AppError) else {}
                    monitoring.record_error(exc, body["error"])
                finally:
                    settle_body(request)
                    monitoring.flush()
            response = flask.jsonify(body)
            response.status_code = status
            # Answers are per caller and may hold health data (intake forms): never kept by a cache.
            response.headers.update({**CORS_HEADERS, "Cache-Control": "no-store", **headers})
            return response

        return endpoint

    return decorate
