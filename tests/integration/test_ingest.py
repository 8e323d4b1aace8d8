"""The ingest path on a real database: threading, attachments, events, exactly-once under races."""

import datetime as dt
import multiprocessing
import pathlib

import pytest
import sqlalchemy as sa
from flask import current_app

from channels.messages import Attachment, IdentityKind, SenderIdentity, ThreadHints
from helpdesk.database import begin_write, once_per_transaction
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Customer, CustomerIdentity, Message, Ticket, TicketEvent, TicketStatus
from helpdesk.models.base import utcnow
from helpdesk.outbound import reply
from helpdesk.tickets import change_field
from tests.factories import make_agent, make_inbound
from tests.integration.engine_events import statements_sent
from tests.integration.race_worker import ingest_after_barrier

pytestmark = pytest.mark.integration

MARIA = SenderIdentity(IdentityKind.EMAIL, "maria@example.org", "Maria Lopez")
STRANGER = SenderIdentity(IdentityKind.EMAIL, "stranger@example.net")


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def events_of(ticket) -> list[TicketEvent]:
    return list(db.session.scalars(sa.select(TicketEvent).where(TicketEvent.ticket_id == ticket.id)
                                   .order_by(TicketEvent.id)))


def test_a_first_message_opens_a_numbered_ticket_with_an_audit_trail():
    result = ingest(make_inbound(sender=MARIA, subject="Invoice shows the wrong VAT"))
    ticket = result.ticket
    assert result.is_new_ticket and not result.is_duplicate
    assert (ticket.number, ticket.subject, ticket.status, ticket.channel.value) == (
        1001, "Invoice shows the wrong VAT", TicketStatus.NEW, "email")
    assert ticket.tier.value == "first_line" and ticket.priority.value == "normal"
    kinds = [(event.kind, event.actor_label) for event in events_of(ticket)]
    assert kinds == [("ticket.created", "Maria Lopez"), ("message.received", "Maria Lopez")]
    assert events_of(ticket)[0].reason == "no earlier conversation matched"


def test_a_new_ticket_is_written_with_one_insert_carrying_what_its_first_message_sets():
    with statements_sent() as sent:
        result = ingest(make_inbound(sender=MARIA, subject="Rechnung", text="Die Rechnung zeigt die falsche "
                                                                            "Mehrwertsteuer, bitte korrigieren."))
    ticket = result.ticket
    assert [statement for statement in sent if statement.startswith("UPDATE ticket ")] == []
    assert ticket.language == "de" and ticket.last_customer_message_at is not None


def test_ticket_numbers_increase_one_by_one():
    numbers = [ingest(make_inbound()).ticket.number for _ in range(3)]
    assert numbers == [1001, 1002, 1003]


def test_a_reply_to_a_known_message_joins_its_ticket_and_says_why():
    first = ingest(make_inbound(sender=MARIA, external_id="<a@example.org>", dedupe_key="email:<a@example.org>"))
    answer = ingest(make_inbound(sender=STRANGER, thread=ThreadHints(reply_to_external_ids=("<a@example.org>",))))
    assert answer.ticket.id == first.ticket.id
    assert answer.thread_reason == "replies to a known message of this ticket"
    assert events_of(first.ticket)[-1].reason == "replies to a known message of this ticket"


def test_a_reply_to_our_own_outgoing_message_joins_the_ticket():
    first = ingest(make_inbound(sender=MARIA))
    agent = make_agent()
    db.session.commit()
    sent = reply(first.ticket, agent, "We fixed the VAT.")
    answer = ingest(make_inbound(sender=MARIA, thread=ThreadHints(reply_to_external_ids=(sent.external_id,))))
    assert answer.ticket.id == first.ticket.id


