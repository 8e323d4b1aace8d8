"""Business calendars: the JSON shape, its errors, and which hours each date is open."""

from __future__ import annotations

import copy
import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpdesk.triage.calendar import (
    MINUTES_PER_DAY,
    WEEKDAYS,
    CalendarError,
    OpeningInterval,
    calendar_from_dict,
    calendar_from_json,
    calendar_to_dict,
    calendar_to_json,
    format_time_of_day,
    load_calendar,
)

pytestmark = pytest.mark.usefixtures("no_app")

property_test = settings(max_examples=200, deadline=None, database=None)

STOCKHOLM_OFFICE = {
    "name": "Stockholm office",
    "timezone": "Europe/Stockholm",
    "hours": {"mon": [["08:00", "12:00"], ["13:00", "17:00"]], "tue": [["08:00", "17:00"]], "sat": []},
    "holidays": {"country": "SE", "subdivision": None},
    "closed_dates": ["2026-12-24"],
    "open_dates": {"2026-12-27": [["10:00", "14:00"]]},
}
ZONES = ("Europe/Stockholm", "America/New_York", "UTC", "Asia/Kolkata", "Australia/Lord_Howe")


@pytest.fixture
def no_app():
    """Pure code under test: skip the app context and the table clean-up after each test."""


def with_changes(**changes) -> dict:
    calendar = copy.deepcopy(STOCKHOLM_OFFICE)
    calendar.update(changes)
    return calendar


@st.composite
def interval_lists(draw, max_intervals: int = 3) -> list[list[str]]:
    """Draw a day's intervals in order, without overlaps, in the JSON shape."""
    points = sorted(draw(st.lists(st.integers(0, MINUTES_PER_DAY), max_size=2 * max_intervals, unique=True)))
    pairs = zip(points[0::2], points[1::2], strict=False)  # an odd last point is dropped
    return [[format_time_of_day(opens), format_time_of_day(closes)] for opens, closes in pairs]


@st.composite
def calendar_dicts(
    draw, first_day: dt.date = dt.date(2025, 1, 1), last_day: dt.date = dt.date(2028, 12, 31)
) -> dict:
    """Draw a valid calendar in the full JSON shape that calendar_to_dict writes."""
    data: dict = {
        "name": draw(st.sampled_from(["Stockholm", "New York", "Follow the sun"])),
        "timezone": draw(st.sampled_from(ZONES)),
    }
    if draw(st.integers(0, 9)) == 0:
        data["always_open"] = True
    else:
        weekdays = draw(st.lists(st.sampled_from(WEEKDAYS), unique=True))
        data["hours"] = {weekday: draw(interval_lists()) for weekday in weekdays}
    data["holidays"] = draw(
        st.sampled_from(
            [
                None,
                {"country": "SE", "subdivision": None},
                {"country": "SE", "subdivision": None, "categories": ["public", "de_facto"]},
                {"country": "US", "subdivision": "NY"},
            ]
        )
    )
    dates = draw(st.lists(st.dates(first_day, last_day), unique=True, max_size=8))
    split = draw(st.integers(0, len(dates)))
    data["closed_dates"] = [day.isoformat() for day in dates[:split]]
    data["open_dates"] = {day.isoformat(): draw(interval_lists().filter(bool)) for day in dates[split:]}
    return data


def test_the_documented_example_round_trips_exactly():
    calendar = calendar_from_dict(STOCKHOLM_OFFICE)
    assert calendar_to_dict(calendar) == STOCKHOLM_OFFICE
    assert list(calendar_to_dict(calendar)) == list(STOCKHOLM_OFFICE)


@property_test
@given(calendar_dicts())
def test_any_calendar_round_trips_through_json_exactly(data):
    calendar = calendar_from_dict(data)
    written = calendar_to_dict(calendar)
    assert written == data
    assert calendar_from_dict(json.loads(json.dumps(written))) == calendar


def test_the_example_is_open_in_split_shifts_and_closed_on_weekdays_left_out():
    calendar = calendar_from_dict(STOCKHOLM_OFFICE)
    monday, tuesday, wednesday, saturday = (dt.date(2026, 3, day) for day in (2, 3, 4, 7))
    assert calendar.opening_intervals_on(monday) == (
        OpeningInterval(8 * 60, 12 * 60),
        OpeningInterval(13 * 60, 17 * 60),
    )
    assert calendar.opening_intervals_on(tuesday) == (OpeningInterval(8 * 60, 17 * 60),)
    assert calendar.opening_intervals_on(wednesday) == ()
    assert calendar.opening_intervals_on(saturday) == ()


def test_public_holidays_close_the_day():
    calendar = calendar_from_dict(with_changes(hours={day: [["09:00", "17:00"]] for day in WEEKDAYS[:5]}))
    assert calendar.opening_intervals_on(dt.date(2026, 12, 25)) == ()  # Christmas Day, a Friday
    assert calendar.opening_intervals_on(dt.date(2026, 4, 6)) == ()  # Easter Monday
    assert calendar.opening_intervals_on(dt.date(2026, 12, 22)) != ()


