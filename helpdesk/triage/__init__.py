"""Triage: business calendars and the SLA clock (pure: no database, no Flask)."""
