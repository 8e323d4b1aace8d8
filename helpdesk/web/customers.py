"""A customer's identities and whole history across channels."""

from __future__ import annotations

import logging

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from helpdesk.customers import clear_bouncing, customer_history
from helpdesk.database import begin_write
from helpdesk.extensions import db
from helpdesk.models import Customer, CustomerIdentity
from helpdesk.web.forms import EmptyForm

log = logging.getLogger(__name__)

bp = Blueprint("customers", __name__, url_prefix="/customers")


@bp.get("/<int:id_>")
@login_required
def show(id_: int):
    """Show one customer with every ticket they ever opened."""
    customer = db.session.get(Customer, id_)
    if customer is None:
        abort(404, f"There is no customer {id_}.")
    return render_template("customers/show.html", customer=customer, tickets=customer_history(customer),
                           form=EmptyForm())


@bp.post("/<int:id_>/identities/<int:identity_id>/clear-bounce")
@login_required
def clear_bounce(id_: int, identity_id: int):
    """Take the bouncing mark off an address the agent knows to work again (the customer fixed their mailbox)."""
    db.session.rollback()
    begin_write()
    identity = db.session.get(CustomerIdentity, identity_id)
    if identity is None or identity.customer_id != id_:
        abort(404, "That customer has no such address.")
    reason = identity.bounce_reason
    if clear_bouncing(identity):
        log.info("agent %s took the bouncing mark off %s (was: %s)", current_user.id, identity.value, reason)
        flash(f"{identity.value} is no longer marked as bouncing.", "info")
    db.session.commit()
    return redirect(url_for("customers.show", id_=id_))
