"""Mail in through a real Dovecot: headers first, acknowledged after commit, one poller per mailbox."""

import datetime as dt
import imaplib
import os
import signal
import subprocess
import threading
import time
import urllib.parse

import pytest
import sqlalchemy as sa
from flask.cli import AppGroup
from imapclient import IMAPClient
from sqlalchemy.exc import OperationalError

from channels.email.imap import (
    Cursor,
    MailboxLoginError,
    MailboxPoller,
    MailboxSettings,
    MailboxUnavailable,
    Security,
    wait_for_new_mail,
)
from channels.email.parse import parse_email
from channels.messages import ChannelName
from helpdesk import email_intake
from helpdesk.email_intake import EmailBatch, ingest_raw_email
from helpdesk.extensions import db
from helpdesk.jobs import poll_mailboxes
from helpdesk.mail_commands import register
from helpdesk.mailboxes import is_known_message_id, poll_all_mailboxes, poll_each_mailbox, retry_delay
from helpdesk.models import (
    ChannelAccount,
    MailboxCursor,
    Message,
    OutboxItem,
    OutboxState,
    QuarantinedMessage,
    Ticket,
)
from helpdesk.models.base import utcnow
from helpdesk.tasks import enqueue
from tests.fakes.dovecot import AWKWARD_USER, LOCKED_REASON, LOCKED_USER
from tests.integration.engine_events import engine_events
from tests.servers import REPO_ROOT, flask_command, stop_process

pytestmark = pytest.mark.integration


def raw_email(message_id, *, sender="maria@example.org", subject="Invoice shows the wrong VAT",
              body="Hello, the VAT on invoice 42 is wrong.", in_reply_to=None) -> bytes:
    headers = [f"From: {sender}", "To: support@example.com", f"Subject: {subject}",
               f"Message-ID: {message_id}", "Date: Mon, 23 Nov 2026 09:00:00 +0100",
               "Content-Type: text/plain; charset=utf-8"]
    if in_reply_to:
        headers += [f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}"]
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()


def email_account(mailbox, **settings) -> ChannelAccount:
    """Configure `mailbox` as an email account, the way an admin would."""
    account = ChannelAccount(
        channel=ChannelName.EMAIL,
        name=f"Support {mailbox.user}",
        settings={"host": mailbox.server.host, "port": mailbox.server.port, "security": "none",
                  "user": mailbox.user, **settings},
        secrets={"password": mailbox.password},
    )
    db.session.add(account)
    db.session.commit()
    return account


def settings_for(mailbox, **overrides) -> MailboxSettings:
    return MailboxSettings(host=mailbox.server.host, port=mailbox.server.port, security=Security.NONE,
                           user=mailbox.user, password=mailbox.password, timeout=10, **overrides)


def cursor_of(account) -> MailboxCursor:
    db.session.expire_all()
    return db.session.scalars(sa.select(MailboxCursor).where(MailboxCursor.account_id == account.id)).one()


def stored_ids() -> list[str]:
    """External ids of the stored inbound mail (acknowledgements we sent are left out)."""
    return sorted(db.session.scalars(sa.select(Message.external_id).where(Message.direction == "inbound")))


class Spy:
    """Provides an IMAPClient class (`spy.client`) that notes which bodies it downloads and what it flags.

    `on_body(n)` is called after the n-th FETCH of bodies; `body_fetches` and `flag_commands` list the UIDs
    of each such command.
    """

    def __init__(self, on_body=None):
        self.bodies, self.flagged = [], []
        self.body_fetches, self.flag_commands = [], []
        spy = self

        class SpyClient(IMAPClient):
            def fetch(self, messages, data, modifiers=None):
                result = super().fetch(messages, data, modifiers)
                if "BODY.PEEK[]" in data:
                    spy.bodies.extend(messages)
                    spy.body_fetches.append(list(messages))
                    if on_body is not None:
                        on_body(len(spy.body_fetches))
                return result

            def add_flags(self, messages, flags, silent=False):
                spy.flagged.extend(messages)
                spy.flag_commands.append(list(messages))
                return super().add_flags(messages, flags, silent)

        self.client = SpyClient


class MemoryCursor:
    def __init__(self):
        self.cursor = Cursor()

    def load(self):
        return self.cursor

    def save(self, cursor):
        self.cursor = cursor


def test_mail_appended_to_the_inbox_becomes_tickets_and_a_reply_joins_its_ticket(mailbox):
    account = email_account(mailbox)
    mailbox.append(raw_email("<vat-1@example.org>"))
    mailbox.append(raw_email("<login-1@example.net>", sender="sam@example.net", subject="Cannot log in"))
    mailbox.append(raw_email("<vat-2@example.org>", subject="Re: Invoice shows the wrong VAT",
                             body="Any news?", in_reply_to="<vat-1@example.org>"))

    assert poll_all_mailboxes() == 3

    tickets = {message.external_id: message.ticket_id for message in db.session.scalars(sa.select(Message))}
    assert tickets["<vat-2@example.org>"] == tickets["<vat-1@example.org>"]
    assert tickets["<login-1@example.net>"] != tickets["<vat-1@example.org>"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Ticket)) == 2
    assert mailbox.seen_uids() == [1, 2, 3]
    cursor = cursor_of(account)
    assert (cursor.uid_validity, cursor.last_uid) == (mailbox.uid_validity(), 3)
    assert cursor.lease_owner is None and cursor.last_polled_at is not None
    assert poll_all_mailboxes() == 0


