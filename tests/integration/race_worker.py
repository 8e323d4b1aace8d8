"""Run in separate processes by the race tests: each builds its own app and ingests at the same moment."""

from __future__ import annotations


def ingest_after_barrier(config: dict, barrier, messages: list) -> list[tuple[int, bool]]:
    from helpdesk import create_app
    from helpdesk.ingest import ingest

    app = create_app(config)
    results = []
    with app.app_context():
        for inbound in messages:
            # Every process starts each message together, so each one is a fresh race.
            barrier.wait(timeout=60)
            result = ingest(inbound)
            results.append((result.message.id, result.is_duplicate))
    return results
