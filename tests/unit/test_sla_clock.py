"""The SLA clock: business minutes over calendars, time zones, DST changes, holidays and pauses."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import click
import pytest
from click.testing import CliRunner
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from helpdesk.triage.calendar import CalendarError, calendar_from_dict
from helpdesk.triage.commands import register
from helpdesk.triage.sla import (
    add_business_minutes,
    business_minutes_between,
    due_at,
    elapsed_business_minutes,
)
from tests.unit.test_business_calendar import ZONES, calendar_dicts

pytestmark = pytest.mark.usefixtures("no_app")

property_test = settings(max_examples=200, deadline=None, database=None)

STOCKHOLM = ZoneInfo("Europe/Stockholm")
NEW_YORK = ZoneInfo("America/New_York")
UTC = dt.UTC
NINE_TO_FIVE = [["09:00", "17:00"]]
FAR_FUTURE = dt.datetime.max.replace(tzinfo=UTC)


@pytest.fixture
def no_app():
    """Pure code under test: skip the app context and the table clean-up after each test."""


def office(timezone: str = "Europe/Stockholm", hours: dict | None = None, **fields):
    """Build a calendar open Monday to Friday 09-17 unless told otherwise."""
    weekdays = {day: NINE_TO_FIVE for day in ("mon", "tue", "wed", "thu", "fri")}
    data = {"name": "Support", "timezone": timezone, "hours": weekdays if hours is None else hours, **fields}
    return calendar_from_dict(data)


def around_the_clock(timezone: str = "Europe/Stockholm", **fields):
    return calendar_from_dict({"name": "24/7", "timezone": timezone, "always_open": True, **fields})


def at(text: str, zone: ZoneInfo | dt.timezone = STOCKHOLM) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=zone)


# --- table tests


def test_a_ticket_created_friday_afternoon_is_due_monday_morning():
    friday = at("2026-03-06 16:55")
    assert add_business_minutes(friday, 120, office()) == at("2026-03-09 10:55")


def test_a_start_on_saturday_starts_the_clock_at_monday_opening():
    saturday = at("2026-03-07 11:20")
    assert add_business_minutes(saturday, 0, office()) == at("2026-03-09 09:00")
    assert add_business_minutes(saturday, 30, office()) == at("2026-03-09 09:30")


def test_a_target_ending_exactly_at_closing_time_is_due_at_closing_time():
    assert add_business_minutes(at("2026-03-09 15:00"), 120, office()) == at("2026-03-09 17:00")


def test_zero_minutes_inside_hours_is_the_start_itself():
    assert add_business_minutes(at("2026-03-09 10:15"), 0, office()) == at("2026-03-09 10:15")


def test_zero_minutes_at_closing_time_is_the_next_opening():
    assert add_business_minutes(at("2026-03-09 17:00"), 0, office()) == at("2026-03-10 09:00")


def test_split_shifts_skip_the_lunch_break():
    calendar = office(hours={"mon": [["08:00", "12:00"], ["13:00", "17:00"]]})
    assert add_business_minutes(at("2026-03-09 11:30"), 60, calendar) == at("2026-03-09 13:30")
    assert add_business_minutes(at("2026-03-09 12:15"), 30, calendar) == at("2026-03-09 13:30")
    assert business_minutes_between(at("2026-03-09 08:00"), at("2026-03-09 17:00"), calendar) == 8 * 60


def test_an_open_date_opens_a_sunday():
    calendar = office(open_dates={"2026-03-08": [["10:00", "14:00"]]})
    assert add_business_minutes(at("2026-03-07 12:00"), 60, calendar) == at("2026-03-08 11:00")
    assert add_business_minutes(at("2026-03-08 13:30"), 60, calendar) == at("2026-03-09 09:30")


def test_an_open_date_can_shorten_a_day():
    calendar = office(open_dates={"2026-03-06": [["09:00", "12:00"]]})
    assert add_business_minutes(at("2026-03-06 11:00"), 120, calendar) == at("2026-03-09 10:00")


def test_a_closed_date_is_skipped():
    calendar = office(closed_dates=["2026-03-09"])
    assert add_business_minutes(at("2026-03-06 16:55"), 120, calendar) == at("2026-03-10 10:55")


def test_always_open_counts_every_minute():
    assert add_business_minutes(at("2026-03-06 16:55"), 120, around_the_clock()) == at("2026-03-06 18:55")
    assert (
        business_minutes_between(at("2026-03-07 00:00"), at("2026-03-09 00:00"), around_the_clock()) == 2880
    )


def test_intervals_ending_at_24_00_run_on_into_the_next_day():
    calendar = office(hours={"fri": [["20:00", "24:00"]], "sat": [["00:00", "02:00"]]})
    assert add_business_minutes(at("2026-03-06 23:30"), 60, calendar) == at("2026-03-07 00:30")
    assert business_minutes_between(at("2026-03-06 00:00"), at("2026-03-08 00:00"), calendar) == 6 * 60


def test_the_same_utc_moment_is_due_by_each_office_s_own_clock():
    monday_afternoon_in_stockholm = dt.datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
    assert add_business_minutes(monday_afternoon_in_stockholm, 60, office("Europe/Stockholm")) == at(
        "2026-03-03 09:30", STOCKHOLM
    )
    assert add_business_minutes(monday_afternoon_in_stockholm, 60, office("America/New_York")) == at(
        "2026-03-02 11:30", NEW_YORK
    )


def test_offices_follow_their_own_dst_dates():
    # New York has moved its clocks on 8 March; Stockholm waits until 29 March.
    utc_start = dt.datetime(2026, 3, 16, 15, 30, tzinfo=UTC)
    due_in_new_york = add_business_minutes(utc_start, 60, office("America/New_York"))
    assert due_in_new_york == at("2026-03-16 12:30", NEW_YORK)
    assert due_in_new_york.utcoffset() == dt.timedelta(hours=-4)
    assert add_business_minutes(utc_start, 60, office("Europe/Stockholm")) == at(
        "2026-03-17 09:30", STOCKHOLM
    )


def test_results_are_in_the_calendar_s_time_zone():
    due = add_business_minutes(dt.datetime(2026, 3, 9, 8, 0, tzinfo=UTC), 30, office("Europe/Stockholm"))
    assert due.tzinfo == STOCKHOLM
    assert due.isoformat() == "2026-03-09T09:30:00+01:00"


def test_a_naive_start_is_read_in_the_calendar_s_time_zone():
    naive_friday = dt.datetime(2026, 3, 6, 16, 55)
    assert add_business_minutes(naive_friday, 120, office("America/New_York")) == at(
        "2026-03-09 10:55", NEW_YORK
    )


def test_seconds_are_dropped_from_the_start():
    start = at("2026-03-06 16:55:42.5")
    assert add_business_minutes(start, 120, office()) == at("2026-03-09 10:55")
    # 16:55 to 16:59, both floored to the minute.
    assert business_minutes_between(start, at("2026-03-06 16:59:59"), office()) == 4


def test_a_negative_target_is_refused():
    with pytest.raises(ValueError, match="negative"):
        add_business_minutes(at("2026-03-09 10:00"), -1, office())


def test_a_calendar_that_never_opens_raises_instead_of_searching_forever():
    never = office(hours={"sat": []})
    with pytest.raises(CalendarError, match="never opens"):
        add_business_minutes(at("2026-03-09 10:00"), 1, never)
    assert business_minutes_between(at("2026-03-09 10:00"), at("2036-03-09 10:00"), never) == 0


def test_a_calendar_open_only_on_past_dates_raises_once_they_are_over():
    calendar = office(hours={}, open_dates={"2026-03-08": [["10:00", "14:00"]]})
    assert add_business_minutes(at("2026-03-01 00:00"), 60, calendar) == at("2026-03-08 11:00")
    with pytest.raises(CalendarError, match="never opens"):
        add_business_minutes(at("2026-03-08 13:00"), 61, calendar)


def test_a_hundred_thousand_minutes_are_added_exactly():
    start = at("2026-03-06 16:55")
    due = add_business_minutes(start, 100_000, office(holidays={"country": "SE", "subdivision": None}))
    assert (
        business_minutes_between(start, due, office(holidays={"country": "SE", "subdivision": None}))
        == 100_000
    )
    due_around_the_clock = add_business_minutes(start, 100_000, around_the_clock())
    assert due_around_the_clock.astimezone(UTC) == start.astimezone(UTC) + dt.timedelta(minutes=100_000)


def test_business_minutes_between_is_zero_backwards_and_over_a_weekend():
    assert business_minutes_between(at("2026-03-09 12:00"), at("2026-03-09 10:00"), office()) == 0
    assert business_minutes_between(at("2026-03-06 17:00"), at("2026-03-09 09:00"), office()) == 0
    assert business_minutes_between(at("2026-03-06 16:00"), at("2026-03-09 10:00"), office()) == 120


# --- DST: business minutes are real elapsed minutes inside open wall-clock intervals


@pytest.mark.parametrize(
    ("timezone", "day", "hours"),
    [
        ("Europe/Stockholm", "2026-03-29", 23),
        ("Europe/Stockholm", "2026-10-25", 25),
        ("Europe/Stockholm", "2026-06-01", 24),
        ("America/New_York", "2026-03-08", 23),
        ("America/New_York", "2026-11-01", 25),
    ],
)
def test_a_day_open_around_the_clock_counts_its_real_length(timezone, day, hours):
    zone = ZoneInfo(timezone)
    midnight = at(day, zone)
    next_midnight = at((midnight.date() + dt.timedelta(days=1)).isoformat(), zone)
    assert business_minutes_between(midnight, next_midnight, around_the_clock(timezone)) == hours * 60


def test_adding_across_spring_forward_skips_the_missing_hour():
    calendar = around_the_clock("Europe/Stockholm")
    assert add_business_minutes(at("2026-03-29 00:00"), 180, calendar) == at("2026-03-29 04:00")
    assert add_business_minutes(at("2026-03-28 12:00"), 24 * 60, calendar) == at("2026-03-29 13:00")


def test_adding_across_fall_back_counts_the_repeated_hour_twice():
    calendar = around_the_clock("America/New_York")
    due = add_business_minutes(at("2026-11-01 00:30", NEW_YORK), 90, calendar)
    assert (due.hour, due.minute, due.fold, due.utcoffset()) == (1, 0, 1, dt.timedelta(hours=-5))


def test_an_interval_across_the_dst_change_holds_its_real_length():
    night_shift = {"sun": [["01:00", "04:00"]]}
    calendar = office(hours=night_shift)
    assert business_minutes_between(at("2026-03-29 00:00"), at("2026-03-30 00:00"), calendar) == 120
    assert business_minutes_between(at("2026-10-25 00:00"), at("2026-10-26 00:00"), calendar) == 240
    assert add_business_minutes(at("2026-03-29 00:00"), 120, calendar) == at("2026-03-29 04:00")


def test_intervals_around_a_skipped_hour_never_count_a_minute_twice():
    # 02:00-03:00 does not exist on 29 March in Stockholm: 01:00 CET to 04:00 CEST is two real hours.
    calendar = office(hours={"sun": [["01:00", "02:30"], ["03:00", "04:00"]]})
    assert business_minutes_between(at("2026-03-29 00:00"), at("2026-03-30 00:00"), calendar) == 120


def test_office_hours_keep_their_wall_clock_times_across_a_dst_weekend():
    assert add_business_minutes(at("2026-03-27 16:00"), 120, office()) == at("2026-03-30 10:00")
    assert add_business_minutes(at("2026-10-23 16:00"), 120, office()) == at("2026-10-26 10:00")
    assert business_minutes_between(at("2026-03-27 09:00"), at("2026-03-30 17:00"), office()) == 16 * 60


# --- holidays


def test_thanksgiving_is_skipped_in_new_york():
    calendar = office("America/New_York", holidays={"country": "US", "subdivision": "NY"})
    wednesday = at("2026-11-25 16:00", NEW_YORK)
    assert add_business_minutes(wednesday, 120, calendar) == at("2026-11-27 10:00", NEW_YORK)


def test_midsummer_eve_and_christmas_are_skipped_in_stockholm():
    calendar = office(holidays={"country": "SE", "subdivision": None, "categories": ["public", "de_facto"]})
    assert add_business_minutes(at("2026-06-18 16:00"), 120, calendar) == at("2026-06-22 10:00")
    assert add_business_minutes(at("2026-12-23 16:00"), 120, calendar) == at("2026-12-28 10:00")
    assert business_minutes_between(at("2026-12-24 00:00"), at("2026-12-28 00:00"), calendar) == 0


def test_public_holidays_alone_keep_midsummer_eve_open():
    calendar = office(holidays={"country": "SE", "subdivision": None})
    assert add_business_minutes(at("2026-06-18 16:00"), 120, calendar) == at("2026-06-19 10:00")


# --- pauses


def test_a_pause_pushes_the_due_time_back_by_its_business_minutes():
    pauses = [(at("2026-03-09 09:30"), at("2026-03-09 10:30"))]
    assert due_at(at("2026-03-09 09:00"), 120, office(), pauses) == at("2026-03-09 12:00")


def test_a_pause_outside_business_hours_changes_nothing():
    pauses = [(at("2026-03-07 09:00"), at("2026-03-09 09:00"))]
    assert due_at(at("2026-03-06 16:55"), 120, office(), pauses) == at("2026-03-09 10:55")


def test_a_reopened_ticket_resumes_where_its_clock_stopped():
    start = at("2026-03-09 09:00")
    pending = [(at("2026-03-09 10:00"), at("2026-03-11 14:00"))]
    assert elapsed_business_minutes(start, at("2026-03-11 14:00"), office(), pending) == 60
    assert elapsed_business_minutes(start, at("2026-03-11 14:30"), office(), pending) == 90
    assert due_at(start, 120, office(), pending) == at("2026-03-11 15:00")


def test_a_pause_without_an_end_stops_the_clock():
    start = at("2026-03-09 09:00")
    on_hold = [(at("2026-03-09 10:00"), None)]
    assert due_at(start, 120, office(), on_hold) is None
    assert due_at(start, 60, office(), on_hold) == at("2026-03-09 10:00")
    assert elapsed_business_minutes(start, at("2026-03-12 12:00"), office(), on_hold) == 60


def test_overlapping_pauses_count_once():
    pauses = [
        (at("2026-03-09 09:30"), at("2026-03-09 10:30")),
        (at("2026-03-09 10:00"), at("2026-03-09 11:00")),
    ]
    assert elapsed_business_minutes(at("2026-03-09 09:00"), at("2026-03-09 12:00"), office(), pauses) == 90


def test_a_pause_that_ends_before_it_begins_is_refused():
    with pytest.raises(ValueError, match=r"ends .* before it begins"):
        due_at(at("2026-03-09 09:00"), 60, office(), [(at("2026-03-09 11:00"), at("2026-03-09 10:00"))])


# --- properties


def open_calendars():
    """Draw calendars with at least one weekday open, so the clock always runs again."""
    return (
        calendar_dicts()
        .filter(lambda data: data.get("always_open") or any(data["hours"].values()))
        .map(calendar_from_dict)
    )


def moments(first_year: int = 2025, last_year: int = 2028):
    """Draw aware moments (any of the test zones) or naive ones, with seconds to be dropped."""
    naive = st.datetimes(dt.datetime(first_year, 1, 1), dt.datetime(last_year, 12, 31))
    zones = st.sampled_from(ZONES).map(ZoneInfo)
    return st.one_of(naive, st.builds(lambda moment, zone: moment.replace(tzinfo=zone), naive, zones))


def pause_lists():
    """Draw up to four pauses in UTC, possibly overlapping, some still running (no end)."""

    def pause(start: dt.datetime, length: dt.timedelta, has_ended: bool):
        return start.replace(tzinfo=UTC), (start + length).replace(tzinfo=UTC) if has_ended else None

    lengths = st.timedeltas(dt.timedelta(0), dt.timedelta(days=10))
    starts = st.datetimes(dt.datetime(2025, 1, 1), dt.datetime(2027, 12, 31))
    return st.lists(st.builds(pause, starts, lengths, st.booleans()), max_size=4)


def whole_minute(moment: dt.datetime) -> dt.datetime:
    return moment.replace(second=0, microsecond=0)


def later_or_never(due: dt.datetime | None) -> dt.datetime:
    # In UTC: aware datetimes sharing a tzinfo compare by wall clock, which is wrong inside a repeated hour.
    return FAR_FUTURE if due is None else due.astimezone(UTC)


@property_test
@given(open_calendars(), moments(), st.integers(0, 20_000))
def test_measuring_what_was_added_gives_it_back(calendar, start, minutes):
    due = add_business_minutes(start, minutes, calendar)
    assert business_minutes_between(start, due, calendar) == minutes


@property_test
@given(open_calendars(), moments(), st.integers(1, 20_000))
def test_the_due_time_ends_an_open_minute(calendar, start, minutes):
    due = add_business_minutes(start, minutes, calendar)
    assert business_minutes_between(due - dt.timedelta(minutes=1), due, calendar) == 1


@property_test
@given(open_calendars(), moments())
def test_no_minute_before_the_next_opening_counts(calendar, start):
    opening = add_business_minutes(start, 0, calendar)
    assert business_minutes_between(start, opening, calendar) == 0
    assert business_minutes_between(opening, opening + dt.timedelta(minutes=1), calendar) == 1


@property_test
@given(open_calendars(), moments(), st.integers(0, 5_000), st.integers(0, 5_000))
def test_more_minutes_are_never_due_earlier(calendar, start, fewer, extra):
    sooner = add_business_minutes(start, fewer, calendar)
    later = add_business_minutes(start, fewer + extra, calendar)
    assert sooner.astimezone(UTC) <= later.astimezone(UTC)


@property_test
@given(calendar_dicts().map(calendar_from_dict), moments(), moments(), moments())
def test_business_minutes_add_up_over_consecutive_stretches(calendar, first, second, third):
    a, b, c = sorted((first, second, third), key=lambda moment: _as_utc(moment, calendar))
    assert business_minutes_between(a, c, calendar) == (
        business_minutes_between(a, b, calendar) + business_minutes_between(b, c, calendar)
    )


@property_test
@given(calendar_dicts().map(calendar_from_dict), moments())
def test_business_minutes_never_exceed_real_minutes(calendar, start):
    end = _as_utc(start, calendar) + dt.timedelta(days=9)
    real_minutes = (end - whole_minute(_as_utc(start, calendar))) // dt.timedelta(minutes=1)
    assert 0 <= business_minutes_between(start, end, calendar) <= real_minutes


@property_test
@given(st.sampled_from(ZONES), st.dates(dt.date(2000, 1, 1), dt.date(2060, 12, 31)))
def test_a_day_around_the_clock_holds_exactly_its_real_minutes(timezone, day):
    zone = ZoneInfo(timezone)
    midnight = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    real_minutes = (next_midnight.astimezone(UTC) - midnight.astimezone(UTC)) // dt.timedelta(minutes=1)
    assert business_minutes_between(midnight, next_midnight, around_the_clock(timezone)) == real_minutes


@property_test
@given(open_calendars(), moments(), st.integers(0, 20_000), pause_lists(), pause_lists())
def test_adding_a_pause_never_makes_a_ticket_due_earlier(calendar, start, minutes, pauses, more_pauses):
    without = due_at(start, minutes, calendar, pauses)
    with_more = due_at(start, minutes, calendar, pauses + more_pauses)
    assert later_or_never(with_more) >= later_or_never(without)


@property_test
@given(open_calendars(), moments(), st.integers(0, 20_000), pause_lists())
def test_a_paused_clock_has_run_its_target_exactly_when_due(calendar, start, minutes, pauses):
    due = due_at(start, minutes, calendar, pauses)
    assume(due is not None)
    assert elapsed_business_minutes(start, due, calendar, pauses) == minutes


@property_test
@given(open_calendars(), st.lists(moments(), min_size=4, max_size=4))
def test_a_single_pause_leaves_out_exactly_its_business_minutes(calendar, four_moments):
    start, pause_begins, pause_ends, now = sorted(four_moments, key=lambda moment: _as_utc(moment, calendar))
    with_pause = elapsed_business_minutes(start, now, calendar, [(pause_begins, pause_ends)])
    paused = business_minutes_between(pause_begins, pause_ends, calendar)
    assert with_pause == business_minutes_between(start, now, calendar) - paused


def _as_utc(moment: dt.datetime, calendar) -> dt.datetime:
    """Read a naive moment in the calendar's zone, as the clock does, and return it in UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=calendar.timezone)
    return moment.astimezone(UTC)


