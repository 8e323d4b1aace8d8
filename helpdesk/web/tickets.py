"""One ticket: its conversation, audit trail, reply box and triage fields."""

from __future__ import annotations

import mimetypes
import unicodedata

import sqlalchemy as sa
from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from channels.messages import Attachment as AttachmentData
from helpdesk.customers import customer_history
from helpdesk.extensions import db
from helpdesk.models import Agent, Attachment, Message, Priority, Ticket, TicketStatus, Tier
from helpdesk.outbound import MAX_REPLY_FILES, ReplyRefused, bouncing_reply_address, reply, reply_route
from helpdesk.queries import get_ticket_or_404, ticket_events, ticket_messages
from helpdesk.sms import TextReplyState, text_reply_state
from helpdesk.tasks import enqueue
from helpdesk.tickets import (
    ESCALATION_REASONS,
    MoveRefused,
    change_field,
    escalate_to_second_line,
    hand_back_to_first_line,
    move_message,
    split_message,
)
from helpdesk.web.files import send_stored_file
from helpdesk.web.formatted import formatted_email
from helpdesk.web.forms import EmptyForm, ReplyForm

bp = Blueprint("tickets", __name__, url_prefix="/tickets")
bp.add_app_template_global(formatted_email)

#: The most of the customer's other conversations the ticket page lists; the customer page has them all.
OTHER_CONVERSATIONS = 20
#: The most messages one live request may ask to be rendered again.
MAX_LIVE_MESSAGES = 50


def other_conversations(ticket: Ticket) -> list[Ticket]:
    """Return the customer's other tickets on any channel, newest first, at most OTHER_CONVERSATIONS."""
    return [other for other in customer_history(ticket.customer) if other.id != ticket.id][:OTHER_CONVERSATIONS]


@bp.get("/<int:number>")
@login_required
def show(number: int):
    """Show the ticket with its messages and events."""
    return _ticket_page(get_ticket_or_404(number), ReplyForm())


def _ticket_page(ticket: Ticket, form: ReplyForm, status: int = 200):
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
        others=other_conversations(ticket),
        form=form,
        text_reply=_text_reply_state(ticket),
        bouncing=bouncing_reply_address(ticket),
        fields_form=EmptyForm(),
        agents=agents,
        statuses=list(TicketStatus),
        priorities=list(Priority),
        tiers=list(Tier),
        escalation_reasons=ESCALATION_REASONS,
        max_reply_files=MAX_REPLY_FILES,
    ), status


@bp.get("/<int:number>/live")
@login_required
def live(number: int):
    """Render what the open ticket page needs after an event: new or changed messages, header and history.

    `after` is the newest message id the page shows (0 for all of them); `messages` lists ids to render
    again (a delivery status changed).
    """
    ticket = get_ticket_or_404(number)
    try:
        after = int(request.args.get("after", 0))
        again = {int(part) for part in request.args.get("messages", "").split(",") if part.strip()}
    except ValueError:
        abort(400, "after and messages must be message ids.")
    if len(again) > MAX_LIVE_MESSAGES:
        abort(400, f"Ask for at most {MAX_LIVE_MESSAGES} messages at once.")
    fields_form = EmptyForm()
    messages = db.session.scalars(
        sa.select(Message)
        .where(Message.ticket_id == ticket.id, sa.or_(Message.id > after, Message.id.in_(again)))
        .order_by(Message.created_at, Message.id)
    ).all()
    return jsonify(
        messages=[
            {
                "id": message.id,
                "created_at": message.created_at.isoformat(),
                "html": render_template("tickets/_message.html", message=message, ticket=ticket,
                                        fields_form=fields_form),
            }
            for message in messages
        ],
        message_ids=[message_id for (message_id,) in db.session.execute(
            sa.select(Message.id).where(Message.ticket_id == ticket.id).order_by(Message.id))],
        header=render_template("tickets/_header.html", ticket=ticket),
        history=render_template("tickets/_history.html", events=ticket_events(ticket)),
        others=render_template("tickets/_others.html", ticket=ticket, others=other_conversations(ticket)),
        tier_actions=render_template("tickets/_tier_actions.html", ticket=ticket, fields_form=fields_form,
                                     escalation_reasons=ESCALATION_REASONS),
        fields={
            "status": ticket.status.value,
            "priority": ticket.priority.value,
            "tier": ticket.tier.value,
            "assignee_id": str(ticket.assignee_id or ""),
        },
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
        message = reply(ticket, current_user, form.text.data, is_public=not form.internal.data, new_status=new_status,
                        files=_uploaded_files())
    except ReplyRefused as error:
        # The page again with the text as written (files must be chosen again: a browser keeps none).
        db.session.rollback()
        flash(f"Not sent: {error}", "error")
        return _ticket_page(ticket, form, 422)
    if message.is_public:
        enqueue("deliver_outbox")
    flash("Internal note added." if not message.is_public else "Reply queued for delivery.", "info")
    return redirect(url_for("tickets.show", number=number))


def _uploaded_files() -> list[AttachmentData]:
    """The files chosen in the reply form (a form sent without any has one empty entry)."""
    files = []
    for upload in request.files.getlist("files"):
        if not upload.filename:
            continue
        filename = _plain_filename(upload.filename)
        content_type = upload.mimetype or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        files.append(AttachmentData(filename=filename, content_type=content_type, content=upload.read()))
    return files


def _plain_filename(sent: str) -> str:
    """The file's own name: no folders, and no control characters (a line break would end a MIME header)."""
    name = sent.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in name if unicodedata.category(char) != "Cc").strip()
    return name[:255] or "file"


