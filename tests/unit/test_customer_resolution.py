"""resolve_customer and merge_customers, one behaviour each (on the test database)."""

import pytest
import sqlalchemy as sa

from channels.identities import InvalidIdentity
from channels.messages import IdentityKind, SenderIdentity
from helpdesk.customers import customer_history, merge_customers, resolve_customer
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Customer, CustomerIdentity
from tests.factories import make_inbound

EMAIL = IdentityKind.EMAIL
PHONE = IdentityKind.PHONE
VISITOR = IdentityKind.VISITOR


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def test_a_new_sender_becomes_a_new_customer_with_that_identity():
    customer = resolve_customer(SenderIdentity(EMAIL, "Maria@Example.org", "Maria Lopez"))
    db.session.commit()
    assert customer.name == "Maria Lopez"
    assert [(i.kind, i.value) for i in customer.identities] == [(EMAIL, "maria@example.org")]


def test_the_same_address_in_another_spelling_finds_the_same_customer():
    first = resolve_customer(SenderIdentity(EMAIL, "maria@example.org"))
    db.session.commit()
    again = resolve_customer(SenderIdentity(EMAIL, "Maria Lopez <MARIA@example.ORG>"))
    assert again.id == first.id
    assert count(Customer) == 1


def test_phone_numbers_in_any_format_find_the_same_customer():
    first = resolve_customer(SenderIdentity(PHONE, "+46 70 123 45 67"))
    db.session.commit()
    assert resolve_customer(SenderIdentity(PHONE, "whatsapp:+46701234567")).id == first.id
    assert first.identities[0].value == "+46701234567"


def test_an_identity_revealed_alongside_a_known_one_joins_that_customer():
    email_customer = resolve_customer(SenderIdentity(EMAIL, "maria@example.org"))
    db.session.commit()
    # A chat visitor who gives Maria's address, then texts from a phone mentioning it too.
    chat = resolve_customer(SenderIdentity(VISITOR, "v-1"), (SenderIdentity(EMAIL, "maria@example.org"),))
    sms = resolve_customer(SenderIdentity(PHONE, "+46701234567"), (SenderIdentity(VISITOR, "v-1"),))
    db.session.commit()
    assert chat.id == sms.id == email_customer.id
    assert sorted(i.kind.value for i in email_customer.identities) == ["email", "phone", "visitor"]
    assert count(Customer) == 1


def test_an_identity_of_someone_else_is_never_moved():
    maria = resolve_customer(SenderIdentity(EMAIL, "maria@example.org"))
    erik = resolve_customer(SenderIdentity(PHONE, "+46701234567"))
    db.session.commit()
    # Erik's phone claims Maria's address: it stays Maria's; Erik stays Erik.
    resolved = resolve_customer(SenderIdentity(PHONE, "+46701234567"), (SenderIdentity(EMAIL, "maria@example.org"),))
    db.session.commit()
    assert resolved.id == erik.id
    owner = db.session.scalar(sa.select(CustomerIdentity).where(CustomerIdentity.value == "maria@example.org"))
    assert owner.customer_id == maria.id


def test_a_display_name_fills_in_a_nameless_customer_but_never_overwrites():
    customer = resolve_customer(SenderIdentity(PHONE, "+46701234567"))
    db.session.commit()
    assert customer.name == ""
    resolve_customer(SenderIdentity(PHONE, "+46701234567", "Erik"))
    resolve_customer(SenderIdentity(PHONE, "+46701234567", "Someone Else"))
    assert customer.name == "Erik"


def test_an_invalid_identity_is_refused_and_nothing_is_written():
    with pytest.raises(InvalidIdentity):
        resolve_customer(SenderIdentity(PHONE, "call me maybe"))
    db.session.rollback()
    assert count(Customer) == 0


def test_merged_customers_keep_every_identity_and_ticket_on_the_survivor():
    maria_mail = ingest(make_inbound(sender=SenderIdentity(EMAIL, "maria@example.org"))).ticket.customer
    maria_sms = ingest(make_inbound(channel="sms", sender=SenderIdentity(PHONE, "+34600123456"))).ticket.customer
    assert maria_mail.id != maria_sms.id
    merge_customers(maria_mail, maria_sms)
    db.session.commit()
    assert sorted(i.kind.value for i in maria_mail.identities) == ["email", "phone"]
    assert sorted(t.channel.value for t in customer_history(maria_mail)) == ["email", "sms"]
    # A message to the merged record's old identity now lands with the survivor.
    again = ingest(make_inbound(channel="sms", sender=SenderIdentity(PHONE, "+34600123456")))
    assert again.ticket.customer_id == maria_mail.id


def test_a_customer_cannot_be_merged_into_itself():
    customer = resolve_customer(SenderIdentity(EMAIL, "a@example.org"))
    with pytest.raises(ValueError):
        merge_customers(customer, customer)
