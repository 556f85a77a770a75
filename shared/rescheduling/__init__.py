"""Rescheduling: a session moves in place (same id, booking reference, calendar
event and email UID), through booking-reschedule and the emailed link.

- ``moves``: the move itself, one UPDATE whose database triggers apply every
  rule (sql/0019's booking rules, sql/0070's move rules), audit it and queue the
  calendar patch; the database's refusals become the API's errors;
- ``api``: booking-reschedule's request and answer;
- ``calendar_patches``: the queued calendar patches, tried after the commit and
  retried by calendar-sync until Google has the new times;
- ``link``: "Reschedule" on the emailed link's page (the free slots, the move).
"""
