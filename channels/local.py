"""A channel that records outgoing messages to a local folder instead of sending them.

The embedded default uses it for every channel, so the demo works with no outside accounts:
email becomes `.eml` files, texts and chat replies become JSON lines.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import pathlib
import threading
import uuid

from channels.email.smtp import build_email
from channels.messages import ChannelName, DeliveryResult, DeliveryStatus, OutboundMessage


class LocalLogChannel:
    def __init__(self, name: ChannelName, folder: pathlib.Path, from_address: str = "support@localhost"):
        self.name = name
        self.folder = folder
        self.from_address = from_address
        self._lock = threading.Lock()

    def send(self, message: OutboundMessage) -> DeliveryResult:
        self.folder.mkdir(parents=True, exist_ok=True)
        provider_id = message.external_id or f"local-{uuid.uuid4().hex}"
        if self.name is ChannelName.EMAIL:
            self._write_eml(message, provider_id)
        else:
            record = {
                "at": dt.datetime.now(dt.UTC).isoformat(),
                "channel": str(self.name),
                "to": message.recipient,
                "id": provider_id,
                "text": message.text,
            }
            with self._lock, open(self.folder / f"{self.name}.log", "a", encoding="utf-8") as log:
                log.write(json.dumps(record, ensure_ascii=False) + "\n")
        return DeliveryResult(status=DeliveryStatus.SENT, provider_id=provider_id)

    def _write_eml(self, message: OutboundMessage, provider_id: str) -> None:
        # The very message SMTP would send, attachments and threading headers included.
        mail = build_email(dataclasses.replace(message, external_id=provider_id), self.from_address)
        safe_name = "".join(c if c.isalnum() else "_" for c in provider_id.strip("<>"))[:80]
        (self.folder / f"{safe_name}.eml").write_bytes(bytes(mail))