def test_a_message_is_flagged_seen_only_once_committed_and_an_outage_leaves_it_for_the_next_run(mailbox):
    uids = [mailbox.append(raw_email(f"<m{n}@example.org>", sender=f"c{n}@example.org")) for n in (1, 2, 3)]
    seen_while_storing = {}

    def store_during_outage(raw):
        message_id = parse_email(raw).external_id
        seen_while_storing[message_id] = mailbox.seen_uids()
        if message_id == "<m2@example.org>":
            # The database went away before even the quarantine could be written: nothing is committed.
            raise OperationalError("INSERT INTO quarantined_message", {}, ConnectionError("server closed"))
        ingest_raw_email(raw, "imap:test")
        return True

    cursor = MemoryCursor()
    with MailboxPoller(settings_for(mailbox), cursor, store_during_outage, is_known_message_id) as poller:
        report = poller.poll()

    # Each message was still unflagged while it was being stored; only committed ones were flagged after.
    assert seen_while_storing == {"<m1@example.org>": [], "<m2@example.org>": [uids[0]],
                                  "<m3@example.org>": [uids[0]]}
    assert (report.stored, report.failed_uids) == (2, [uids[1]])
    assert mailbox.seen_uids() == [uids[0], uids[2]]
    assert stored_ids() == ["<m1@example.org>", "<m3@example.org>"]
    # The cursor waits below the message that was not stored, so the next run comes back for it.
    assert cursor.cursor.last_uid == uids[0]

    spy = Spy()

    def store(raw):
        ingest_raw_email(raw, "imap:test")
        return True

    with MailboxPoller(settings_for(mailbox), cursor, store, is_known_message_id,
                       client_factory=spy.client) as poller:
        report = poller.poll()
    assert (report.stored, report.skipped_known, report.failed_uids) == (1, 1, [])
    assert spy.bodies == [uids[1]]
    assert spy.flagged == [uids[1]]  # the third is flagged already: known, and not flagged again
    assert mailbox.seen_uids() == uids
    assert stored_ids() == ["<m1@example.org>", "<m2@example.org>", "<m3@example.org>"]
    assert cursor.cursor.last_uid == uids[2]


def test_mail_that_cannot_be_parsed_is_quarantined_and_then_acknowledged(mailbox):
    account = email_account(mailbox)
    mailbox.append(b"Subject: no sender\r\nMessage-ID: <nobody@example.org>\r\n\r\nWho sent this?\r\n")
    mailbox.append(raw_email("<fine@example.org>"))

    # Both are taken in: one stored, one kept in quarantine for an admin; neither blocks the mailbox.
    assert poll_all_mailboxes() == 2

    [quarantined] = db.session.scalars(sa.select(QuarantinedMessage))
    assert quarantined.source == f"imap:{account.name}" and b"Who sent this?" in quarantined.raw
    assert stored_ids() == ["<fine@example.org>"]
    assert mailbox.seen_uids() == [1, 2]
    assert cursor_of(account).last_uid == 2


def test_mail_already_stored_is_acknowledged_without_downloading_its_body(mailbox):
    email_account(mailbox)
    raws = [raw_email(f"<k{n}@example.org>", sender=f"k{n}@example.org") for n in (1, 2, 3, 4)]
    for raw in raws[:2]:
        ingest_raw_email(raw, "pipe")  # these two arrived earlier by another route
    uids = [mailbox.append(raw) for raw in raws]
    spy = Spy()

    [outcome] = poll_each_mailbox(client_factory=spy.client)

    assert (outcome.stored, outcome.skipped_known) == (2, 2)
    assert spy.bodies == uids[2:]
    assert mailbox.seen_uids() == uids
    assert len(stored_ids()) == 4


def test_each_run_takes_at_most_its_cap_and_the_next_run_goes_on_from_there(mailbox):
    account = email_account(mailbox)
    for n in range(1, 6):
        mailbox.append(raw_email(f"<cap{n}@example.org>"))

    assert poll_all_mailboxes(limit_per_run=2) == 2
    assert mailbox.seen_uids() == [1, 2] and cursor_of(account).last_uid == 2
    [outcome] = poll_each_mailbox(limit_per_run=2)
    assert (outcome.stored, outcome.has_more) == (2, True)
    [outcome] = poll_each_mailbox(limit_per_run=2)
    assert (outcome.stored, outcome.has_more) == (1, False)
    assert mailbox.seen_uids() == [1, 2, 3, 4, 5] and len(stored_ids()) == 5


