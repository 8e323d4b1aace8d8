"""The agents' inbox: tickets by status, newest activity first, kept current by the live rows endpoint."""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Blueprint, abort, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from helpdesk.extensions import db
from helpdesk.models import ACTIVE_STATUSES, Message, Ticket, TicketStatus, Tier
from helpdesk.models.base import utcnow
from helpdesk.queries import TicketFilter, inbox_counts, ticket_query
from helpdesk.triage.clock import PAUSED_STATUSES, is_met

bp = Blueprint("inbox", __name__)

VIEWS = {
    "active": ("Active", ACTIVE_STATUSES),
    **{status.value: (status.label, (status,)) for status in TicketStatus},
}
PER_PAGE = 50
#: The most tickets one live request may ask about; the page holds PER_PAGE rows.
MAX_LIVE_NUMBERS = 100


@dataclasses.dataclass(frozen=True)
class InboxView:
    """The inbox's view as chosen in the query string: status view, tier, only the agent's own tickets."""

    view: str
    tier: Tier | None
    mine: bool

    @property
    def filters(self) -> TicketFilter:
        return TicketFilter(statuses=VIEWS[self.view][1], tier=self.tier,
                            assignee_id=current_user.id if self.mine else None)


@dataclasses.dataclass(frozen=True)
class InboxRow:
    """What one row of the inbox shows besides the ticket's own fields."""

    ticket: Ticket
    last_message: Message | None
    sla_due_at: dt.datetime | None
    is_overdue: bool


def _chosen_view() -> InboxView:
    view = request.args.get("view", "active")
    tier = request.args.get("tier")
    return InboxView(
        view=view if view in VIEWS else "active",
        tier=Tier(tier) if tier in {t.value for t in Tier} else None,
        mine=request.args.get("mine") == "1",
    )


def sla_due_at(ticket: Ticket) -> dt.datetime | None:
    """Return the earliest SLA target the ticket still has to meet, or None (met, paused or closed)."""
    if not ticket.status.is_active or ticket.status in PAUSED_STATUSES:
        return None
    pending = [ticket.resolution_due_at]
    if not is_met(ticket, "first_response"):
        pending.append(ticket.first_response_due_at)
    # A next-response due time stays stored after the agent answered; only an unanswered one is pending.
    if not is_met(ticket, "next_response"):
        pending.append(ticket.next_response_due_at)
    return min((due for due in pending if due is not None), default=None)


def inbox_rows(tickets: list[Ticket], now: dt.datetime | None = None) -> list[InboxRow]:
    """Pair each ticket with its latest message and SLA due time, in one query for all of them."""
    now = now or utcnow()
    latest = (
        sa.select(sa.func.max(Message.id))
        .where(Message.ticket_id.in_([ticket.id for ticket in tickets]))
        .group_by(Message.ticket_id)
    )
    last_messages = {
        message.ticket_id: message
        for message in db.session.scalars(
            sa.select(Message).where(Message.id.in_(latest)).options(
                so.selectinload(Message.author_agent), so.selectinload(Message.author_customer))
        )
    } if tickets else {}
    rows = []
    for ticket in tickets:
        due = sla_due_at(ticket)
        rows.append(InboxRow(ticket, last_messages.get(ticket.id), due, due is not None and due <= now))
    return rows


def _with_people(query: sa.Select) -> sa.Select:
    return query.options(so.selectinload(Ticket.customer), so.selectinload(Ticket.assignee))


@bp.get("/")
def home():
    """Send visitors to the inbox (or the login page)."""
    return redirect(url_for("inbox.index"))


@bp.get("/inbox")
@login_required
def index():
    """List tickets for the chosen view."""
    chosen = _chosen_view()
    page = db.paginate(_with_people(ticket_query(chosen.filters)), per_page=PER_PAGE, error_out=False)
    return render_template("inbox/index.html", page=page, rows=inbox_rows(list(page.items)), view=chosen.view,
                           views=VIEWS, counts=inbox_counts(), tier=chosen.tier, mine=chosen.mine,
                           per_page=PER_PAGE)


@bp.get("/inbox/rows")
@login_required
def live_rows():
    """Render inbox rows for the live page: the tickets in `numbers` that match the view, else its first page.

    A number asked about but missing from the answer no longer belongs in the view, so the page drops its row.
    """
    chosen = _chosen_view()
    query = _with_people(ticket_query(chosen.filters))
    raw = request.args.get("numbers")
    if raw is not None:
        try:
            numbers = {int(part) for part in raw.split(",") if part.strip()}
        except ValueError:
            abort(400, "numbers must be ticket numbers separated by commas.")
        if len(numbers) > MAX_LIVE_NUMBERS:
            abort(400, f"Ask about at most {MAX_LIVE_NUMBERS} tickets at once.")
        tickets = list(db.session.scalars(query.where(Ticket.number.in_(numbers)))) if numbers else []
    else:
        tickets = list(db.session.scalars(query.limit(PER_PAGE)))
    return jsonify(
        rows=[
            {"number": row.ticket.number, "updated_at": row.ticket.updated_at.isoformat(),
             "html": render_template("inbox/_row.html", row=row)}
            for row in inbox_rows(tickets)
        ],
        counts=inbox_counts(),
        complete=raw is None,
    )
