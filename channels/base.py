"""The small interface each channel implements, and the registry the app factory builds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from channels.messages import ChannelName, DeliveryResult, InboundMessage, OutboundMessage

#: Handed to every channel entry point by the app factory; returns once the message is committed.
OnMessage = Callable[[InboundMessage], object]


class Channel(Protocol):
    name: ChannelName

    def send(self, message: OutboundMessage) -> DeliveryResult: ...


class ChannelRegistry:
    """Maps a channel name to the adapter that sends on it."""

    def __init__(self) -> None:
        self._channels: dict[ChannelName, Channel] = {}

    def register(self, channel: Channel) -> None:
        self._channels[channel.name] = channel

    def get(self, name: ChannelName | str) -> Channel:
        try:
            return self._channels[ChannelName(name)]
        except (KeyError, ValueError):
            raise LookupError(f"no channel configured for {name!r}") from None

    def names(self) -> list[ChannelName]:
        return sorted(self._channels)
