"""A real SMTP server for tests (aiosmtpd on a loopback port): records what it accepts, or refuses on cue.

    with running_smtp_server() as smtp:
        smtp.refuse_with = "451 4.7.1 Try again later"    # every RCPT TO gets this reply
        smtp.stop(); smtp.start()                           # down, then up on the same port
        smtp.messages[0].message["Message-ID"]
"""

from __future__ import annotations

import contextlib
import dataclasses
import email
import email.message
import email.policy
import threading

from aiosmtpd.controller import Controller

from tests.servers import free_port


@dataclasses.dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)


class RecordingSmtpServer:
    host = "127.0.0.1"

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.messages: list[ReceivedMessage] = []
        #: When set, every RCPT TO is answered with this reply instead of accepting the recipient.
        self.refuse_with: str | None = None
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> None:
        # A stopped Controller cannot start again (its event loop is closed): each start gets a new one.
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port, ready_timeout=10)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def record(self, received: ReceivedMessage) -> int:
        with self._lock:
            self.messages.append(received)
            return len(self.messages)


class _Handler:
    def __init__(self, server: RecordingSmtpServer):
        self.server = server

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.server.refuse_with:
            return self.server.refuse_with
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        number = self.server.record(ReceivedMessage(envelope.mail_from, tuple(envelope.rcpt_tos),
                                                    bytes(envelope.original_content or envelope.content)))
        return f"250 2.0.0 Ok: queued as TEST{number}"


@contextlib.contextmanager
def running_smtp_server():
    """Run a recording SMTP server for the duration of the block."""
    server = RecordingSmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
