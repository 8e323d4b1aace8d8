"""JSON shapes of tickets, messages, events and customers, shared by the API and the CLI."""

from __future__ import annotations

import datetime as dt
from typing import Any

from helpdesk.models import Attachment, Customer, Message, Ticket, TicketEvent


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def ticket_summary(ticket: Ticket) -> dict[str, Any]:
    return {
        "number": ticket.number,
        "subject": ticket.subject,
        "status": ticket.status.value,
        "priority": ticket.priority.value,
        "tier": ticket.tier.value,
        "channel": ticket.channel.value,
        "customer_id": ticket.customer_id,
        "assignee": {"id": ticket.assignee.id, "name": ticket.assignee.name, "email": ticket.assignee.email}
        if ticket.assignee
        else None,
        "group": ticket.group.name if ticket.group else None,
        "language": ticket.language,
        "tags": [tag for tag in ticket.tags.split(",") if tag],
        "follow_up_of": ticket.follow_up_of_id,
        "created_at": _time(ticket.created_at),
        "updated_at": _time(ticket.updated_at),
        "sla": {
            "policy": ticket.sla_policy_name,
            "first_response_due_at": _time(ticket.first_response_due_at),
            "first_responded_at": _time(ticket.first_responded_at),
            "next_response_due_at": _time(ticket.next_response_due_at),
            "resolution_due_at": _time(ticket.resolution_due_at),
            "breached_at": _time(ticket.sla_breached_at),
        },
    }


def attachment_json(attachment: Attachment) -> dict[str, Any]:
    return {
        "id": attachment.id,
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "content_id": attachment.content_id,
        "inline": attachment.is_inline,
        "refused_reason": attachment.refused_reason,
    }


def message_json(message: Message) -> dict[str, Any]:
    if message.author_agent is not None:
        author = {"type": "agent", "id": message.author_agent.id, "name": message.author_agent.name}
    elif message.author_customer is not None:
        author = {"type": "customer", "id": message.author_customer.id, "name": message.author_customer.display_name}
    else:
        author = {"type": "system", "id": None, "name": "System"}
    return {
        "id": message.id,
        "direction": message.direction.value,
        "channel": message.channel.value,
        "external_id": message.external_id,
        "author": author,
        "public": message.is_public,
        "automatic": message.is_automatic,
        "subject": message.subject,
        "text": message.text,
        "reply_text": message.reply_text,
        "html": message.html,
        "address": message.address,
        "created_at": _time(message.created_at),
        "delivery_status": message.delivery_status.value if message.delivery_status else None,
        "delivery_error": message.delivery_error,
        "attachments": [attachment_json(attachment) for attachment in message.attachments],
    }


def event_json(event: TicketEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "kind": event.kind,
        "actor": event.actor_label,
        "actor_agent_id": event.actor_agent_id,
        "actor_customer_id": event.actor_customer_id,
        "data": event.data,
        "reason": event.reason,
        "created_at": _time(event.created_at),
    }


def customer_json(customer: Customer, tickets: list[Ticket]) -> dict[str, Any]:
    return {
        "id": customer.id,
        "name": customer.name,
        "display_name": customer.display_name,
        "vip": customer.is_vip,
        "tags": [tag for tag in customer.tags.split(",") if tag],
        "created_at": _time(customer.created_at),
        "identities": [
            {
                "kind": identity.kind.value,
                "value": identity.value,
                "opted_out_at": _time(identity.opted_out_at),
                "bouncing_since": _time(identity.bouncing_since),
            }
            for identity in customer.identities
        ],
        "tickets": [ticket_summary(ticket) for ticket in tickets],
    }
