"""Polled mail parsed in a parser process while the poller writes (helpdesk/email_parsing.py), through Dovecot."""

import dataclasses
import multiprocessing
import os
import signal
import time

import pytest
import sqlalchemy as sa

from channels.email.parse import parse_email
from helpdesk import email_intake, email_parsing
from helpdesk.email_intake import EmailBatch
from helpdesk.email_parsing import ParsingAhead, parse_with_language, start_parser_processes
from helpdesk.extensions import db
from helpdesk.mailboxes import poll_each_mailbox
from helpdesk.models import QuarantinedMessage, Ticket
from helpdesk.triage import engine
from helpdesk.triage.engine import configured_languages
from helpdesk.triage.language import UNDETERMINED
from tests.integration.test_imap_poller import email_account, raw_email, stored_ids

pytestmark = pytest.mark.integration

GERMAN = "Guten Tag, die Rechnung vom letzten Monat ist leider falsch. Bitte korrigieren Sie die Mehrwertsteuer."
ENGLISH = "Hello, the invoice from last month is wrong. Could you please correct the VAT on it for me?"


@pytest.fixture
def no_deliveries(monkeypatch):
    monkeypatch.setattr("helpdesk.mailboxes.enqueue", lambda name: None)


def not_in_this_process(*args, **kwargs):
    raise AssertionError("parsed in the poller's own process")


def parser_process_ids() -> set[int]:
    return {child.pid for child in multiprocessing.active_children() if child.name.startswith("SpawnProcess")}


def parser_processes_once_settled(expected: int) -> set[int]:
    """The parser processes, once `expected` are left (a stopped one is gone a moment after it is told to)."""
    deadline = time.monotonic() + 10
    while len(parser_process_ids()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return parser_process_ids()


def test_the_parser_process_answers_what_parse_email_does_and_the_language():
    raw = raw_email("<same@example.org>", subject="Rechnung", body=GERMAN)
    here = parse_email(raw)
    there = parse_with_language(raw, ("de", "en", "fr"))
    assert there == dataclasses.replace(here, language="de")
    # Too little text to tell: told as undetermined, so ingest does not try again.
    assert parse_with_language(raw_email("<short@example.org>", subject="", body="ok"), ("de", "en")).language \
        == UNDETERMINED
    # What parse_email rejects comes back as its error, for the poller to quarantine the message with.
    assert parse_with_language(b"just some text", ("en",)).startswith("no usable From address")


def test_polled_mail_is_parsed_and_its_language_told_in_the_parser_process(app, mailbox, monkeypatch,
                                                                           no_deliveries):
    email_account(mailbox)
    mailbox.append(raw_email("<de@example.org>", sender="anna@example.de", subject="Rechnung", body=GERMAN))
    mailbox.append(raw_email("<en@example.org>", sender="sam@example.com", subject="Invoice", body=ENGLISH))
    mailbox.append(raw_email("<reply@example.org>", sender="sam@example.com", subject="Re: Invoice",
                             body="Any news on this?", in_reply_to="<en@example.org>"))
    # Had the poller parsed a message or detected a language itself, these would quarantine it.
    monkeypatch.setattr(email_parsing, "parse_email", not_in_this_process)
    monkeypatch.setattr(email_intake, "parse_email", not_in_this_process)
    monkeypatch.setattr(engine, "_detect", not_in_this_process)

    [outcome] = poll_each_mailbox()

    assert outcome.stored == 3 and outcome.problems == ()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(QuarantinedMessage)) == 0
    assert stored_ids() == ["<de@example.org>", "<en@example.org>", "<reply@example.org>"]
    languages = {subject: language for subject, language in db.session.execute(
        sa.select(Ticket.subject, Ticket.language))}
    assert languages == {"Rechnung": "de", "Invoice": "en"}
    assert parser_process_ids()


def test_without_parser_processes_the_poller_parses_and_detects_itself(app, mailbox, monkeypatch,
                                                                       no_deliveries):
    monkeypatch.setitem(app.config, "HELPDESK_EMAIL_PARSER_PROCESSES", 0)
    parsing = ParsingAhead(0, ("en",), 60)
    parsing.add([b"anything"])
    assert b"anything" not in parsing
    email_account(mailbox)
    mailbox.append(raw_email("<de0@example.org>", sender="anna@example.de", subject="Rechnung", body=GERMAN))
    detected = []
    detect = engine._detect
    monkeypatch.setattr(engine, "_detect", lambda *args: detected.append(args) or detect(*args))

    [outcome] = poll_each_mailbox()

    assert outcome.stored == 1
    assert db.session.scalar(sa.select(Ticket.language)) == "de" and len(detected) == 1


