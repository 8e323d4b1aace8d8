"""Unpack Outlook's winmail.dat (application/ms-tnef) into ordinary attachments and a body."""

from __future__ import annotations

import dataclasses
import logging
import mimetypes

from tnefparse import TNEF

from channels.messages import Attachment

logger = logging.getLogger(__name__)

#: Built-in types only, so the guess does not depend on the machine's mime.types files.
_MIME_TYPES = mimetypes.MimeTypes()
TNEF_CONTENT_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})


@dataclasses.dataclass(frozen=True)
class TnefContent:
    """What a winmail.dat carried."""

    #: The files, plus the body as `body.rtf` when RTF is the only form Outlook sent.
    attachments: tuple[Attachment, ...]
    text: str | None = None
    html: str | None = None


def is_tnef(content_type: str, filename: str | None) -> bool:
    """Tell whether a MIME part is a TNEF blob, by its type or Outlook's usual file name."""
    return content_type in TNEF_CONTENT_TYPES or (filename or "").lower() == "winmail.dat"


def unpack_tnef(data: bytes) -> TnefContent | None:
    """Return the files and body inside a TNEF blob, or None when it cannot be read."""
    try:
        tnef = TNEF(data, do_checksum=False)
        attachments = []
        for number, attachment in enumerate(tnef.attachments, start=1):
            name = _name(attachment, number)
            content_type = _MIME_TYPES.guess_type(name)[0] or "application/octet-stream"
            attachments.append(Attachment(name, content_type, bytes(attachment.data or b"")))
        text = _text(tnef.body)
        html = _text(tnef.htmlbody)
        rtf = tnef.rtfbody if not (text or html) else None
    except Exception as error:  # tnefparse raises assorted errors on damaged data; keep the raw file
        logger.info("winmail.dat could not be unpacked: %r", error)
        return None
    if rtf:
        attachments.append(
            Attachment(filename="body.rtf", content_type="application/rtf", content=bytes(rtf))
        )
    if not attachments and not text and not html:
        return None
    return TnefContent(attachments=tuple(attachments), text=text, html=html)


def _name(attachment, number: int) -> str:
    name = (attachment.long_filename() or attachment.name or "").strip("\x00 ")
    return name.replace("/", "_").replace("\\", "_") or f"attachment-{number}"


def _text(value) -> str | None:
    if not value:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            value = value.decode("cp1252", errors="replace")
    value = value.rstrip("\x00").replace("\r\n", "\n")
    return value if value.strip() else None
