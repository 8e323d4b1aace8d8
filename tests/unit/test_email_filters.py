"""Detectors for automatic mail: out-of-office and list mail, read receipts, bounces."""

from __future__ import annotations

import email
import email.policy

import pytest

from channels.email.filters import detect_auto_reply, detect_bounce


def message(headers: str, body: str = "Hello\n"):
    raw = headers.strip("\n").replace("\n", "\r\n") + "\r\n\r\n" + body.replace("\n", "\r\n")
    return email.message_from_bytes(raw.encode("utf-8"), policy=email.policy.default)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Auto-Submitted: auto-replied", "Auto-Submitted: auto-replied"),
        ("Auto-Submitted: auto-generated; owner-email=x@example.org", "Auto-Submitted: auto-generated"),
        ("Auto-Submitted: Auto-Notified", "Auto-Submitted: auto-notified"),
        ("X-Autoreply: yes", "X-Autoreply: yes"),
        ("X-Autorespond: Out of office", "X-Autorespond: out of office"),
        ("Precedence: bulk", "Precedence: bulk"),
        ("Precedence: junk", "Precedence: junk"),
        ("Precedence: list", "Precedence: list"),
        ("X-Auto-Response-Suppress: All", "X-Auto-Response-Suppress: All"),
        ("X-Auto-Response-Suppress: OOF, AutoReply", "X-Auto-Response-Suppress: OOF, AutoReply"),
        ("List-Id: Customers <customers.lists.example.org>", "List-Id: mailing-list message"),
    ],
)
def test_auto_reply_headers_are_recognized(header, reason):
    assert detect_auto_reply(message(f"From: a@example.org\nSubject: Hi\n{header}")) == reason


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: no",
        "Precedence: first-class",
        "X-Auto-Response-Suppress: None",
        "X-Autoreply: no",
        "",
    ],
)
def test_ordinary_mail_is_not_automatic(header):
    assert detect_auto_reply(message(f"From: a@example.org\nSubject: Hi\n{header}")) is None


@pytest.mark.parametrize(
    "subject",
    [
        "Out of Office: back on Monday",
        "Automatic reply: Your ticket [#1042]",
        "Auto-Reply: Re: Invoice",
        "AW: Abwesenheitsnotiz: Rechnung",
        "Automatische Antwort: Rechnung",
        "Réponse automatique : Facture",
        "Respuesta automática: Factura",
        "Risposta automatica: Fattura",
        "Automatisch antwoord: Factuur",
        "Automatiskt svar: Faktura",
        "Autosvar: Faktura",
        "Odpowiedź automatyczna: Faktura",
        "Automatická odpověď: Faktura",
        "Автоматический ответ: Счёт",
        "自動応答: 請求書",
        "自动回复: 发票",
        "자동 회신: 청구서",
        "תשובה אוטומטית: חשבונית",
        "=?utf-8?Q?Abwesend=3A_bis_Montag?=",
    ],
)
def test_out_of_office_subjects_in_many_languages(subject):
    reason = detect_auto_reply(message(f"From: a@example.org\nSubject: {subject}"))
    assert reason is not None and reason.startswith("out-of-office subject")


@pytest.mark.parametrize(
    "subject",
    [
        "I was out of office and missed the invoice",
        "Automatic renewal failed",
        "Vacation request for March",
        "Absence of VAT on my invoice",
        "不在票が届きました",  # a missed-delivery notice, written by a person
    ],
)
def test_ordinary_subjects_are_not_out_of_office(subject):
    assert detect_auto_reply(message(f"From: a@example.org\nSubject: {subject}")) is None


def test_read_receipt_is_automatic_and_not_a_bounce():
    receipt = message(
        'From: a@example.org\nContent-Type: multipart/report; report-type=disposition-notification; boundary="r"',
        "--r\nContent-Type: text/plain\n\nDisplayed.\n--r\nContent-Type: message/disposition-notification\n\n"
        "Final-Recipient: rfc822; a@example.org\nDisposition: manual-action/MDN-sent-manually; displayed\n--r--\n",
    )
    assert detect_auto_reply(receipt) == "read receipt (disposition-notification report)"
    assert detect_bounce(receipt) is None


