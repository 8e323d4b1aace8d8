"""The channel simulator: agents write as a customer on any channel and watch the ticket appear."""

from __future__ import annotations

import uuid

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import login_required

from channels.identities import InvalidIdentity
from channels.messages import ChannelName, IdentityKind, InboundMessage, SenderIdentity, ThreadHints
from helpdesk.customers import normalize_identity
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.web.forms import SimulatorForm

bp = Blueprint("simulator", __name__, url_prefix="/simulator")

_IDENTITY_KIND = {
    ChannelName.EMAIL: IdentityKind.EMAIL,
    ChannelName.SMS: IdentityKind.PHONE,
    ChannelName.WHATSAPP: IdentityKind.PHONE,
    ChannelName.CHAT: IdentityKind.VISITOR,
}


def simulated_message(channel: ChannelName, sender: str, name: str | None, subject: str | None, text: str,
                      reply_to_ticket: int | None) -> InboundMessage:
    """Build the message a real channel would have produced; raise InvalidIdentity for a bad sender."""
    # Real channels hand ingest a normalized sender (the SenderIdentity contract), and the message keeps it
    # as the address replies go to, so a typed "+46 70-123 45 67" must become "+46701234567" here.
    identity = normalize_identity(SenderIdentity(_IDENTITY_KIND[channel], sender, name or None))
    token = uuid.uuid4().hex
    external_id = f"<simulated.{token}@simulator.localhost>" if channel is ChannelName.EMAIL else f"SIM{token}"
    return InboundMessage(
        channel=channel,
        sender=identity,
        dedupe_key=f"simulator:{channel}:{token}",
        external_id=external_id,
        text=text,
        subject=(subject or None) if channel is ChannelName.EMAIL else None,
        thread=ThreadHints(
            ticket_number=reply_to_ticket,
            join_open_ticket_on_channel=channel is not ChannelName.EMAIL,
        ),
    )


@bp.route("", methods=["GET", "POST"])
@login_required
def index():
    """Show the simulator form and ingest what was written, as the channel would."""
    form = SimulatorForm()
    if form.validate_on_submit():
        channel = ChannelName(form.channel.data)
        try:
            inbound = simulated_message(channel, form.sender.data, form.name.data, form.subject.data,
                                        form.text.data, form.reply_to_ticket.data)
            result = ingest(inbound)
        except InvalidIdentity as error:
            db.session.rollback()
            form.sender.errors.append(str(error))
            return render_template("simulator/index.html", form=form), 400
        verb = "opened" if result.is_new_ticket else "added to"
        flash(f"Simulated {channel} message {verb} ticket #{result.ticket.number} ({result.thread_reason}).", "info")
        return redirect(url_for("tickets.show", number=result.ticket.number))
    return render_template("simulator/index.html", form=form), 400 if form.errors else 200