def test_midsummer_eve_closes_only_with_the_de_facto_category():
    weekdays = {day: [["09:00", "17:00"]] for day in WEEKDAYS[:5]}
    midsummer_eve = dt.date(2026, 6, 19)
    public_only = calendar_from_dict(with_changes(hours=weekdays))
    with_de_facto = calendar_from_dict(
        with_changes(
            hours=weekdays,
            holidays={"country": "SE", "subdivision": None, "categories": ["public", "de_facto"]},
        )
    )
    assert public_only.opening_intervals_on(midsummer_eve) != ()
    assert with_de_facto.opening_intervals_on(midsummer_eve) == ()


def test_subdivision_holidays_apply_only_there():
    weekdays = {day: [["09:00", "17:00"]] for day in WEEKDAYS[:5]}
    lincolns_birthday = dt.date(2026, 2, 12)  # a New York state holiday, not a federal one
    federal = calendar_from_dict(
        with_changes(
            timezone="America/New_York",
            hours=weekdays,
            closed_dates=[],
            open_dates={},
            holidays={"country": "US", "subdivision": None},
        )
    )
    new_york = calendar_from_dict(
        with_changes(
            timezone="America/New_York",
            hours=weekdays,
            closed_dates=[],
            open_dates={},
            holidays={"country": "US", "subdivision": "NY"},
        )
    )
    assert federal.opening_intervals_on(lincolns_birthday) != ()
    assert new_york.opening_intervals_on(lincolns_birthday) == ()
    assert federal.opening_intervals_on(dt.date(2026, 11, 26)) == ()  # Thanksgiving


def test_closed_dates_close_and_open_dates_replace_the_day():
    calendar = calendar_from_dict(
        with_changes(open_dates={"2026-12-27": [["10:00", "14:00"]], "2026-12-25": [["09:00", "12:00"]]})
    )
    assert calendar.opening_intervals_on(dt.date(2026, 12, 24)) == ()
    assert calendar.opening_intervals_on(dt.date(2026, 12, 27)) == (OpeningInterval(600, 840),)  # a Sunday
    # An open date wins over a public holiday.
    assert calendar.opening_intervals_on(dt.date(2026, 12, 25)) == (OpeningInterval(540, 720),)


def test_always_open_is_open_around_the_clock_except_on_holidays():
    data = with_changes(always_open=True)
    del data["hours"]
    calendar = calendar_from_dict(data)
    assert calendar.opening_intervals_on(dt.date(2026, 3, 8)) == (OpeningInterval(0, MINUTES_PER_DAY),)
    assert calendar.opening_intervals_on(dt.date(2026, 12, 25)) == ()
    assert calendar_to_dict(calendar) == data


def test_24_00_means_midnight_at_the_end_of_the_day():
    calendar = calendar_from_dict(
        with_changes(hours={"fri": [["20:00", "24:00"]], "sat": [["00:00", "02:00"]]})
    )
    assert calendar.opening_intervals_on(dt.date(2026, 3, 6)) == (OpeningInterval(20 * 60, MINUTES_PER_DAY),)
    assert calendar_to_dict(calendar)["hours"]["fri"] == [["20:00", "24:00"]]


