"""What the intake tests share: a complete form, the consents, and calling
intake-form as someone (through functions-framework's app, or the served process)."""

from __future__ import annotations

import base64
import copy
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import functions_framework
import psycopg

from tests.functions_fixtures import Answer, FunctionClient, bearer
from tests.support import Person

REPO_ROOT = Path(__file__).resolve().parent.parent
CONSENTS = {"treatment": True, "confidentiality": True, "data_processing": True}
# A second and a third key, for rotation (the first is functions_fixtures.INTAKE_KEY_1).
INTAKE_KEY_2 = "pYw1uWb9xK0dQ2m3n4o5p6q7r8s9t0u1v2w3x4y5z6A="
INTAKE_KEY_3 = base64.b64encode(bytes(range(100, 132))).decode()


def intake_app() -> Any:
    return functions_framework.create_app("intake_form", str(REPO_ROOT / "functions" / "intake-form" / "main.py"))


def answers(marker: str = "") -> dict[str, Any]:
    """A complete form of seed 001's three steps; `marker` goes into every free text."""
    return copy.deepcopy({
        "personal_info": {
            "emergency_contact": f"Maria Quist, sister, +44 20 7946 0000 {marker}",
            "medical_history": f"Asthma since childhood {marker}",
            "current_medications": f"Sertraline 50 mg {marker}",
            "allergies": "Penicillin",
        },
        "mental_health": {
            "previous_therapy": True,
            "current_symptoms": ["insomnia", f"panic attacks {marker}"],
            "severity_level": 7,
            "trigger_factors": ["crowds", "deadlines"],
            "coping_mechanisms": ["running"],
        },
        "therapy_goals": {
            "goals": ["sleep through the night", f"return to work {marker}"],
            "expectations": "Practical exercises",
            "preferred_approach": "CBT",
            "timeline": "three months",
        },
    })


def form(booking_id: uuid.UUID, marker: str = "", **changes: Any) -> dict[str, Any]:
    return {"booking_id": str(booking_id), "answers": answers(marker), "consents": dict(CONSENTS), **changes}


def submit(door: FunctionClient, who: Person | None, body: Any, **token: Any) -> Answer:
    return door.post_json(body, headers=bearer(who, **token) if who else {})


def read(door: FunctionClient, who: Person | None, booking_id: uuid.UUID | str, **token: Any) -> Answer:
    return door.request("GET", query=f"booking_id={booking_id}", headers=bearer(who, **token) if who else {})


def insert_session(conn: psycopg.Connection, specialist_id: uuid.UUID, client_id: uuid.UUID, *,
                   starts_in: timedelta = timedelta(days=3)) -> uuid.UUID:
    starts_at = datetime.now(timezone.utc).replace(microsecond=0) + starts_in
    return conn.execute(
        """insert into public.sessions (specialist_id, client_id, starts_at, ends_at)
           values (%s, %s, %s, %s) returning id""",
        [specialist_id, client_id, starts_at, starts_at + timedelta(minutes=50)]).fetchone()["id"]


def stored(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return conn.execute("select * from public.intake_forms order by submitted_at").fetchall()


def audit_rows(conn: psycopg.Connection, action: str) -> list[dict[str, Any]]:
    return conn.execute("select * from public.audit_log where action = %s order by id", [action]).fetchall()
