"""Raw email bytes to InboundMessage, with hand-written RFC 5322 samples."""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import json

import pytest

from channels.email.parse import UnparseableEmail, decode_bytes, parse_email, parsed_email_json
from channels.messages import ChannelName, EmailAddress, IdentityKind


def mail(headers: str, body: bytes | str = b"Hello\n") -> bytes:
    """Build raw message bytes: `headers` as text, `body` as given (bytes stay byte for byte)."""
    body = body.encode("utf-8") if isinstance(body, str) else body
    return headers.strip("\n").replace("\n", "\r\n").encode("utf-8") + b"\r\n\r\n" + body


BASIC = mail(
    """
From: "Lopez, Maria" <Maria.Lopez@Example.org>
To: Support <support@example.com>, billing@example.com
Cc: =?utf-8?Q?J=C3=B6rg?= <jorg@example.de>, undisclosed-recipients:;
Subject: Re: [#1042] Invoice shows the wrong VAT
Message-ID: <reply-2@example.org>
In-Reply-To: <helpdesk.77@example.com>
References: <first@example.org> <helpdesk.77@example.com>
Date: Mon, 04 Mar 2024 10:12:00 +0100
Content-Type: text/plain; charset=utf-8
""",
    "Still wrong.\n\nOn Mon, 4 Mar 2024 at 09:00, Support <support@example.com> wrote:\n> Fixed now.\n",
)


def test_plain_message_becomes_an_inbound_email():
    message = parse_email(BASIC)
    assert message.channel is ChannelName.EMAIL
    assert (message.sender.kind, message.sender.value, message.sender.display_name) == (
        IdentityKind.EMAIL, "maria.lopez@example.org", "Lopez, Maria",
    )  # fmt: skip
    assert message.to == (EmailAddress("support@example.com", "Support"), EmailAddress("billing@example.com"))
    assert message.cc == (EmailAddress("jorg@example.de", "Jörg"),)
    assert message.subject == "Re: [#1042] Invoice shows the wrong VAT"
    assert (message.external_id, message.dedupe_key) == (
        "<reply-2@example.org>",
        "email:<reply-2@example.org>",
    )
    assert message.sent_at == dt.datetime(2024, 3, 4, 10, 12, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert message.received_at is None  # the Date header is the sender's claim; the mailbox sets arrival
    assert message.text.startswith("Still wrong.") and message.html is None
    assert message.reply_text == "Still wrong."
    assert not message.is_automatic and not message.is_bounce and message.bounce is None


def test_thread_hints_are_in_reply_to_then_references_newest_first():
    thread = parse_email(BASIC).thread
    assert thread.reply_to_external_ids == ("<helpdesk.77@example.com>", "<first@example.org>")
    assert thread.ticket_number == 1042


def test_json_has_every_field_and_is_serializable():
    result = parsed_email_json(BASIC)
    json.dumps(result)
    assert result["in_reply_to"] == ["<helpdesk.77@example.com>"]
    assert result["references"] == ["<first@example.org>", "<helpdesk.77@example.com>"]
    assert (result["from_address"], result["from_name"]) == ("maria.lopez@example.org", "Lopez, Maria")
    assert result["to"][0] == {"address": "support@example.com", "name": "Support"}
    assert result["date"] == "2024-03-04T10:12:00+01:00"
    assert result["reply_text"] == "Still wrong."
    assert (result["is_auto_reply"], result["is_bounce"], result["bounce"]) == (False, False, None)
    assert "error" not in result


# --- charsets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "body", "expected"),
    [
        ("iso-8859-1", "Grüße aus Köln".encode(), "Grüße aus Köln"),  # labeled Latin-1, really UTF-8
        ("us-ascii", "naïve café".encode(), "naïve café"),  # labeled ASCII, really UTF-8
        ("utf-8", "café “quoted”".encode("cp1252"), "café “quoted”"),  # labeled UTF-8, really Windows-1252
        ("x-unknown", "Ærø".encode(), "Ærø"),
        ("no-such-charset", "Ærø".encode("latin-1"), "Ærø"),
        ("koi8-r", "Привет".encode("koi8-r"), "Привет"),
        ("shift_jis", "テスト①".encode("cp932"), "テスト①"),  # Windows' superset of Shift_JIS
        ("gb2312", "发票".encode("gb18030"), "发票"),
        ("ks_c_5601-1987", "한국어".encode("cp949"), "한국어"),
        ("utf-8", "gut ü".encode() + b"\xff", "gut ü\ufffd"),  # mostly UTF-8: keep it, mark the bad byte
        ("base64", b"plain", "plain"),  # not a charset at all
    ],
)
def test_body_charsets_are_decoded_even_when_mislabeled(declared, body, expected):
    raw = mail(
        f"From: a@example.org\nSubject: x\nContent-Type: text/plain; charset={declared}\n"
        "Content-Transfer-Encoding: 8bit",
        body,
    )
    assert parse_email(raw).text == expected


