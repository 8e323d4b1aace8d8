"""Channel account secrets are encrypted in the database and readable only with the key."""

import pytest
import sqlalchemy as sa
from flask import current_app

from helpdesk.extensions import db
from helpdesk.models import ChannelAccount

pytestmark = pytest.mark.integration


def test_secrets_are_stored_encrypted_and_read_back_decrypted():
    db.session.add(ChannelAccount(channel="sms", name="Twilio main", settings={"from": "+46701234567"},
                                  secrets={"auth_token": "tw-secret-123"}))
    db.session.commit()
    raw = db.session.execute(sa.text("SELECT secrets, settings FROM channel_account")).one()
    assert "tw-secret-123" not in raw.secrets
    assert "+46701234567" in str(raw.settings)
    db.session.expire_all()
    assert db.session.scalars(sa.select(ChannelAccount)).one().secrets == {"auth_token": "tw-secret-123"}


def test_a_changed_key_fails_loudly_and_a_rotated_key_list_still_reads(monkeypatch):
    db.session.add(ChannelAccount(channel="email", name="Mailbox", secrets={"password": "imap-pw"}))
    db.session.commit()
    db.session.expire_all()
    old_key = "derived-from-secret-key:" + current_app.config["SECRET_KEY"]
    monkeypatch.setitem(current_app.config, "HELPDESK_ENCRYPTION_KEY", "a-completely-new-key")
    with pytest.raises(RuntimeError, match="cannot be decrypted"):
        db.session.scalars(sa.select(ChannelAccount)).one()
    db.session.rollback()
    db.session.expire_all()
    monkeypatch.setitem(current_app.config, "HELPDESK_ENCRYPTION_KEY", f"a-completely-new-key,{old_key}")
    assert db.session.scalars(sa.select(ChannelAccount)).one().secrets == {"password": "imap-pw"}
