"""Demo data for the embedded default: agents of every role, customers on several channels, tickets."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from channels.messages import ChannelName, IdentityKind, InboundMessage, SenderIdentity, ThreadHints
from helpdesk.agents import create_agent, find_agent_by_email, get_or_create_group
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Agent, Priority, Role, TicketStatus, Tier
from helpdesk.outbound import reply
from helpdesk.tickets import change_field

#: The demo logins printed by `make run`; for local trials only.
DEMO_PASSWORD = "demo-password"
DEMO_AGENTS = [
    ("admin@example.com", "Ada Admin", Role.ADMIN, Tier.SECOND_LINE, ["Technical"], ["en", "sv"]),
    ("lead@example.com", "Lee Lead", Role.LEAD, Tier.SECOND_LINE, ["Technical", "Billing"], ["en", "de"]),
    ("agent@example.com", "Sam Agent", Role.AGENT, Tier.FIRST_LINE, ["Billing"], ["en", "fr"]),
    ("second@example.com", "Kim Second-Line", Role.AGENT, Tier.SECOND_LINE, ["Technical"], ["en"]),
]

# (channel, identity kind, address, name, subject, text, status, priority, tier)
DEMO_CONVERSATIONS = [
    (ChannelName.EMAIL, IdentityKind.EMAIL, "maria.lopez@example.org", "Maria Lopez", "Invoice shows the wrong VAT",
     "Hello, my invoice for October lists 25% VAT but we are VAT-registered in Spain. Can you fix it?",
     TicketStatus.NEW, Priority.NORMAL, Tier.FIRST_LINE),
    (ChannelName.SMS, IdentityKind.PHONE, "+46701234567", "Erik Svensson", None,
     "Hi, my parcel tracking has not moved for 5 days. Order 88123.",
     TicketStatus.OPEN, Priority.HIGH, Tier.FIRST_LINE),
    (ChannelName.CHAT, IdentityKind.VISITOR, "visitor-demo-7f3a", "Chen Wei", None,
     "The export button gives an error 500 when I pick CSV.",
     TicketStatus.PENDING, Priority.NORMAL, Tier.SECOND_LINE),
    (ChannelName.EMAIL, IdentityKind.EMAIL, "j.schmidt@example.de", "Jonas Schmidt", "API rate limit too low",
     "We hit 429 errors at 50 requests per second. Our contract says 200.",
     TicketStatus.ON_HOLD, Priority.URGENT, Tier.SECOND_LINE),
    (ChannelName.WHATSAPP, IdentityKind.PHONE, "+14155550123", "Olivia Brown", None,
     "Can I change the delivery address on my order?",
     TicketStatus.SOLVED, Priority.LOW, Tier.FIRST_LINE),
    (ChannelName.EMAIL, IdentityKind.EMAIL, "maria.lopez@example.org", "Maria Lopez", "Thanks for last time",
     "Just confirming the refund arrived. You can close this.",
     TicketStatus.CLOSED, Priority.LOW, Tier.FIRST_LINE),
]


def seed_demo() -> dict[str, int]:
    """Create the demo agents and conversations unless they exist; safe to run again."""
    created_agents = 0
    for address, name, role, tier, groups, languages in DEMO_AGENTS:
        if find_agent_by_email(address) is None:
            create_agent(address, name, DEMO_PASSWORD, role=role, tier=tier,
                         groups=[get_or_create_group(group) for group in groups], languages=languages)
            created_agents += 1
    db.session.commit()

    agent = find_agent_by_email("agent@example.com")
    created_tickets = 0
    start = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
    for index, (channel, kind, address, name, subject, text, status, priority, tier) in enumerate(DEMO_CONVERSATIONS):
        result = ingest(InboundMessage(
            channel=channel,
            sender=SenderIdentity(kind, address, name),
            dedupe_key=f"demo:{index}",
            external_id=f"<demo.{index}@example.org>" if channel is ChannelName.EMAIL else f"DEMO{index:04d}",
            text=text,
            subject=subject,
            received_at=start + dt.timedelta(hours=index),
            thread=ThreadHints(join_open_ticket_on_channel=False),
        ))
        if result.is_duplicate:
            continue
        created_tickets += 1
        ticket = result.ticket
        # The demo's WhatsApp message is months old, outside WhatsApp's 24-hour window: no free-form reply.
        if status in (TicketStatus.OPEN, TicketStatus.PENDING, TicketStatus.SOLVED, TicketStatus.CLOSED) \
                and channel is not ChannelName.WHATSAPP:
            reply(ticket, agent, "Thanks for writing. We are looking into it and will get back to you shortly.")
        change_field(ticket, "priority", priority, actor_label="demo data")
        change_field(ticket, "tier", tier, actor_label="demo data")
        change_field(ticket, "status", status, actor_label="demo data")
        if status is not TicketStatus.NEW:
            ticket.assignee = agent if tier is Tier.FIRST_LINE else find_agent_by_email("second@example.com")
        db.session.commit()
    # One customer known on two channels: Maria also texts from her phone.
    maria_sms = ingest(InboundMessage(
        channel=ChannelName.SMS,
        sender=SenderIdentity(IdentityKind.PHONE, "+34600123456", "Maria Lopez"),
        dedupe_key="demo:maria-sms",
        external_id="DEMOMARIA",
        text="Hi, it's Maria again: did you see my email about the VAT?",
        other_identities=(SenderIdentity(IdentityKind.EMAIL, "maria.lopez@example.org"),),
        thread=ThreadHints(join_open_ticket_on_channel=True),
    ))
    created_tickets += 0 if maria_sms.is_duplicate else 1
    return {"agents": created_agents, "tickets": created_tickets,
            "agents_total": db.session.scalar(sa.select(sa.func.count()).select_from(Agent))}