def test_decoding_never_raises_on_any_bytes():
    for declared in (None, "utf-8", "ascii", "iso-2022-jp", "utf-16", "utf-7", "bogus"):
        assert isinstance(decode_bytes(bytes(range(256)), declared), str)


def test_undeclared_eight_bit_header_uses_the_body_charset():
    raw = mail("From: a@example.org\nContent-Type: text/plain; charset=koi8-r", "Текст".encode("koi8-r"))
    raw = raw.replace(b"From:", "Subject: Счёт\r\nFrom:".encode("koi8-r"), 1)
    assert parse_email(raw).subject == "Счёт"


def test_html_meta_charset_is_used_when_the_part_declares_none():
    html = '<html><head><meta charset="windows-1251"></head><body>Привет</body></html>'.encode("cp1251")
    raw = mail("From: a@example.org\nContent-Type: text/html", html)
    assert parse_email(raw).text == "Привет"


# --- headers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("=?utf-8?Q?Gr=C3=BC=C3=9Fe?= aus =?ISO-8859-1?B?S/Zsbg==?=", "Grüße aus Köln"),
        ("=?utf-8?B?5pel5pys6Kqe?= =?utf-8?B?44Gu5Lu25ZCN?=", "日本語の件名"),  # adjacent words join
        ("=?iso-2022-jp?B?GyRCJUYlOSVIGyhC?=", "テスト"),
        ("=?x-unknown?Q?Caf=C3=A9?=", "Café"),  # unknown charset: decoded as UTF-8
        ("=?utf-8?B?###?=", "=?utf-8?B?###?="),  # undecodable: kept as written
        ("=?utf-8?Q?unterminated", "=?utf-8?Q?unterminated"),
        ("Plain\n\tfolded subject", "Plain folded subject"),
    ],
)
def test_rfc2047_subjects_are_decoded(header, expected):
    raw = mail(f"From: a@example.org\nSubject: {header}")
    assert parse_email(raw).subject == expected


def test_missing_message_id_gets_a_stable_derived_id():
    headers = "From: a@example.org\nSubject: no id\nDate: Mon, 04 Mar 2024 10:12:00 +0000"
    first = parse_email(mail(headers, "body"))
    again = parse_email(mail("Received: from relay.example.net by mx.example.com\n" + headers, "body"))
    other = parse_email(mail(headers, "another body"))
    assert first.external_id.startswith("<sha256.") and first.external_id.endswith("@no-message-id>")
    assert again.external_id == first.external_id  # a redelivery with a new trace header is the same message
    assert other.external_id != first.external_id
    assert parsed_email_json(mail(headers, "body"))["message_id_derived"] is True


def test_message_id_without_brackets_and_overlong_ids_are_usable():
    assert (
        parse_email(mail("From: a@example.org\nMessage-ID: bare.id@example.org")).external_id
        == "<bare.id@example.org>"
    )
    long_id = parse_email(mail(f"From: a@example.org\nMessage-ID: <{'x' * 400}@example.org>")).external_id
    assert len(long_id) < 120 and long_id.endswith("@long-message-id>")


