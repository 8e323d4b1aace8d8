"""The agents' inbox: tickets by status, newest activity first."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from helpdesk.extensions import db
from helpdesk.models import ACTIVE_STATUSES, TicketStatus, Tier
from helpdesk.queries import TicketFilter, inbox_counts, ticket_query

bp = Blueprint("inbox", __name__)

VIEWS = {
    "active": ("Active", ACTIVE_STATUSES),
    **{status.value: (status.label, (status,)) for status in TicketStatus},
}


@bp.get("/")
def home():
    """Send visitors to the inbox (or the login page)."""
    return redirect(url_for("inbox.index"))


@bp.get("/inbox")
@login_required
def index():
    """List tickets for the chosen view."""
    view = request.args.get("view", "active")
    if view not in VIEWS:
        view = "active"
    tier = request.args.get("tier")
    tier_filter = Tier(tier) if tier in {t.value for t in Tier} else None
    mine = request.args.get("mine") == "1"
    filters = TicketFilter(statuses=VIEWS[view][1], tier=tier_filter,
                           assignee_id=current_user.id if mine else None)
    page = db.paginate(ticket_query(filters), per_page=50, error_out=False)
    return render_template("inbox/index.html", page=page, view=view, views=VIEWS, counts=inbox_counts(),
                           tier=tier_filter, mine=mine)
