"""The SLA dashboard's figures on a frozen clock: compliance, at risk, breached, backlog, times, load, escalations."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from helpdesk.agents import get_or_create_group
from helpdesk.extensions import db
from helpdesk.models import Customer, SlaAlert, SlaPolicy, Ticket, TicketEvent, TicketStatus, Tier
from helpdesk.reports import (
    DashboardError,
    Scope,
    agent_load,
    backlog_per_tier,
    breached_tickets,
    dashboard,
    escalations_per_reason,
    make_window,
    response_times,
    sla_compliance,
    tickets_at_risk,
)
from helpdesk.tickets import escalate_to_second_line, open_ticket
from helpdesk.triage.clock import schedule_check
from helpdesk.triage.sweep import sweep_sla
from tests.factories import make_agent

pytestmark = pytest.mark.integration

#: Monday 2026-03-09, noon UTC: "now" for every figure below.
NOW = dt.datetime(2026, 3, 9, 12, 0, tzinfo=dt.UTC)


def at(hour: int, minute: int = 0, *, days: int = 0) -> dt.datetime:
    """A moment on the frozen Monday (or `days` later; negative for earlier)."""
    return dt.datetime(2026, 3, 9, hour, minute, tzinfo=dt.UTC) + dt.timedelta(days=days)


def sla_ticket(subject: str = "Help", *, created_at: dt.datetime | None = None, status=TicketStatus.OPEN,
               tier=Tier.FIRST_LINE, **fields) -> Ticket:
    """A ticket with its SLA fields set directly, as triage and the sweep would have left them."""
    customer = Customer(name="Cus Tomer")
    db.session.add(customer)
    ticket = open_ticket(customer, "email", subject, reason="test")
    ticket.created_at = created_at or at(8)
    ticket.status = status
    ticket.tier = tier
    for name, value in fields.items():
        setattr(ticket, name, value)
    db.session.flush()
    return ticket


def breach_alert(ticket: Ticket, target: str, due_at: dt.datetime, kind: str = "breach") -> None:
    db.session.add(SlaAlert(ticket_id=ticket.id, target=target, kind=kind, due_at=due_at, created_at=due_at))
    db.session.flush()


def numbers(listing) -> list[int]:
    return [row.number for row in listing.tickets]


def test_compliance_counts_targets_met_and_breached_at_their_moments_inside_the_window():
    today = make_window("today", now=NOW)
    met = sla_ticket("met", first_response_due_at=at(10), first_responded_at=at(9, 30))
    late = sla_ticket("answered late", first_response_due_at=at(10), first_responded_at=at(10, 30),
                      tier=Tier.SECOND_LINE)
    overdue = sla_ticket("still unanswered", first_response_due_at=at(11))
    sla_ticket("not due yet", first_response_due_at=at(13))
    # Paused before its due time: the due time moves when the clock resumes, so it is no breach yet...
    sla_ticket("pending, not swept", status=TicketStatus.PENDING, first_response_due_at=at(11))
    # ...unless the sweep recorded the breach before the pause.
    swept = sla_ticket("pending, swept", status=TicketStatus.PENDING, first_response_due_at=at(11))
    breach_alert(swept, "first_response", at(11))
    # The recorded breach stands even though a pause later moved the due time and the answer beat it.
    moved = sla_ticket("breached, due time moved", first_response_due_at=at(13), first_responded_at=at(11, 30))
    breach_alert(moved, "first_response", at(9))
    yesterday = sla_ticket("met yesterday", created_at=at(8, days=-1), first_response_due_at=at(10, days=-1),
                           first_responded_at=at(9, days=-1), status=TicketStatus.SOLVED, solved_at=at(11, days=-1))
    # Closed without an answer after the due time passed: breached; closed before it: neither.
    sla_ticket("closed unanswered, late", status=TicketStatus.CLOSED, first_response_due_at=at(9), closed_at=at(9, 30))
    sla_ticket("closed unanswered, early", status=TicketStatus.CLOSED, first_response_due_at=at(11), closed_at=at(9))

    sla_ticket("solved in time", status=TicketStatus.SOLVED, resolution_due_at=at(11), solved_at=at(10))
    sla_ticket("closed late", status=TicketStatus.CLOSED, resolution_due_at=at(11), closed_at=at(11, 30))
    sla_ticket("open past resolution", resolution_due_at=at(10))
    sla_ticket("resolution not due", resolution_due_at=at(18))
    db.session.commit()

    figures = sla_compliance(today)
    first, resolution = figures["first_response"], figures["resolution"]
    assert (first.met, first.breached) == (1, 5)  # met; late, overdue, swept, moved, closed late
    assert first.rate == pytest.approx(1 / 6)
    assert (resolution.met, resolution.breached) == (1, 2)

    week = sla_compliance(make_window("7d", now=NOW))["first_response"]
    assert (week.met, week.breached) == (2, 5)
    assert yesterday.first_responded_at < today.start < met.first_responded_at

    first_line = sla_compliance(today, Scope(tier=Tier.FIRST_LINE))["first_response"]
    assert (first_line.met, first_line.breached) == (1, 4)
    assert late.tier is Tier.SECOND_LINE and overdue.tier is Tier.FIRST_LINE


def test_compliance_without_any_decided_target_has_no_rate():
    sla_ticket("not due yet", first_response_due_at=at(13))
    db.session.commit()
    figures = sla_compliance(make_window("today", now=NOW))["first_response"]
    assert (figures.met, figures.breached, figures.rate) == (0, 0, None)


def test_tickets_at_risk_are_listed_soonest_due_first_with_the_time_left():
    sam = make_agent(name="Sam")
    db.session.flush()
    in_forty = sla_ticket("due in 40 min", first_response_due_at=at(12, 40), assignee=sam)
    in_ten = sla_ticket("due in 10 min", status=TicketStatus.NEW, first_response_due_at=at(12, 10))
    warned = sla_ticket("warned about resolution", first_responded_at=at(9), resolution_due_at=at(15),
                        tier=Tier.SECOND_LINE)
    breach_alert(warned, "resolution", at(15), kind="warning")
    sla_ticket("far off, checked later", first_response_due_at=at(14), sla_check_at=at(13, 30))
    check_due = sla_ticket("far off, check has come", first_response_due_at=at(14, 30), sla_check_at=at(11, 59))
    sla_ticket("answered", first_response_due_at=at(12, 20), first_responded_at=at(11))
    sla_ticket("paused", status=TicketStatus.PENDING, first_response_due_at=at(12, 30))
    sla_ticket("solved", status=TicketStatus.SOLVED, first_response_due_at=at(12, 30), solved_at=at(11))
    overdue = sla_ticket("overdue", first_response_due_at=at(11))
    waiting = sla_ticket("customer wrote again", first_responded_at=at(9), last_agent_reply_at=at(10),
                         last_customer_message_at=at(11), next_response_due_at=at(12, 50), resolution_due_at=at(18))
    # A warning about an earlier wait, answered since, says nothing about the new one.
    answered_wait = sla_ticket("old warning", first_responded_at=at(9), last_agent_reply_at=at(11, 30),
                               last_customer_message_at=at(11), next_response_due_at=at(13, 30))
    breach_alert(answered_wait, "next_response", at(11, 45), kind="warning")
    db.session.commit()

    listing = tickets_at_risk(now=NOW)
    assert numbers(listing) == [in_ten.number, in_forty.number, waiting.number, check_due.number, warned.number]
    assert listing.total == 5
    first, second, third = listing.tickets[:3]
    assert (first.seconds_left, first.target, first.assignee, first.tier) == (600, "first_response", None, "first_line")
    assert (second.seconds_left, second.assignee, second.due_at) == (2400, "Sam", at(12, 40))
    assert (third.target, third.seconds_left) == ("next_response", 3000)
    assert listing.tickets[-1].target == "resolution" and listing.tickets[-1].tier == "second_line"
    assert overdue.number not in numbers(listing)

    assert numbers(tickets_at_risk(Scope(tier=Tier.SECOND_LINE), now=NOW)) == [warned.number]
    limited = tickets_at_risk(now=NOW, limit=2)
    assert (limited.total, numbers(limited)) == (5, [in_ten.number, in_forty.number])


def test_breached_tickets_list_the_overdue_first_then_those_breached_earlier():
    long_overdue = sla_ticket("overdue since 9", first_response_due_at=at(9), sla_breached_at=at(9))
    overdue = sla_ticket("overdue since 11", first_response_due_at=at(11))
    met_late = sla_ticket("answered late", first_response_due_at=at(8, 30), first_responded_at=at(10),
                          sla_breached_at=at(8, 30), resolution_due_at=at(18))
    paused = sla_ticket("breached, then pending", status=TicketStatus.ON_HOLD, first_response_due_at=at(10),
                        sla_breached_at=at(10))
    sla_ticket("paused past a stale due time", status=TicketStatus.PENDING, first_response_due_at=at(10))
    sla_ticket("solved after a breach", status=TicketStatus.SOLVED, sla_breached_at=at(9), solved_at=at(10))
    sla_ticket("on track", first_response_due_at=at(13))
    db.session.commit()

    listing = breached_tickets(now=NOW)
    assert numbers(listing) == [long_overdue.number, overdue.number, met_late.number, paused.number]
    rows = {row.number: row for row in listing.tickets}
    assert (rows[overdue.number].overdue_target, rows[overdue.number].seconds_overdue) == ("first_response", 3600)
    assert rows[overdue.number].breached_at == at(11)
    assert (rows[met_late.number].overdue_target, rows[met_late.number].breached_at) == (None, at(8, 30))
    assert rows[paused.number].status == "on_hold"


def test_backlog_per_tier_counts_active_statuses_and_the_unassigned():
    billing = get_or_create_group("Billing")
    sam = make_agent()
    db.session.flush()
    for status, tier, assignee, group in [
        (TicketStatus.NEW, Tier.FIRST_LINE, None, billing),
        (TicketStatus.NEW, Tier.FIRST_LINE, None, None),
        (TicketStatus.OPEN, Tier.FIRST_LINE, sam, billing),
        (TicketStatus.PENDING, Tier.FIRST_LINE, sam, None),
        (TicketStatus.ON_HOLD, Tier.SECOND_LINE, None, billing),
        (TicketStatus.OPEN, Tier.SECOND_LINE, sam, None),
        (TicketStatus.SOLVED, Tier.FIRST_LINE, None, billing),
        (TicketStatus.CLOSED, Tier.SECOND_LINE, None, None),
    ]:
        sla_ticket(status=status, tier=tier, assignee=assignee, group=group)
    db.session.commit()

    first, second = backlog_per_tier()
    assert (first.tier, first.new, first.open, first.pending, first.on_hold, first.total, first.unassigned) == (
        "first_line", 2, 1, 1, 0, 4, 2)
    assert (second.tier, second.new, second.open, second.pending, second.on_hold, second.total, second.unassigned) == (
        "second_line", 0, 1, 0, 1, 2, 1)

    [only] = backlog_per_tier(Scope(tier=Tier.SECOND_LINE, group_id=billing.id))
    assert (only.tier, only.on_hold, only.total, only.unassigned) == ("second_line", 1, 1, 1)
    in_billing = backlog_per_tier(Scope(group_id=billing.id))
    assert [(row.total, row.unassigned) for row in in_billing] == [(2, 1), (1, 1)]


def test_response_times_give_the_median_and_90th_percentile_inside_the_window():
    for minutes in (10, 20, 30, 40, 100):
        sla_ticket(created_at=at(8), first_responded_at=at(8) + dt.timedelta(minutes=minutes))
    sla_ticket("answered last week", created_at=at(8, days=-8), first_responded_at=at(9, days=-8))
    sla_ticket("not answered", created_at=at(8))
    sla_ticket("solved", created_at=at(7), status=TicketStatus.SOLVED, solved_at=at(8))
    sla_ticket("closed", created_at=at(7), status=TicketStatus.CLOSED, closed_at=at(10))
    sla_ticket("solved then closed", created_at=at(7, days=-3), status=TicketStatus.CLOSED, solved_at=at(7, days=-2),
               closed_at=at(9))
    db.session.commit()

    times = response_times(make_window("today", now=NOW))
    first, resolution = times["first_response"], times["resolution"]
    # 10, 20, 30, 40, 100 minutes: the median is 30; the 90th percentile lies 0.6 of the way from 40 to 100.
    assert (first.count, first.median_seconds, first.p90_seconds) == (5, 30 * 60, 76 * 60)
    # 1 h and 3 h: the median is 2 h; the 90th percentile 2.8 h. Solved yesterday, closed today: not counted.
    assert (resolution.count, resolution.median_seconds, resolution.p90_seconds) == (2, 7200, 10080)

    month = response_times(make_window("30d", now=NOW))
    assert month["first_response"].count == 6 and month["first_response"].median_seconds == 35 * 60
    assert month["resolution"].count == 3 and month["resolution"].median_seconds == 3 * 3600

    empty = response_times(make_window("today", now=NOW), Scope(tier=Tier.SECOND_LINE))["first_response"]
    assert (empty.count, empty.median_seconds, empty.p90_seconds) == (0, None, None)


def test_escalations_are_counted_per_reason_for_agents_and_for_the_sla_sweep():
    technical = get_or_create_group("Technical")
    agent = make_agent()
    db.session.add(SlaPolicy(name="Standard", is_default=True, warn_at_percent=75,
                             calendar={"name": "Always", "timezone": "UTC", "always_open": True},
                             targets={"normal": {"first_response": 60}}))
    db.session.flush()
    escalated = []
    for code, group in [("bug", technical), ("bug", None), ("billing_dispute", None), ("technical", technical)]:
        ticket = sla_ticket(group=group)
        escalate_to_second_line(ticket, agent, code, note="needs a developer")
        escalated.append(ticket)
    # The SLA sweep, for real: one ticket breached, one predicted to breach (nobody assigned, little time left).
    breaching = sla_ticket("breaching", created_at=at(10), sla_policy_name="Standard", first_response_due_at=at(11))
    predicted = sla_ticket("predicted", created_at=at(11, 5), sla_policy_name="Standard",
                           first_response_due_at=at(12, 5), group=technical)
    for ticket in (breaching, predicted):
        schedule_check(ticket, now=NOW)
    db.session.commit()
    assert sweep_sla(now=NOW) == 2
    # Events carry the wall-clock time they were written; put them at fixed moments of the frozen day.
    events = db.session.scalars(
        sa.select(TicketEvent)
        .where(TicketEvent.kind.in_(("ticket.escalated", "sla.escalated")))
        .order_by(TicketEvent.id)
    ).all()
    assert len(events) == 6
    for event in events:
        event.created_at = at(11)
    events[0].created_at = at(9, days=-2)  # the first "bug" escalation was two days ago
    db.session.commit()

    today = escalations_per_reason(make_window("today", now=NOW))
    assert today.by_agents == {"technical": 1, "billing_dispute": 1, "bug": 1, "customer_request": 0, "other": 0}
    assert today.by_sla_sweep == {
        "the first response target is predicted to be breached: nobody is assigned and little time is left": 1,
        "the first response target was breached": 1,
    }
    assert today.total == 5
    assert escalations_per_reason(make_window("7d", now=NOW)).by_agents["bug"] == 2

    in_technical = escalations_per_reason(make_window("7d", now=NOW), Scope(group_id=technical.id))
    assert {code: n for code, n in in_technical.by_agents.items() if n} == {"bug": 1, "technical": 1}
    assert list(in_technical.by_sla_sweep.values()) == [1]


def test_agent_load_shows_presence_open_tickets_and_capacity():
    billing = get_or_create_group("Billing")
    online = make_agent(name="Ann Online", capacity=3, groups=[billing])
    stale = make_agent(name="Bo Stale", capacity=5)
    offline = make_agent(name="Cy Offline", tier=Tier.SECOND_LINE, role="lead")
    gone = make_agent(name="Di Deactivated")
    db.session.flush()
    online.online_connections, online.last_seen_at = 1, NOW - dt.timedelta(seconds=30)
    # Still counted as connected, but silent for five minutes: a web process died without closing.
    stale.online_connections, stale.last_seen_at = 1, NOW - dt.timedelta(minutes=5)
    offline.online_connections, offline.last_seen_at = 0, NOW - dt.timedelta(seconds=10)
    gone.is_active = False
    for status in (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING, TicketStatus.SOLVED):
        sla_ticket(status=status, assignee=online)
    sla_ticket(status=TicketStatus.ON_HOLD, assignee=offline, tier=Tier.SECOND_LINE)
    sla_ticket(status=TicketStatus.OPEN, assignee=gone)
    db.session.commit()

    rows = agent_load(now=NOW)
    assert [(row.name, row.tier, row.is_online, row.open_tickets, row.capacity) for row in rows] == [
        ("Ann Online", "first_line", True, 3, 3),
        ("Bo Stale", "first_line", False, 0, 5),
        ("Cy Offline", "second_line", False, 1, 10),
    ]
    assert rows[2].role == "lead"
    assert [row.name for row in agent_load(Scope(tier=Tier.SECOND_LINE), now=NOW)] == ["Cy Offline"]
    assert [row.name for row in agent_load(Scope(group_id=billing.id), now=NOW)] == ["Ann Online"]


def test_today_starts_at_midnight_in_the_given_time_zone_and_bad_windows_are_refused():
    assert make_window("today", now=NOW).start == at(0)
    stockholm = make_window("today", now=NOW, timezone="Europe/Stockholm")
    assert stockholm.start == at(23, days=-1)
    assert make_window("30d", now=NOW).start == NOW - dt.timedelta(days=30)
    with pytest.raises(DashboardError, match="unknown window 'forever'"):
        make_window("forever", now=NOW)
    with pytest.raises(DashboardError, match="unknown time zone 'Mars/Olympus'"):
        make_window("today", now=NOW, timezone="Mars/Olympus")


def test_the_whole_dashboard_is_json_ready_with_times_in_iso_8601():
    import json

    sla_ticket("due soon", first_response_due_at=at(12, 30))
    db.session.commit()
    figures = dashboard(make_window("today", now=NOW))
    assert json.loads(json.dumps(figures)) == figures
    assert figures["generated_at"] == NOW.isoformat()
    assert figures["window"]["start"] == at(0).isoformat()
    [row] = figures["at_risk"]["tickets"]
    assert (row["due_at"], row["seconds_left"], row["target"]) == (at(12, 30).isoformat(), 1800, "first_response")
    assert set(figures) == {"generated_at", "window", "scope", "compliance", "at_risk", "breached", "backlog",
                            "response_times", "agents", "escalations", "labels"}


def test_the_demo_data_shows_tickets_at_risk_breached_and_escalated_on_the_dashboard(runner):
    result = runner.invoke(args=["helpdesk", "seed-demo"])
    assert result.exit_code == 0, result.output
    # Seeded moments reach back a few hours: a week's window keeps them all, whatever the time of day.
    figures = dashboard(make_window("7d"))
    assert [row["subject"] for row in figures["at_risk"]["tickets"]] == ["Password reset link expired"]
    [breached] = figures["breached"]["tickets"]
    assert (breached["overdue_target"], breached["tier"], breached["priority"]) == (
        "first_response", "second_line", "urgent")
    by_reason = {row["reason"]: row["count"] for row in figures["escalations"]["by_agents"]}
    assert (by_reason["bug"], by_reason["billing_dispute"]) == (1, 1)
    assert figures["escalations"]["by_sla_sweep"] == [{"reason": "the first response target was breached", "count": 1}]
    compliance = figures["compliance"]["first_response"]
    assert compliance["met"] > 0 and compliance["breached"] == 1
    # Seeding again adds nothing and changes no figure.
    assert runner.invoke(args=["helpdesk", "seed-demo"]).exit_code == 0
    again = dashboard(make_window("7d"))
    assert (again["at_risk"]["total"], again["breached"]["total"], again["escalations"]) == (
        1, 1, figures["escalations"])
