"""Blueprints: one per page family, views kept thin."""
