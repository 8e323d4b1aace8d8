"""Stored files sent to a browser so that opening one can run nothing: the ticket page's and the chat's."""

from __future__ import annotations

from flask import Response, send_file

from helpdesk.attachments import attachment_path
from helpdesk.extensions import db
from helpdesk.models import Attachment


def send_stored_file(row: Attachment) -> Response | None:
    """Send the bytes of `row`, or return None when they are not stored (refused, or gone)."""
    path = attachment_path(row)
    if path is None or not path.exists():
        return None
    is_image = row.content_type.startswith("image/")
    response = send_file(path, mimetype=row.content_type, as_attachment=not is_image, download_name=row.filename,
                         conditional=True, max_age=0)
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Opened directly, a file can run nothing and load nothing.
    response.headers["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; sandbox"
    response.headers["Cache-Control"] = "private, no-cache"
    db.session.rollback()
    return response
