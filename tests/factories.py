"""Test data builders: make_*(**overrides) with sensible defaults."""

from __future__ import annotations

import itertools
import uuid

from channels.messages import ChannelName, IdentityKind, InboundMessage, SenderIdentity, ThreadHints
from helpdesk.agents import create_agent
from helpdesk.models import Role, Tier

_counter = itertools.count(1)


def make_agent(role: str | Role = Role.AGENT, password: str | None = "correct horse battery", **overrides):
    """Add an agent (not committed)."""
    n = next(_counter)
    fields = {"email": f"agent{n}@example.com", "name": f"Agent {n}", "tier": Tier.FIRST_LINE}
    fields.update(overrides)
    return create_agent(fields.pop("email"), fields.pop("name"), password, role=Role(role), **fields)


def make_inbound(**overrides) -> InboundMessage:
    """An inbound email from a fresh sender, unless overridden."""
    n = uuid.uuid4().hex[:12]
    channel = ChannelName(overrides.pop("channel", ChannelName.EMAIL))
    default_sender = {
        ChannelName.EMAIL: SenderIdentity(IdentityKind.EMAIL, f"customer-{n}@example.org", "Cus Tomer"),
        ChannelName.SMS: SenderIdentity(IdentityKind.PHONE, "+46701234567"),
        ChannelName.WHATSAPP: SenderIdentity(IdentityKind.PHONE, "+46701234567"),
        ChannelName.CHAT: SenderIdentity(IdentityKind.VISITOR, f"visitor-{n}"),
    }[channel]
    external_id = overrides.pop("external_id", f"<{n}@example.org>" if channel is ChannelName.EMAIL else f"SM{n}")
    fields = {
        "channel": channel,
        "sender": default_sender,
        "dedupe_key": f"{channel}:{external_id}",
        "external_id": external_id,
        "text": "Hello, I need help with my order.",
        "subject": "Help with my order" if channel is ChannelName.EMAIL else None,
        "thread": ThreadHints(join_open_ticket_on_channel=channel is not ChannelName.EMAIL),
    }
    fields.update(overrides)
    return InboundMessage(**fields)
