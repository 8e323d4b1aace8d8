"""Language detection: the configured languages only, and None when the text cannot tell."""

from __future__ import annotations

import pytest

from helpdesk.triage.language import DEFAULT_LANGUAGES, UnknownLanguage, detect_language, parse_languages

pytestmark = pytest.mark.usefixtures("no_app")


@pytest.fixture
def no_app():
    """Pure code under test: skip the app context and the table clean-up after each test."""


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Hello, my invoice shows the wrong amount and I would like a refund.", "en"),
        ("Guten Tag, meine Rechnung zeigt den falschen Betrag. Bitte helfen Sie mir.", "de"),
        ("Bonjour, ma facture indique un montant erroné, pouvez-vous m'aider ?", "fr"),
        ("Hej, min faktura visar fel belopp och jag vill ha pengarna tillbaka.", "sv"),
        ("Hola, mi factura muestra un importe incorrecto y quisiera un reembolso.", "es"),
        ("Hej, min faktura viser det forkerte beløb, og jeg vil gerne have pengene tilbage.", "da"),
        ("Hallo, mijn factuur toont het verkeerde bedrag en ik wil graag mijn geld terug.", "nl"),
        ("Meine Bestellung ist nicht angekommen", "de"),
        ("Min order har inte kommit fram", "sv"),
    ],
)
def test_each_configured_language_is_recognized(text, language):
    assert detect_language(text, DEFAULT_LANGUAGES) == language


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ok",
        "Thanks!",
        "Tack!",
        "12345 678",
        "https://example.com/orders/12345 info@example.com 0701234567",
    ],
)
def test_text_too_short_to_tell_gives_none(text):
    assert detect_language(text, DEFAULT_LANGUAGES) is None


def test_only_the_configured_languages_are_candidates():
    italian = "Buongiorno, la mia fattura mostra un importo sbagliato e vorrei un rimborso."
    assert detect_language(italian, ["it", "en"]) == "it"
    assert detect_language(italian, DEFAULT_LANGUAGES) != "it"


def test_no_configured_language_detects_nothing():
    assert detect_language("Hello, my invoice shows the wrong amount.", []) is None


def test_links_and_numbers_do_not_count_as_words():
    text = "Guten Tag, meine Bestellung ist nicht angekommen https://shop.example/orders/12345"
    assert detect_language(text, DEFAULT_LANGUAGES) == "de"


@pytest.mark.parametrize(
    ("value", "codes"),
    [
        ("en,de, fr", ("de", "en", "fr")),
        (" SV , sv,da,", ("da", "sv")),
        (["nl", "en"], ("en", "nl")),
        ("", ()),
    ],
)
def test_language_lists_are_read_from_settings(value, codes):
    assert parse_languages(value) == codes


@pytest.mark.parametrize("value", ["en,xx", "english", "en,d"])
def test_an_unknown_language_code_is_refused(value):
    with pytest.raises(UnknownLanguage):
        parse_languages(value)