# --- commands


@pytest.fixture
def invoke(tmp_path):
    """Run an sla command through a throwaway click group; the calendar argument becomes a JSON file."""
    group = click.Group()
    register(group)

    def run(*args: str, calendar: dict | str | None = None):
        arguments = list(args)
        if calendar is not None:
            path = tmp_path / "calendar.json"
            path.write_text(calendar if isinstance(calendar, str) else json.dumps(calendar), encoding="utf-8")
            arguments += ["--calendar", str(path)]
        return CliRunner().invoke(group, arguments)

    return run


STOCKHOLM_WEEKDAYS = {
    "name": "Stockholm office",
    "timezone": "Europe/Stockholm",
    "hours": {day: NINE_TO_FIVE for day in ("mon", "tue", "wed", "thu", "fri")},
    "holidays": {"country": "SE", "subdivision": None},
    "closed_dates": [],
    "open_dates": {},
}


def test_sla_due_prints_the_due_moment_with_its_offset(invoke):
    result = invoke(
        "sla-due", "--start", "2026-03-06T16:55:00+01:00", "--minutes", "120", calendar=STOCKHOLM_WEEKDAYS
    )
    assert result.exit_code == 0, result.output
    assert result.output == "2026-03-09T10:55:00+01:00\n"


def test_sla_due_answers_in_the_calendar_s_zone_for_a_utc_start(invoke):
    result = invoke(
        "sla-due", "--start", "2026-03-27T14:00:00Z", "--minutes", "180", calendar=STOCKHOLM_WEEKDAYS
    )
    assert result.output == "2026-03-30T10:00:00+02:00\n"


