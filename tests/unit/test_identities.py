import pytest

from channels.identities import InvalidIdentity, normalize_email, normalize_phone, normalize_visitor_id


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Maria@Example.ORG", "maria@example.org"),
        ("Maria Lopez <Maria@Example.org>", "maria@example.org"),
        ("  bob@example.com ", "bob@example.com"),
    ],
)
def test_email_addresses_are_stored_bare_and_lower_case(raw, expected):
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", ["", "not an address", "@example.org", "bob@localhost", "Bob <>"])
def test_malformed_email_addresses_are_refused(raw):
    with pytest.raises(InvalidIdentity):
        normalize_email(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+46 70-123 45 67", "+46701234567"),
        ("whatsapp:+14155550123", "+14155550123"),
        ("+1 (415) 555-0123", "+14155550123"),
        ("0046701234567", None),  # needs a region to read the international prefix
    ],
)
def test_phone_numbers_are_stored_in_e164(raw, expected):
    if expected is None:
        assert normalize_phone(raw, "SE") == "+46701234567"
    else:
        assert normalize_phone(raw) == expected


def test_a_national_number_needs_a_default_region():
    with pytest.raises(InvalidIdentity):
        normalize_phone("070-123 45 67")
    assert normalize_phone("070-123 45 67", "SE") == "+46701234567"


@pytest.mark.parametrize("raw", ["", "hello", "+1", "12"])
def test_impossible_phone_numbers_are_refused(raw):
    with pytest.raises(InvalidIdentity):
        normalize_phone(raw)


def test_visitor_ids_must_be_present_and_bounded():
    assert normalize_visitor_id(" v-123 ") == "v-123"
    with pytest.raises(InvalidIdentity):
        normalize_visitor_id("")
    with pytest.raises(InvalidIdentity):
        normalize_visitor_id("x" * 201)