def test_adjacent_intervals_are_allowed():
    calendar = calendar_from_dict(with_changes(hours={"mon": [["08:00", "12:00"], ["12:00", "13:00"]]}))
    assert len(calendar.opening_intervals_on(dt.date(2026, 3, 2))) == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"hours": {"mon": [["08:00", "12:00"], ["13:00", "12:00"]]}},
            "hours.mon[1]: end 12:00 is not after start 13:00",
        ),
        (
            {"hours": {"mon": [["08:00", "12:00"], ["11:00", "17:00"]]}},
            "hours.mon[1]: starts at 11:00, before the previous interval ends at 12:00",
        ),
        (
            {"hours": {"mon": [["13:00", "17:00"], ["08:00", "12:00"]]}},
            "hours.mon[1]: starts at 08:00, before the previous interval ends at 17:00",
        ),
        ({"hours": {"tue": [["08:00", "25:00"]]}}, "hours.tue[0]: end '25:00' is not a time of day"),
        ({"hours": {"tue": [["8:00", "17:00"]]}}, "hours.tue[0]: start '8:00' is not a time of day"),
        ({"hours": {"tue": [["08:60", "17:00"]]}}, "hours.tue[0]: start '08:60' is not a time of day"),
        ({"hours": {"tue": [["24:00", "24:00"]]}}, "hours.tue[0]: start 24:00 is the end of the day"),
        ({"hours": {"tue": [["08:00", "12:00", "17:00"]]}}, "hours.tue[0]: must be a [start, end] pair"),
        ({"hours": {"tue": ["08:00-17:00"]}}, "hours.tue[0]: must be a [start, end] pair"),
        ({"hours": {"tue": "08:00-17:00"}}, "hours.tue: must be a list of [start, end] pairs"),
        ({"hours": {"monday": [["08:00", "17:00"]]}}, "hours.monday: unknown weekday"),
        ({"hours": [["08:00", "17:00"]]}, "hours: must be an object of weekdays"),
        ({"timezone": "Mars/Base"}, "timezone: unknown time zone 'Mars/Base'"),
        ({"timezone": "../../etc/passwd"}, "timezone: unknown time zone '../../etc/passwd'"),
        ({"timezone": "localtime"}, "timezone: 'localtime' depends on the server"),
        ({"timezone": None}, "timezone: must be an IANA time zone name"),
        ({"name": ""}, "name: must be a non-empty string"),
        ({"holidays": {"country": "XX", "subdivision": None}}, "holidays.country: unknown country 'XX'"),
        ({"holidays": {"subdivision": None}}, "holidays.country: unknown country None"),
        (
            {"holidays": {"country": "US", "subdivision": "ZZ"}},
            "holidays.subdivision: unknown subdivision 'ZZ' for country 'US'",
        ),
        (
            {"holidays": {"country": "SE", "subdivision": None, "categories": ["public", "pagan"]}},
            "holidays.categories[1]: unknown category 'pagan' for country 'SE'",
        ),
        ({"holidays": {"country": "SE", "region": "AB"}}, "holidays.region: unknown field"),
        ({"holidays": "SE"}, "holidays: must be null or an object"),
        ({"closed_dates": ["2026-02-30"]}, "closed_dates[0]: '2026-02-30' is not a date (YYYY-MM-DD)"),
        ({"closed_dates": ["2026-12-24", "24/12/2026"]}, "closed_dates[1]: '24/12/2026' is not a date"),
        ({"closed_dates": ["2026-12-24", "2026-12-24"]}, "closed_dates[1]: 2026-12-24 is listed twice"),
        ({"closed_dates": "2026-12-24"}, "closed_dates: must be a list of dates"),
        (
            {"open_dates": {"2026-13-01": [["10:00", "14:00"]]}},
            "open_dates.2026-13-01: '2026-13-01' is not a date",
        ),
        (
            {"open_dates": {"2026-12-27": [["14:00", "10:00"]]}},
            "open_dates.2026-12-27[0]: end 10:00 is not after",
        ),
        ({"open_dates": {"2026-12-27": []}}, "open_dates.2026-12-27: no open intervals"),
        (
            {"open_dates": {"2026-12-24": [["10:00", "14:00"]]}},
            "open_dates.2026-12-24: the date is also in closed_dates",
        ),
        ({"always_open": True}, "hours: leave hours out when always_open is true"),
        ({"always_open": "yes"}, "always_open: must be true or false"),
        ({"holiday": None}, "holiday: unknown field"),
    ],
)
def test_a_malformed_calendar_names_the_offending_field(changes, message):
    with pytest.raises(CalendarError) as raised:
        calendar_from_dict(with_changes(**changes))
    assert str(raised.value).startswith(message)


def test_a_calendar_without_hours_or_always_open_is_refused():
    data = with_changes()
    del data["hours"]
    with pytest.raises(CalendarError, match=r"^hours: missing"):
        calendar_from_dict(data)


def test_a_calendar_must_be_an_object():
    with pytest.raises(CalendarError, match="must be a JSON object"):
        calendar_from_dict([STOCKHOLM_OFFICE])  # type: ignore[arg-type]


def test_load_calendar_reads_the_json_file(tmp_path):
    path = tmp_path / "stockholm.json"
    path.write_text(json.dumps(STOCKHOLM_OFFICE), encoding="utf-8")
    assert calendar_to_dict(load_calendar(path)) == STOCKHOLM_OFFICE


def test_load_calendar_explains_broken_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"name": "Stockholm office",\n "timezone": }', encoding="utf-8")
    with pytest.raises(CalendarError, match=r"not valid JSON: .* \(line 2, column 14\)"):
        load_calendar(path)


def test_calendar_json_written_for_download_is_what_load_calendar_reads(tmp_path):
    text = calendar_to_json(calendar_from_dict(STOCKHOLM_OFFICE))
    assert json.loads(text) == STOCKHOLM_OFFICE
    path = tmp_path / "downloaded.json"
    path.write_text(text, encoding="utf-8")
    assert calendar_to_dict(load_calendar(path)) == STOCKHOLM_OFFICE


def test_calendar_json_from_an_upload_reads_bytes_with_a_byte_order_mark():
    raw = b"\xef\xbb\xbf" + json.dumps(STOCKHOLM_OFFICE).encode()
    assert calendar_to_dict(calendar_from_json(raw)) == STOCKHOLM_OFFICE


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe{}", "the file is not UTF-8 text"),
        (b'{"name": "x",', "not valid JSON"),
        (b'{"name": "x", "timezone": "UTC", "hours": {"mon": [["9:00", "17:00"]]}}', "hours.mon[0]: start"),
    ],
)
def test_calendar_json_that_does_not_read_names_the_problem(raw, message):
    with pytest.raises(CalendarError) as caught:
        calendar_from_json(raw)
    assert str(caught.value).startswith(message), str(caught.value)
