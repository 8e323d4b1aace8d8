"""Triage: business calendars and the SLA clock, routing rules and language detection (all pure), and
the engine that applies them to a ticket inside the ingest transaction."""
