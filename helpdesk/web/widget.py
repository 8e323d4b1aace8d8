"""The embeddable chat widget: the script sites include, and the HTTP side of chat (files).

    GET  /widget.js                        the widget, versioned by content
    POST /chat/upload                      a visitor's file (Authorization: Bearer <visitor token>), CORS
    GET  /chat/attachments/<id>            a file of the visitor's own conversations (same token), CORS
    GET  /chat/agent/attachments/<id>      a chat file, for logged-in agents
"""

from __future__ import annotations

import hashlib
import pathlib

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from flask_login import login_required
from werkzeug.exceptions import RequestEntityTooLarge

from channels.chat.namespace import MAX_CLIENT_ID, MAX_TEXT, is_origin_allowed
from channels.chat.uploads import UploadRefused, check_upload, describe_limit
from helpdesk.chat import (
    attachment_for_agent,
    attachment_for_visitor,
    chat_allowed_origins,
    max_upload_bytes,
    receive_chat_upload,
    visitor_tokens,
)
from helpdesk.extensions import csrf, db, limiter
from helpdesk.models import Attachment
from helpdesk.web.errors import http_error
from helpdesk.web.files import send_stored_file

bp = Blueprint("widget", __name__)

#: A versioned URL never changes content, so browsers and CDNs may keep it for a year.
_IMMUTABLE = "public, max-age=31536000, immutable"
#: The bare URL sites embed must pick up a new version soon; the ETag makes the re-check cheap.
_REVALIDATE = "public, max-age=300"
#: Room for the multipart envelope and the other fields around the file itself.
_FORM_OVERHEAD = 64 * 1024
#: The endpoints a page on another origin (a site embedding the widget) may call.
_CROSS_ORIGIN = {"widget.upload", "widget.visitor_attachment"}


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


# Cross-origin requests from the widget ---------------------------------------------------------------------


def _is_allowed_origin() -> bool:
    # Like the socket: a browser on another site always sends Origin; none means same origin or no browser.
    origin = request.headers.get("Origin")
    return origin is None or is_origin_allowed(origin, chat_allowed_origins(current_app.config))


@bp.after_request
def _allow_widget_origins(response: Response) -> Response:
    if request.endpoint not in _CROSS_ORIGIN:
        return response
    response.vary.add("Origin")
    origin = request.headers.get("Origin")
    if origin and _is_allowed_origin():
        # Credentials stay off: the widget authenticates with its token, never with cookies.
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Content-Disposition"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST"
            response.headers["Access-Control-Allow-Headers"] = "Authorization"
            response.headers["Access-Control-Max-Age"] = "600"
    return response


def _refusal(status: int, code: str, message: str, **extra):
    response = jsonify(ok=False, error=code, message=message, **extra)
    response.status_code = status
    return response


@bp.errorhandler(413)
def _too_large(error):
    if request.endpoint not in _CROSS_ORIGIN:
        return http_error(error)
    limit = describe_limit(max_upload_bytes(current_app.config))
    return _refusal(413, "too_large", f"The file is too large: files are limited to {limit}.")


@bp.errorhandler(429)
def _too_many(error):
    if request.endpoint not in _CROSS_ORIGIN:
        return http_error(error)
    return _refusal(429, "rate_limited", "You are sending files too quickly; wait a minute and try again.")


def _bearer_visitor_id() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    claims = visitor_tokens().read(token.strip())
    return claims[0] if claims else None


def _upload_limit_key() -> str:
    # Per visitor when the token is genuine; a forged or missing token shares its IP's bucket.
    visitor_id = _bearer_visitor_id()
    return f"chat-upload:{visitor_id}" if visitor_id else f"chat-upload-ip:{request.remote_addr}"


def _upload_rate() -> str:
    return current_app.config["HELPDESK_CHAT_UPLOAD_RATE_LIMIT"]


@bp.route("/chat/upload", methods=["POST"])
@csrf.exempt  # no cookies are involved: the visitor token in the Authorization header is the credential
@limiter.limit(_upload_rate, methods=["POST"])
@limiter.limit(_upload_rate, key_func=_upload_limit_key, methods=["POST"])
def upload():
    """Store a visitor's file on their chat conversation, through the same ingest path as messages."""
    if not _is_allowed_origin():
        return _refusal(403, "origin_not_allowed", "This site may not use the chat.")
    visitor_id = _bearer_visitor_id()
    if visitor_id is None:
        return _refusal(401, "not_connected", "Reconnect to the chat and try again.")
    limit = max_upload_bytes(current_app.config)
    if request.content_length is not None and request.content_length > limit + _FORM_OVERHEAD:
        return _refusal(413, "too_large", f"The file is too large: files are limited to {describe_limit(limit)}.")
    # Werkzeug stops reading a body (chunked, or lying about its length) beyond this.
    request.max_content_length = limit + _FORM_OVERHEAD
    try:
        client_id = (request.form.get("client_id") or "").strip()
        text = (request.form.get("text") or "").strip()
        file = request.files.get("file")
    except RequestEntityTooLarge:
        return _refusal(413, "too_large", f"The file is too large: files are limited to {describe_limit(limit)}.")
    if not 0 < len(client_id) <= MAX_CLIENT_ID:
        return _refusal(400, "invalid", "An upload needs a client_id.")
    if len(text) > MAX_TEXT:
        return _refusal(400, "too_long", f"Messages are limited to {MAX_TEXT} characters.", client_id=client_id)
    if file is None:
        return _refusal(400, "no_file", "Choose a file to send.", client_id=client_id)
    try:
        attachment = check_upload(file.filename, file.read(limit + 1), limit)
    except UploadRefused as refused:
        status = 413 if refused.code == "too_large" else 400
        return _refusal(status, refused.code, str(refused), client_id=client_id)
    receipt, attachments = receive_chat_upload(visitor_id, None, client_id, text, attachment)
    return jsonify(ok=True, client_id=client_id, id=receipt.message_id, seq=receipt.seq, attachments=attachments)


@bp.route("/chat/attachments/<int:attachment_id>", methods=["GET"])
def visitor_attachment(attachment_id: int):
    """Send a file of the visitor's own chat conversations; anyone else gets 404."""
    if not _is_allowed_origin():
        return _refusal(403, "origin_not_allowed", "This site may not use the chat.")
    visitor_id = _bearer_visitor_id()
    row = attachment_for_visitor(visitor_id, attachment_id) if visitor_id else None
    if row is None:
        db.session.rollback()
        return _refusal(404, "not_found", "There is no such file in your conversation.")
    return _send_attachment(row)


@bp.get("/chat/agent/attachments/<int:attachment_id>")
@login_required
def agent_attachment(attachment_id: int):
    """Send a file of a chat conversation to an agent."""
    row = attachment_for_agent(attachment_id)
    if row is None:
        return _refusal(404, "not_found", f"There is no chat file {attachment_id}.")
    return _send_attachment(row)


def _send_attachment(row: Attachment) -> Response:
    return send_stored_file(row) or _refusal(404, "not_found", "The file is no longer stored.")
