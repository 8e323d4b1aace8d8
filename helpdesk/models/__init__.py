"""Every model, imported here so Alembic sees the whole schema."""

from helpdesk.models.base import Base
from helpdesk.models.channels import (
    ChannelAccount,
    InboundQueueItem,
    MailboxCursor,
    OutboxItem,
    OutboxState,
    QuarantinedMessage,
)
from helpdesk.models.customers import Customer, CustomerIdentity
from helpdesk.models.message_templates import MessageTemplate
from helpdesk.models.people import Agent, AgentLanguage, ApiToken, AssignmentStrategy, Group, Role, Tier
from helpdesk.models.rules import TriageRule
from helpdesk.models.sla import SlaPolicy
from helpdesk.models.tickets import (
    ACTIVE_STATUSES,
    Attachment,
    Direction,
    Message,
    Priority,
    SlaAlert,
    SlaPause,
    Ticket,
    TicketCounter,
    TicketEvent,
    TicketStatus,
)

__all__ = [
    "ACTIVE_STATUSES",
    "Agent",
    "AgentLanguage",
    "ApiToken",
    "AssignmentStrategy",
    "Attachment",
    "Base",
    "ChannelAccount",
    "Customer",
    "CustomerIdentity",
    "Direction",
    "Group",
    "InboundQueueItem",
    "MailboxCursor",
    "Message",
    "MessageTemplate",
    "OutboxItem",
    "OutboxState",
    "Priority",
    "QuarantinedMessage",
    "Role",
    "SlaAlert",
    "SlaPause",
    "SlaPolicy",
    "Ticket",
    "TicketCounter",
    "TicketEvent",
    "TicketStatus",
    "Tier",
    "TriageRule",
]
