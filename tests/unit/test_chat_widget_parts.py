"""The chat widget's pure parts: admin settings, what visitors type, file checks, transcripts."""

import datetime as dt

import pytest

from channels.chat.contact import ContactDetails, ContactInvalid, parse_contact, parse_email
from channels.chat.settings import (
    DEFAULT_COLOR,
    DEFAULT_OFFLINE_MESSAGE,
    SettingsInvalid,
    WidgetAppearance,
    clean_text,
    normalize_color,
    parse_origins,
)
from channels.chat.transcript import TranscriptLine, format_transcript
from channels.chat.uploads import UploadRefused, check_upload, describe_limit, safe_filename, sniff_type

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"


# Settings -------------------------------------------------------------------------------------------------


def test_origins_are_normalized_and_repeats_dropped():
    raw = "https://Shop.Example.com/\nhttps://shop.example.com:443, http://localhost:8080  https://www.example.com"
    assert parse_origins(raw) == ("https://shop.example.com", "http://localhost:8080", "https://www.example.com")


def test_no_origins_is_an_empty_list():
    assert parse_origins("  \n ") == ()


@pytest.mark.parametrize("raw, says", [
    ("shop.example.com", "scheme and host"),
    ("ftp://shop.example.com", "scheme and host"),
    ("https://shop.example.com/checkout", "more than an origin"),
    ("https://shop.example.com/?x=1", "more than an origin"),
    ("https://user:pw@shop.example.com", "more than an origin"),
    ("https://*.example.com", "wildcards"),
    ("https://shop.example.com:99999", "not an origin"),
])
def test_anything_but_an_origin_is_refused_naming_it(raw, says):
    with pytest.raises(SettingsInvalid) as refused:
        parse_origins(f"https://fine.example.com, {raw}")
    assert refused.value.field == "allowed_origins"
    assert says in str(refused.value) and raw in str(refused.value)


def test_too_many_origins_are_refused():
    with pytest.raises(SettingsInvalid):
        parse_origins(" ".join(f"https://site{n}.example.com" for n in range(51)))


@pytest.mark.parametrize("raw, color", [("#1F6FEB", "#1f6feb"), (" #abc ", "#aabbcc"), ("#000000", "#000000")])
def test_hex_colours_are_normalized(raw, color):
    assert normalize_color(raw) == color


@pytest.mark.parametrize("raw", ["red", "#12345", "1f6feb", "#1f6feb;}body{display:none", "", None, "#ggg"])
def test_anything_but_a_hex_colour_is_refused(raw):
    with pytest.raises(SettingsInvalid) as refused:
        normalize_color(raw)
    assert refused.value.field == "primary_color"


def test_texts_are_stripped_and_limited():
    assert clean_text("greeting", "  Hi!\r\nHow can we help?  ", 500) == "Hi!\nHow can we help?"
    with pytest.raises(SettingsInvalid, match="At most 5 characters"):
        clean_text("greeting", "too long", 5)


def test_stored_settings_fall_back_to_defaults_for_what_is_missing_or_broken():
    look = WidgetAppearance.from_saved({"primary_color": "javascript:alert(1)", "ask_email": "yes",
                                        "ask_name": True, "greeting": 42, "offline_message": "  "})
    assert look.primary_color == DEFAULT_COLOR
    assert look.ask_name is True and look.ask_email is False
    assert look.greeting == WidgetAppearance().greeting
    assert look.offline_message == DEFAULT_OFFLINE_MESSAGE
    assert WidgetAppearance.from_saved(None) == WidgetAppearance()


# What visitors type ---------------------------------------------------------------------------------------


def test_a_visitors_name_and_email_are_cleaned():
    assert parse_contact("  Ada   Lovelace ", " Ada@Example.COM ") == ContactDetails("Ada Lovelace", "ada@example.com")
    assert parse_contact(None, None) == ContactDetails(None, None)


@pytest.mark.parametrize("email", ["not an address", "Bob <bob@example.com>", "a@b.com, c@d.com", "a@localhost",
                                   "x" * 250 + "@example.com", 42])
