"""The embeddable chat widget: one script a site includes with a <script> tag."""

from __future__ import annotations

import hashlib
import pathlib

from flask import Blueprint, Response, current_app, request, url_for

bp = Blueprint("widget", __name__)

#: A versioned URL never changes content, so browsers and CDNs may keep it for a year.
_IMMUTABLE = "public, max-age=31536000, immutable"
#: The bare URL sites embed must pick up a new version soon; the ETag makes the re-check cheap.
_REVALIDATE = "public, max-age=300"


def _widget_source() -> tuple[bytes, str]:
    path = pathlib.Path(current_app.static_folder) / "widget.js"
    stat = path.stat()
    cache = current_app.extensions.setdefault("helpdesk.widget", {})
    key = (stat.st_mtime_ns, stat.st_size)
    if cache.get("key") != key:
        body = path.read_bytes()
        cache.update(key=key, body=body, version=hashlib.sha256(body).hexdigest()[:16])
    return cache["body"], cache["version"]


def widget_url() -> str:
    """Return the versioned, long-cacheable address of the current widget script."""
    _, version = _widget_source()
    return url_for("widget.serve_widget", v=version, _external=True)


@bp.get("/widget.js")
def serve_widget():
    """Serve the chat widget script, versioned by the hash of its content."""
    body, version = _widget_source()
    response = Response(body, mimetype="text/javascript")
    response.set_etag(version)
    response.headers["Cache-Control"] = _IMMUTABLE if request.args.get("v") == version else _REVALIDATE
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response.make_conditional(request)