def test_sender_falls_back_to_sender_then_reply_to_then_any_address_in_from():
    assert parse_email(mail("From: nobody\nSender: helper@example.org")).sender.value == "helper@example.org"
    assert parse_email(mail("From: <>\nReply-To: back@example.org")).sender.value == "back@example.org"
    loose = parse_email(mail("From: Big Bug bb@bug.example.com"))
    assert (loose.sender.value, loose.sender.display_name) == ("bb@bug.example.com", "Big Bug")


def test_unreadable_dates_are_none_and_naive_dates_are_utc():
    assert parse_email(mail("From: a@example.org\nDate: yesterday-ish")).sent_at is None
    naive = parse_email(mail("From: a@example.org\nDate: Mon, 04 Mar 2024 10:12:00 -0000")).sent_at
    assert naive == dt.datetime(2024, 3, 4, 10, 12, tzinfo=dt.UTC)


# --- bodies and attachments -----------------------------------------------------------------------


def test_html_only_message_is_sanitized_and_gets_a_text_version():
    html = (
        '<html><body><p onclick="steal()">Hi team,</p><script>alert(1)</script>'
        '<p>the export fails.</p><div class="gmail_quote">On Mon, 4 Mar 2024 at 09:00, Bob &lt;bob@example.com&gt; '
        'wrote:<br><blockquote class="gmail_quote">old text</blockquote></div></body></html>'
    )
    message = parse_email(mail("From: a@example.org\nContent-Type: text/html; charset=utf-8", html))
    assert "script" not in message.html and "onclick" not in message.html
    assert message.text.splitlines()[:2] == ["Hi team,", "the export fails."]
    assert message.reply_text == "Hi team,\nthe export fails."


MULTIPART = mail(
    """
From: a@example.org
Subject: screenshot
Content-Type: multipart/mixed; boundary="outer"
""",
    b"""--outer\r
Content-Type: multipart/related; boundary="rel"\r
\r
--rel\r
Content-Type: multipart/alternative; boundary="alt"\r
\r
--alt\r
Content-Type: text/plain; charset=utf-8\r
\r
See the screenshot.\r
--alt\r
Content-Type: text/html; charset=utf-8\r
\r
<p>See the <b>screenshot</b>.</p><img src="cid:shot@example.org">\r
--alt--\r
--rel\r
Content-Type: image/png\r
Content-ID: <shot@example.org>\r
Content-Transfer-Encoding: base64\r
\r
iVBORw0KGgo=\r
--rel--\r
--outer\r
Content-Type: application/pdf; name="=?utf-8?B?UmVjaG51bmcgTcOkcnoucGRm?="\r
Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20rates%20M%C3%A4rz.pdf\r
Content-Transfer-Encoding: base64\r
\r
JVBERi0=\r
--outer\r
Content-Type: text/plain; charset=utf-8\r
Content-Disposition: attachment; filename*0*=utf-8''long%20name%20in%20;\r
 filename*1*=two%20pieces.txt\r
\r
notes\r
--outer\r
Content-Type: application/octet-stream\r
Content-Disposition: attachment; filename="..\\\\..\\\\windows\\\\evil.exe"\r
\r
MZ\r
--outer--\r
""",
)


def test_alternative_bodies_inline_images_and_attachments_are_separated():
    message = parse_email(MULTIPART)
    assert message.text == "See the screenshot."
    assert 'src="cid:shot@example.org"' in message.html
    image, pdf, notes, exe = message.attachments
    assert (image.filename, image.content_type, image.content_id, image.is_inline) == (
        "attachment.png", "image/png", "shot@example.org", True,
    )  # fmt: skip
    assert image.content == base64.b64decode("iVBORw0KGgo=")
    assert (pdf.filename, pdf.content, pdf.is_inline) == (
        "€ rates März.pdf",
        b"%PDF-",
        False,
    )  # RFC 2231 wins
    assert notes.filename == "long name in two pieces.txt"  # RFC 2231 continuations
    assert exe.filename == "evil.exe"  # never a path


