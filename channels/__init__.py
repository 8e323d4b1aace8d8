"""Channel adapters: everything that knows how a message travels. Never imports `helpdesk`."""

from channels.base import Channel, ChannelRegistry, OnMessage
from channels.messages import (
    Attachment,
    ChannelName,
    DeliveryResult,
    DeliveryStatus,
    IdentityKind,
    InboundMessage,
    OutboundMessage,
    SenderIdentity,
    ThreadHints,
)

__all__ = [
    "Attachment",
    "Channel",
    "ChannelName",
    "ChannelRegistry",
    "DeliveryResult",
    "DeliveryStatus",
    "IdentityKind",
    "InboundMessage",
    "OnMessage",
    "OutboundMessage",
    "SenderIdentity",
    "ThreadHints",
]
