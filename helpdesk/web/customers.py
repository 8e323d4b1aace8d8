"""A customer's identities and whole history across channels."""

from __future__ import annotations

from flask import Blueprint, abort, render_template
from flask_login import login_required

from helpdesk.customers import customer_history
from helpdesk.extensions import db
from helpdesk.models import Customer

bp = Blueprint("customers", __name__, url_prefix="/customers")


@bp.get("/<int:id_>")
@login_required
def show(id_: int):
    """Show one customer with every ticket they ever opened."""
    customer = db.session.get(Customer, id_)
    if customer is None:
        abort(404, f"There is no customer {id_}.")
    return render_template("customers/show.html", customer=customer, tickets=customer_history(customer))