def test_attachment_json_lists_name_type_size_id_and_inline():
    attachments = parsed_email_json(MULTIPART)["attachments"]
    assert attachments[0] == {
        "filename": "attachment.png", "content_type": "image/png", "size": 8,
        "content_id": "shot@example.org", "inline": True,
    }  # fmt: skip


def test_rfc2047_encoded_filename_is_decoded():
    raw = mail(
        'From: a@example.org\nContent-Type: multipart/mixed; boundary="b"',
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee file\r\n--b\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="=?utf-8?B?UmVjaG51bmcgTcOkcnoucGRm?="\r\n\r\nx\r\n--b--\r\n',
    )
    assert [a.filename for a in parse_email(raw).attachments] == ["Rechnung März.pdf"]


def test_inline_text_parts_around_an_image_are_joined_in_order():
    raw = mail(
        'From: a@example.org\nContent-Type: multipart/mixed; boundary="b"',
        b"--b\r\nContent-Type: text/plain\r\n\r\nBefore the image.\r\n--b\r\nContent-Type: image/gif\r\n"
        b"Content-Disposition: inline\r\nContent-Transfer-Encoding: base64\r\n\r\nR0lGODlh\r\n--b\r\n"
        b"Content-Type: text/plain\r\n\r\nAfter the image.\r\n--b--\r\n",
    )
    message = parse_email(raw)
    assert message.text == "Before the image.\nAfter the image."
    assert [(a.content_type, a.is_inline) for a in message.attachments] == [("image/gif", True)]


def test_forwarded_message_is_kept_as_an_eml_attachment():
    raw = mail(
        'From: a@example.org\nSubject: Fwd: complaint\nContent-Type: multipart/mixed; boundary="b"',
        b"--b\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: customer@example.net\r\nSubject: My order is late\r\nMessage-ID: <late@example.net>\r\n\r\n"
        b"Where is it?\r\n--b--\r\n",
    )
    message = parse_email(raw)
    assert message.text == "See below."
    (forwarded,) = message.attachments
    assert (forwarded.filename, forwarded.content_type) == ("My order is late.eml", "message/rfc822")
    inner = email.message_from_bytes(forwarded.content, policy=email.policy.default)
    assert (inner["Message-ID"], inner.get_content().strip()) == ("<late@example.net>", "Where is it?")


def test_damaged_winmail_dat_is_kept_as_an_attachment():
    raw = mail(
        'From: a@example.org\nContent-Type: multipart/mixed; boundary="b"',
        b"--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b\r\nContent-Type: application/ms-tnef; name=winmail.dat\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(b"not tnef at all")
        + b"\r\n--b--\r\n",
    )
    (attachment,) = parse_email(raw).attachments
    assert (attachment.filename, attachment.content) == ("winmail.dat", b"not tnef at all")


# --- automatic mail -------------------------------------------------------------------------------


def test_auto_reply_headers_mark_the_message_automatic():
    message = parse_email(
        mail("From: a@example.org\nSubject: Out of Office: back Monday\nAuto-Submitted: auto-replied")
    )
    assert message.is_automatic and message.automatic_reason == "Auto-Submitted: auto-replied"
    assert not message.is_bounce
    assert parsed_email_json(mail("From: a@example.org\nX-Autoreply: yes"))["is_auto_reply"] is True


DSN = mail(
    """
From: Mail Delivery System <MAILER-DAEMON@mx.example.com>
To: support@example.com
Subject: Undelivered Mail Returned to Sender
Message-ID: <bounce-1@mx.example.com>
Auto-Submitted: auto-replied
Content-Type: multipart/report; report-type=delivery-status; boundary="r"
""",
    b"""--r\r
Content-Type: text/plain\r
\r
I'm sorry to have to inform you that your message could not be delivered.\r
--r\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mx.example.com\r
\r
Final-Recipient: rfc822; gone@example.net\r
Original-Recipient: rfc822;gone@example.net\r
Action: failed\r
Status: 5.1.1\r
Diagnostic-Code: smtp; 550 5.1.1 <gone@example.net>: Recipient address rejected\r
\r
Final-Recipient: rfc822; slow@example.net\r
Action: delayed\r
Status: 4.4.1\r
--r\r
Content-Type: text/rfc822-headers\r
\r
From: support@example.com\r
To: gone@example.net\r
Subject: Re: [#1042] Your ticket\r
Message-ID: <helpdesk.4711@example.com>\r
--r--\r
""",
)


