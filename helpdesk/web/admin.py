"""Administration: agents (role, tier, groups, languages) and quarantined messages."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user

from helpdesk.agents import AgentError, create_agent, find_agent_by_email, get_or_create_group, set_password
from helpdesk.auth import role_required
from helpdesk.extensions import db
from helpdesk.models import Agent, Group, QuarantinedMessage, Role, Tier
from helpdesk.web.forms import AgentForm, split_commas

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/agents")
@role_required(Role.ADMIN)
def agents():
    """List agents with their role, tier, groups and languages."""
    rows = db.session.scalars(sa.select(Agent).order_by(Agent.name)).all()
    groups = db.session.scalars(sa.select(Group).order_by(Group.name)).all()
    return render_template("admin/agents.html", agents=rows, groups=groups)


@bp.route("/agents/new", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def new_agent():
    """Create an agent."""
    form = AgentForm()
    if form.validate_on_submit():
        try:
            create_agent(
                form.email.data,
                form.name.data,
                form.password.data or None,
                role=Role(form.role.data),
                tier=Tier(form.tier.data),
                groups=[get_or_create_group(name) for name in split_commas(form.groups.data)],
                languages=split_commas(form.languages.data),
                capacity=form.capacity.data,
            )
        except AgentError as error:
            db.session.rollback()
            form.email.errors.append(str(error))
        else:
            db.session.commit()
            flash(f"Agent {form.email.data} created.", "info")
            return redirect(url_for("admin.agents"))
    return render_template("admin/agent_form.html", form=form, agent=None), 400 if form.errors else 200


@bp.route("/agents/<int:agent_id>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def edit_agent(agent_id: int):
    """Change an agent's name, role, tier, groups, languages, capacity, password or active state."""
    agent = db.session.get(Agent, agent_id)
    if agent is None:
        abort(404, f"There is no agent {agent_id}.")
    form = AgentForm(obj=agent)
    if not form.is_submitted():
        form.groups.data = ", ".join(group.name for group in agent.groups)
        form.languages.data = ", ".join(agent.languages)
    if form.validate_on_submit():
        other = find_agent_by_email(form.email.data)
        demoting_self = agent.id == current_user.id and (form.role.data != Role.ADMIN or not form.is_active.data)
        if other is not None and other.id != agent.id:
            form.email.errors.append("Another agent already uses this address.")
        elif demoting_self:
            form.role.errors.append("You cannot remove your own admin role or deactivate yourself.")
        else:
            try:
                if form.password.data:
                    set_password(agent, form.password.data)
            except AgentError as error:
                form.password.errors.append(str(error))
            else:
                agent.email = form.email.data.strip().lower()
                agent.name = form.name.data.strip()
                agent.role = Role(form.role.data)
                agent.tier = Tier(form.tier.data)
                agent.capacity = form.capacity.data
                agent.is_active = form.is_active.data
                agent.groups = [get_or_create_group(name) for name in split_commas(form.groups.data)]
                agent.set_languages(split_commas(form.languages.data))
                db.session.commit()
                flash(f"Agent {agent.email} saved.", "info")
                return redirect(url_for("admin.agents"))
    return render_template("admin/agent_form.html", form=form, agent=agent), 400 if form.errors else 200


@bp.get("/quarantine")
@role_required(Role.ADMIN)
def quarantine():
    """List messages that could not be ingested, with their errors."""
    rows = db.session.scalars(
        sa.select(QuarantinedMessage).order_by(QuarantinedMessage.created_at.desc()).limit(200)
    ).all()
    return render_template("admin/quarantine.html", rows=rows)
