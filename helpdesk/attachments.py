"""Attachment bytes on disk, addressed by their SHA-256 so a retried write is harmless."""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile

from flask import current_app

from channels.messages import Attachment as AttachmentData
from helpdesk.models import Attachment


def _root() -> pathlib.Path:
    return pathlib.Path(current_app.config["HELPDESK_ATTACHMENT_FOLDER"])


def store_attachment(data: AttachmentData) -> Attachment:
    """Write the bytes (unless too large) and return the row describing them; the caller adds it."""
    return Attachment(**stored_attachment_values(data))


def stored_attachment_values(data: AttachmentData) -> dict:
    """Write the bytes (unless too large) and return the column values of the row describing them, always
    the same columns (the caller sets `message_id` and inserts them, several rows in one statement)."""
    values = {
        "filename": (data.filename or "attachment")[:255],
        "content_type": (data.content_type or "application/octet-stream")[:255],
        "size": data.size,
        "content_id": data.content_id,
        "is_inline": data.is_inline,
        "refused_reason": None,
        "storage_path": None,
        "sha256": None,
    }
    limit = current_app.config["HELPDESK_MAX_ATTACHMENT_BYTES"]
    if data.size > limit:
        values["refused_reason"] = f"refused: {data.size} bytes is over the {limit}-byte attachment limit"
        return values
    digest = hashlib.sha256(data.content).hexdigest()
    relative = pathlib.Path(digest[:2], digest[2:4], digest)
    target = _root() / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a crash never leaves a truncated file under the final name.
        fd, temporary = tempfile.mkstemp(dir=target.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.content)
        os.replace(temporary, target)
    values["storage_path"] = str(relative)
    values["sha256"] = digest
    return values


def attachment_path(row: Attachment) -> pathlib.Path | None:
    """Return where the bytes of `row` are, or None if they were refused."""
    if not row.storage_path:
        return None
    return _root() / row.storage_path
