"""The SLA clock: business minutes added and measured over a BusinessCalendar, with pauses. Pure functions.

Semantics, decided once for every caller:

- A business minute is a real elapsed minute inside an open interval. Intervals are wall-clock times in
  the calendar's zone, so a day open 00:00-24:00 holds 23 hours on the day clocks spring forward and
  25 on the day they fall back. A wall time skipped by the change is read on the old offset (so it
  lands that much later); a repeated wall time means its first occurrence; no real minute counts twice.
- Whole minutes: seconds and microseconds are dropped from every moment given (floored to the minute in
  the calendar's zone), so every result falls on a whole minute and measuring what was added gives it back.
- A naive moment is read in the calendar's zone; results are aware, in the calendar's zone.
- The clock only runs inside open intervals: a start outside them waits for the next opening, and a
  target that runs out exactly at closing time is due at closing time, not at the next opening.
- Adding 0 minutes gives the first moment the clock runs: the start itself inside open hours, else the
  next opening.
- Pauses (a ticket pending or on hold) stop the clock; a pause with no end stops it for good.
- A calendar with no open minute in `MAX_CLOSED_DAYS` days in a row counts as never open: the clock
  raises CalendarError instead of searching forever.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence

from helpdesk.triage.calendar import BusinessCalendar, CalendarError

UTC = dt.UTC
ONE_DAY = dt.timedelta(days=1)
ONE_MINUTE = dt.timedelta(minutes=1)
#: Days in a row without any open minute after which the clock gives up on a calendar.
MAX_CLOSED_DAYS = 3 * 366

#: A stretch of real time [start, end), both in UTC.
Span = tuple[dt.datetime, dt.datetime]
#: A paused stretch as callers give it: start, and end or None while still paused.
Pause = tuple[dt.datetime, dt.datetime | None]


def add_business_minutes(start: dt.datetime, minutes: int, calendar: BusinessCalendar) -> dt.datetime:
    """Return the moment `minutes` business minutes after `start`, in the calendar's zone."""
    due = due_at(start, minutes, calendar)
    assert due is not None, "only a pause without an end can stop the clock for good"
    return due


def business_minutes_between(start: dt.datetime, end: dt.datetime, calendar: BusinessCalendar) -> int:
    """Return the whole business minutes from `start` to `end` (0 when `end` is not after `start`)."""
    return elapsed_business_minutes(start, end, calendar)


def due_at(
    start: dt.datetime, target_minutes: int, calendar: BusinessCalendar, pauses: Sequence[Pause] = ()
) -> dt.datetime | None:
    """Return when a clock started at `start` reaches `target_minutes`, or None if a pause stops it first."""
    if target_minutes < 0:
        raise ValueError(f"a target of {target_minutes} minutes is negative")
    since = _utc_whole_minute(start, calendar)
    remaining = dt.timedelta(minutes=target_minutes)
    running = _without_pauses(_open_spans(calendar, since, until=None), _merged_pauses(pauses, calendar))
    for opens, closes in running:
        if remaining <= closes - opens:
            return (opens + remaining).astimezone(calendar.timezone)
        remaining -= closes - opens
    return None


def elapsed_business_minutes(
    start: dt.datetime, now: dt.datetime, calendar: BusinessCalendar, pauses: Sequence[Pause] = ()
) -> int:
    """Return the whole business minutes a clock started at `start` has run by `now`, pauses left out."""
    since = _utc_whole_minute(start, calendar)
    until = _utc_whole_minute(now, calendar)
    if until <= since:
        return 0
    running = _without_pauses(_open_spans(calendar, since, until), _merged_pauses(pauses, calendar))
    elapsed = sum((closes - opens for opens, closes in running), dt.timedelta())
    return elapsed // ONE_MINUTE


