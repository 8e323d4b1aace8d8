"""Who is asking: agent sessions (Flask-Login), API tokens, and role checks."""

from __future__ import annotations

import functools

import sqlalchemy as sa
from flask import Flask, abort, g, jsonify, request
from flask_login import current_user, login_required

from helpdesk.extensions import db, login_manager
from helpdesk.models import Agent, ApiToken, Role
from helpdesk.models.base import utcnow
from helpdesk.security import hash_api_token


def init_auth(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "info"
    # A stolen session cookie stops working once the address or browser changes.
    login_manager.session_protection = "strong"


@login_manager.user_loader
def load_agent(agent_id: str) -> Agent | None:
    agent = db.session.get(Agent, int(agent_id)) if agent_id.isdigit() else None
    return agent if agent is not None and agent.is_active else None


def role_required(role: Role):
    """Allow the view only to logged-in agents with at least `role`."""

    def decorator(view):
        @functools.wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if not current_user.has_role(role):
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def agent_for_token(token: str) -> Agent | None:
    """Return the active agent owning the unrevoked API token, or None."""
    row = db.session.scalar(
        sa.select(ApiToken).where(ApiToken.token_hash == hash_api_token(token), ApiToken.revoked_at.is_(None))
    )
    if row is None or not row.agent.is_active:
        return None
    row.last_used_at = utcnow()
    db.session.commit()
    return row.agent


def api_token_required(view):
    """Allow the view only with `Authorization: Bearer <token>`; JSON 401 otherwise."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized("send a personal API token as 'Authorization: Bearer <token>'")
        agent = agent_for_token(token.strip())
        if agent is None:
            return _unauthorized("the API token is unknown or revoked")
        g.api_agent = agent
        return view(*args, **kwargs)

    return wrapped


def _unauthorized(reason: str):
    response = jsonify(error="unauthorized", message=reason)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="helpdesk"'
    return response