def test_a_ticket_number_is_honoured_only_from_a_participant():
    first = ingest(make_inbound(sender=MARIA))
    number = first.ticket.number
    from_maria = ingest(make_inbound(sender=MARIA, thread=ThreadHints(ticket_number=number)))
    from_stranger = ingest(make_inbound(sender=STRANGER, thread=ThreadHints(ticket_number=number)))
    assert from_maria.ticket.id == first.ticket.id
    assert from_stranger.is_new_ticket and from_stranger.ticket.id != first.ticket.id


def test_texts_from_one_number_join_the_open_ticket_on_that_channel():
    phone = SenderIdentity(IdentityKind.PHONE, "+46701234567")
    first = ingest(make_inbound(channel="sms", sender=phone))
    second = ingest(make_inbound(channel="sms", sender=SenderIdentity(IdentityKind.PHONE, "+46 70 123 45 67")))
    other_channel = ingest(make_inbound(channel="whatsapp", sender=phone))
    assert second.ticket.id == first.ticket.id
    assert other_channel.ticket.id != first.ticket.id
    assert other_channel.ticket.customer_id == first.ticket.customer_id


def test_a_customer_answer_moves_a_pending_ticket_back_to_open_but_an_auto_reply_does_not():
    first = ingest(make_inbound(channel="sms"))
    change_field(first.ticket, "status", TicketStatus.PENDING)
    db.session.commit()
    ingest(make_inbound(channel="sms", is_automatic=True))
    assert db.session.get(Ticket, first.ticket.id).status is TicketStatus.PENDING
    ingest(make_inbound(channel="sms"))
    assert db.session.get(Ticket, first.ticket.id).status is TicketStatus.OPEN


def close_days_ago(ticket, days: float) -> None:
    change_field(ticket, "status", TicketStatus.CLOSED)
    ticket.closed_at = utcnow() - dt.timedelta(days=days)
    db.session.commit()


def test_a_message_to_a_ticket_closed_before_the_reopen_window_opens_a_linked_follow_up():
    first = ingest(make_inbound(sender=MARIA, external_id="<c@example.org>", dedupe_key="email:<c@example.org>"))
    close_days_ago(first.ticket, 30)
    later = ingest(make_inbound(sender=MARIA, thread=ThreadHints(reply_to_external_ids=("<c@example.org>",))))
    assert later.is_new_ticket
    assert later.ticket.follow_up_of_id == first.ticket.id
    assert "is closed, so a follow-up ticket was opened" in later.thread_reason
    assert db.session.get(Ticket, first.ticket.id).status is TicketStatus.CLOSED


def test_a_customer_reply_within_the_reopen_window_reopens_the_closed_ticket():
    first = ingest(make_inbound(sender=MARIA, external_id="<c@example.org>", dedupe_key="email:<c@example.org>"))
    close_days_ago(first.ticket, 2)
    later = ingest(make_inbound(sender=MARIA, thread=ThreadHints(reply_to_external_ids=("<c@example.org>",))))
    assert not later.is_new_ticket and later.ticket.id == first.ticket.id
    ticket = db.session.get(Ticket, first.ticket.id)
    assert (ticket.status, ticket.closed_at) == (TicketStatus.OPEN, None)
    [change] = [event for event in events_of(ticket) if event.kind == "status.changed" and event.data["new"] == "open"]
    assert change.reason == "reopened: the customer wrote within 7 days of closing"
    assert count(Ticket) == 1


def test_an_auto_reply_never_reopens_a_recently_closed_ticket():
    first = ingest(make_inbound(sender=MARIA, external_id="<c@example.org>", dedupe_key="email:<c@example.org>"))
    close_days_ago(first.ticket, 1)
    later = ingest(make_inbound(sender=MARIA, is_automatic=True,
                                thread=ThreadHints(reply_to_external_ids=("<c@example.org>",))))
    assert later.ticket.id == first.ticket.id
    assert db.session.get(Ticket, first.ticket.id).status is TicketStatus.CLOSED