def test_delivery_status_report_becomes_a_bounce_naming_our_message():
    message = parse_email(DSN)
    assert message.is_bounce and message.is_automatic
    bounce = message.bounce
    assert (bounce.recipient, bounce.action, bounce.status) == ("gone@example.net", "failed", "5.1.1")
    assert bounce.diagnostic_code == "550 5.1.1 <gone@example.net>: Recipient address rejected"
    assert bounce.original_message_id == "<helpdesk.4711@example.com>"
    assert [(r.recipient, r.action) for r in bounce.recipients] == [
        ("gone@example.net", "failed"), ("slow@example.net", "delayed"),
    ]  # fmt: skip
    result = parsed_email_json(DSN)
    assert result["is_bounce"] is True
    assert {k: result["bounce"][k] for k in ("recipient", "status", "action")} == {
        "recipient": "gone@example.net", "status": "5.1.1", "action": "failed",
    }  # fmt: skip


# --- input that is not a message ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b" \r\n\t ", "empty"),
        (b"this is not an email at all\r\n\r\nno headers", "From"),
        (bytes(range(256)) * 20, "From"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512, ".msg"),
        (b"From: \r\nSubject: nobody sent this\r\n\r\nbody", "From"),
    ],
    ids=["empty", "blank", "no-headers", "binary-noise", "outlook-msg", "empty-from"],
)
def test_garbage_is_refused_cleanly(raw, reason):
    with pytest.raises(UnparseableEmail, match=reason):
        parse_email(raw)
    assert reason in parsed_email_json(raw)["error"]


def test_non_bytes_are_refused_and_json_never_raises():
    with pytest.raises(UnparseableEmail):
        parse_email("From: a@example.org\n\nhi")  # type: ignore[arg-type]
    assert "error" in parsed_email_json(None)  # type: ignore[arg-type]


def test_message_without_sender_still_gives_its_content_in_json():
    result = parsed_email_json(b"Subject: orphan\r\n\r\nwho sent this?")
    assert result["from_address"] is None and "From" in result["error"]
    assert (result["subject"], result["text"]) == ("orphan", "who sent this?")


@pytest.mark.parametrize("depth", [60, 1500])
def test_deeply_nested_multiparts_do_not_crash(depth):
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth)
    )
    raw = b"From: a@example.org\r\n" + head + b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    try:
        parse_email(raw)
    except UnparseableEmail:
        pass  # refusing is fine; crashing is not
    json.dumps(parsed_email_json(raw))


def test_overlong_headers_are_cut_but_references_and_recipients_stay_whole():
    # The standard library decodes a long run of encoded words in quadratic time: a 280 kB Subject of them
    # took ten seconds. Such headers are cut; what the message is filed and addressed by is read whole.
    many_words = "=?utf-8?q?a?= " * 20_000
    references = " ".join(f"<ref{n}@example.org>" for n in range(8_000))
    recipients = ", ".join(f"=?utf-8?q?N=C3=A4me_{n}?= <user{n}@example.org>" for n in range(3_000))
    raw = mail(f"From: {many_words}<spam@example.org>\nTo: {recipients}\nSubject: {many_words}\n"
               f"X-Autoreply: {'yes ' * 50_000}\nMessage-ID: <long@example.org>\n"
               f"In-Reply-To: <ref7999@example.org>\nReferences: {references}")

    message = parse_email(raw)

    assert message.subject == "a" * len(message.subject) and 1_000 < len(message.subject) <= 16 * 1024
    assert message.sender.value == "spam@example.org" and len(message.sender.display_name) <= 16 * 1024
    assert len(message.thread.reply_to_external_ids) == 8_000
    assert len(message.to) == 3_000 and message.to[-1] == EmailAddress("user2999@example.org", "Näme 2999")
    assert message.is_automatic
