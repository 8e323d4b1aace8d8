"""An email's HTML as the agent sees it: the sanitized body, its inline images served from the ticket.

The body was sanitized at ingest (no scripts, styles or forms survive). It is shown in a sandboxed frame (no
scripts even so) whose own policy loads images from the helpdesk only: a remote image, a tracking pixel
included, is never fetched, so opening a message tells its sender nothing.
"""

from __future__ import annotations

import html
import re
import urllib.parse

from flask import url_for

from helpdesk.models import Message

#: The src of an inline image (sanitized markup writes every attribute in double quotes).
_CID_SOURCE = re.compile(r'(<img\b[^>]*?\bsrc=")cid:([^"]*)(")', re.IGNORECASE)

_FRAME_HEAD = (
    '<!doctype html><html><head><meta charset="utf-8">'
    "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src 'self'; "
    "style-src 'unsafe-inline'\">"
    '<base target="_blank">'
    "<style>body{margin:0;font:14px/1.5 system-ui,sans-serif;color:#1f2937;overflow-wrap:anywhere}"
    "img{max-width:100%;height:auto}table{max-width:100%}</style></head><body>"
)


def formatted_email(message: Message, ticket_number: int) -> str | None:
    """The document the message's formatted view shows, or None when it came without HTML."""
    if not message.html:
        return None
    inline_files = {
        attachment.content_id: url_for("tickets.file", number=ticket_number, attachment_id=attachment.id)
        for attachment in message.attachments if attachment.content_id and attachment.storage_path
    }

    def served_from_the_ticket(match: re.Match) -> str:
        # A cid: URL is the Content-ID, percent-encoded (RFC 2392); one that names no kept file shows nothing.
        content_id = urllib.parse.unquote(html.unescape(match[2])).strip("<>")
        return match[1] + html.escape(inline_files.get(content_id, "")) + match[3]

    return _FRAME_HEAD + _CID_SOURCE.sub(served_from_the_ticket, message.html) + "</body></html>"
