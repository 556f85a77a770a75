"""What a client submits: the answers of seed 001's first three steps, checked
against ANSWERS (types, ranges, lengths; unknown fields refused), and step 4's
three consents, each of which must be true.

ANSWERS is data: the OpenAPI document (shared/ops/intake_openapi.py) is built
from it, so the description and the checks cannot drift apart. Every field is
optional (a field sent as null counts as absent); texts keep exactly what was
written (no trimming), must be valid Unicode (no lone surrogates) and hold no
NUL character. Refusals name the field by its path, e.g.
``answers.mental_health.severity_level``, in ``details.field``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from shared.errors import InvalidRequest
from shared.inputs import a_uuid, fields, json_object


@dataclass(frozen=True)
class Text:
    max_length: int

    def parse(self, path: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _refused(path, "must be text")
        if "\x00" in value:
            raise _refused(path, "must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _refused(path, "is not valid Unicode text (it holds a lone surrogate)") from None
        if len(value) > self.max_length:
            raise _refused(path, f"is longer than {self.max_length} characters")
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": self.max_length, "pattern": r"^[^\x00]*$"}


@dataclass(frozen=True)
class TextList:
    max_items: int
    max_length: int

    def parse(self, path: str, value: Any) -> list[str]:
        if not isinstance(value, list):
            raise _refused(path, "must be a list of texts")
        if len(value) > self.max_items:
            raise _refused(path, f"has more than {self.max_items} entries")
        return [Text(self.max_length).parse(f"{path}[{i}]", item) for i, item in enumerate(value)]

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "maxItems": self.max_items, "items": Text(self.max_length).schema()}


@dataclass(frozen=True)
class Integer:
    low: int
    high: int

    def parse(self, path: str, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high:
            return value
        raise _refused(path, f"must be a whole number from {self.low} to {self.high}")

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.low, "maximum": self.high}


@dataclass(frozen=True)
class Flag:
    def parse(self, path: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        raise _refused(path, "must be true or false")

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


# Seed 001's steps 1–3 (step 4 is CONSENTS). Limits: generous for a person writing,
# small enough that a whole form fits well inside a request body.
ANSWERS: dict[str, dict[str, Text | TextList | Integer | Flag]] = {
    "personal_info": {  # step 1
        "emergency_contact": Text(500),
        "medical_history": Text(5000),
        "current_medications": Text(2000),
        "allergies": Text(2000),
    },
    "mental_health": {  # step 2
        "previous_therapy": Flag(),
        "current_symptoms": TextList(30, 300),
        "severity_level": Integer(1, 10),
        "trigger_factors": TextList(30, 300),
        "coping_mechanisms": TextList(30, 300),
    },
    "therapy_goals": {  # step 3
        "goals": TextList(20, 500),
        "expectations": Text(2000),
        "preferred_approach": Text(500),
        "timeline": Text(500),
    },
}

# Step 4: what each consent is called in messages.
CONSENTS = {
    "treatment": "Consent to treatment",
    "confidentiality": "The confidentiality agreement",
    "data_processing": "Consent to data processing",
}


def _refused(path: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"Field {path!r} {problem}", details={"field": path})


def _object(path: str, value: Any, known: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _refused(path, "must be a JSON object")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise InvalidRequest(f"Unknown field {f'{path}.{unknown[0]}'!r}", details={"field": f"{path}.{unknown[0]}"})
    return value


def parse_answers(path: str, value: Any) -> dict[str, Any]:
    """The answers, checked; absent (or null) sections and fields are left out."""
    answers: dict[str, Any] = {}
    for section, given in _object(path, value, ANSWERS).items():
        if given is None:
            continue
        kinds = ANSWERS[section]
        parsed = {name: kinds[name].parse(f"{path}.{section}.{name}", item)
                  for name, item in _object(f"{path}.{section}", given, kinds).items() if item is not None}
        answers[section] = parsed
    return answers


def parse_consents(path: str, value: Any) -> dict[str, bool]:
    """All three consents, each true; a missing or refused one is named."""
    given = _object(path, value, CONSENTS)
    for name, label in CONSENTS.items():
        if given.get(name) is not True:
            raise InvalidRequest(f"{label} is required: send {path}.{name} as true",
                                 details={"field": f"{path}.{name}"})
    return {name: True for name in CONSENTS}


@dataclass(frozen=True)
class IntakeSubmission:
    answers: dict[str, Any]
    consents: dict[str, bool]


INTAKE_FIELDS = {"answers": parse_answers, "consents": parse_consents}


def parse_intake(name: str, value: Any) -> IntakeSubmission:
    """booking-create's optional `intake` object: {"answers": …, "consents": …}."""
    if not isinstance(value, dict):
        raise _refused(name, "must be a JSON object")
    unknown = sorted(set(value) - set(INTAKE_FIELDS))
    if unknown:
        raise InvalidRequest(f"Unknown field {f'{name}.{unknown[0]}'!r}", details={"field": f"{name}.{unknown[0]}"})
    for part, parse in INTAKE_FIELDS.items():
        if value.get(part) is None:
            raise InvalidRequest(f"Field {f'{name}.{part}'!r} is required", details={"field": f"{name}.{part}"})
    return IntakeSubmission(parse_answers(f"{name}.answers", value["answers"]),
                            parse_consents(f"{name}.consents", value["consents"]))


@dataclass(frozen=True)
class SubmitRequest:
    booking_id: uuid.UUID
    intake: IntakeSubmission


def parse_submit_request(request) -> SubmitRequest:
    parsed = fields(json_object(request), required={"booking_id": a_uuid, **INTAKE_FIELDS}, optional={})
    return SubmitRequest(parsed["booking_id"], IntakeSubmission(parsed["answers"], parsed["consents"]))


def parse_read_request(request) -> uuid.UUID:
    """GET's query: exactly `booking_id`."""
    query = request.args
    unknown = sorted(set(query) - {"booking_id"})
    if unknown:
        raise InvalidRequest(f"Unknown query parameter {unknown[0]!r}", details={"field": unknown[0]})
    values = query.getlist("booking_id")
    if not values:
        raise InvalidRequest("Query parameter 'booking_id' is required", details={"field": "booking_id"})
    if len(values) > 1:
        raise InvalidRequest("Query parameter 'booking_id' is given more than once", details={"field": "booking_id"})
    return a_uuid("booking_id", values[0])
