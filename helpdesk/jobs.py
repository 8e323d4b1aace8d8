"""Background jobs: plain idempotent functions, run in-process or as Celery tasks.

Each runs inside an app context and may be run again at any time without harm.
"""

from __future__ import annotations

import logging

from flask import current_app

from helpdesk.outbound import deliver_due
from helpdesk.sms import ingest_queued_texts, retry_media_downloads

log = logging.getLogger(__name__)


def deliver_outbox() -> int:
    """Send every reply whose delivery is due; return how many were handled."""
    return deliver_due(current_app.extensions["helpdesk.channels"])


def poll_mailboxes() -> int:
    """Fetch new mail from every configured mailbox; return how many messages were ingested."""
    pollers = current_app.extensions.get("helpdesk.mail_pollers", [])
    return sum(poll() for poll in pollers)


def sweep_sla() -> int:
    """Warn and escalate tickets near or past their SLA targets; return how many were touched."""
    sweep = current_app.extensions.get("helpdesk.sla_sweep")
    return sweep() if sweep else 0


def ingest_texts() -> int:
    """Ingest the texts whose webhooks were kept and answered but not yet read; return how many."""
    return ingest_queued_texts()


def retry_media() -> int:
    """Download again the texts' media files whose earlier download failed and is due; return how many."""
    return retry_media_downloads()


#: Every job by name; Celery registers each as the task `helpdesk.<name>`.
JOBS = {
    "deliver_outbox": deliver_outbox,
    "poll_mailboxes": poll_mailboxes,
    "sweep_sla": sweep_sla,
    "retry_media": retry_media,
    "ingest_texts": ingest_texts,
}

#: Periodic jobs and their interval in seconds (Celery beat, or the in-process scheduler).
PERIODIC = {
    "deliver_outbox": 10.0,
    "poll_mailboxes": 30.0,
    "sweep_sla": 60.0,
    "retry_media": 60.0,
    # Each webhook starts it at once; this picks up what a worker that died left behind.
    "ingest_texts": 30.0,
}