def _utc_whole_minute(moment: dt.datetime, calendar: BusinessCalendar) -> dt.datetime:
    """Read `moment` in the calendar's zone if naive, drop its seconds there and return it in UTC."""
    if moment.utcoffset() is None:
        local = moment.replace(tzinfo=calendar.timezone)
    else:
        local = moment.astimezone(calendar.timezone)
    return local.replace(second=0, microsecond=0).astimezone(UTC)


def _wall_clock_to_utc(day: dt.date, minute_of_day: int, calendar: BusinessCalendar) -> dt.datetime:
    """Return the real moment of a wall-clock minute of `day` (1440 is the next midnight) in UTC."""
    wall = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minute_of_day)
    # fold=0: a skipped wall time is read on the offset before the change, a repeated one is its first.
    return wall.replace(tzinfo=calendar.timezone, fold=0).astimezone(UTC)


def _open_spans(calendar: BusinessCalendar, since: dt.datetime, until: dt.datetime | None) -> Iterator[Span]:
    """Yield the open spans in UTC, in order, clipped to [since, until); endless without `until`."""
    day = since.astimezone(calendar.timezone).date()
    last_day = None if until is None else until.astimezone(calendar.timezone).date()
    # Around a DST change two wall times can name the same real minute; counting from the end of the
    # last span yielded keeps every real minute counted once.
    counted_until = since
    closed_since = day
    while last_day is None or day <= last_day:
        intervals = calendar.opening_intervals_on(day)
        for interval in intervals:
            opens = max(_wall_clock_to_utc(day, interval.opens, calendar), counted_until)
            closes = _wall_clock_to_utc(day, interval.closes, calendar)
            if until is not None:
                closes = min(closes, until)
            if closes > opens:
                yield opens, closes
                counted_until = closes
        day += ONE_DAY
        if intervals:
            closed_since = day
        elif until is None and (day - closed_since).days >= MAX_CLOSED_DAYS:
            raise CalendarError(
                "",
                f"calendar {calendar.name!r} is closed for {MAX_CLOSED_DAYS} days in a row"
                f" from {closed_since.isoformat()}; it never opens again",
            )


def _merged_pauses(pauses: Iterable[Pause], calendar: BusinessCalendar) -> list[Pause]:
    """Return the pauses in UTC whole minutes, sorted and merged; only the last may lack an end."""
    normalized: list[Pause] = []
    for begins, ends in pauses:
        paused_from = _utc_whole_minute(begins, calendar)
        paused_until = None if ends is None else _utc_whole_minute(ends, calendar)
        if paused_until is not None and paused_until < paused_from:
            raise ValueError(f"a pause ends ({ends}) before it begins ({begins})")
        if paused_until != paused_from:
            normalized.append((paused_from, paused_until))
    normalized.sort(key=lambda pause: pause[0])
    merged: list[Pause] = []
    for paused_from, paused_until in normalized:
        if merged and (merged[-1][1] is None or paused_from <= merged[-1][1]):
            previous_from, previous_until = merged[-1]
            if previous_until is None:
                break
            merged[-1] = (previous_from, None if paused_until is None else max(previous_until, paused_until))
        else:
            merged.append((paused_from, paused_until))
    return merged


def _without_pauses(spans: Iterable[Span], pauses: list[Pause]) -> Iterator[Span]:
    """Yield the parts of `spans` outside the sorted, disjoint `pauses`; stop at a pause without an end."""
    next_pause = 0
    for opens, closes in spans:
        cursor = opens
        while cursor < closes:
            while next_pause < len(pauses) and _has_ended_by(pauses[next_pause], cursor):
                next_pause += 1
            if next_pause == len(pauses) or pauses[next_pause][0] >= closes:
                yield cursor, closes
                break
            paused_from, paused_until = pauses[next_pause]
            if paused_from > cursor:
                yield cursor, paused_from
            if paused_until is None:
                return
            cursor = paused_until


def _has_ended_by(pause: Pause, moment: dt.datetime) -> bool:
    return pause[1] is not None and pause[1] <= moment
