"""Administration: agents, mailboxes, message templates and quarantined messages."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user

from channels.email.imap import Security
from helpdesk.agents import AgentError, create_agent, find_agent_by_email, get_or_create_group, set_password
from helpdesk.auth import role_required
from helpdesk.extensions import db
from helpdesk.mailbox_accounts import (
    MailboxInput,
    MailboxInvalid,
    count_waiting_quarantine,
    get_mailbox,
    list_mailbox_health,
    save_mailbox,
)
from helpdesk.message_templates import TemplateInvalid, list_message_templates, save_message_template
from helpdesk.models import Agent, ChannelAccount, Group, MessageTemplate, QuarantinedMessage, Role, Tier
from helpdesk.web.forms import AgentForm, MailboxForm, MessageTemplateForm, split_commas

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


@bp.get("/mailboxes")
@role_required(Role.ADMIN)
def mailboxes():
    """List email accounts with their polling health, and the quarantine waiting."""
    return render_template("admin/mailboxes.html", rows=list_mailbox_health(),
                           quarantined=count_waiting_quarantine())


@bp.route("/mailboxes/new", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def new_mailbox():
    """Add a mailbox to poll."""
    return _mailbox_form(None)


@bp.route("/mailboxes/<int:account_id>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def edit_mailbox(account_id: int):
    """Change a mailbox's settings or password; saving retries it at once."""
    account = get_mailbox(account_id)
    if account is None:
        abort(404, f"There is no editable mailbox {account_id}.")
    return _mailbox_form(account)


def _mailbox_form(account: ChannelAccount | None):
    form = MailboxForm()
    if account is not None and not form.is_submitted():
        settings = account.settings or {}
        form.name.data, form.is_enabled.data = account.name, account.is_enabled
        for name in ("host", "port", "security", "user", "folder", "move_to"):
            getattr(form, name).data = settings.get(name)
    if form.validate_on_submit():
        data = MailboxInput(
            name=form.name.data, host=form.host.data, user=form.user.data, password=form.password.data or None,
            port=form.port.data, security=Security(form.security.data), folder=form.folder.data,
            move_to=form.move_to.data, is_enabled=form.is_enabled.data,
        )
        try:
            account = save_mailbox(account, data)
        except MailboxInvalid as error:
            db.session.rollback()
            getattr(form, error.field).errors.append(str(error))
        else:
            db.session.commit()
            flash(f"Mailbox {account.name} saved; it is polled again on the next run.", "info")
            return redirect(url_for("admin.mailboxes"))
    return render_template("admin/mailbox_form.html", form=form, account=account), 400 if form.errors else 200


@bp.get("/templates")
@role_required(Role.ADMIN)
def message_templates():
    """List the automatic-message templates admins have written."""
    return render_template("admin/message_templates.html", templates=list_message_templates())


@bp.route("/templates/new", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def new_message_template():
    """Write a template, or a language variant of one."""
    return _message_template_form(None)


@bp.route("/templates/<int:template_id>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def edit_message_template(template_id: int):
    """Change a template's language, subject or text."""
    template = db.session.get(MessageTemplate, template_id)
    if template is None:
        abort(404, f"There is no template {template_id}.")
    return _message_template_form(template)


def _message_template_form(template: MessageTemplate | None):
    form = MessageTemplateForm(obj=template)
    if template is None and not form.is_submitted():
        form.body.data = _default_acknowledgement_source()
    if form.validate_on_submit():
        try:
            template = save_message_template(template, form.name.data, form.language.data, form.subject.data,
                                             form.body.data)
        except TemplateInvalid as error:
            db.session.rollback()
            getattr(form, error.field).errors.append(str(error))
        else:
            db.session.commit()
            flash(f"Template {template.name} ({template.language or 'default'}) saved.", "info")
            return redirect(url_for("admin.message_templates"))
    return (render_template("admin/message_template_form.html", form=form, template=template),
            400 if form.errors else 200)


def _default_acknowledgement_source() -> str:
    source, _, _ = current_app.jinja_loader.get_source(current_app.jinja_env, "mail/acknowledgement.txt")
    return source