def test_large_mail_is_handed_over_whole_and_a_run_stops_at_its_byte_budget(mailbox):
    attachment = "x" * 40_000
    for n in (1, 2, 3):
        mailbox.append(raw_email(f"<big{n}@example.org>", body=f"Scan attached.\r\n{attachment}"))
    handed_over = []
    cursor = MemoryCursor()

    def poll():
        with MailboxPoller(settings_for(mailbox), cursor, lambda raw: handed_over.append(raw) or True,
                           lambda message_id: False, max_run_bytes=60_000) as poller:
            return poller.poll()

    # Each message is under the budget, but two are over it: one per run. None is cut or skipped.
    assert [(report.stored, report.has_more) for report in (poll(), poll(), poll())] == [
        (1, True), (1, True), (1, False)]
    assert all(attachment in raw.decode() for raw in handed_over) and len(handed_over) == 3
    # A message larger than the whole budget still goes, alone in its run.
    mailbox.append(raw_email("<huge@example.org>", body="x" * 100_000))
    assert poll().stored == 1 and len(handed_over[-1]) > 100_000


def test_the_poller_reconnects_when_dovecot_restarts_mid_run_and_stores_everything_once(
        app, dovecot_server, mailbox, monkeypatch):
    monkeypatch.setitem(app.config, "HELPDESK_IMAP_RECONNECT_DELAY_SECONDS", 0.2)
    monkeypatch.setitem(app.config, "HELPDESK_IMAP_BODIES_PER_FETCH", 2)
    email_account(mailbox)
    uids = [mailbox.append(raw_email(f"<r{n}@example.org>", sender=f"r{n}@example.org")) for n in range(1, 6)]
    restart = threading.Timer(0.5, dovecot_server.start)

    def crash_after_second_download(fetches):
        if fetches == 2:
            # The next bodies were read ahead while the second message's was still in hand, about to be
            # stored, and the server goes away.
            dovecot_server.stop()
            restart.start()

    spy = Spy(on_body=crash_after_second_download)
    try:
        [outcome] = poll_each_mailbox(client_factory=spy.client)
    finally:
        restart.join(10)

    assert outcome.error is None and outcome.stored == 5 and outcome.skipped_known == 0
    assert spy.body_fetches[:2] == [uids[0:2], uids[2:4]]
    # The second was stored while the server was gone; after reconnecting it is flagged, never downloaded or
    # stored again. The bodies read ahead were not handed over before the connection dropped: they are
    # downloaded again.
    assert all(uid not in fetched for fetched in spy.body_fetches[2:] for uid in uids[0:2])
    assert sorted(uid for fetched in spy.body_fetches[2:] for uid in fetched) == uids[2:]
    assert {uid for flagged in spy.flag_commands for uid in flagged} == set(uids)
    assert stored_ids() == sorted(f"<r{n}@example.org>" for n in range(1, 6))
    assert mailbox.seen_uids() == uids


def test_bodies_are_downloaded_and_flagged_a_batch_per_command(app, mailbox, monkeypatch):
    monkeypatch.setitem(app.config, "HELPDESK_IMAP_BODIES_PER_FETCH", 3)
    account = email_account(mailbox)
    uids = [mailbox.append(raw_email(f"<b{n}@example.org>", sender=f"b{n}@example.org")) for n in range(7)]
    spy = Spy()

    [outcome] = poll_each_mailbox(client_factory=spy.client)

    assert outcome.stored == 7
    assert spy.body_fetches == [uids[0:3], uids[3:6], uids[6:]]
    assert spy.flag_commands == [uids[0:3], uids[3:6], uids[6:]]
    assert mailbox.seen_uids() == uids and cursor_of(account).last_uid == uids[-1]


def test_a_cursor_saved_before_its_messages_are_flagged_waits_below_them(mailbox):
    uids = [mailbox.append(raw_email(f"<s{n}@example.org>", sender=f"s{n}@example.org")) for n in range(4)]
    saved = []

    class SavesAndFailsToFlag(MemoryCursor):
        def save(self, value):
            saved.append(value.last_uid)
            super().save(value)

    class NoFlags(IMAPClient):
        def add_flags(self, messages, flags, silent=False):
            raise imaplib.IMAP4.abort("the server hung up")

    def store(raw):
        ingest_raw_email(raw, "imap:test")
        return True

    cursor = SavesAndFailsToFlag()
    with MailboxPoller(settings_for(mailbox), cursor, store, is_known_message_id, client_factory=NoFlags,
                       save_every=2, max_reconnects=0) as poller, pytest.raises(MailboxUnavailable):
        poller.poll()

    # The first two were stored, but their flags never went through (the run stopped there): the cursor
    # never passed them, so the next run reads them again by their headers and flags them as known.
    assert stored_ids() == ["<s0@example.org>", "<s1@example.org>"]
    assert mailbox.seen_uids() == [] and saved and max(saved) < uids[0]
    with MailboxPoller(settings_for(mailbox), cursor, store, is_known_message_id) as poller:
        report = poller.poll()
    assert (report.stored, report.skipped_known) == (2, 2)
    assert mailbox.seen_uids() == uids and cursor.cursor.last_uid == uids[-1]