def test_when_the_parser_process_dies_no_mail_is_lost_and_a_new_one_takes_over(app, monkeypatch):
    start_parser_processes(1, configured_languages())
    killed = parser_process_ids()
    for pid in killed:
        os.kill(pid, signal.SIGKILL)

    batch = EmailBatch()
    first = [raw_email(f"<dies{n}@example.org>", sender=f"dies{n}@example.org") for n in range(3)]
    batch.expect(first)
    for raw in first:
        batch.take_in(raw, "test")
    batch.commit()
    assert stored_ids() == [f"<dies{n}@example.org>" for n in range(3)]

    # The next batch goes to a new parser process: this one parses nothing.
    monkeypatch.setattr(email_parsing, "parse_email", not_in_this_process)
    monkeypatch.setattr(email_intake, "parse_email", not_in_this_process)
    second = [raw_email(f"<after{n}@example.org>", sender=f"after{n}@example.org") for n in range(2)]
    batch.expect(second)
    for raw in second:
        batch.take_in(raw, "test")
    batch.commit()
    assert len(stored_ids()) == 5
    assert parser_process_ids() and not killed & parser_process_ids()


def test_mail_the_parser_rejects_is_quarantined_with_parse_emails_error(app, monkeypatch):
    # Quarantined with the parser process's answer: never parsed again in the poller's process.
    monkeypatch.setattr(email_parsing, "parse_email", not_in_this_process)
    monkeypatch.setattr(email_intake, "parse_email", not_in_this_process)
    batch = EmailBatch()
    good = raw_email("<fine@example.org>", sender="fine@example.org")
    batch.expect([b"just some text", good])
    batch.take_in(b"just some text", "test")
    batch.take_in(good, "test")
    batch.commit()

    [quarantined] = db.session.scalars(sa.select(QuarantinedMessage))
    assert quarantined.raw == b"just some text"
    assert "no usable From address" in quarantined.error
    assert stored_ids() == ["<fine@example.org>"]


def many_parts(message_id: str, parts: int) -> bytes:
    """A valid message that takes the standard library seconds to parse (about 20 microseconds a part)."""
    return (b"From: slow@example.org\r\nTo: support@example.com\r\nMessage-ID: " + message_id.encode()
            + b"\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            + b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * parts + b"--b--\r\n")


def test_a_message_the_parser_process_is_stuck_on_is_quarantined_and_the_mailbox_goes_on(app, monkeypatch):
    monkeypatch.setitem(app.config, "HELPDESK_EMAIL_PARSE_TIMEOUT_SECONDS", 1.0)
    start_parser_processes(1, configured_languages())
    stuck_process = parser_process_ids()
    slow = many_parts("<slow@example.org>", 150_000)  # several seconds: five times the deadline or more
    good = [raw_email(f"<quick{n}@example.org>", sender=f"quick{n}@example.org") for n in range(3)]
    handed_over = [good[0], slow, good[1], good[2]]  # one call to the parser process: stuck as a whole
    # Parsed here, the slow message would hold up the poller just the same; nothing may be.
    monkeypatch.setattr(email_parsing, "parse_email", not_in_this_process)
    monkeypatch.setattr(email_intake, "parse_email", not_in_this_process)

    batch = EmailBatch()
    batch.expect(handed_over)
    for raw in handed_over:
        batch.take_in(raw, "test")
    batch.commit()

    assert stored_ids() == [f"<quick{n}@example.org>" for n in range(3)]
    [quarantined] = db.session.scalars(sa.select(QuarantinedMessage))
    assert quarantined.raw == slow
    assert "ParsingTimedOut: parsing took longer than 1 s" in quarantined.error
    # The stuck process was stopped, and so was the one stuck on the slow message alone: one is left, new.
    assert len(parser_processes_once_settled(1)) == 1 and not stuck_process & parser_process_ids()


def test_a_quick_message_waiting_behind_a_slow_one_nobody_wants_is_not_taken_for_the_slow_one(app, monkeypatch):
    monkeypatch.setitem(app.config, "HELPDESK_EMAIL_PARSE_TIMEOUT_SECONDS", 1.0)
    start_parser_processes(1, configured_languages())
    batch = EmailBatch()
    slow = many_parts("<dropped@example.org>", 150_000)
    batch.expect([slow])
    time.sleep(0.5)  # the parser process is at it (too late to cancel); then the poller drops it (a reconnect)
    quick = raw_email("<behind@example.org>", sender="behind@example.org")
    batch.expect([quick])

    batch.take_in(quick, "test")
    batch.commit()

    assert stored_ids() == ["<behind@example.org>"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(QuarantinedMessage)) == 0


def test_requeue_gives_a_message_too_slow_to_parse_the_same_deadline_and_moves_on(app, monkeypatch):
    monkeypatch.setitem(app.config, "HELPDESK_EMAIL_PARSE_TIMEOUT_SECONDS", 1.0)
    slow = many_parts("<requeued-slow@example.org>", 150_000)
    fine = raw_email("<requeued-fine@example.org>", sender="fine@example.org")
    for raw in (slow, fine):
        db.session.add(QuarantinedMessage(channel="email", source="imap:support", raw=raw, error="db was down"))
    db.session.commit()

    result = app.test_cli_runner().invoke(args=["helpdesk", "requeue-quarantined"])

    assert "1 ingested, 1 still quarantined" in result.output
    db.session.expire_all()
    kept = db.session.scalars(sa.select(QuarantinedMessage).where(QuarantinedMessage.resolved_at.is_(None))).one()
    assert kept.raw == slow and "parsing took longer than 1 s" in kept.error and kept.attempts == 2
    assert stored_ids() == ["<requeued-fine@example.org>"]
    assert parser_processes_once_settled(0) == set()  # stopped before the command ended