def _report(status_blocks: str, returned: str = "") -> str:
    return (
        "--r\nContent-Type: text/plain\n\nDelivery report.\n"
        f"--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.com\n\n{status_blocks}\n"
        f"{returned}--r--\n"
    )


REPORT_HEADERS = (
    "From: MAILER-DAEMON@mx.example.com\nSubject: Undelivered Mail\n"
    'Content-Type: multipart/report; report-type=delivery-status; boundary="r"'
)


def test_dsn_reports_each_recipient_and_the_returned_message_id():
    returned = "--r\nContent-Type: message/rfc822\n\nFrom: support@example.com\nMessage-ID: <out-9@example.com>\n\nHi\n"
    bounce = detect_bounce(
        message(
            REPORT_HEADERS,
            _report(
                "Final-Recipient: rfc822; Gone@Example.net\nAction: failed\nStatus: 5.1.1 (user unknown)\n"
                "Diagnostic-Code: smtp; 550 5.1.1 user unknown\n\n"
                "Final-Recipient: rfc822; ok@example.net\nAction: delivered\nStatus: 2.0.0\n",
                returned,
            ),
        )
    )
    assert (bounce.recipient, bounce.action, bounce.status) == ("gone@example.net", "failed", "5.1.1")
    assert bounce.diagnostic_code == "550 5.1.1 user unknown"
    assert bounce.original_message_id == "<out-9@example.com>"
    assert [r.recipient for r in bounce.recipients] == ["gone@example.net", "ok@example.net"]
    assert bounce.is_failure


def test_delay_notification_is_a_report_but_not_a_failure():
    bounce = detect_bounce(
        message(
            REPORT_HEADERS,
            _report("Final-Recipient: rfc822; slow@example.net\nAction: delayed\nStatus: 4.4.7\n"),
        )
    )
    assert (bounce.action, bounce.status, bounce.is_failure) == ("delayed", "4.4.7", False)


def test_recipient_blocks_without_blank_lines_are_still_told_apart():
    bounce = detect_bounce(
        message(
            REPORT_HEADERS,
            _report(
                "Original-Recipient: rfc822;a@example.net\nFinal-Recipient: rfc822; a@example.net\nAction: failed\n"
                "Final-Recipient: rfc822; b@example.net\nAction: failed\nStatus: 5.2.2\n"
            ),
        )
    )
    assert [(r.recipient, r.action, r.status) for r in bounce.recipients] == [
        ("a@example.net", "failed", None), ("b@example.net", "failed", "5.2.2"),
    ]  # fmt: skip


def test_plain_text_bounce_without_a_report_is_recognized():
    bounce = detect_bounce(
        message(
            "From: Mail Delivery System <MAILER-DAEMON@mail.example.net>\nSubject: Mail delivery failed: returning message",
            "This message was created automatically by mail delivery software.\n\n"
            "  gone@example.org\n    SMTP error from remote mail server after RCPT TO:<gone@example.org>:\n"
            "    550 5.1.1 User unknown\n\n------ This is a copy of the message, including all the headers. ------\n"
            "From: support@example.com\nMessage-ID: <out-7@example.com>\nSubject: Your ticket\n",
        )
    )
    assert (bounce.recipient, bounce.status, bounce.action) == ("gone@example.org", "5.1.1", "failed")
    assert bounce.original_message_id == "<out-7@example.com>"


def test_failed_recipients_header_alone_marks_a_bounce():
    bounce = detect_bounce(message("From: a@example.org\nSubject: x\nX-Failed-Recipients: gone@example.org"))
    assert (bounce.recipient, bounce.action) == ("gone@example.org", "failed")


def test_a_person_writing_from_postmaster_is_not_a_bounce():
    assert detect_bounce(message("From: postmaster@example.org\nSubject: Question about DNS")) is None
    assert detect_bounce(message("From: a@example.org\nSubject: Undelivered parcel, please help")) is None


def test_detectors_survive_malformed_headers():
    broken = message(
        'From: a@example.org\nContent-Type: multipart/report; report-type="delivery-status; boundary=r\n'
        "Auto-Submitted: \nPrecedence: \nSubject: =?utf-8?B?###?=",
        "garbage",
    )
    assert detect_auto_reply(broken) is None
    detect_bounce(broken)  # whatever it finds, it does not raise