def test_a_renumbered_folder_is_read_again_without_storing_anything_twice(mailbox):
    account = email_account(mailbox, folder="Support")
    old = [raw_email(f"<old{n}@example.org>", sender=f"old{n}@example.org") for n in (1, 2, 3)]
    for raw in old:
        mailbox.append(raw, "Support")
    assert poll_all_mailboxes() == 3
    old_validity = cursor_of(account).uid_validity

    new_validity = mailbox.recreate_folder("Support")  # restored from a backup: every UID renumbered
    # New mail lands first, so its UID (1) is below the old cursor (3): keeping the old cursor would miss it.
    mailbox.append(raw_email("<new@example.org>", sender="new@example.org"), "Support")
    for raw in old:
        mailbox.append(raw, "Support")
    spy = Spy()

    [outcome] = poll_each_mailbox(client_factory=spy.client)

    assert new_validity != old_validity
    assert (outcome.stored, outcome.skipped_known) == (1, 3)
    assert spy.bodies == [1]
    assert stored_ids() == ["<new@example.org>", "<old1@example.org>", "<old2@example.org>",
                            "<old3@example.org>"]
    cursor = cursor_of(account)
    assert (cursor.uid_validity, cursor.last_uid) == (new_validity, 4)
    assert mailbox.seen_uids("Support") == [1, 2, 3, 4]


def test_two_workers_polling_one_mailbox_at_once_never_both_poll_it(app, mailbox):
    account = email_account(mailbox)
    for n in (1, 2, 3):
        mailbox.append(raw_email(f"<w{n}@example.org>", sender=f"w{n}@example.org"))
    first_is_polling, let_first_go_on = threading.Event(), threading.Event()

    def hold_the_first_download(fetches):
        if fetches == 1:
            first_is_polling.set()
            let_first_go_on.wait(10)

    spy = Spy(on_body=hold_the_first_download)
    outcomes = []

    def first_worker():
        with app.app_context():
            outcomes.extend(poll_each_mailbox(client_factory=spy.client))

    worker = threading.Thread(target=first_worker)
    worker.start()
    try:
        assert first_is_polling.wait(10)
        [second] = poll_each_mailbox(client_factory=spy.client)
    finally:
        let_first_go_on.set()
        worker.join(10)

    assert second.stored == 0 and second.not_polled == "another worker is polling it"
    [first] = outcomes
    assert first.stored == 3 and spy.bodies == [1, 2, 3]
    assert cursor_of(account).lease_owner is None
    # With the lease released, the next worker may poll it (and finds nothing new).
    [later] = poll_each_mailbox()
    assert later.not_polled is None and later.stored == 0


def test_a_mailbox_whose_login_keeps_failing_backs_off_and_is_then_marked_unhealthy(mailbox):
    account = email_account(mailbox, user=LOCKED_USER)
    connections = []

    class CountingClient(IMAPClient):
        def __init__(self, *args, **kwargs):
            connections.append(args)
            super().__init__(*args, **kwargs)

    def poll_when_due():
        cursor = db.session.scalar(sa.select(MailboxCursor).where(MailboxCursor.account_id == account.id))
        if cursor is not None and cursor.next_attempt_at is not None:
            cursor.next_attempt_at = utcnow() - dt.timedelta(seconds=1)  # the backoff has run out
            db.session.commit()
        started = utcnow()
        [outcome] = poll_each_mailbox(client_factory=CountingClient)
        next_attempt_at = cursor_of(account).next_attempt_at
        return outcome, next_attempt_at and (next_attempt_at - started).total_seconds()

    outcome, delay = poll_when_due()
    assert LOCKED_REASON in outcome.error and 55 < delay < 65
    db.session.refresh(account)
    assert account.unhealthy_since is None  # one failure is not yet a pattern

    [outcome] = poll_each_mailbox(client_factory=CountingClient)
    assert outcome.not_polled.startswith("backing off after 1 failures") and len(connections) == 1

    delays = [poll_when_due()[1] for _ in range(4)]
    for delay, expected in zip(delays, (120, 240, 480, 960), strict=True):
        assert expected - 5 < delay < expected + 5
    assert cursor_of(account).consecutive_failures == 5
    db.session.refresh(account)
    assert account.unhealthy_since is not None and LOCKED_REASON in account.last_error

    # An admin fixes the account: the next poll works and clears the failure state.
    account.settings = {**account.settings, "user": mailbox.user}
    db.session.commit()
    mailbox.append(raw_email("<back@example.org>"))
    outcome, delay = poll_when_due()
    assert outcome.error is None and outcome.stored == 1 and delay is None
    db.session.refresh(account)
    assert account.unhealthy_since is None and account.last_error is None
    assert cursor_of(account).consecutive_failures == 0


def test_handled_mail_can_be_moved_to_a_folder_instead_of_flagged(mailbox):
    with mailbox.client() as client:
        client.create_folder("Processed")
    email_account(mailbox, move_to="Processed")
    mailbox.append(raw_email("<mv1@example.org>"))
    mailbox.append(raw_email("<mv2@example.org>", sender="sam@example.net"))

    assert poll_all_mailboxes() == 2

    assert mailbox.flags() == {}
    assert len(mailbox.flags("Processed")) == 2


def test_waiting_for_mail_returns_as_soon_as_the_server_announces_it(mailbox):
    arrive = threading.Timer(0.3, mailbox.append, args=(raw_email("<idle@example.org>"),))
    started = time.monotonic()
    arrive.start()
    try:
        assert wait_for_new_mail(settings_for(mailbox), timeout=20) is True
    finally:
        arrive.join(10)
    assert time.monotonic() - started < 10


