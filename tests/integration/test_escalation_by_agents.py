"""First line escalates to second line with a reason; second line hands back; both audited and counted."""

import datetime as dt

import pytest
import sqlalchemy as sa

from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Ticket, TicketEvent, Tier
from helpdesk.tickets import escalations_by_reason
from tests.factories import make_inbound

pytestmark = pytest.mark.integration


def csrf(auth, number):
    return auth.csrf_token(f"/tickets/{number}")


def test_an_agent_escalates_with_a_reason_and_second_line_hands_back(client, auth, login_as):
    ticket = ingest(make_inbound()).ticket
    agent = login_as("agent")
    response = client.post(f"/tickets/{ticket.number}/escalate",
                           data={"reason_code": "bug", "note": "export crashes", "csrf_token": csrf(auth, ticket.number)})
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(Ticket, ticket.id).tier is Tier.SECOND_LINE
    escalated = db.session.scalars(sa.select(TicketEvent).where(TicketEvent.kind == "ticket.escalated")).one()
    assert (escalated.actor_agent_id, escalated.data["reason_code"], escalated.reason) == (
        agent.id, "bug", "bug: export crashes")

    response = client.post(f"/tickets/{ticket.number}/hand-back",
                           data={"note": "fixed in 2.3", "csrf_token": csrf(auth, ticket.number)})
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(Ticket, ticket.id).tier is Tier.FIRST_LINE
    assert db.session.scalars(sa.select(TicketEvent.reason).where(TicketEvent.kind == "ticket.handed_back")).one() \
        == "fixed in 2.3"


def test_an_unknown_reason_or_a_second_escalation_is_refused_with_400(client, auth, login_as):
    ticket = ingest(make_inbound()).ticket
    login_as("agent")
    bad = client.post(f"/tickets/{ticket.number}/escalate",
                      data={"reason_code": "boredom", "csrf_token": csrf(auth, ticket.number)})
    assert bad.status_code == 400 and "unknown escalation reason" in bad.get_data(as_text=True)
    client.post(f"/tickets/{ticket.number}/escalate", data={"reason_code": "billing_dispute",
                                                             "csrf_token": csrf(auth, ticket.number)})
    again = client.post(f"/tickets/{ticket.number}/escalate", data={"reason_code": "bug",
                                                                    "csrf_token": csrf(auth, ticket.number)})
    assert again.status_code == 400 and "already with the second line" in again.get_data(as_text=True)


def test_escalations_are_counted_per_reason(client, auth, login_as):
    login_as("agent")
    for code in ("bug", "bug", "technical"):
        number = ingest(make_inbound()).ticket.number
        client.post(f"/tickets/{number}/escalate", data={"reason_code": code, "csrf_token": csrf(auth, number)})
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    assert escalations_by_reason(since) == {"bug": 2, "technical": 1}
