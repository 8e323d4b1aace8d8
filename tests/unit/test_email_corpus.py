"""The email parser over the shared corpus: every message parses or is cleanly refused, and the
corpus's own expectations (Stalwart parses and header vectors, MimeKit TNEF lists and mbox
summaries) hold. The corpus is read in place, never copied into the project."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import re

import pytest

from channels.email.parse import UnparseableEmail, message_id_from_headers, parse_email, parsed_email_json
from channels.email.tnef import unpack_tnef
from channels.html import html_to_text
from channels.identities import InvalidIdentity, normalize_email

# tnefparse converts MAPI times with datetime.utcfromtimestamp, deprecated since Python 3.12.
pytestmark = pytest.mark.filterwarnings("ignore:datetime\\.datetime\\.utcfromtimestamp:DeprecationWarning")

CORPUS = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
if not CORPUS.is_dir():
    pytest.skip(f"the shared email corpus is not next to the repository ({CORPUS})", allow_module_level=True)

STALWART = CORPUS / "stalwart-mail-parser"
TNEF_DIR = CORPUS / "mimekit" / "tnef"
MBOX_DIR = CORPUS / "mimekit" / "mbox"

# Folders whose inputs are reply bodies (plain text without headers), not messages.
_BODY_FOLDERS = {"alfonsrv-mail-parser-reply", "zapier-email-reply-parser"}
# Messages the parser refuses on purpose, each for a reason visible in the file.
_KNOWN_REFUSALS = {
    "chatwoot/mail_with_invalid_to.eml": 'From: "Mark Whatney" <> has no address',
    "mikel-mail/mime_emails/raw_email11.eml": "anonymized From xxxxx@xxxxx has no domain",
    "mikel-mail/plain_emails/raw_email_incorrect_header.eml": "a header line with a space ends the header block before From",
    "mimekit/messages/multipart-related-mhtml.txt": "a saved web page (MHTML) with no From",
}


def _normalized(text: str | None) -> str:
    return " ".join((text or "").split())


def _manifest(folder: pathlib.Path) -> list[dict[str, str]]:
    header, *rows = (folder / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()
    columns = header.split("\t")
    return [dict(zip(columns, row.split("\t"), strict=False)) for row in rows if row.strip()]


def _is_message(folder: str, path: str) -> bool:
    """Tell whether a corpus input is a whole RFC 5322 message (others are bodies, HTML or TNEF)."""
    if folder in _BODY_FOLDERS:
        return False
    if folder == "mailgun-talon":
        return path.endswith(".eml") or path == "signature/emails/P/102682_R_S"
    if folder == "mimekit":
        return not path.endswith(".tnef")
    return True


def _split_mbox(raw: bytes) -> list[bytes]:
    """Split an mbox at every line that starts with "From " (mboxo, as Python's mailbox does)."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    starts = [0] if raw.startswith(b"From ") else []
    starts += [m.start() + 1 for m in re.finditer(rb"\nFrom ", raw)]
    return [raw[start:end] for start, end in zip(starts, [*starts[1:], len(raw)], strict=True)]


def _corpus_inputs() -> list:
    params = []
    for folder in sorted(path for path in CORPUS.iterdir() if (path / "MANIFEST.tsv").is_file()):
        for row in _manifest(folder):
            name = f"{folder.name}/{row['path']}"
            if row["role"] == "input":
                params.append(pytest.param(name, None, id=name))
            elif row["role"] == "input-mbox":
                count = len(_split_mbox((folder / row["path"]).read_bytes()))
                params += [pytest.param(name, index, id=f"{name}#{index}") for index in range(count)]
    return params


def _read_input(name: str, mbox_index: int | None) -> bytes:
    raw = (CORPUS / name).read_bytes()
    return raw if mbox_index is None else _split_mbox(raw)[mbox_index]


@pytest.mark.parametrize(("name", "mbox_index"), _corpus_inputs())
def test_every_corpus_input_is_parsed_or_cleanly_refused(name, mbox_index):
    raw = _read_input(name, mbox_index)
    try:
        message = parse_email(raw)
    except UnparseableEmail as error:
        refusal = str(error)
        assert refusal
    else:
        refusal = None
        assert message.dedupe_key == f"email:{message.external_id}"
        assert message.sender.value and "@" in message.sender.value
        # What a poller reads from the headers alone never disagrees with the stored id (None: it downloads).
        header_block = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
        assert message_id_from_headers(header_block) in (None, message.external_id)
    result = parsed_email_json(raw)
    json.dumps(result)  # JSON-able throughout
    assert ("error" in result) == (refusal is not None)


def test_corpus_messages_are_refused_only_for_known_reasons():
    refused = {}
    for folder in sorted(path for path in CORPUS.iterdir() if (path / "MANIFEST.tsv").is_file()):
        for row in _manifest(folder):
            if row["role"] != "input" or not _is_message(folder.name, row["path"]):
                continue
            try:
                parse_email((folder / row["path"]).read_bytes())
            except UnparseableEmail as error:
                refused[f"{folder.name}/{row['path']}"] = str(error)
    stalwart_without_sender = {
        f"stalwart-mail-parser/{path.relative_to(STALWART).with_suffix('.eml')}"
        for path in STALWART.glob("eml/*/*.json")
        if not path.name.endswith(".crlf.json") and _stalwart_sender(json.loads(path.read_text())) is None
    }
    assert set(refused) == set(_KNOWN_REFUSALS) | stalwart_without_sender
    assert all("From" in reason for reason in refused.values())


# --- Stalwart mail-parser: full expected parses ----------------------------------------------------


def _stalwart_header(part: dict, name: str):
    return next((header["value"] for header in part["headers"] if header["name"] == name), None)


def _stalwart_addresses(value) -> list[dict]:
    if not value or "Address" not in value:
        return []
    address = value["Address"]
    return address.get("List") or [a for group in address.get("Group", []) for a in group["addresses"]]


def _stalwart_sender(expected: dict) -> dict | None:
    """Return the first From mailbox that is a usable address, as Stalwart read it."""
    for mailbox in _stalwart_addresses(_stalwart_header(expected["parts"][0], "from")):
        try:
            normalize_email(mailbox.get("address") or "")
        except InvalidIdentity:
            continue
        return mailbox
    return None


def _stalwart_part_name(part: dict) -> str | None:
    for header_name, attribute in (("content_disposition", "filename"), ("content_type", "name")):
        value = _stalwart_header(part, header_name)
        content_type = value.get("ContentType") if isinstance(value, dict) else None
        for item in (content_type or {}).get("attributes") or []:
            if item["name"] == attribute:
                return item["value"]
    return None


def _stalwart_binary(part: dict) -> list[int] | None:
    """Return a leaf's decoded bytes; None for text and for embedded messages (we write those back)."""
    content_type = (_stalwart_header(part, "content_type") or {}).get("ContentType") or {}
    if content_type.get("c_type") == "message":
        return None
    return part["body"].get("Binary") or part["body"].get("InlineBinary")


_STALWART_XFAIL = {
    "eml/malformed/020.eml": "two Content-Type headers on one part: Stalwart reads the second (text/plain), "
    "the stdlib the first (multipart/alternative), so the text body differs",
}


def _stalwart_cases() -> list:
    cases = []
    for eml in sorted(STALWART.glob("eml/*/*.eml")):
        key = str(eml.relative_to(STALWART))
        marks = (
            [pytest.mark.xfail(strict=True, reason=_STALWART_XFAIL[key])] if key in _STALWART_XFAIL else []
        )
        cases.append(pytest.param(eml, marks=marks, id=key))
    return cases


@pytest.mark.parametrize("eml", _stalwart_cases())
def test_parse_matches_stalwart_expectations(eml):
    expected = json.loads(eml.with_suffix(".json").read_text(encoding="utf-8"))
    got = parsed_email_json(eml.read_bytes())
    top = expected["parts"][0]

    subject = _stalwart_header(top, "subject")
    if subject is not None:
        assert _normalized(got["subject"]) == _normalized(subject["Text"])
    sender = _stalwart_sender(expected)
    if sender is not None:
        assert got["from_address"] == sender["address"].lower()
        assert _normalized(got["from_name"]) == _normalized(sender.get("name"))

    for index in expected["text_body"]:
        body = expected["parts"][index]["body"]
        if "Text" in body:
            # Compare up to the first byte Stalwart could not decode: its replacement differs from ours.
            assert _normalized(body["Text"].split("\ufffd")[0]) in _normalized(got["text"])
        elif "Html" in body:
            assert _normalized(html_to_text(body["Html"])) in _normalized(got["text"])
    if any("Html" in expected["parts"][index]["body"] for index in expected["html_body"]):
        assert got["html"] is not None

    attachments = {attachment["filename"]: attachment for attachment in got["attachments"]}
    for index in expected["attachments"]:
        part = expected["parts"][index]
        name = _stalwart_part_name(part)
        if not name:
            continue
        basename = name.replace("\\", "/").rsplit("/", 1)[-1]  # we never keep a sender's path
        assert basename in attachments
        binary = _stalwart_binary(part)
        if binary is not None:
            assert attachments[basename]["size"] == len(binary)


def test_stalwart_binary_attachments_are_decoded_byte_for_byte():
    checked = 0
    for eml in sorted(STALWART.glob("eml/*/*.eml")):
        expected = json.loads(eml.with_suffix(".json").read_text(encoding="utf-8"))
        try:
            message = parse_email(eml.read_bytes())
        except UnparseableEmail:
            continue
        contents = {attachment.filename: attachment.content for attachment in message.attachments}
        for index in expected["attachments"]:
            part = expected["parts"][index]
            name = _stalwart_part_name(part)
            binary = _stalwart_binary(part)
            if name and binary is not None:
                assert contents[name] == bytes(binary)
                checked += 1
    assert checked >= 5


# --- Stalwart header vectors, fed through a real message -----------------------------------------


def _vectors(kind: str) -> list[dict]:
    return json.loads((STALWART / "header-vectors" / f"{kind}.json").read_text(encoding="utf-8"))


def _message_with(name: str, value: str) -> bytes:
    line = value.encode("utf-8")
    return b"From: vectors@example.org\n" + name.encode() + b": " + line.rstrip(b"\r\n") + b"\n\nbody\n"


def _vector_cases(kind: str, xfails: dict[int, str]) -> list:
    return [
        pytest.param(
            vector,
            marks=[pytest.mark.xfail(strict=True, reason=xfails[i])] if i in xfails else [],
            id=f"{kind}-{i}",
        )
        for i, vector in enumerate(_vectors(kind))
    ]


@pytest.mark.parametrize(
    "vector",
    _vector_cases(
        "unstructured",
        {
            18: "Stalwart adds a space between '[SUSPECTED SPAM]' and the encoded word glued to it; we keep none"
        },
    ),
)
def test_subject_decoding_matches_stalwart_vectors(vector):
    got = parsed_email_json(_message_with("Subject", vector["header"]))["subject"]
    assert _normalized(got) == _normalized(vector["expected"])


_ADDRESS_COMMENT_NAMES = "Stalwart builds the display name from RFC 5322 comments; we keep the phrase only"


@pytest.mark.parametrize(
    "vector",
    _vector_cases(
        "address",
        {
            7: _ADDRESS_COMMENT_NAMES,
            10: "we drop the obsolete source route and keep mary@example.net; Stalwart keeps '@node.test:' verbatim",
            17: _ADDRESS_COMMENT_NAMES,
            24: _ADDRESS_COMMENT_NAMES,
            25: _ADDRESS_COMMENT_NAMES,
            30: _ADDRESS_COMMENT_NAMES,
            37: "a name written after the address is not a display name for the stdlib",
        },
    ),
)
def test_recipient_parsing_matches_stalwart_vectors(vector):
    value = vector["expected"]
    mailboxes = (value or {}).get("List") or [
        a for group in (value or {}).get("Group", []) for a in group["addresses"]
    ]
    expected = []
    for mailbox in mailboxes:
        try:
            expected.append(
                (normalize_email(mailbox.get("address") or ""), _normalized(mailbox.get("name")) or None)
            )
        except InvalidIdentity:
            continue  # groups' names, URLs and broken addresses are not recipients
    got = parsed_email_json(_message_with("To", vector["header"]))["to"]
    assert [(r["address"], _normalized(r["name"]) or None) for r in got] == expected


@pytest.mark.parametrize(
    "vector",
    _vector_cases(
        "date",
        {
            7: "a numeric month and a two-digit year between comments is beyond the stdlib's date parser",
            9: "Stalwart reads '4 8 15 16 23 42' as a date; the stdlib does not",
            20: "a POSIX zone name (EST5EDT) is read as UTC by the stdlib",
        },
    ),
)
def test_date_parsing_matches_stalwart_vectors(vector):
    got = parsed_email_json(_message_with("Date", vector["header"]))["date"]
    expected = vector["expected"]
    if expected is None:
        assert got is None
        return
    minutes = (expected["tz_hour"] * 60 + expected["tz_minute"]) * (-1 if expected["tz_before_gmt"] else 1)
    when = dt.datetime(
        expected["year"], expected["month"], expected["day"], expected["hour"], expected["minute"],
        expected["second"], tzinfo=dt.timezone(dt.timedelta(minutes=minutes)),
    )  # fmt: skip
    assert got == when.isoformat()


@pytest.mark.parametrize(
    "vector",
    _vector_cases(
        "id", {6: "a bare id without '@' ('m') is not taken for a message id; we derive one instead"}
    ),
)
def test_message_id_parsing_matches_stalwart_vectors(vector):
    expected = ["".join(found.split()) for found in vector["expected"]]  # ids never keep inner blanks
    references = parsed_email_json(_message_with("References", vector["header"]))["references"]
    assert [found.strip("<>") for found in references] == expected
    message_id = parsed_email_json(_message_with("Message-ID", vector["header"]))["message_id"]
    assert message_id == f"<{expected[0]}>"


# --- MimeKit: TNEF (winmail.dat) and mbox ----------------------------------------------------------


def _unix_text(data: bytes) -> bytes:
    # MimeKit's expected files were stored with LF line endings; TNEF carries CRLF.
    return data.replace(b"\r\n", b"\n").rstrip(b"\x00")


@pytest.mark.parametrize(
    "name",
    [
        "attachments",
        pytest.param(
            "christmas",
            marks=pytest.mark.xfail(
                strict=True,
                reason="two embedded MAPI messages become placeholder 'Untitled Attachment' files in MimeKit; "
                "tnefparse skips embedded messages",
            ),
        ),
        "panic",
    ],
)
def test_tnef_yields_the_files_mimekit_lists(name):
    content = unpack_tnef((TNEF_DIR / f"{name}.tnef").read_bytes())
    assert content is not None
    names = [attachment.filename for attachment in content.attachments]
    if content.html:
        names.append("body.html")
    expected = [line for line in (TNEF_DIR / f"{name}.list").read_text(encoding="utf-8").splitlines() if line]
    assert sorted(names) == sorted(expected)


@pytest.mark.parametrize("name", ["attachments", "christmas", "panic"])
def test_tnef_contents_match_mimekit_extractions(name):
    content = unpack_tnef((TNEF_DIR / f"{name}.tnef").read_bytes())
    extracted = {path.name: path.read_bytes() for path in (TNEF_DIR / name).iterdir()}
    expected_contents = {_unix_text(data) for data in extracted.values()}
    for attachment in content.attachments:
        if attachment.filename == "body.rtf":
            assert attachment.content == extracted["message.rtf"]
        else:
            assert _unix_text(attachment.content) in expected_contents, attachment.filename
    if content.html:
        assert _unix_text(content.html.encode("latin-1")) == _unix_text(extracted["message.html"])


def test_winmail_dat_is_unpacked_into_the_message_body():
    message = parse_email((TNEF_DIR / "ukr.eml").read_bytes())
    assert [a.filename for a in message.attachments] == []  # winmail.dat carried only the body
    assert "шостий" in message.text  # the koi8-r plain part
    assert message.html is not None and "шостий" in message.html  # the HTML came from winmail.dat


def _mbox_summary(name: str) -> list[dict[str, str]]:
    entries = []
    for block in (MBOX_DIR / f"{name}-summary.txt").read_text(encoding="utf-8").split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(" ")
        )
        if fields:
            entries.append(fields)
    return entries