def test_mail_that_arrived_since_the_last_poll_ends_the_wait_at_once(mailbox):
    with MailboxPoller(settings_for(mailbox), MemoryCursor(), lambda raw: True,
                       lambda message_id: False) as poller:
        uid_next = poller.poll().uid_next
    mailbox.append(raw_email("<meanwhile@example.org>"))  # before anyone is idling: IDLE would not tell
    naps = []

    assert wait_for_new_mail(settings_for(mailbox), timeout=30, uid_next=uid_next, sleep=naps.append) is True
    assert naps == []


def test_waiting_for_mail_sleeps_instead_when_the_server_has_no_idle(mailbox):
    class WithoutIdle(IMAPClient):
        def capabilities(self):
            return tuple(capability for capability in super().capabilities() if capability != b"IDLE")

    naps = []
    is_announced = wait_for_new_mail(settings_for(mailbox), timeout=30, client_factory=WithoutIdle,
                                     sleep=naps.append)
    assert is_announced is False
    [nap] = naps
    assert 25 < nap <= 30


def test_the_job_polls_the_mailbox_named_by_helpdesk_imap_url_with_its_credentials_url_decoded(
        app, dovecot_server, monkeypatch):
    account = dovecot_server.account(AWKWARD_USER)
    user, password = (urllib.parse.quote(text, safe="") for text in (account.user, account.password))
    url = f"imap://{user}:{password}@{dovecot_server.host}:{dovecot_server.port}/INBOX"
    monkeypatch.setitem(app.config, "HELPDESK_IMAP_URL", url)
    account.append(raw_email("<from-url@example.org>"))

    assert poll_mailboxes() == 1  # the job, through the pollers the app factory set up

    [row] = db.session.scalars(sa.select(ChannelAccount))
    assert row.settings == {"source": "HELPDESK_IMAP_URL"} and not row.secrets  # the password stays in config
    assert cursor_of(row).last_uid == 1
    assert stored_ids() == ["<from-url@example.org>"]


@pytest.mark.parametrize(("url", "expected"), [
    ("imaps://support%40example.com:s%3Acret@imap.example.com",
     MailboxSettings("imap.example.com", "support@example.com", "s:cret", None, Security.TLS, "INBOX")),
    ("imap+starttls://desk:pw@mail.example.com:1143/Support%20Queue?move_to=Done",
     MailboxSettings("mail.example.com", "desk", "pw", 1143, Security.STARTTLS, "Support Queue", "Done")),
])
def test_imap_urls_name_the_server_folder_and_url_encoded_credentials(url, expected):
    assert MailboxSettings.from_url(url) == expected


def test_fetch_mail_once_drains_every_mailbox_and_says_how_many_it_ingested(runner, mailbox):
    email_account(mailbox)
    for n in (1, 2, 3):
        mailbox.append(raw_email(f"<cli{n}@example.org>", sender=f"cli{n}@example.org"))
    group = AppGroup("helpdesk")
    register(group)

    result = runner.invoke(group, ["fetch-mail", "--once", "--limit", "2"])

    assert result.exit_code == 0, result.output
    assert "3 new messages ingested" in result.output
    assert len(stored_ids()) == 3 and mailbox.seen_uids() == [1, 2, 3]


def test_fetch_mail_keeps_fetching_and_waiting_until_interrupted(runner, mailbox, monkeypatch):
    email_account(mailbox)
    mailbox.append(raw_email("<loop1@example.org>"))
    waits = []

    def wait_then_interrupt(timeout, uid_next=None):
        waits.append(uid_next)
        if len(waits) == 1:
            mailbox.append(raw_email("<loop2@example.org>", sender="sam@example.net"))
            return
        raise KeyboardInterrupt  # Ctrl-C while waiting

    monkeypatch.setattr("helpdesk.mail_commands.wait_for_new_mail", wait_then_interrupt)
    group = AppGroup("helpdesk")
    register(group)

    result = runner.invoke(group, ["fetch-mail"])

    assert result.exit_code == 0, result.output
    assert result.output.count("1 new messages ingested") == 2 and "stopped" in result.output
    assert waits == [2, 3]  # each wait starts from the UIDNEXT its poll saw
    assert stored_ids() == ["<loop1@example.org>", "<loop2@example.org>"]


