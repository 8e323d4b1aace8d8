"""Files visitors send through the chat widget: which kinds are taken, by their content; pure.

    check_upload("photo.PNG", data, max_bytes=10_000_000)   # -> Attachment(content_type="image/png"), or UploadRefused

The browser's declared type is never trusted: the type is read from the first bytes and must agree with the
file name's extension. Images are the only kinds ever shown inline; everything else is served as a download.
SVG and HTML are refused outright, as they can carry scripts.
"""

from __future__ import annotations

import pathlib
import unicodedata

from channels.messages import Attachment

#: Content type -> the extensions a file of that type may have.
ALLOWED_TYPES: dict[str, tuple[str, ...]] = {
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg"),
    "image/gif": (".gif",),
    "image/webp": (".webp",),
    "application/pdf": (".pdf",),
    "text/plain": (".txt", ".log"),
}
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
MAX_FILENAME = 120


class UploadRefused(ValueError):
    """A file the widget may not send; the message is for the visitor."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def describe_limit(max_bytes: int) -> str:
    """Return `max_bytes` the way a visitor reads it ("10 MB")."""
    if max_bytes >= 1024 * 1024:
        return f"{max_bytes / (1024 * 1024):g} MB"
    if max_bytes >= 1024:
        return f"{max_bytes / 1024:g} KB"
    return f"{max_bytes} bytes"


def allowed_extensions() -> list[str]:
    return sorted({extension for extensions in ALLOWED_TYPES.values() for extension in extensions})


def sniff_type(content: bytes) -> str | None:
    """Return the content type the bytes show, among the allowed ones, or None."""
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if content.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(content) >= 12 and content.startswith(b"RIFF") and content[8:12] == b"WEBP":
        return "image/webp"
    if content.startswith(b"%PDF-"):
        return "application/pdf"
    return "text/plain" if _is_plain_text(content) else None


def _is_plain_text(content: bytes) -> bool:
    if b"\x00" in content:
        return False
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    # Markup in a .txt is harmless as a download, but a file that opens as HTML is refused as text.
    head = text.lstrip()[:200].lower()
    return not head.startswith(("<!doctype html", "<html", "<svg", "<?xml"))


def safe_filename(raw: str | None) -> str:
    """Return a file name fit to store and offer for download: no path, no control characters, not too long."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in unicodedata.normalize("NFC", name) if unicodedata.category(char)[0] != "C")
    name = name.strip().strip(".") or "file"
    if len(name) > MAX_FILENAME:
        suffix = pathlib.PurePosixPath(name).suffix[:10]
        name = name[: MAX_FILENAME - len(suffix)] + suffix
    return name


def check_upload(filename: str | None, content: bytes, max_bytes: int) -> Attachment:
    """Return the file as an Attachment with its real type; raise UploadRefused saying why not."""
    name = safe_filename(filename)
    if not content:
        raise UploadRefused("empty", "The file is empty.")
    if len(content) > max_bytes:
        raise UploadRefused("too_large", f"{name} is too large: files are limited to {describe_limit(max_bytes)}.")
    extension = pathlib.PurePosixPath(name).suffix.lower()
    kinds = ", ".join(allowed_extensions())
    if extension not in allowed_extensions():
        raise UploadRefused("type_not_allowed", f"{name}: this kind of file cannot be sent. Allowed: {kinds}.")
    content_type = sniff_type(content)
    if content_type is None or extension not in ALLOWED_TYPES[content_type]:
        raise UploadRefused("type_mismatch", f"{name} does not contain what its name says; it was not sent.")
    return Attachment(filename=name, content_type=content_type, content=content)