@pytest.mark.parametrize("window_days, closed_days_ago, reopens", [
    (7, 7 - 1 / 1440, True),   # a minute inside the default window
    (7, 7 + 1 / 1440, False),  # a minute past it
    (1, 2, False),
    (3, 2, True),
    (0, 0, False),             # no window: a closed ticket always gets a follow-up
])
def test_the_reopen_window_is_configurable_and_holds_at_its_boundary(monkeypatch, window_days, closed_days_ago,
                                                                     reopens):
    monkeypatch.setitem(current_app.config, "HELPDESK_REOPEN_WINDOW_DAYS", window_days)
    first = ingest(make_inbound(sender=MARIA, external_id="<c@example.org>", dedupe_key="email:<c@example.org>"))
    close_days_ago(first.ticket, closed_days_ago)
    later = ingest(make_inbound(sender=MARIA, thread=ThreadHints(reply_to_external_ids=("<c@example.org>",))))
    assert later.is_new_ticket is not reopens
    assert (db.session.get(Ticket, first.ticket.id).status is TicketStatus.OPEN) is reopens
    if reopens:
        assert f"within {window_days} days of closing" in later.thread_reason
    else:
        assert later.ticket.follow_up_of_id == first.ticket.id


def test_a_customer_answer_reopens_a_solved_ticket_however_long_ago_it_was_solved():
    first = ingest(make_inbound(sender=MARIA, external_id="<s@example.org>", dedupe_key="email:<s@example.org>"))
    change_field(first.ticket, "status", TicketStatus.SOLVED)
    first.ticket.solved_at = utcnow() - dt.timedelta(days=365)
    db.session.commit()
    later = ingest(make_inbound(sender=MARIA, thread=ThreadHints(reply_to_external_ids=("<s@example.org>",))))
    assert later.ticket.id == first.ticket.id
    assert db.session.get(Ticket, first.ticket.id).status is TicketStatus.OPEN


def test_html_is_sanitized_and_text_derived_when_only_html_exists():
    result = ingest(make_inbound(text="", html='<p>Hi<script>alert(1)</script><img src=x onerror="x()"></p>'))
    message = result.message
    assert "script" not in message.html and "onerror" not in message.html
    assert message.text == "Hi"


def test_attachments_are_stored_on_disk_and_an_oversized_one_is_refused_with_the_message_kept():
    current_app.config["HELPDESK_MAX_ATTACHMENT_BYTES"] = 1000
    try:
        result = ingest(make_inbound(attachments=(
            Attachment("notes.txt", "text/plain", b"small file"),
            Attachment("logo.png", "image/png", b"\x89PNG" + b"0" * 10, content_id="logo@x", is_inline=True),
            Attachment("huge.bin", "application/octet-stream", b"x" * 5000),
        )))
    finally:
        current_app.config["HELPDESK_MAX_ATTACHMENT_BYTES"] = 20 * 1024 * 1024
    small, logo, huge = result.message.attachments
    root = pathlib.Path(current_app.config["HELPDESK_ATTACHMENT_FOLDER"])
    assert (root / small.storage_path).read_bytes() == b"small file"
    assert (logo.content_id, logo.is_inline) == ("logo@x", True)
    assert huge.storage_path is None and huge.size == 5000
    assert "over the 1000-byte attachment limit" in huge.refused_reason
    refused = [e for e in events_of(result.ticket) if e.kind == "attachment.refused"]
    assert refused[0].data["filename"] == "huge.bin"
    assert result.message.text == "Hello, I need help with my order."


def test_a_failure_half_way_leaves_nothing_written(monkeypatch):
    import helpdesk.ingest as ingest_module

    def broken_store(data):
        raise OSError("disk full")

    monkeypatch.setattr(ingest_module, "stored_attachment_values", broken_store)
    with pytest.raises(OSError):
        ingest(make_inbound(attachments=(Attachment("a.txt", "text/plain", b"x"),)))
    db.session.rollback()
    assert (count(Customer), count(Ticket), count(Message), count(TicketEvent)) == (0, 0, 0, 0)