def test_the_poll_job_retries_an_unreachable_server_with_growing_backoff_and_counts_the_failures(
        app, dovecot_server, mailbox, monkeypatch):
    monkeypatch.setitem(app.config, "HELPDESK_IMAP_RECONNECT_DELAY_SECONDS", 0.2)
    monkeypatch.setitem(app.config, "HELPDESK_IMAP_FAILURES_BEFORE_UNHEALTHY", 3)
    account = email_account(mailbox)
    mailbox.append(raw_email("<while-down@example.org>"))
    dovecot_server.stop()  # down before the first connection

    def poll_when_due():
        cursor = db.session.scalar(sa.select(MailboxCursor).where(MailboxCursor.account_id == account.id))
        if cursor is not None and cursor.next_attempt_at is not None:
            time.sleep(max(0.0, (cursor.next_attempt_at - utcnow()).total_seconds()) + 0.05)
        started = utcnow()
        assert poll_mailboxes() == 0  # the job, as Celery beat or the in-process scheduler runs it
        cursor = cursor_of(account)
        return cursor.consecutive_failures, (cursor.next_attempt_at - started).total_seconds()

    attempts = [poll_when_due() for _ in range(3)]

    # Each failure counts and doubles the wait, starting from the reconnect delay (not the minute a refused
    # login waits); the third one in a row marks the mailbox unhealthy for the admins.
    assert [failures for failures, _ in attempts] == [1, 2, 3]
    for (_, delay), expected in zip(attempts, (0.2, 0.4, 0.8), strict=True):
        assert expected - 0.05 < delay < expected + 0.5
    db.session.refresh(account)
    assert account.unhealthy_since is not None and "cannot reach" in account.last_error
    # Polled again before the retry is due, the job leaves the server alone.
    [outcome] = poll_each_mailbox()
    assert outcome.not_polled.startswith("backing off after 3 failures")

    dovecot_server.start()
    cursor = cursor_of(account)
    time.sleep(max(0.0, (cursor.next_attempt_at - utcnow()).total_seconds()) + 0.05)
    assert poll_mailboxes() == 1
    assert stored_ids() == ["<while-down@example.org>"] and mailbox.seen_uids() == [1]
    db.session.refresh(account)
    assert account.unhealthy_since is None and cursor_of(account).consecutive_failures == 0


def test_an_unreachable_server_is_retried_no_faster_than_the_backoff_and_at_most_every_30_seconds(app, monkeypatch):
    monkeypatch.setitem(app.config, "HELPDESK_IMAP_RECONNECT_DELAY_SECONDS", 1.0)
    down = MailboxUnavailable("cannot reach the server")
    assert [retry_delay(down, failures).total_seconds() for failures in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    # A delay of 0 would be a tight loop: the backoff still starts above zero and grows.
    monkeypatch.setitem(app.config, "HELPDESK_IMAP_RECONNECT_DELAY_SECONDS", 0)
    assert 0 < retry_delay(down, 1).total_seconds() < retry_delay(down, 2).total_seconds()
    # A refused login waits minutes: asking again soon would not help.
    assert retry_delay(MailboxLoginError("refused"), 1) == dt.timedelta(minutes=1)


def test_fetch_mail_started_while_the_server_is_down_backs_off_and_picks_up_the_mail_once_it_is_back(
        app, app_config, dovecot_server, mailbox, tmp_path):
    account = email_account(mailbox)
    mailbox.append(raw_email("<first-connect@example.org>"))
    dovecot_server.stop()
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update({
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "SECRET_KEY": app_config["SECRET_KEY"],
        "HELPDESK_INSTANCE_PATH": str(tmp_path / "instance"),
        "HELPDESK_IMAP_RECONNECT_DELAY_SECONDS": "0.2",
        "HELPDESK_IMAP_FAILURES_BEFORE_UNHEALTHY": "3",
        "HELPDESK_IMAP_TIMEOUT_SECONDS": "5",
    })
    log_path = tmp_path / "fetch-mail.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(flask_command("helpdesk", "fetch-mail"), cwd=REPO_ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        unhealthy = _wait_for(lambda: _read(lambda: db.session.get(ChannelAccount, account.id).unhealthy_since),
                              process, log_path)
        # Marked unhealthy at the third failure in a row; the retries came 0.2, then 0.4 s apart (the next
        # one waits 0.8 s): a handful of attempts, not a tight loop.
        attempts = log_path.read_text(errors="replace").count(": failed: cannot reach")
        assert unhealthy is not None and 3 <= attempts <= 5, log_path.read_text()

        time.sleep(1.5)
        attempts_while_down = log_path.read_text(errors="replace").count(": failed: cannot reach")
        assert attempts_while_down <= attempts + 3, log_path.read_text()  # backing off: 1.6 s, then 3.2 s ...

        dovecot_server.start()
        back = time.monotonic()
        _wait_for(lambda: _read(lambda: stored_ids() or None), process, log_path)
        # At most one backoff step (3.2 s by now, 6.4 s at worst) after the server came back.
        assert time.monotonic() - back < 10
        assert _read(stored_ids) == ["<first-connect@example.org>"]
        _wait_for(lambda: _read(lambda: cursor_of(account).consecutive_failures == 0 or None), process, log_path)
        assert _read(lambda: db.session.get(ChannelAccount, account.id).unhealthy_since) is None
        assert mailbox.seen_uids() == [1]
        process.send_signal(signal.SIGINT)  # Ctrl-C
        process.wait(timeout=20)
    finally:
        stop_process(process)
    output = log_path.read_text(errors="replace")
    assert process.returncode == 0, output
    assert "1 new messages ingested" in output and "stopped" in output


def _read(query):
    """Run `query` in a fresh transaction and end it at once (on SQLite, never block the poller's commits)."""
    db.session.rollback()
    db.session.expire_all()
    try:
        return query()
    finally:
        db.session.rollback()


