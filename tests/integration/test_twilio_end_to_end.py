"""The whole SMS round trip over real HTTP: Twilio's webhook into a served helpdesk, the reply out through
the real twilio client to the emulator, and the emulator's signed status callbacks back into the helpdesk."""

import time

import pytest
import sqlalchemy as sa
from flask import Flask

from channels.base import ChannelRegistry
from channels.messages import ChannelName, DeliveryStatus
from helpdesk import init_channels
from helpdesk.extensions import db
from helpdesk.models import Message, OutboxItem, OutboxState
from helpdesk.outbound import deliver_due, reply
from tests.factories import make_agent
from tests.fakes.twilio_emulator import new_sid, running_twilio_emulator
from tests.servers import free_port, running_server, wait_for_text

pytestmark = pytest.mark.integration


@pytest.fixture
def served(app, app_config, tmp_path):
    """A helpdesk served on its own port (same database as the test), and the emulator it talks to."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with running_twilio_emulator() as twilio:
        env = {"DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"], "SECRET_KEY": app_config["SECRET_KEY"],
               "HELPDESK_INSTANCE_PATH": str(tmp_path / "instance"), "REDIS_URL": "", **twilio.config(base_url)}
        with running_server(env, port, "--without-jobs", log_path=tmp_path / "server.log"):
            yield base_url, twilio


@pytest.fixture
def registry(served, tmp_path):
    """The channel registry the app factory builds from the same TWILIO_* settings the server has."""
    base_url, twilio = served
    factory_app = Flask("worker")
    factory_app.config.update(HELPDESK_OUTGOING_FOLDER=str(tmp_path / "outgoing"),
                              HELPDESK_SUPPORT_ADDRESS="support@example.com", **twilio.config(base_url))
    init_channels(factory_app)
    registry = factory_app.extensions["helpdesk.channels"]
    yield registry
    for name in (ChannelName.SMS, ChannelName.WHATSAPP):
        registry.get(name).close()


def text_in(base_url, twilio, body, sender="+46701234567") -> Message:
    form = {"MessageSid": new_sid("SM"), "AccountSid": twilio.account_sid, "From": sender, "To": "+15005550006",
            "Body": body, "NumMedia": "0", "ApiVersion": "2010-04-01"}
    response = twilio.post_webhook(f"{base_url}/channels/twilio/sms", form)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/xml")
    assert response.text.endswith("<Response />")
    return wait_for_text(form["MessageSid"])


def test_a_text_becomes_a_ticket_whose_reply_is_sent_and_reported_delivered(served, registry):
    base_url, twilio = served
    agent = make_agent()
    db.session.commit()

    inbound = text_in(base_url, twilio, "My parcel never came")
    assert inbound.channel is ChannelName.SMS and inbound.address == "+46701234567"
    outgoing = reply(inbound.ticket, agent, "Sorry! A new one ships today.")
    assert deliver_due(registry) == 1

    [created] = twilio.created
    assert created.form["To"] == "+46701234567" and created.form["Body"] == "Sorry! A new one ships today."
    assert created.form["StatusCallback"].startswith(f"{base_url}/channels/twilio/status?ref=helpdesk-")
    for status in ("sent", "delivered"):
        assert twilio.report_status(created.sid, status).status_code == 204
    twilio.report_status(created.sid, "sent")  # late and out of order: ignored

    db.session.rollback()
    stored = db.session.get(Message, outgoing.id)
    assert (stored.external_id, stored.delivery_status, stored.delivery_error) == (
        created.sid, DeliveryStatus.DELIVERED, None)
    assert [status for status, _ in created.callbacks] == ["sent", "delivered", "sent"]


class SlowToRecord:
    """A channel whose worker takes a while after Twilio's answer before it records the send."""

    def __init__(self, channel, seconds):
        self.name, self.channel, self.seconds = channel.name, channel, seconds

    def send(self, message):
        result = self.channel.send(message)
        time.sleep(self.seconds)
        return result


def test_status_callbacks_racing_the_worker_still_end_delivered(served, registry):
    # Twilio calls back as soon as it has answered the create, while the worker is still recording the send:
    # the worker's own record ("queued") must not overwrite "delivered".
    base_url, twilio = served
    agent = make_agent()
    db.session.commit()
    inbound = text_in(base_url, twilio, "Hello?")
    outgoing = reply(inbound.ticket, agent, "Hello! How can we help?")
    twilio.auto_report = ("sent", "delivered")
    slow = ChannelRegistry()
    slow.register(SlowToRecord(registry.get(ChannelName.SMS), seconds=1.0))

    assert deliver_due(slow) == 1
    twilio.join_callbacks()

    [created] = twilio.created
    assert created.callbacks == [("sent", 204), ("delivered", 204)]
    db.session.rollback()
    stored = db.session.get(Message, outgoing.id)
    assert (stored.external_id, stored.delivery_status) == (created.sid, DeliveryStatus.DELIVERED)
    item = db.session.scalars(sa.select(OutboxItem).where(OutboxItem.message_id == outgoing.id)).one()
    assert item.state is OutboxState.SENT and item.attempts == 1
