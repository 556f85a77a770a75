"""Serves every function of deploy.yaml together, as Supabase does, at
``/functions/v1/<name>``, plus ``GET /functions/v1/health`` and the functions'
OpenAPI description at ``GET /functions/v1/openapi.json`` (shared/ops/openapi.py).
With ``POSTGREST_URL`` set, ``/rest/v1/…`` is forwarded to that PostgREST on the
same port (shared/ops/postgrest.py), as on a Supabase project.

Each function is loaded with functions-framework's own ``create_app`` (exactly
what ``functions-framework --source … --target …`` serves), and the apps are
mounted side by side; gunicorn serves the whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import flask
import yaml

from shared.ops.migrate import REPO_ROOT

PREFIX = "/functions/v1"


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    source: str
    entry_point: str
    trigger: str
    schedule: str | None
    settings: tuple[str, ...]


def load_deploy(path: Path = REPO_ROOT / "deploy.yaml") -> list[FunctionSpec]:
    document = yaml.safe_load(path.read_text()) or {}
    return [
        FunctionSpec(
            name=entry["name"], source=entry["source"], entry_point=entry["entry_point"],
            trigger=entry["trigger"], schedule=entry.get("schedule"),
            settings=tuple(entry.get("settings") or ()),
        )
        for entry in document.get("functions") or []
    ]


def health() -> tuple[dict, int]:
    """The database and calendar state, for people and probes."""
    from shared import calendar, db, notifications
    from shared.notifications import outbox as notification_outbox

    report: dict = {"calendar": "enabled" if calendar.get_gateway().enabled else "disabled"}
    status = 200
    try:
        with db.transaction() as conn:
            conn.execute("select 1")
            pending = conn.execute(
                """select count(*) filter (where completed_at is null) as pending,
                          count(*) filter (where completed_at is null
                                           and created_at < now() - interval '1 day') as stuck
                   from private.calendar_deletions"""
            ).fetchone()
            moves = conn.execute(
                """select count(*) filter (where completed_at is null) as pending,
                          count(*) filter (where completed_at is null
                                           and queued_at < now() - interval '1 day') as stuck
                   from private.calendar_patches"""
            ).fetchone()
            if conn.execute("select to_regclass('private.scheduled_call_results') is not null as present"
                            ).fetchone()["present"]:
                report["scheduled_call_failures_24h"] = conn.execute(
                    "select count(*) as failures from private.scheduled_call_results "
                    "where failed and created > now() - interval '1 day'"
                ).fetchone()["failures"]
            email = notification_outbox.stats(conn)
        report["database"] = "ok"
        # Email: off until SMTP_URL and EMAIL_FROM are set; the backlog waits in the outbox meanwhile.
        report["email"] = "enabled" if notifications.email_enabled() else "disabled"
        report["email_backlog"] = email["backlog"]
        report["email_oldest_unsent_at"] = email["oldest_unsent_at"]
        report["email_refused_7d"] = email["refused_7d"]
        report["calendar_deletions_pending"] = pending["pending"]
        report["calendar_deletions_stuck"] = pending["stuck"]
        report["calendar_moves_pending"] = moves["pending"]
        report["calendar_moves_stuck"] = moves["stuck"]
        if pending["stuck"] or moves["stuck"]:
            status = 503
    except Exception as exc:  # reported as state, not raised
        report["database"] = f"unavailable: {type(exc).__name__}"
        status = 503
    report["status"] = "ok" if status == 200 else "degraded"
    return report, status


def build_app(root: Path = REPO_ROOT):
    import functions_framework

    mounts = {}
    for spec in load_deploy(root / "deploy.yaml"):
        mounts[spec.name] = functions_framework.create_app(
            spec.entry_point, str(root / spec.source / "main.py"))

    front = flask.Flask("functions")

    @front.get(f"{PREFIX}/health")
    def health_endpoint():
        report, status = health()
        return flask.jsonify(report), status

    @front.get(f"{PREFIX}/openapi.json")
    def openapi_endpoint():
        from shared.ops.openapi import document

        # The servers entry points back at this very server, whatever host and port it answers on.
        return flask.jsonify(document(server_url=flask.request.host_url.rstrip("/") + PREFIX))

    from shared.ops.postgrest import REST_PREFIX, rest_proxy
    from shared.settings import get_settings

    postgrest_url = get_settings().postgrest_url
    rest_api = rest_proxy(postgrest_url) if postgrest_url else None

    def dispatch(environ, start_response):
        # /functions/v1/<name>[/<rest>] reaches the function as /<rest> (its "/"),
        # the path functions-framework answers at when served alone.
        path = environ.get("PATH_INFO", "")
        if rest_api is not None and (path == REST_PREFIX or path.startswith(REST_PREFIX + "/")):
            return rest_api(environ, start_response)
        if path.startswith(PREFIX + "/"):
            name, _, rest = path[len(PREFIX) + 1:].partition("/")
            if name in mounts:
                environ = {**environ, "SCRIPT_NAME": environ.get("SCRIPT_NAME", "") + f"{PREFIX}/{name}",
                           "PATH_INFO": "/" + rest}
                return mounts[name](environ, start_response)
        return front.wsgi_app(environ, start_response)

    return dispatch


def serve(host: str = "127.0.0.1", port: int = 8000, threads: int = 8, on_ready=None) -> None:
    """Serves until stopped; ``on_ready()`` runs once the port is bound and the worker is up."""
    from gunicorn.app.base import BaseApplication

    app = build_app()

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", 1)
            self.cfg.set("threads", threads)
            self.cfg.set("timeout", 0)
            self.cfg.set("accesslog", None)
            if on_ready:
                self.cfg.set("when_ready", lambda _server: on_ready())

        def load(self):
            return app

    Server().run()
