"""Logging in and out, and each agent's own profile with API tokens."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from helpdesk.agents import AgentError, authenticate, create_api_token, revoke_api_token, set_password
from helpdesk.extensions import db, limiter
from helpdesk.models import ApiToken
from helpdesk.security import verify_password
from helpdesk.web.forms import ApiTokenForm, EmptyForm, LoginForm, PasswordForm

bp = Blueprint("auth", __name__)


def _login_limit() -> str:
    return current_app.config["HELPDESK_LOGIN_RATE_LIMIT"]


def _is_safe_next(target: str | None) -> bool:
    # Only local paths: an absolute URL here would make the login page an open redirect. Browsers read
    # "\" as "/" and drop tabs and newlines, so "/\evil.com" and "/<TAB>/evil.com" both mean //evil.com.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return False
    return not any(ord(char) < 0x21 or ord(char) == 0x7F for char in target)


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def login():
    """Show the login form and sign an agent in."""
    if current_user.is_authenticated:
        return redirect(url_for("inbox.index"))
    form = LoginForm()
    if form.validate_on_submit():
        agent = authenticate(form.email.data, form.password.data)
        if agent is None:
            flash("Wrong email or password.", "error")
            return render_template("auth/login.html", form=form), 401
        login_user(agent, remember=form.remember.data)
        target = request.args.get("next")
        return redirect(target if _is_safe_next(target) else url_for("inbox.index"))
    return render_template("auth/login.html", form=form), 400 if form.errors else 200


@bp.post("/logout")
@login_required
def logout():
    """Sign the agent out."""
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/profile", methods=["GET"])
@login_required
def profile():
    """Show the agent's profile, password form and API tokens."""
    tokens = db.session.scalars(
        sa.select(ApiToken).where(ApiToken.agent_id == current_user.id).order_by(ApiToken.created_at.desc())
    ).all()
    return render_template("auth/profile.html", tokens=tokens, token_form=ApiTokenForm(),
                           password_form=PasswordForm(), empty_form=EmptyForm(), new_token=None)


@bp.post("/profile/tokens")
@login_required
def create_token():
    """Create a personal API token and show it once."""
    form = ApiTokenForm()
    if not form.validate_on_submit():
        flash("Give the token a name.", "error")
        return redirect(url_for("auth.profile"))
    token = create_api_token(current_user, form.name.data)
    tokens = db.session.scalars(
        sa.select(ApiToken).where(ApiToken.agent_id == current_user.id).order_by(ApiToken.created_at.desc())
    ).all()
    return render_template("auth/profile.html", tokens=tokens, token_form=ApiTokenForm(formdata=None),
                           password_form=PasswordForm(formdata=None), empty_form=EmptyForm(), new_token=token)


@bp.post("/profile/tokens/<int:token_id>/revoke")
@login_required
def revoke_token(token_id: int):
    """Revoke one of the agent's API tokens."""
    if revoke_api_token(current_user, token_id):
        flash("Token revoked.", "info")
    return redirect(url_for("auth.profile"))


@bp.post("/profile/password")
@login_required
def change_password():
    """Change the agent's password after checking the current one."""
    form = PasswordForm()
    if form.validate_on_submit() and verify_password(current_user.password_hash, form.current_password.data):
        try:
            set_password(current_user, form.new_password.data)
        except AgentError as error:
            flash(str(error), "error")
        else:
            db.session.commit()
            flash("Password changed.", "info")
    else:
        flash("The current password is wrong or the new one is shorter than 10 characters.", "error")
    return redirect(url_for("auth.profile"))
