"""Building what admin-page tests post: forms with defaults, and uploaded files."""

from __future__ import annotations

import io


def form_with(defaults: dict, overrides: dict) -> dict:
    """`defaults` updated with `overrides`; a field overridden with None is left out, as an unticked box is."""
    form = {**defaults, **overrides}
    return {key: value for key, value in form.items() if value is not None}


def upload(content: str | bytes, filename: str) -> tuple[io.BytesIO, str]:
    """A file field's value for the test client: the content (text is UTF-8 encoded) under `filename`."""
    return io.BytesIO(content.encode() if isinstance(content, str) else content), filename