@pytest.mark.parametrize("name", ["content-length", "issue1189"])
def test_mbox_messages_match_mimekit_summary(name):
    messages = _split_mbox((MBOX_DIR / f"{name}.mbox.txt").read_bytes())
    summary = _mbox_summary(name)
    assert len(messages) == len(summary)
    for raw, expected in zip(messages, summary, strict=True):
        got = parsed_email_json(raw)
        assert _normalized(got["subject"]) == _normalized(expected.get("Subject"))
        try:
            expected_from = normalize_email(expected["From"])
        except InvalidIdentity:
            continue  # a UUCP-era sender without a domain ("develop!nextmime@ebony") is not usable
        assert got["from_address"] == expected_from


# --- what the corpus says about particular messages (read off the files) --------------------------


def _parse(name: str):
    return parse_email((CORPUS / name).read_bytes())


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("chatwoot/non_utf_encoded_mail.eml", "أهلين عميلنا الكريم"),  # RFC 2047 UTF-8, three encoded words
        ("mikel-mail/multi_charset/japanese.eml", "まみむめも"),
        ("mikel-mail/plain_emails/raw_email.eml", "NOTE: 한국말로 하는 것"),  # EUC-KR
        (
            "mikel-mail/plain_emails/raw_email_with_partially_quoted_subject.eml",
            'Re: Test: "漢字" mid "漢字" tail',
        ),
        ("mikel-mail/rfc2822/example14.eml", "Re: TEST テストテスト"),  # ISO-2022-JP
        ("mimekit/messages/japanese.txt", "日本語メールテスト (testing Japanese emails)"),
        ("spamscope-mail-parser/mail_test_12", "代开各地增值税发票"),  # GB2312
        ("mikel-mail/rfc6532/utf8_headers.eml", "Säying Hello"),  # raw UTF-8 header (RFC 6532)
        ("django-helpdesk/all-special-chars.eml", "Testovácí email"),
    ],
)
def test_encoded_subjects_from_the_corpus_are_decoded(name, subject):
    assert _parse(name).subject == subject


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("mikel-mail/multi_charset/japanese_shift_jis.eml", "このメールはテスト用のメールです。"),
        ("spamscope-mail-parser/mail_test_12", "我公司可代开各类增值税发票"),
        ("cpython-email/msg_10.txt", "¡This is a Quoted Printable encoded message!"),
        ("mimekit/messages/japanese.txt", "日本語が"),
        ("django-helpdesk/utf-nondecodable.eml", "Poprosím, aby se ve výsledné tabulce"),
        (
            "mikel-mail/plain_emails/raw_email10.eml",
            "Envoyé par le service de messagerie texte de Bell Mobilité.",
        ),
    ],
)
def test_bodies_in_many_charsets_are_decoded(name, fragment):
    assert fragment in _parse(name).text


