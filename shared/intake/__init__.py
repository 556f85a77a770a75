"""Intake forms and consent (seed 001's four steps), encrypted in the functions.

- ``keys``: the versioned keys of INTAKE_ENCRYPTION_KEYS and AES-256-GCM sealing;
- ``answers``: the request: the answers' schema and the three consents;
- ``forms``: submitting (intake-form POST, and booking-create's optional ``intake``)
  and reading (intake-form GET, audited);
- ``reencrypt``: moving every form to the newest key, in resumable batches
  (``therapy-db intake-reencrypt``).
"""
