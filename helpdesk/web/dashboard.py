"""The leads' live SLA dashboard: a page rendered on the server and the same figures as JSON."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import sqlalchemy as sa
from flask import Blueprint, abort, jsonify, render_template, request, url_for

from helpdesk.auth import role_required
from helpdesk.extensions import db
from helpdesk.models import Group, Role, Tier
from helpdesk.reports import DEFAULT_WINDOW, WINDOWS, DashboardError, Scope, Window, dashboard, make_window

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

MAX_TIMEZONE_LENGTH = 64
MAX_ID = 2**31 - 1


def read_filters() -> tuple[Window, Scope]:
    """Read the window, tier, group and time zone from the query string; answer 400 naming a bad one."""
    args = request.args
    tier = args.get("tier") or None
    if tier is not None and tier not in {t.value for t in Tier}:
        abort(400, f"Unknown tier {tier!r}: use one of {', '.join(t.value for t in Tier)}.")
    group_id = None
    if args.get("group"):
        raw = args["group"]
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 40:
            abort(400, f"The group must be a group's number, not {raw[:40]!r}.")
        group_id = int(raw)
        # Larger than any stored id (PostgreSQL would refuse to compare it with an integer column).
        if group_id > MAX_ID or db.session.get(Group, group_id) is None:
            abort(400, f"There is no group {group_id}.")
    timezone = args.get("tz") or "UTC"
    if len(timezone) > MAX_TIMEZONE_LENGTH:
        abort(400, "The time zone name is too long.")
    try:
        window = make_window(args.get("window") or DEFAULT_WINDOW, timezone=timezone)
    except DashboardError as error:
        abort(400, f"{sentence(str(error))}.")
    return window, Scope(tier=Tier(tier) if tier else None, group_id=group_id)


@bp.get("")
@role_required(Role.LEAD)
def index():
    """Show the SLA dashboard; the page keeps itself up to date."""
    window, scope = read_filters()
    groups = db.session.scalars(sa.select(Group).order_by(Group.name)).all()
    # The live updates ask for the same figures the page shows, from the filters as read.
    data_url = url_for(".data", window=window.key, tier=scope.tier.value if scope.tier else None,
                       group=scope.group_id, tz=window.timezone if window.timezone != "UTC" else None)
    return render_template("dashboard/index.html", figures=dashboard(window, scope), windows=WINDOWS,
                           tiers=list(Tier), groups=groups, data_url=data_url, **FORMATTERS)


@bp.get("/data")
@role_required(Role.LEAD)
def data():
    """Return the dashboard's figures as JSON, for the page's live updates and for scripts."""
    window, scope = read_filters()
    response = jsonify(dashboard(window, scope))
    # Figures change every minute; a cached copy would show stale time left.
    response.headers["Cache-Control"] = "no-store"
    return response


# Formatting for the page; static/dashboard.js formats the live updates the same way.


def duration(seconds: int | None) -> str:
    """Say a duration briefly: "45 min", "2 h 05 min", "3 d 4 h"; an em dash for none."""
    if seconds is None:
        return "—"
    minutes = abs(int(seconds)) // 60
    if minutes < 1:
        return "under 1 min"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def percent(rate: float | None) -> str:
    """Say a share as a whole percentage (half up, as the script rounds); an em dash for none."""
    return "—" if rate is None else f"{int(rate * 100 + 0.5)}%"


def rate_class(rate: float | None) -> str:
    """Colour a compliance rate: good from 95%, a warning from 80%, bad below."""
    if rate is None:
        return ""
    return "kpi-good" if rate >= 0.95 else "kpi-warn" if rate >= 0.8 else "kpi-bad"


def when(iso: str, timezone: str = "UTC") -> str:
    """Show an ISO 8601 moment as "2026-03-09 10:55 UTC", in `timezone`."""
    moment = dt.datetime.fromisoformat(iso).astimezone(zoneinfo.ZoneInfo(timezone))
    return f"{moment:%Y-%m-%d %H:%M} {timezone}"


def clock(iso: str) -> str:
    """Show the UTC time of day of an ISO 8601 moment."""
    return f"{dt.datetime.fromisoformat(iso).astimezone(dt.UTC):%H:%M:%S}"


def listed(listing: dict) -> str:
    """Say how many rows a listing holds: "7", or "50 of 63" when it was cut short."""
    shown, total = len(listing["tickets"]), listing["total"]
    return str(total) if shown == total else f"{shown} of {total}"


def load_percent(row: dict) -> int:
    """Return an agent's open tickets as a share of their capacity, at most 100."""
    return min(100, int(100 * row["open_tickets"] / row["capacity"] + 0.5)) if row["capacity"] > 0 else 100


def sentence(text: str) -> str:
    """Capitalise the first letter only."""
    return text[:1].upper() + text[1:]


FORMATTERS = {"duration": duration, "percent": percent, "rate_class": rate_class, "when": when, "clock": clock,
              "listed": listed, "load_percent": load_percent, "sentence": sentence}