@pytest.mark.parametrize(
    ("name", "filenames"),
    [
        ("mikel-mail/multi_charset/japanese_attachment.eml", ["てすと.txt"]),
        (
            "mikel-mail/multi_charset/japanese_attachment_long_name.eml",
            ["かきくけこかきくけこかきくけこかきくけこかきくけこ.txt"],
        ),
        ("mikel-mail/attachment_emails/attachment_nonascii_filename.eml", ["ciële.txt"]),
        ("mikel-mail/attachment_emails/attachment_with_unquoted_name.eml", ["This is a test.txt"]),
        ("mikel-mail/attachment_emails/attachment_message_rfc822.eml", ["ForwardedMessage.eml"]),
        ("spamscope-mail-parser/mail_test_2", ["intestazione.jpg", "logometeo.jpg", "Bollettino.pdf"]),
    ],
)
def test_attachment_names_from_the_corpus_are_decoded(name, filenames):
    assert [attachment.filename for attachment in _parse(name).attachments] == filenames


def test_unquoted_boundary_with_equals_sign_is_still_split():
    message = _parse("mikel-mail/plain_emails/raw_email_bad_time.eml")
    assert message.text.startswith("Filter2: This message has been scanned")
    assert "Content-Type" not in message.text and message.html is not None


def test_gmail_bounce_names_the_failed_recipient_and_our_message():
    message = _parse("chatwoot/bounced_gmail.eml")
    assert message.is_bounce and message.is_automatic
    assert (message.bounce.recipient, message.bounce.action, message.bounce.status) == (
        "alex.jones@fictionalcorp.com", "failed", "5.1.1",
    )  # fmt: skip
    assert message.bounce.original_message_id == (
        "<conversation/93775311-9416-4428-964b-862001f8a8b2/messages/27855337@gmail.com>"
    )


