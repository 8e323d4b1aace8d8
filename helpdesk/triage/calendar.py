"""Business calendars: when a support team is open, read from and written to one JSON shape.

The shape, shared by the admin UI and the CLI::

    {"name": "Stockholm office", "timezone": "Europe/Stockholm",
     "hours": {"mon": [["08:00", "12:00"], ["13:00", "17:00"]], "tue": [["08:00", "17:00"]], "sat": []},
     "holidays": {"country": "SE", "subdivision": null},
     "closed_dates": ["2026-12-24"], "open_dates": {"2026-12-27": [["10:00", "14:00"]]}}

- `hours` lists each weekday's open intervals in local wall-clock time, in order and without overlaps;
  a weekday left out (or given `[]`) is closed. An end of "24:00" means midnight at the end of the day.
- `"always_open": true` takes the place of `hours`: every day is open from 00:00 to 24:00.
- `holidays` (or null) names a country and optional subdivision of the `holidays` package; an optional
  `"categories"` list picks other holiday categories than the package's default (public holidays),
  e.g. `["public", "de_facto"]` for Sweden's Midsummer Eve and Christmas Eve.
- `closed_dates` closes single dates; `open_dates` replaces a single date's hours (a Sunday opened, or a
  shorter day) and wins over weekly hours, holidays and `always_open`. A date may not be in both.

`calendar_to_dict` always writes every key, so a dict in that full shape survives a round trip unchanged.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_package

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
TOP_LEVEL_FIELDS = ("name", "timezone", "hours", "always_open", "holidays", "closed_dates", "open_dates")
HOLIDAY_FIELDS = ("country", "subdivision", "categories")
# Zone keys that exist on a machine but mean "whatever this server is set to", not a place.
MACHINE_DEPENDENT_ZONES = frozenset({"localtime", "posixrules"})

_TIME_OF_DAY = re.compile(r"([01]\d|2[0-3]):([0-5]\d)|(24):(00)")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class CalendarError(ValueError):
    """A business calendar that is malformed, or that never opens."""

    def __init__(self, field_path: str, problem: str) -> None:
        super().__init__(f"{field_path}: {problem}" if field_path else problem)
        self.field_path = field_path
        self.problem = problem


@dataclass(frozen=True, order=True)
class OpeningInterval:
    """Open from `opens` until `closes`, in minutes after local midnight; `closes` may be 1440 (24:00)."""

    opens: int
    closes: int


ALL_DAY = OpeningInterval(0, MINUTES_PER_DAY)


@dataclass(frozen=True)
class PublicHolidays:
    """A country's (and subdivision's) holidays from the `holidays` package: the team is closed."""

    country: str
    subdivision: str | None = None
    #: None keeps the package's default categories (public holidays).
    categories: tuple[str, ...] | None = None

    def includes(self, day: dt.date) -> bool:
        """Return whether `day` is one of these holidays."""
        return day in _holiday_dates(self.country, self.subdivision, self.categories, day.year)


@dataclass(frozen=True)
class BusinessCalendar:
    """When a team is open: weekly hours in a time zone, minus holidays and closed dates, plus open dates."""

    name: str
    timezone: ZoneInfo
    #: Weekday key ("mon" ... "sun") to that day's intervals; only the weekdays the JSON gave.
    hours: Mapping[str, tuple[OpeningInterval, ...]] = field(default_factory=dict, hash=False)
    always_open: bool = False
    holidays: PublicHolidays | None = None
    closed_dates: tuple[dt.date, ...] = ()
    open_dates: Mapping[dt.date, tuple[OpeningInterval, ...]] = field(default_factory=dict, hash=False)

    @functools.cached_property
    def _closed_date_set(self) -> frozenset[dt.date]:
        return frozenset(self.closed_dates)

    def opening_intervals_on(self, day: dt.date) -> tuple[OpeningInterval, ...]:
        """Return the open intervals of the local date `day`, after holidays and overrides."""
        if day in self.open_dates:
            return self.open_dates[day]
        if day in self._closed_date_set or (self.holidays is not None and self.holidays.includes(day)):
            return ()
        if self.always_open:
            return (ALL_DAY,)
        return self.hours.get(WEEKDAYS[day.weekday()], ())


def calendar_from_dict(data: Mapping[str, Any]) -> BusinessCalendar:
    """Build a calendar from its JSON shape, or raise CalendarError naming the first bad field."""
    if not isinstance(data, Mapping):
        raise CalendarError("", "a calendar must be a JSON object")
    _reject_unknown_fields(data, TOP_LEVEL_FIELDS, prefix="")
    name = _parse_name(data.get("name"))
    timezone = _parse_timezone(data.get("timezone"))
    always_open = data.get("always_open", False)
    if not isinstance(always_open, bool):
        raise CalendarError("always_open", "must be true or false")
    if always_open and "hours" in data:
        raise CalendarError("hours", "leave hours out when always_open is true")
    if not always_open and "hours" not in data:
        raise CalendarError("hours", "missing (give weekly hours, or set always_open to true)")
    hours = {} if always_open else _parse_weekly_hours(data["hours"])
    holidays = _parse_holidays(data.get("holidays"))
    closed_dates = _parse_closed_dates(data.get("closed_dates", []))
    open_dates = _parse_open_dates(data.get("open_dates", {}))
    for day in open_dates:
        if day in closed_dates:
            raise CalendarError(f"open_dates.{day.isoformat()}", "the date is also in closed_dates")
    return BusinessCalendar(
        name=name,
        timezone=timezone,
        hours=hours,
        always_open=always_open,
        holidays=holidays,
        closed_dates=closed_dates,
        open_dates=open_dates,
    )


def calendar_to_dict(calendar: BusinessCalendar) -> dict[str, Any]:
    """Return the calendar in its JSON shape, every key written."""
    data: dict[str, Any] = {"name": calendar.name, "timezone": calendar.timezone.key}
    if calendar.always_open:
        data["always_open"] = True
    else:
        data["hours"] = {
            weekday: _intervals_to_json(intervals) for weekday, intervals in calendar.hours.items()
        }
    data["holidays"] = _holidays_to_json(calendar.holidays)
    data["closed_dates"] = [day.isoformat() for day in calendar.closed_dates]
    data["open_dates"] = {
        day.isoformat(): _intervals_to_json(ivs) for day, ivs in calendar.open_dates.items()
    }
    return data


def load_calendar(path: str | os.PathLike[str]) -> BusinessCalendar:
    """Read a calendar from a JSON file, or raise CalendarError saying what is wrong with it."""
    with open(path, "rb") as file:
        return calendar_from_json(file.read())


def calendar_from_json(raw: bytes | str) -> BusinessCalendar:
    """Read a calendar from JSON text (a file's bytes or a string), or raise CalendarError naming the field."""
    try:
        data = json.loads(raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError:
        raise CalendarError("", "the file is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise CalendarError(
            "", f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    return calendar_from_dict(data)


def calendar_to_json(calendar: BusinessCalendar) -> str:
    """Write the calendar as the JSON text `load_calendar` and `calendar_from_json` read back."""
    return json.dumps(calendar_to_dict(calendar), indent=2, ensure_ascii=False) + "\n"


def format_time_of_day(minute_of_day: int) -> str:
    """Return minutes after midnight as "HH:MM" (1440 as "24:00")."""
    hours, minutes = divmod(minute_of_day, 60)
    return f"{hours:02d}:{minutes:02d}"


@functools.lru_cache(maxsize=512)
def _holiday_dates(
    country: str, subdivision: str | None, categories: tuple[str, ...] | None, year: int
) -> frozenset[dt.date]:
    """Return one year's holiday dates, cached: the package builds them slowly and they never change."""
    found = holidays_package.country_holidays(country, subdiv=subdivision, years=year, categories=categories)
    return frozenset(found.keys())


@functools.cache
def _supported_countries() -> dict[str, list[str]]:
    """Return country codes (and aliases) with their subdivisions, as the `holidays` package knows them."""
    return holidays_package.list_supported_countries()


def _reject_unknown_fields(data: Mapping[str, Any], known: Sequence[str], prefix: str) -> None:
    for key in data:
        if key not in known:
            raise CalendarError(f"{prefix}{key}", f"unknown field (known: {', '.join(known)})")


def _parse_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CalendarError("name", "must be a non-empty string")
    return value


def _parse_timezone(value: Any) -> ZoneInfo:
    if not isinstance(value, str):
        raise CalendarError("timezone", "must be an IANA time zone name such as 'Europe/Stockholm'")
    if value in MACHINE_DEPENDENT_ZONES:
        raise CalendarError(
            "timezone", f"{value!r} depends on the server; name the place, e.g. 'Europe/Stockholm'"
        )
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CalendarError("timezone", f"unknown time zone {value!r}") from None


def _parse_weekly_hours(value: Any) -> dict[str, tuple[OpeningInterval, ...]]:
    if not isinstance(value, Mapping):
        raise CalendarError("hours", 'must be an object of weekdays, e.g. {"mon": [["09:00", "17:00"]]}')
    weekly: dict[str, tuple[OpeningInterval, ...]] = {}
    for weekday, intervals in value.items():
        if weekday not in WEEKDAYS:
            raise CalendarError(f"hours.{weekday}", f"unknown weekday (use {', '.join(WEEKDAYS)})")
        weekly[weekday] = _parse_intervals(intervals, f"hours.{weekday}")
    return weekly


def _parse_intervals(value: Any, path: str) -> tuple[OpeningInterval, ...]:
    if not isinstance(value, list):
        raise CalendarError(path, 'must be a list of [start, end] pairs, e.g. [["09:00", "17:00"]]')
    intervals: list[OpeningInterval] = []
    for index, pair in enumerate(value):
        here = f"{path}[{index}]"
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)):
            raise CalendarError(here, 'must be a [start, end] pair of "HH:MM" strings')
        opens = _parse_time_of_day(pair[0], here, "start")
        closes = _parse_time_of_day(pair[1], here, "end")
        if opens == MINUTES_PER_DAY:
            raise CalendarError(here, "start 24:00 is the end of the day; a day opens at 23:59 at the latest")
        if closes <= opens:
            raise CalendarError(here, f"end {pair[1]} is not after start {pair[0]}")
        if intervals and opens < intervals[-1].closes:
            previous_end = format_time_of_day(intervals[-1].closes)
            raise CalendarError(
                here,
                f"starts at {pair[0]}, before the previous interval ends at {previous_end}"
                " (intervals must be in order and must not overlap)",
            )
        intervals.append(OpeningInterval(opens, closes))
    return tuple(intervals)


def _parse_time_of_day(text: str, path: str, which: str) -> int:
    match = _TIME_OF_DAY.fullmatch(text)
    if match is None:
        raise CalendarError(path, f"{which} {text!r} is not a time of day (HH:MM from 00:00 to 24:00)")
    hours, minutes = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    return int(hours) * 60 + int(minutes)


def _parse_date(text: Any, path: str) -> dt.date:
    if isinstance(text, str) and _ISO_DATE.fullmatch(text):
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
    raise CalendarError(path, f"{text!r} is not a date (YYYY-MM-DD)")


def _parse_closed_dates(value: Any) -> tuple[dt.date, ...]:
    if not isinstance(value, list):
        raise CalendarError("closed_dates", 'must be a list of dates, e.g. ["2026-12-24"]')
    days: list[dt.date] = []
    for index, text in enumerate(value):
        day = _parse_date(text, f"closed_dates[{index}]")
        if day in days:  # lists are short; order is kept so the JSON round-trips
            raise CalendarError(f"closed_dates[{index}]", f"{text} is listed twice")
        days.append(day)
    return tuple(days)


def _parse_open_dates(value: Any) -> dict[dt.date, tuple[OpeningInterval, ...]]:
    if not isinstance(value, Mapping):
        raise CalendarError(
            "open_dates", 'must be an object of dates, e.g. {"2026-12-27": [["10:00", "14:00"]]}'
        )
    days: dict[dt.date, tuple[OpeningInterval, ...]] = {}
    for text, intervals in value.items():
        path = f"open_dates.{text}"
        day = _parse_date(text, path)
        if day in days:
            raise CalendarError(path, "the date is listed twice")
        days[day] = _parse_intervals(intervals, path)
        if not days[day]:
            raise CalendarError(path, "no open intervals; to close the date, list it in closed_dates")
    return days


def _parse_holidays(value: Any) -> PublicHolidays | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise CalendarError(
            "holidays", 'must be null or an object, e.g. {"country": "SE", "subdivision": null}'
        )
    _reject_unknown_fields(value, HOLIDAY_FIELDS, prefix="holidays.")
    country = value.get("country")
    supported = _supported_countries()
    if not isinstance(country, str) or country not in supported:
        raise CalendarError("holidays.country", f"unknown country {country!r}")
    subdivision = value.get("subdivision")
    if subdivision is not None and (
        not isinstance(subdivision, str) or subdivision not in supported[country]
    ):
        raise CalendarError(
            "holidays.subdivision", f"unknown subdivision {subdivision!r} for country {country!r}"
        )
    categories = _parse_holiday_categories(value, country, subdivision)
    return PublicHolidays(country=country, subdivision=subdivision, categories=categories)


def _parse_holiday_categories(
    value: Mapping[str, Any], country: str, subdivision: str | None
) -> tuple[str, ...] | None:
    if "categories" not in value:
        return None
    categories = value["categories"]
    if not (
        isinstance(categories, list) and categories and all(isinstance(name, str) for name in categories)
    ):
        raise CalendarError(
            "holidays.categories", 'must be a non-empty list of names, e.g. ["public", "de_facto"]'
        )
    known = holidays_package.country_holidays(country, subdiv=subdivision).supported_categories
    for index, name in enumerate(categories):
        if name not in known:
            raise CalendarError(
                f"holidays.categories[{index}]",
                f"unknown category {name!r} for country {country!r} (known: {', '.join(known)})",
            )
    return tuple(categories)


def _intervals_to_json(intervals: Sequence[OpeningInterval]) -> list[list[str]]:
    return [
        [format_time_of_day(interval.opens), format_time_of_day(interval.closes)] for interval in intervals
    ]


def _holidays_to_json(rule: PublicHolidays | None) -> dict[str, Any] | None:
    if rule is None:
        return None
    data: dict[str, Any] = {"country": rule.country, "subdivision": rule.subdivision}
    if rule.categories is not None:
        data["categories"] = list(rule.categories)
    return data
