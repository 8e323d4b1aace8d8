"""Demo data for the embedded default: agents of every role, customers on several channels, tickets."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from channels.messages import ChannelName, IdentityKind, InboundMessage, SenderIdentity, ThreadHints
from helpdesk.agents import create_agent, find_agent_by_email, get_or_create_group
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Agent, Priority, Role, SlaPolicy, TicketStatus, Tier
from helpdesk.models.base import utcnow
from helpdesk.outbound import reply
from helpdesk.tickets import change_field, escalate_to_second_line
from helpdesk.triage.calendar import calendar_from_dict
from helpdesk.triage.clock import schedule_check
from helpdesk.triage.sla import add_business_minutes
from helpdesk.triage.sweep import sweep_sla

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


#: An around-the-clock policy, so the demo's SLA clocks run whenever someone tries it; the default policy
#: unless one is already configured.
DEMO_SLA_POLICY = "Demo standard (24/7)"
DEMO_SLA_CALENDAR = {"name": "Around the clock", "timezone": "UTC", "always_open": True}
DEMO_SLA_TARGETS = {
    "urgent": {"first_response": 30, "next_response": 60, "resolution": 240},
    "high": {"first_response": 60, "next_response": 120, "resolution": 480},
    "normal": {"first_response": 240, "next_response": 240, "resolution": 1440},
    "low": {"first_response": 480, "next_response": 480, "resolution": 2880},
}

# Tickets in SLA states for the leads' dashboard, dated back from the moment of seeding:
# (channel, identity kind, address, name, subject, text, minutes ago, priority,
#  minutes until the first answer or None, escalation reason or None, solved, assigned to the demo agent)
DEMO_SLA_CONVERSATIONS = [
    (ChannelName.EMAIL, IdentityKind.EMAIL, "priya.nair@example.org", "Priya Nair", "Password reset link expired",
     "The reset link in your email says it has expired, and I am locked out.",
     205, Priority.NORMAL, None, None, False, True),  # due in 35 minutes: at risk
    (ChannelName.SMS, IdentityKind.PHONE, "+447700900123", "Tom Clarke", None,
     "I was charged twice for order 7781. Please refund one of them.",
     95, Priority.HIGH, None, None, False, False),  # breached 35 minutes ago; the sweep escalates it
    (ChannelName.CHAT, IdentityKind.VISITOR, "visitor-demo-a91c", "Aiko Tanaka", None,
     "The app crashes every time I open the settings page.",
     50, Priority.NORMAL, 12, "bug", False, True),
    (ChannelName.EMAIL, IdentityKind.EMAIL, "l.moreau@example.fr", "Louis Moreau", "Late fee on a paid invoice",
     "You charged a late fee on invoice 3310, but it was paid on time. Bank statement attached.",
     120, Priority.NORMAL, 25, "billing_dispute", False, True),
    (ChannelName.EMAIL, IdentityKind.EMAIL, "grace.obi@example.org", "Grace Obi", "Where is my order 4417?",
     "It was due yesterday. Can you check where it is?",
     300, Priority.NORMAL, 20, None, True, True),  # answered and solved in time
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
    ensure_demo_sla_policy()

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
    created_tickets += seed_demo_sla_tickets(agent)
    return {"agents": created_agents, "tickets": created_tickets,
            "agents_total": db.session.scalar(sa.select(sa.func.count()).select_from(Agent))}


def ensure_demo_sla_policy() -> None:
    """Add the demo's around-the-clock SLA policy unless it exists; it is the default only if none is."""
    if db.session.scalar(sa.select(SlaPolicy.id).where(SlaPolicy.name == DEMO_SLA_POLICY)) is not None:
        return
    has_default = db.session.scalar(sa.select(SlaPolicy.id).where(SlaPolicy.is_default.is_(True))) is not None
    db.session.add(SlaPolicy(name=DEMO_SLA_POLICY, is_default=not has_default, calendar=DEMO_SLA_CALENDAR,
                             targets=DEMO_SLA_TARGETS, warn_at_percent=75))
    db.session.commit()


def seed_demo_sla_tickets(agent: Agent) -> int:
    """Add tickets at risk, breached, escalated with a reason and met, then run the SLA sweep; return how many."""
    now = utcnow()
    calendar = calendar_from_dict(DEMO_SLA_CALENDAR)
    created = 0
    for index, (channel, kind, address, name, subject, text, minutes_ago, priority, answered_after, escalation,
                is_solved, is_assigned) in enumerate(DEMO_SLA_CONVERSATIONS):
        created_at = now - dt.timedelta(minutes=minutes_ago)
        result = ingest(InboundMessage(
            channel=channel,
            sender=SenderIdentity(kind, address, name),
            dedupe_key=f"demo:sla:{index}",
            external_id=f"<demo.sla.{index}@example.org>" if channel is ChannelName.EMAIL else f"DEMOSLA{index:04d}",
            text=text,
            subject=subject,
            received_at=created_at,
            thread=ThreadHints(join_open_ticket_on_channel=False),
        ))
        if result.is_duplicate:
            continue
        created += 1
        ticket = result.ticket
        change_field(ticket, "priority", priority, actor_label="demo data")
        # Date the ticket back, with the due times its policy gives from then.
        ticket.created_at = ticket.last_customer_message_at = created_at
        ticket.sla_policy_name = DEMO_SLA_POLICY
        targets = DEMO_SLA_TARGETS[priority.value]
        ticket.first_response_due_at = add_business_minutes(created_at, targets["first_response"], calendar)
        ticket.resolution_due_at = add_business_minutes(created_at, targets["resolution"], calendar)
        if is_assigned:
            ticket.assignee = agent
        db.session.commit()
        if answered_after is not None:
            message = reply(ticket, agent, "Thanks for telling us. We are on it and will update you shortly.")
            answered_at = created_at + dt.timedelta(minutes=answered_after)
            message.created_at = ticket.first_responded_at = ticket.last_agent_reply_at = answered_at
        if escalation:
            escalate_to_second_line(ticket, agent, escalation, note="needs the second line's tools")
        if is_solved:
            change_field(ticket, "status", TicketStatus.SOLVED, agent=agent)
        schedule_check(ticket, now=now)
        db.session.commit()
    # The sweep warns about the ticket at risk and records and escalates the breached one.
    sweep_sla(now)
    return created
