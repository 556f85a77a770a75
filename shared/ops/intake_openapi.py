"""The intake-form function's part of the OpenAPI document (shared/ops/openapi.py
merges it in), and booking-create's optional ``intake``. The answers' schema is
built from shared.intake.answers.ANSWERS, the data the function checks against.
"""

from __future__ import annotations

from typing import Any

from shared.errors import AlreadyCancelled, BookingInPast, Forbidden, NotFound
from shared.intake.answers import ANSWERS, CONSENTS
from shared.intake.keys import IntakeUnreadable

EXAMPLE_ANSWERS = {
    "personal_info": {"emergency_contact": "Maria Quist, sister, +44 20 7946 0000",
                      "medical_history": "Asthma since childhood", "current_medications": "Sertraline 50 mg",
                      "allergies": "Penicillin"},
    "mental_health": {"previous_therapy": True, "current_symptoms": ["insomnia", "worry"], "severity_level": 6,
                      "trigger_factors": ["deadlines"], "coping_mechanisms": ["running"]},
    "therapy_goals": {"goals": ["sleep through the night"], "expectations": "Practical exercises",
                      "preferred_approach": "CBT", "timeline": "three months"},
}
EXAMPLE_CONSENTS = {name: True for name in CONSENTS}
EXAMPLE_INTAKE = {"answers": EXAMPLE_ANSWERS, "consents": EXAMPLE_CONSENTS}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def schemas() -> dict[str, Any]:
    sections = {
        section: _nullable({"type": "object", "additionalProperties": False,
                            "properties": {name: _nullable(kind.schema()) for name, kind in fields.items()}})
        for section, fields in ANSWERS.items()
    }
    return {
        "IntakeAnswers": {
            "type": "object", "additionalProperties": False, "properties": sections,
            "description": "seed 001's steps 1–3; every section and field optional (null counts as absent); "
                           "texts are kept as written, without NUL characters or lone surrogates",
        },
        "IntakeConsents": {
            "type": "object", "additionalProperties": False, "required": list(CONSENTS),
            "properties": {name: {"const": True, "description": f"{label}: must be true"}
                           for name, label in CONSENTS.items()},
            "description": "seed 001's step 4: all three must be given",
        },
        "IntakeSubmission": {
            "type": "object", "additionalProperties": False, "required": ["answers", "consents"],
            "properties": {"answers": {"$ref": "#/components/schemas/IntakeAnswers"},
                           "consents": {"$ref": "#/components/schemas/IntakeConsents"}},
        },
        "IntakeRequest": {
            "type": "object", "additionalProperties": False, "required": ["booking_id", "answers", "consents"],
            "properties": {"booking_id": {"type": "string", "format": "uuid", "description": "the session's id"},
                           "answers": {"$ref": "#/components/schemas/IntakeAnswers"},
                           "consents": {"$ref": "#/components/schemas/IntakeConsents"}},
        },
        "IntakeSubmitted": {
            "type": "object", "additionalProperties": False,
            "required": ["success", "booking_id", "revision", "submitted_at"],
            "properties": {"success": {"const": True}, "booking_id": {"type": "string", "format": "uuid"},
                           "revision": {"type": "integer", "minimum": 1,
                                        "description": "1, then one more for each resubmission"},
                           "submitted_at": {"type": "string", "format": "date-time"}},
        },
        "IntakeForm": {
            "type": "object", "additionalProperties": False,
            "required": ["success", "booking_id", "answers", "consents", "revision", "submitted_at"],
            "properties": {"success": {"const": True}, "booking_id": {"type": "string", "format": "uuid"},
                           "answers": {"$ref": "#/components/schemas/IntakeAnswers"},
                           "consents": {"$ref": "#/components/schemas/IntakeConsents"},
                           "revision": {"type": "integer", "minimum": 1},
                           "submitted_at": {"type": "string", "format": "date-time"}},
        },
    }


def booking_intake_property() -> dict[str, Any]:
    """booking-create's optional field."""
    return {**_nullable({"$ref": "#/components/schemas/IntakeSubmission"}),
            "description": "optional: the intake form, stored encrypted with the booking (nothing is stored when "
                           "the booking is refused)"}


def path(*, ok, errors, json_body, user_security, invalid, unauthorized, too_large, not_json, internal
         ) -> dict[str, Any]:
    """The /intake-form path item, with openapi.py's building blocks passed in."""
    forbidden = (Forbidden, "anonymous accounts cannot use intake forms")
    unreadable = (IntakeUnreadable, "the stored form cannot be decrypted (its key is not configured or wrong, "
                                    "or the row was altered); reported to Sentry")
    return {
        "get": {
            "operationId": "intakeFormRead",
            "summary": "The session's client or specialist reads the intake form, decrypted",
            "description": "Every successful read writes an audit_log row (`intake_form_read`: who, which session, "
                           "when). Anyone else, admins included, hears NOT_FOUND, exactly as for a session that "
                           "does not exist.",
            "security": user_security,
            "parameters": [{"name": "booking_id", "in": "query", "required": True,
                            "schema": {"type": "string", "format": "uuid"}, "description": "the session's id"}],
            "responses": {
                **ok("The decrypted answers and the consents", "IntakeForm"),
                **errors(
                    (invalid[0], "the query is not exactly one `booking_id` UUID (`details.field` names it)"),
                    unauthorized, forbidden,
                    (NotFound, "no such session among the caller's, or no form submitted yet"),
                    internal, unreadable,
                ),
            },
        },
        "post": {
            "operationId": "intakeFormSubmit",
            "summary": "The session's client submits the intake form (encrypted before it is stored)",
            "description": "Before the session starts. Submitting again replaces the answers (revision + 1); the "
                           "older answers are not kept. Only the session's client may submit; anyone else hears "
                           "NOT_FOUND.",
            "security": user_security,
            "requestBody": json_body("IntakeRequest", {"booking_id": "0b5e8d3a-7c21-4f6e-8d9a-2b3c4d5e6f70",
                                                       "answers": EXAMPLE_ANSWERS, "consents": EXAMPLE_CONSENTS}),
            "responses": {
                **ok("The form is stored", "IntakeSubmitted"),
                **errors(
                    invalid, unauthorized, forbidden,
                    (NotFound, "no such session among the caller's sessions as a client"),
                    (AlreadyCancelled, "the session is cancelled"),
                    (BookingInPast, "the session has started: its form is frozen"),
                    too_large, not_json, internal,
                ),
            },
        },
    }