def _race(app_config, messages_per_process: list[list]) -> list[tuple[int, bool]]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(len(messages_per_process))
    config = {**app_config, "SQLALCHEMY_DATABASE_URI": current_app.config["SQLALCHEMY_DATABASE_URI"]}
    with context.Pool(len(messages_per_process)) as pool:
        batches = pool.starmap(ingest_after_barrier, [(config, barrier, batch) for batch in messages_per_process])
    return [result for batch in batches for result in batch]


def test_two_processes_racing_on_the_same_message_store_it_once(app_config):
    inbound = make_inbound(sender=MARIA)
    results = _race(app_config, [[inbound], [inbound]])
    db.session.rollback()
    assert count(Message) == 1 and count(Ticket) == 1 and count(Customer) == 1
    assert len({message_id for message_id, _ in results}) == 1
    assert sorted(is_duplicate for _, is_duplicate in results) == [False, True]


def test_processes_racing_on_many_messages_from_new_senders_store_each_once(app_config):
    senders = [SenderIdentity(IdentityKind.EMAIL, f"racer{n}@example.org") for n in range(5)]
    messages = [make_inbound(sender=senders[n % 5]) for n in range(20)]
    results = _race(app_config, [messages, list(reversed(messages)), messages[10:] + messages[:10]])
    db.session.rollback()
    assert count(Message) == 20
    assert count(Customer) == 5
    assert count(CustomerIdentity) == 5
    assert len({message_id for message_id, _ in results}) == 20
    assert sum(1 for _, is_duplicate in results if not is_duplicate) == 20
    numbers = db.session.scalars(sa.select(Ticket.number)).all()
    assert len(numbers) == len(set(numbers))


def test_a_sender_another_writer_stored_after_our_lookup_is_theirs_and_ours_is_dropped(monkeypatch):
    from helpdesk import customers

    with db.engine.begin() as other_writer:  # commits between our lookup and our insert
        theirs = other_writer.execute(sa.insert(Customer.__table__).returning(Customer.__table__.c.id),
                                      [{"name": "Theirs"}]).scalar_one()
        other_writer.execute(sa.insert(CustomerIdentity.__table__), [
            {"customer_id": theirs, "kind": IdentityKind.EMAIL, "value": "late@example.org"}])
    looked_up = []
    lookup = customers._customer_with_identity

    def looked_before_they_committed(kind, value, **options):
        looked_up.append(value)
        return None if len(looked_up) == 1 else lookup(kind, value, **options)

    monkeypatch.setattr(customers, "_customer_with_identity", looked_before_they_committed)

    result = ingest(make_inbound(sender=SenderIdentity(IdentityKind.EMAIL, "late@example.org", "Late")))

    assert result.ticket.customer_id == theirs
    assert db.session.scalars(sa.select(Customer.name)).all() == ["Theirs"]
    assert count(CustomerIdentity) == 1


def test_simultaneous_texts_from_a_known_number_share_one_ticket(app_config):
    from helpdesk.customers import resolve_customer

    phones = [SenderIdentity(IdentityKind.PHONE, f"+4670123450{n}") for n in range(8)]
    for phone in phones:
        resolve_customer(phone)  # known from before, with no open ticket on this channel
    db.session.commit()
    batches = [[make_inbound(channel="sms", sender=phone) for phone in phones] for _ in range(3)]
    _race(app_config, batches)
    db.session.rollback()
    assert (count(Message), count(Ticket), count(Customer)) == (24, 8, 8)


def test_what_is_asked_once_per_transaction_is_asked_again_in_the_next():
    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    begin_write()
    assert [once_per_transaction("answer", compute) for _ in range(3)] == [1, 1, 1]
    db.session.commit()
    begin_write()
    assert once_per_transaction("answer", compute) == 2
    db.session.rollback()
    # No transaction open: nothing to tie an answer to, so nothing is kept.
    assert [once_per_transaction("answer", compute) for _ in range(2)] == [3, 4]
