"""The real `fetch-mail --once` process, killed at random and restarted, still stores every message once.

A Dovecot mailbox is filled by IMAP APPEND with a realistic mix of mail (plain, HTML-only, alternatives,
replies threaded by In-Reply-To, several charsets, attachments). The poller runs as its own process against
the test database and is SIGKILLed mid-ingest several times; a killed poller keeps its lease until it lapses,
and a second poller is refused meanwhile. In the end every message is stored exactly once, flagged \\Seen,
and nothing is quarantined.

`generate_mail` is also what bench/email_ingest.py feeds its mailbox with.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import signal
import subprocess
import time
import urllib.parse
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

import pytest
import sqlalchemy as sa

from helpdesk.extensions import db
from helpdesk.mailboxes import poll_each_mailbox
from helpdesk.models import Direction, MailboxCursor, Message, QuarantinedMessage
from helpdesk.models.base import utcnow
from tests.servers import REPO_ROOT, flask_command, stop_process

pytestmark = pytest.mark.integration

MESSAGES = 300
KILLS = 5
LEASE_SECONDS = 1.5

_NAMES = [("Maria López", "maria"), ("Jürgen Groß", "juergen"), ("Zoë Dupont", "zoe"), ("Sam Lee", "sam"),
          ("Олег Петров", "oleg"), ("田中 花子", "hanako"), ("Anne-Marie Ørsted", "annemarie"),
          ("Bob Smith", "bob")]
_TOPICS = ["Invoice shows the wrong VAT", "Cannot log in", "Parcel never arrived", "Refund for order",
           "Password reset link expired", "Crédit non appliqué", "Größe passt nicht", "Счёт не пришёл",
           "配送状況について", "App crashes on start"]
#: Text in each charset that the charset can encode.
_CHARSET_TEXT = {
    "utf-8": "Hello, the amount is wrong: 42 € instead of 40 €. Naïve café ✓",
    "iso-8859-1": "Bonjour, la facture est fausse : 42 € → non, 42 francs. Très déçu, à bientôt.".replace(
        "€", "EUR").replace("→", "->"),
    "windows-1252": "Hallo, die Rechnung ist falsch – 42 € statt 40 €. Grüße aus Köln",
    "koi8-r": "Здравствуйте, счёт неверный, прошу исправить.",
    "iso-2022-jp": "こんにちは、請求書が間違っています。",
}
_PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478"
                     "9c63000100000500010d0a2db40000000049454e44ae426082")


def generate_mail(count: int, seed: int = 1, tag: str = "chaos") -> list[bytes]:
    """Return `count` raw emails, oldest first: a seeded, realistic mix; every Message-ID is unique."""
    rng = random.Random(seed)
    start = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
    sent: list[tuple[str, str, str]] = []  # (message_id, sender address, subject) of earlier mail
    messages = []
    for n in range(count):
        name, local = rng.choice(_NAMES)
        sender = f"{local}{rng.randrange(1, 60)}@example.org"
        message_id = f"<{tag}-{seed}-{n}@example.org>"
        message = EmailMessage()
        kind = rng.random()
        if sent and kind < 0.3:
            # A reply by the same customer to an earlier message of theirs (or of anyone, now and then).
            parent_id, sender, parent_subject = rng.choice(sent)
            subject = parent_subject if parent_subject.startswith("Re: ") else f"Re: {parent_subject}"
            message["In-Reply-To"] = parent_id
            message["References"] = parent_id
        else:
            subject = f"{rng.choice(_TOPICS)} #{n}"
        message["From"] = formataddr((name, sender))
        message["To"] = "Support <support@example.com>"
        message["Subject"] = subject
        message["Message-ID"] = message_id
        message["Date"] = format_datetime(start + dt.timedelta(minutes=n))
        charset = rng.choice(list(_CHARSET_TEXT))
        text = f"{_CHARSET_TEXT[charset]}\n\nReference {n}.\n" + "More detail follows. " * rng.randrange(1, 40)
        html = f"<html><body><p>{_CHARSET_TEXT['utf-8']}</p><p>Reference <b>{n}</b>.</p></body></html>"
        shape = rng.random()
        if shape < 0.45:
            message.set_content(text, charset=charset)
        elif shape < 0.6:
            message.set_content(html, subtype="html", charset="utf-8")
        else:
            message.set_content(text, charset=charset)
            message.add_alternative(html, subtype="html")
        if rng.random() < 0.15:
            attachment = rng.choice([
                (_PNG, "image", "png", "screenshot.png"),
                (rng.randbytes(rng.randrange(2_000, 60_000)), "application", "pdf", "Rechnung März.pdf"),
                (b"order,amount\n42,40.00\n", "text", "csv", "orders.csv"),
            ])
            data, maintype, subtype, filename = attachment
            message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
        messages.append(message.as_bytes(policy=SMTP))
        sent.append((message_id, sender, subject))
    return messages


def append_all(account, messages: list[bytes], folder: str = "INBOX") -> None:
    """APPEND every message over one connection, as a mail client moving a folder would."""
    with account.client() as client:
        for raw in messages:
            client.append(folder, raw)


def imap_url(account) -> str:
    user = urllib.parse.quote(account.user, safe="")
    password = urllib.parse.quote(account.password, safe="")
    return f"imap://{user}:{password}@{account.server.host}:{account.server.port}/INBOX"


def unseen_uids(account) -> list[int]:
    with account.client() as client:
        client.select_folder("INBOX", readonly=True)
        return sorted(client.search(["UNSEEN"]))


@pytest.fixture
def mailbox(dovecot_server):
    """A mailbox filled with the generated mail."""
    if not dovecot_server.is_running:
        dovecot_server.start()
    account = dovecot_server.new_account()
    append_all(account, generate_mail(MESSAGES, seed=7))
    return account


@pytest.fixture
def poller_env(app, app_config, mailbox, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update({
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "SECRET_KEY": app_config["SECRET_KEY"],
        "HELPDESK_INSTANCE_PATH": str(tmp_path / "instance"),
        "HELPDESK_IMAP_URL": imap_url(mailbox),
        "HELPDESK_IMAP_MESSAGES_PER_RUN": "7",
        "HELPDESK_IMAP_LEASE_SECONDS": str(LEASE_SECONDS),
        "HELPDESK_IMAP_RECONNECT_DELAY_SECONDS": "0.2",
        "HELPDESK_IMAP_TIMEOUT_SECONDS": "10",
    })
    return env


class Poller:
    """`fetch-mail --once` processes against the test database, output kept in files."""

    def __init__(self, env: dict, folder):
        self.env = env
        self.folder = folder
        self.runs = 0

    def start(self) -> subprocess.Popen:
        self.runs += 1
        # The child keeps its own copy of the file descriptor; ours can close at once.
        with open(self.folder / f"poller-{self.runs}.log", "wb") as log:
            return subprocess.Popen(flask_command("helpdesk", "fetch-mail", "--once"), cwd=REPO_ROOT,
                                    env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return (self.folder / f"poller-{self.runs}.log").read_text(errors="replace")

    def run(self) -> tuple[int, str]:
        """Run once to the end; return how many it ingested, and its output."""
        process = self.start()
        try:
            process.wait(timeout=120)
        finally:
            stop_process(process)
        output = self.output()
        assert process.returncode == 0, output
        match = re.search(r"^(\d+) new messages ingested$", output, re.MULTILINE)
        assert match, output
        return int(match.group(1)), output

    def drain(self, mailbox, max_runs: int = 10) -> None:
        """Run until a run ingests nothing and no message is left unseen."""
        for _ in range(max_runs):
            ingested, output = self.run()
            assert "failed:" not in output and "not polled" not in output, output
            if ingested == 0 and not unseen_uids(mailbox):
                return
        raise AssertionError(f"still not drained after {max_runs} runs:\n{self.output()}")


def inbound_count() -> int:
    count = db.session.scalar(sa.select(sa.func.count()).select_from(Message)
                              .where(Message.direction == Direction.INBOUND))
    db.session.rollback()  # never hold a read open: on SQLite it would block the poller's commits
    return count


def wait_for_progress(process: subprocess.Popen, beyond: int, timeout: float = 60) -> bool:
    """Wait until the poller has stored more than `beyond` messages; False if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if inbound_count() > beyond:
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.02)
    raise TimeoutError(f"the poller stored nothing beyond {beyond} within {timeout} s")