def _wait_for(condition, process, log_path, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value is not None:
            return value
        if process.poll() is not None:
            raise AssertionError(f"fetch-mail exited early:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s:\n{log_path.read_text(errors='replace')}")


def test_acknowledgements_of_polled_mail_are_committed_with_it_and_sent_by_one_job_after_the_poll(
        mailbox, monkeypatch):
    email_account(mailbox)
    for n in (1, 2, 3):
        mailbox.append(raw_email(f"<ack{n}@example.org>", sender=f"ack{n}@example.org", subject=f"Question {n}"))
    committed = []  # (messages, outbox items, of those sent, jobs started) after each commit of the batch
    jobs = []

    def deliver_later(name):
        jobs.append(name)
        enqueue(name)  # inline in tests: delivers now

    commit = EmailBatch.commit

    def spy_on_commit(batch):
        commit(batch)
        messages = db.session.scalar(sa.select(sa.func.count()).select_from(Message).where(
            Message.direction == "inbound"))
        states = db.session.scalars(sa.select(OutboxItem.state)).all()
        committed.append((messages, len(states), states.count(OutboxState.SENT), len(jobs)))

    monkeypatch.setattr("helpdesk.mailboxes.enqueue", deliver_later)
    monkeypatch.setattr(EmailBatch, "commit", spy_on_commit)

    assert poll_all_mailboxes() == 3

    # The acknowledgements were committed with their messages, none sent during the poll; then one job sent all.
    assert committed[0] == (3, 3, 0, 0) and jobs == ["deliver_outbox"]
    assert db.session.scalars(sa.select(OutboxItem.state)).all() == [OutboxState.SENT] * 3


def test_two_copies_of_one_mail_in_a_batch_are_stored_once_and_the_second_body_is_never_downloaded(mailbox):
    email_account(mailbox)
    raw = raw_email("<twice@example.org>")  # delivered to two of our addresses, both landing in this mailbox
    uids = [mailbox.append(raw), mailbox.append(raw)]
    spy = Spy()

    [outcome] = poll_each_mailbox(client_factory=spy.client)

    assert (outcome.stored, outcome.skipped_known) == (1, 1)
    assert spy.bodies == uids[:1]
    assert stored_ids() == ["<twice@example.org>"] and mailbox.seen_uids() == uids


def test_the_cursor_is_saved_every_few_messages_and_at_the_end_of_the_run(mailbox):
    uids = [mailbox.append(raw_email(f"<save{n}@example.org>")) for n in range(7)]
    saved = []

    class CountingCursor(MemoryCursor):
        def save(self, cursor):
            saved.append(cursor.last_uid)
            super().save(cursor)

    with MailboxPoller(settings_for(mailbox), CountingCursor(), lambda raw: True, lambda message_id: False,
                       save_every=3) as poller:
        report = poller.poll()

    assert report.stored == 7
    # The first save records the folder's UIDVALIDITY; then every third message, and the rest at the end.
    assert saved == [0, uids[2], uids[5], uids[6]]


def test_the_next_bodies_are_read_ahead_half_way_through_a_fetch_and_announced_with_those_still_in_hand(mailbox):
    uids = [mailbox.append(raw_email(f"<ahead{n}@example.org>")) for n in range(10)]
    events = []  # ("fetch", uids) for each FETCH of bodies, ("handed", uid) for each message handed over
    spy = Spy(on_body=lambda n: events.append(("fetch", spy.body_fetches[-1])))
    announced = []
    uid_of = {}

    def handed(raw):
        events.append(("handed", uid_of[raw]))
        return True

    def note_download(raws):
        announced.append([uid_of[raw] for raw in raws])

    def remember_uids(fetched):
        for uid, data in fetched.items():
            uid_of[bytes(data[b"BODY[]"])] = uid

    class RememberingClient(spy.client):
        def fetch(self, messages, data, modifiers=None):
            result = super().fetch(messages, data, modifiers)
            if "BODY.PEEK[]" in data:
                remember_uids(result)
            return result

    with MailboxPoller(settings_for(mailbox), MemoryCursor(), handed, lambda message_id: False,
                       on_download=note_download, body_batch=4, client_factory=RememberingClient) as poller:
        report = poller.poll()

    assert report.stored == 10
    # Four per FETCH; the next is sent once two of the four are handed over, before the third.
    assert events[:4] == [("fetch", uids[0:4]), ("handed", uids[0]), ("handed", uids[1]), ("fetch", uids[4:8])]
    assert [event for event in events if event[0] == "handed"] == [("handed", uid) for uid in uids]
    assert announced[:2] == [uids[0:4], uids[2:8]]
    assert sorted(uid for fetched in spy.body_fetches for uid in fetched) == uids  # each downloaded once


def test_a_read_ahead_the_server_refuses_leaves_the_run_to_fetch_those_bodies_when_it_needs_them(mailbox):
    uids = [mailbox.append(raw_email(f"<refused{n}@example.org>")) for n in range(8)]
    body_fetches = []

    class RefusingOnceClient(IMAPClient):
        def fetch(self, messages, data, modifiers=None):
            if "BODY.PEEK[]" in data:
                body_fetches.append(list(messages))
                if len(body_fetches) == 2:  # the read-ahead: refused, as Gmail refuses some FETCHes
                    raise IMAPClient.Error("FETCH failed: Some messages could not be FETCHed (Failure)")
            return super().fetch(messages, data, modifiers)

    handed = []
    with MailboxPoller(settings_for(mailbox), MemoryCursor(), lambda raw: handed.append(raw) or True,
                       lambda message_id: False, on_download=lambda raws: None, body_batch=4,
                       client_factory=RefusingOnceClient) as poller:
        report = poller.poll()

    assert report.stored == 8 and report.errors == []
    assert body_fetches[:2] == [uids[0:4], uids[4:8]] and body_fetches[2][0] == uids[4]


def test_polled_mail_is_stored_many_messages_per_transaction_and_a_reply_in_the_same_batch_finds_its_ticket(
        app, mailbox, monkeypatch):
    monkeypatch.setitem(app.config, "HELPDESK_IMAP_BODIES_PER_FETCH", 10)
    monkeypatch.setattr("helpdesk.mailboxes.enqueue", lambda name: None)  # deliveries commit too: not now
    email_account(mailbox)
    for n in range(12):
        mailbox.append(raw_email(f"<many{n}@example.org>", sender=f"many{n}@example.org", subject=f"Question {n}"))
    mailbox.append(raw_email("<many-reply@example.org>", sender="many3@example.org", subject="Re: Question 3",
                             body="Any news?", in_reply_to="<many3@example.org>"))

    timeline = []  # "insert" for each statement inserting messages, "commit" for each commit, in order
    rules_checked = []

    def note_message_insert(connection, cursor, statement, *rest):
        if statement.startswith("INSERT INTO message "):
            timeline.append("insert")
        if "max(triage_rule.updated_at)" in statement:
            rules_checked.append(statement)

    with engine_events("before_cursor_execute", note_message_insert), \
            engine_events("commit", lambda *_: timeline.append("commit")):
        [outcome] = poll_each_mailbox()

    assert outcome.stored == 13 and mailbox.seen_uids() == list(range(1, 14))
    # 13 messages (and 12 acknowledgements) in three transactions: 5, 5, then 3. The next FETCH, sent half-way
    # through the first ten (read ahead), commits what came before it, as every IMAP command does.
    transactions = "".join("i" if event == "insert" else "|" for event in timeline).split("|")
    assert [len(writes) for writes in transactions if writes] == [5 + 5, 5 + 5, 3 + 2]
    # Whether the triage rules changed is asked once per transaction, not once per message.
    assert len(rules_checked) == 3
    tickets = {message.external_id: message.ticket_id for message in db.session.scalars(sa.select(Message))}
    assert tickets["<many-reply@example.org>"] == tickets["<many3@example.org>"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Ticket)) == 12
    # Each new ticket got its acknowledgement, committed in the same batch as its message.
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem)) == 12