def test_anything_but_one_plain_address_is_refused(email):
    with pytest.raises(ContactInvalid) as refused:
        parse_email(email)
    assert refused.value.field == "email"


def test_an_email_can_be_required():
    with pytest.raises(ContactInvalid, match="email address"):
        parse_contact("Ada", "  ", email_required=True)


def test_an_overlong_name_is_refused():
    with pytest.raises(ContactInvalid) as refused:
        parse_contact("n" * 201, None)
    assert refused.value.field == "name"


# Files ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, kind", [
    (PNG, "image/png"), (JPEG, "image/jpeg"), (b"GIF89a....", "image/gif"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"), (PDF, "application/pdf"), ("Grüße\n".encode(), "text/plain"),
    (b"<!DOCTYPE html><script>x</script>", None), (b"<svg onload=alert(1)>", None), (b"MZ\x90\x00\x03", None),
])
def test_the_type_is_read_from_the_content(content, kind):
    assert sniff_type(content) == kind


def test_an_allowed_file_comes_back_with_its_real_type():
    attachment = check_upload("Holiday Photo.PNG", PNG, 1000)
    assert (attachment.filename, attachment.content_type, attachment.size) == ("Holiday Photo.PNG", "image/png", 40)


@pytest.mark.parametrize("name, content, code", [
    ("big.png", PNG + b"\x00" * 1000, "too_large"),
    ("empty.txt", b"", "empty"),
    ("tool.exe", b"MZ\x90\x00", "type_not_allowed"),
    ("page.html", b"<html></html>", "type_not_allowed"),
    ("logo.svg", b"<svg/>", "type_not_allowed"),
    ("photo.png", b"<html><script>alert(1)</script>", "type_mismatch"),
    ("notes.txt", PNG, "type_mismatch"),
    ("photo.jpg", PNG, "type_mismatch"),
])
def test_a_file_that_is_not_allowed_is_refused_with_a_reason(name, content, code):
    with pytest.raises(UploadRefused) as refused:
        check_upload(name, content, 1000)
    assert refused.value.code == code
    assert str(refused.value)


def test_the_size_refusal_names_the_limit():
    with pytest.raises(UploadRefused, match="limited to 1 MB"):
        check_upload("big.png", PNG + b"\x00" * (1024 * 1024), 1024 * 1024)
    assert describe_limit(10 * 1024 * 1024) == "10 MB" and describe_limit(512) == "512 bytes"


@pytest.mark.parametrize("raw, name", [
    ("../../etc/passwd.txt", "passwd.txt"), ("C:\\Users\\me\\report.pdf", "report.pdf"),
    ("bad\x00\nname.txt", "badname.txt"), ("", "file"), ("...", "file"),
])
def test_file_names_lose_paths_and_control_characters(raw, name):
    assert safe_filename(raw) == name


def test_a_long_file_name_keeps_its_extension():
    name = safe_filename("x" * 300 + ".pdf")
    assert len(name) == 120 and name.endswith(".pdf")


# Transcripts ------------------------------------------------------------------------------------------------


def test_a_transcript_lists_each_message_with_time_speaker_and_files():
    at = dt.datetime(2026, 11, 23, 9, 5, tzinfo=dt.UTC)
    text = format_transcript([
        TranscriptLine(at, "You", "Hello\n<b>is</b> anyone there?"),
        TranscriptLine(at + dt.timedelta(minutes=1), "Ada Agent", "Yes! Send me a photo."),
        TranscriptLine(at + dt.timedelta(minutes=2), "You", "", ("scratch.png",)),
    ], ticket_number=1042, team="Acme support")
    assert "ticket #1042" in text and "Acme support" in text
    assert "[2026-11-23 09:05 UTC] You:\n  Hello\n  <b>is</b> anyone there?" in text
    assert "[2026-11-23 09:06 UTC] Ada Agent:\n  Yes! Send me a photo." in text
    assert "(file: scratch.png)" in text
    assert text.index("Hello") < text.index("Yes!") < text.index("scratch.png")