def test_sla_minutes_prints_an_integer(invoke):
    result = invoke(
        "sla-minutes", "--start", "2026-03-06T16:00", "--end", "2026-03-09T10:00", calendar=STOCKHOLM_WEEKDAYS
    )
    assert result.exit_code == 0, result.output
    assert result.output == "120\n"


def test_a_malformed_calendar_file_fails_naming_the_field(invoke):
    broken = {**STOCKHOLM_WEEKDAYS, "hours": {"mon": [["13:00", "12:00"]]}}
    result = invoke("sla-due", "--start", "2026-03-06T16:55", "--minutes", "1", calendar=broken)
    assert result.exit_code == 1
    assert "hours.mon[0]: end 12:00 is not after start 13:00" in result.output


def test_a_calendar_file_that_is_not_json_fails_clearly(invoke):
    result = invoke("sla-minutes", "--start", "2026-03-06", "--end", "2026-03-07", calendar="{not json")
    assert result.exit_code == 1
    assert "not valid JSON" in result.output


@pytest.mark.parametrize("bad_start", ["yesterday", "2026-03-06T25:00", "06/03/2026 16:55"])
def test_a_start_that_is_not_iso_8601_fails_clearly(invoke, bad_start):
    result = invoke("sla-due", "--start", bad_start, "--minutes", "10", calendar=STOCKHOLM_WEEKDAYS)
    assert result.exit_code == 2
    assert "is not an ISO 8601 date and time" in result.output


def test_negative_minutes_are_refused(invoke):
    result = invoke("sla-due", "--start", "2026-03-06T16:55", "--minutes", "-5", calendar=STOCKHOLM_WEEKDAYS)
    assert result.exit_code == 2


def test_a_missing_calendar_file_is_refused(invoke, tmp_path):
    result = invoke(
        "sla-due",
        "--calendar",
        str(tmp_path / "nowhere.json"),
        "--start",
        "2026-03-06T16:55",
        "--minutes",
        "5",
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output