def test_postfix_bounce_lists_every_failed_recipient():
    bounce = _parse("mikel-mail/multipart_report_emails/multi_address_bounce2.eml").bounce
    assert len(bounce.recipients) == 5
    assert all((r.action, r.status) == ("failed", "5.1.1") for r in bounce.recipients)
    assert bounce.recipient == "bbbbvhvbbvkjbhfbvbvjhb@gmail.com"
    assert bounce.diagnostic_code.startswith(
        "550-5.1.1 The email account that you tried to reach does not exist."
    )
    assert bounce.original_message_id == "<118707422.15521266992174819.JavaMail.root@lvmail01>"


def test_delay_warning_is_automatic_but_not_a_bounce():
    message = _parse("mikel-mail/multipart_report_emails/report_422.eml")
    assert message.is_automatic and not message.is_bounce
    assert (message.bounce.action, message.bounce.status) == ("delayed", "4.2.2")


@pytest.mark.parametrize(
    "name", ["mimekit/messages/delivery-status.txt", "mimekit/messages/delivery-status-no-blank-line.txt"]
)
def test_old_sendmail_report_is_read_with_or_without_the_blank_line(name):
    bounce = _parse(name).bounce
    assert (bounce.recipient, bounce.action) == ("newsletter-request@imusic.com", "failed")
    assert bounce.diagnostic_code == "500 (err.nosuchuser)"
    assert bounce.original_message_id == "<31FC7EB4.41C6@netscape.com>"


def test_report_with_base64_recipient_block_is_decoded():
    bounce = _parse("mimekit/messages/bounce.txt").bounce
    assert (bounce.recipient, bounce.status) == ("netec.test@netecgc.com", "5.1.1")
    assert bounce.original_message_id.startswith("<44565655.JitbitHelpdesk.13439.")


def test_read_receipt_is_automatic_but_not_a_bounce():
    message = _parse("mimekit/messages/disposition-notification.txt")
    assert message.is_automatic and not message.is_bounce and message.bounce is None


def test_threading_headers_from_the_corpus():
    message = _parse("chatwoot/multiple_in_reply_to.eml")
    assert message.thread.reply_to_external_ids == (
        "<4e6e35f5a38b4_479f13bb90078171@small-app-01.mail>",
        "<4e6e35f5a38b4_479f13bb90078131@small-app-01.mail>",
        "<4e6e35f5a38b4_479f13bb90078178@small-app-01.mail>",
    )
