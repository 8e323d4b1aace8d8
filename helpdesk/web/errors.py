"""Error pages: JSON for the API and for clients asking for JSON, HTML otherwise."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from helpdesk.extensions import db

bp = Blueprint("errors", __name__)


def wants_json() -> bool:
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


@bp.app_errorhandler(CSRFError)
def csrf_error(error: CSRFError):
    """Explain a refused form instead of a bare 400."""
    return _render(400, "bad_request", "The form expired or was not sent from this site. Reload and try again.")


@bp.app_errorhandler(HTTPException)
def http_error(error: HTTPException):
    """Render HTTP errors in the format the client reads."""
    return _render(error.code or 500, error.name.lower().replace(" ", "_"), error.description or error.name)


@bp.app_errorhandler(Exception)
def unexpected_error(error: Exception):
    """Roll back whatever the request half-wrote, log it, and answer 500."""
    db.session.rollback()
    if current_app.testing:
        raise error  # let the test see the real traceback
    current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
    return _render(500, "internal_error", "Something went wrong on our side. The error was logged.")


def _render(status: int, code: str, message: str):
    if wants_json():
        response = jsonify(error=code, message=message)
        response.status_code = status
        return response
    return render_template("errors/error.html", status=status, message=message), status
