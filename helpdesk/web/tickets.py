"""One ticket: its conversation, audit trail, reply box and triage fields."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from helpdesk.extensions import db
from helpdesk.models import Agent, Priority, TicketStatus, Tier
from helpdesk.outbound import ReplyRefused, reply, reply_route
from helpdesk.queries import get_ticket_or_404, ticket_events, ticket_messages
from helpdesk.sms import TextReplyState, text_reply_state
from helpdesk.tasks import enqueue
from helpdesk.tickets import change_field
from helpdesk.web.forms import EmptyForm, ReplyForm

bp = Blueprint("tickets", __name__, url_prefix="/tickets")


@bp.get("/<int:number>")
@login_required
def show(number: int):
    """Show the ticket with its messages and events."""
    ticket = get_ticket_or_404(number)
    # A deactivated assignee stays in the list, so saving the other fields does not silently unassign them.
    agents = db.session.scalars(
        sa.select(Agent)
        .where(sa.or_(Agent.is_active.is_(True), Agent.id == ticket.assignee_id))
        .order_by(Agent.name)
    ).all()
    return render_template(
        "tickets/show.html",
        ticket=ticket,
        messages=ticket_messages(ticket),
        events=ticket_events(ticket),
        form=ReplyForm(),
        text_reply=_text_reply_state(ticket),
        fields_form=EmptyForm(),
        agents=agents,
        statuses=list(TicketStatus),
        priorities=list(Priority),
        tiers=list(Tier),
    )


def _text_reply_state(ticket) -> TextReplyState | None:
    """Return the opt-out and WhatsApp-window state when a reply would go out as a text."""
    try:
        channel, address = reply_route(ticket)
    except ReplyRefused:
        return None
    return text_reply_state(channel, address)


@bp.post("/<int:number>/reply")
@login_required
def post_reply(number: int):
    """Store a reply or internal note and queue its delivery."""
    ticket = get_ticket_or_404(number)
    form = ReplyForm()
    if not form.validate_on_submit():
        flash("Write something before sending.", "error")
        return redirect(url_for("tickets.show", number=number))
    new_status = TicketStatus(form.status.data) if form.status.data else None
    try:
        message = reply(ticket, current_user, form.text.data, is_public=not form.internal.data, new_status=new_status)
    except ReplyRefused as error:
        flash(f"Not sent: {error}", "error")
        return redirect(url_for("tickets.show", number=number))
    if message.is_public:
        enqueue("deliver_outbox")
    flash("Internal note added." if not message.is_public else "Reply queued for delivery.", "info")
    return redirect(url_for("tickets.show", number=number))


@bp.post("/<int:number>/update")
@login_required
def update(number: int):
    """Change status, priority, tier or assignee; each change is recorded."""
    ticket = get_ticket_or_404(number)
    changes = {
        "status": (TicketStatus, request.form.get("status")),
        "priority": (Priority, request.form.get("priority")),
        "tier": (Tier, request.form.get("tier")),
    }
    for field, (kind, raw) in changes.items():
        if not raw:
            continue
        try:
            value = kind(raw)
        except ValueError:
            db.session.rollback()
            abort(400, f"{raw!r} is not a valid {field}.")
        change_field(ticket, field, value, agent=current_user)
    if "assignee_id" in request.form:
        raw = request.form["assignee_id"]
        assignee = db.session.get(Agent, int(raw)) if raw.isdigit() else None
        if raw and (assignee is None or not (assignee.is_active or assignee.id == ticket.assignee_id)):
            db.session.rollback()
            abort(400, "That agent does not exist or is inactive.")
        change_field(ticket, "assignee", assignee, agent=current_user)
    db.session.commit()
    return redirect(url_for("tickets.show", number=number))