@bp.get("/<int:number>/files/<int:attachment_id>")
@login_required
def file(number: int, attachment_id: int):
    """Send a file of one of the ticket's messages (images open in the browser, other files download)."""
    ticket = get_ticket_or_404(number)
    row = db.session.get(Attachment, attachment_id)
    if row is None or row.message.ticket_id != ticket.id:
        abort(404, "There is no such file on this ticket.")
    return send_stored_file(row) or abort(404, "The file was not kept, or is no longer stored.")


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


@bp.post("/<int:number>/escalate")
@login_required
def escalate(number: int):
    """Hand the ticket to the second line with a reason code."""
    ticket = get_ticket_or_404(number)
    try:
        escalate_to_second_line(ticket, current_user, request.form.get("reason_code", ""),
                                request.form.get("note", "").strip()[:400])
    except ValueError as error:
        db.session.rollback()
        abort(400, str(error))
    db.session.commit()
    flash(f"#{number} escalated to the second line.", "info")
    return redirect(url_for("tickets.show", number=number))


@bp.post("/<int:number>/hand-back")
@login_required
def hand_back(number: int):
    """Return the ticket from the second line to the first line."""
    ticket = get_ticket_or_404(number)
    try:
        hand_back_to_first_line(ticket, current_user, request.form.get("note", "").strip()[:400])
    except ValueError as error:
        db.session.rollback()
        abort(400, str(error))
    db.session.commit()
    flash(f"#{number} handed back to the first line.", "info")
    return redirect(url_for("tickets.show", number=number))


def _message_on_ticket_or_404(number: int, message_id: int):
    ticket = get_ticket_or_404(number)
    message = db.session.get(Message, message_id)
    if message is None or message.ticket_id != ticket.id:
        abort(404, f"Ticket #{number} has no message {message_id}.")
    return message


@bp.post("/<int:number>/messages/<int:message_id>/move")
@login_required
def move(number: int, message_id: int):
    """Move a misfiled message to the ticket whose number is given."""
    message = _message_on_ticket_or_404(number, message_id)
    raw_target = request.form.get("target", "").strip().lstrip("#")
    if not raw_target.isdigit():
        abort(400, "Give the number of the ticket to move the message to.")
    target = get_ticket_or_404(int(raw_target))
    try:
        move_message(message, target, current_user, reason=request.form.get("reason", "").strip()[:400] or None)
    except MoveRefused as error:
        db.session.rollback()
        abort(400, str(error))
    db.session.commit()
    flash(f"Message moved to #{target.number}.", "info")
    return redirect(url_for("tickets.show", number=target.number))


@bp.post("/<int:number>/messages/<int:message_id>/split")
@login_required
def split(number: int, message_id: int):
    """Split a message off into a new ticket of its own."""
    message = _message_on_ticket_or_404(number, message_id)
    ticket = split_message(message, current_user, reason=request.form.get("reason", "").strip()[:400] or None)
    db.session.commit()
    flash(f"Message split off into the new ticket #{ticket.number}.", "info")
    return redirect(url_for("tickets.show", number=ticket.number))
