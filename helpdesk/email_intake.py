"""Raw email in: parse, ingest, or quarantine; shared by pipe mode and the mailbox poller."""

from __future__ import annotations

from channels.email.parse import parse_email
from channels.messages import ChannelName
from helpdesk.ingest import IngestResult, ingest
from helpdesk.quarantine import quarantine


def ingest_raw_email(raw: bytes, source: str) -> IngestResult | None:
    """Store one raw email; on any failure keep it in quarantine and return None."""
    try:
        return ingest(parse_email(raw))
    except Exception as error:  # any failure, parser bug or database error alike, must keep the bytes
        quarantine(ChannelName.EMAIL, source, raw, error)
        return None