def test_a_message_that_fails_in_a_batch_is_quarantined_and_the_rest_of_its_batch_is_stored_once(
        mailbox, monkeypatch):
    account = email_account(mailbox)
    subjects = ["First", "Second", "Poison", "Fourth", "Fifth"]
    for n, subject in enumerate(subjects):
        mailbox.append(raw_email(f"<batch{n}@example.org>", sender=f"batch{n}@example.org", subject=subject))
    queue_acknowledgement = email_intake.queue_acknowledgement

    def fails_on_poison(ticket, channel, address):
        if ticket.subject == "Poison":
            raise RuntimeError("template exploded")
        return queue_acknowledgement(ticket, channel, address)

    monkeypatch.setattr(email_intake, "queue_acknowledgement", fails_on_poison)

    [outcome] = poll_each_mailbox()

    assert outcome.stored == 5 and outcome.problems == ()
    assert stored_ids() == sorted(f"<batch{n}@example.org>" for n in (0, 1, 3, 4))
    [quarantined] = db.session.scalars(sa.select(QuarantinedMessage))
    assert b"<batch2@example.org>" in quarantined.raw and "template exploded" in quarantined.error
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem)) == 4
    assert mailbox.seen_uids() == [1, 2, 3, 4, 5] and cursor_of(account).last_uid == 5


def test_messages_whose_commit_failed_are_neither_flagged_nor_passed_by_the_cursor(mailbox):
    uids = [mailbox.append(raw_email(f"<c{n}@example.org>", sender=f"c{n}@example.org")) for n in range(5)]
    held, stored = [], []
    commit_fails = [True]

    def hold(raw):
        held.append(parse_email(raw).external_id)
        return True

    def commit():
        if commit_fails[0]:
            held.clear()
            raise OperationalError("COMMIT", {}, ConnectionError("server closed"))
        stored.extend(held)
        held.clear()

    cursor = MemoryCursor()
    with MailboxPoller(settings_for(mailbox), cursor, hold, lambda message_id: message_id in stored,
                       commit_handled=commit, body_batch=2) as poller:
        report = poller.poll()

    assert report.stored == 0 and report.failed_uids == uids
    assert mailbox.seen_uids() == [] and cursor.cursor.last_uid == 0

    commit_fails[0] = False
    with MailboxPoller(settings_for(mailbox), cursor, hold, lambda message_id: message_id in stored,
                       commit_handled=commit, body_batch=2) as poller:
        report = poller.poll()
    assert report.stored == 5 and report.failed_uids == []
    assert sorted(stored) == sorted(f"<c{n}@example.org>" for n in range(5))
    assert mailbox.seen_uids() == uids and cursor.cursor.last_uid == uids[-1]