def held_lease() -> tuple[str, dt.datetime] | None:
    """The mailbox's lease (owner, until) when one is held, read as plain values (no open transaction)."""
    row = db.session.execute(sa.select(MailboxCursor.lease_owner, MailboxCursor.lease_until)).first()
    db.session.rollback()
    return (row.lease_owner, row.lease_until) if row is not None and row.lease_owner is not None else None


def assert_every_message_stored_once_and_seen(mailbox) -> None:
    quarantined = db.session.scalars(sa.select(QuarantinedMessage.error)).all()
    assert quarantined == [], f"{len(quarantined)} quarantined, e.g. {quarantined[:3]}"
    ids = db.session.scalars(sa.select(Message.external_id).where(Message.direction == Direction.INBOUND)).all()
    assert len(ids) == MESSAGES
    assert len(set(ids)) == MESSAGES
    assert set(ids) == {f"<chaos-7-{n}@example.org>" for n in range(MESSAGES)}
    flags = mailbox.flags()
    assert len(flags) == MESSAGES
    assert all(b"\\Seen" in flagged for flagged in flags.values())
    assert unseen_uids(mailbox) == []


def test_a_poller_killed_at_random_points_and_restarted_stores_every_message_exactly_once(
        app, mailbox, poller_env, tmp_path, monkeypatch):
    rng = random.Random(20261123)
    poller = Poller(poller_env, tmp_path)
    refusals = 0
    kills = 0
    for _ in range(KILLS):
        before = inbound_count()
        process = poller.start()
        try:
            if not wait_for_progress(process, before):
                break  # it finished before we could kill it; the drain below checks it all the same
            time.sleep(rng.uniform(0.0, 0.6))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            if process.returncode != -signal.SIGKILL:
                break  # it exited on its own just before the kill
            kills += 1
        finally:
            stop_process(process)
        lease = held_lease()
        if lease is None:
            continue  # killed between two rounds: no lease was held
        owner, until = lease
        assert f":{process.pid}:" in owner
        if until > utcnow() + dt.timedelta(seconds=0.5):
            # The dead poller's lease still holds: another worker is refused until it lapses.
            monkeypatch.setitem(app.config, "HELPDESK_IMAP_URL", poller_env["HELPDESK_IMAP_URL"])
            [outcome] = poll_each_mailbox()
            monkeypatch.delitem(app.config, "HELPDESK_IMAP_URL")
            assert outcome.stored == 0 and outcome.not_polled == "another worker is polling it"
            refusals += 1
        wait = (until - utcnow()).total_seconds()
        time.sleep(max(0.0, wait) + 0.1)

    assert kills >= 3, f"only {kills} kills landed mid-run; the test did not exercise what it should"
    assert refusals >= 1
    poller.drain(mailbox)
    assert_every_message_stored_once_and_seen(mailbox)


def test_a_poller_process_rides_out_a_dovecot_restart_mid_run(dovecot_server, mailbox, poller_env, tmp_path):
    # One round for the whole mailbox, so the server goes away under an open connection (which is retried)
    # rather than between rounds (a failed poll, backed off for a minute).
    poller = Poller({**poller_env, "HELPDESK_IMAP_MESSAGES_PER_RUN": "1000"}, tmp_path)
    process = poller.start()
    try:
        assert wait_for_progress(process, 20), poller.output()
        dovecot_server.stop()
        time.sleep(0.3)
        dovecot_server.start()
        process.wait(timeout=120)
    finally:
        stop_process(process)
    output = poller.output()
    assert process.returncode == 0, output
    assert "failed:" not in output, output
    assert re.search(r"lost .* reconnecting", output), output
    poller.drain(mailbox)
    assert_every_message_stored_once_and_seen(mailbox)
