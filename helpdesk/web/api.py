"""Read API, version 1: tickets and customers as JSON, authenticated by personal API tokens."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, abort, jsonify, request

from helpdesk.auth import api_token_required
from helpdesk.customers import customer_history
from helpdesk.extensions import csrf, db
from helpdesk.models import Customer, TicketStatus, Tier
from helpdesk.queries import TicketFilter, get_ticket_or_404, ticket_events, ticket_messages, ticket_query
from helpdesk.serialize import customer_json, event_json, message_json, ticket_summary

bp = Blueprint("api", __name__)
# Token-authenticated and never cookie-authenticated, so cross-site request forgery cannot reach it.
csrf.exempt(bp)

MAX_PER_PAGE = 100


class BadQuery(ValueError):
    pass


@bp.errorhandler(BadQuery)
def bad_query(error: BadQuery):
    """Answer a malformed query parameter with 400 and the reason."""
    response = jsonify(error="bad_request", message=str(error))
    response.status_code = 400
    return response


def _int_arg(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise BadQuery(f"{name} must be {bounds}, not {value}")
    return value


def _ticket_filter() -> TicketFilter:
    statuses = []
    for raw in request.args.getlist("status"):
        for part in raw.split(","):
            try:
                statuses.append(TicketStatus(part.strip().replace("-", "_")))
            except ValueError:
                raise BadQuery(f"status must be one of {', '.join(s.value for s in TicketStatus)}, not {part!r}")
    tier = None
    if request.args.get("tier"):
        try:
            tier = Tier(request.args["tier"].replace("-", "_"))
        except ValueError:
            raise BadQuery(f"tier must be first_line or second_line, not {request.args['tier']!r}") from None
    updated_since = None
    if request.args.get("updated_since"):
        raw = request.args["updated_since"]
        try:
            updated_since = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise BadQuery(f"updated_since must be an ISO 8601 date and time, not {raw!r}") from None
        if updated_since.tzinfo is None:
            updated_since = updated_since.replace(tzinfo=dt.UTC)
    customer_id = _int_arg("customer", 0, 0) or None
    return TicketFilter(statuses=tuple(statuses), tier=tier, customer_id=customer_id, updated_since=updated_since)


@bp.get("/tickets")
@api_token_required
def list_tickets():
    """List tickets, filtered and paginated."""
    filters = _ticket_filter()
    page = _int_arg("page", 1, 1)
    per_page = _int_arg("per_page", 25, 1, MAX_PER_PAGE)
    pagination = db.paginate(ticket_query(filters), page=page, per_page=per_page, error_out=False)
    return jsonify(items=[ticket_summary(ticket) for ticket in pagination.items], page=page, per_page=per_page,
                   total=pagination.total)


@bp.get("/tickets/<int:number>")
@api_token_required
def get_ticket(number: int):
    """Return one ticket with its messages and events."""
    ticket = get_ticket_or_404(number)
    body = ticket_summary(ticket)
    body["messages"] = [message_json(message) for message in ticket_messages(ticket)]
    body["events"] = [event_json(event) for event in ticket_events(ticket)]
    return jsonify(body)


@bp.get("/customers/<int:customer_id>")
@api_token_required
def get_customer(customer_id: int):
    """Return one customer with identities and tickets."""
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        abort(404, f"There is no customer {customer_id}.")
    return jsonify(customer_json(customer, customer_history(customer)))


@bp.route("/<path:anything>")
def unknown(anything: str):
    """Answer unknown API paths with a JSON 404."""
    abort(404, f"/api/v1/{anything} is not an API endpoint.")
