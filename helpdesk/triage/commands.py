"""`sla-due` and `sla-minutes`: the SLA clock from the command line, for admins and scripts."""

from __future__ import annotations

import datetime as dt
import pathlib

import click

from helpdesk.triage.calendar import BusinessCalendar, CalendarError, load_calendar
from helpdesk.triage.sla import add_business_minutes, business_minutes_between


class IsoDateTime(click.ParamType):
    """An ISO 8601 date and time, such as 2026-03-06T16:55:00+01:00 or 2026-03-06T15:55Z."""

    name = "ISO8601"

    def convert(self, value, param, ctx) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            self.fail(
                f"{value!r} is not an ISO 8601 date and time, e.g. 2026-03-06T16:55:00+01:00", param, ctx
            )


CALENDAR_FILE = click.Path(exists=True, dir_okay=False, path_type=pathlib.Path)
CALENDAR_HELP = "Business calendar as a JSON file."
NAIVE_HELP = "without a UTC offset it is read in the calendar's time zone"


@click.command("sla-due")
@click.option("--calendar", "calendar_path", type=CALENDAR_FILE, required=True, help=CALENDAR_HELP)
@click.option("--start", type=IsoDateTime(), required=True, help=f"When the clock starts; {NAIVE_HELP}.")
@click.option("--minutes", type=click.IntRange(min=0), required=True, help="Business minutes to add.")
def sla_due_command(calendar_path: pathlib.Path, start: dt.datetime, minutes: int) -> None:
    """Print when --minutes business minutes after --start run out, in the calendar's time zone."""
    calendar = _load_or_fail(calendar_path)
    try:
        due = add_business_minutes(start, minutes, calendar)
    except CalendarError as error:
        raise click.ClickException(f"{calendar_path}: {error}") from None
    click.echo(due.isoformat())


@click.command("sla-minutes")
@click.option("--calendar", "calendar_path", type=CALENDAR_FILE, required=True, help=CALENDAR_HELP)
@click.option("--start", type=IsoDateTime(), required=True, help=f"Start of the stretch; {NAIVE_HELP}.")
@click.option("--end", type=IsoDateTime(), required=True, help=f"End of the stretch; {NAIVE_HELP}.")
def sla_minutes_command(calendar_path: pathlib.Path, start: dt.datetime, end: dt.datetime) -> None:
    """Print the whole business minutes between --start and --end."""
    calendar = _load_or_fail(calendar_path)
    click.echo(business_minutes_between(start, end, calendar))


def register(group: click.Group) -> None:
    """Add the sla-due and sla-minutes commands to `group`."""
    group.add_command(sla_due_command)
    group.add_command(sla_minutes_command)


def _load_or_fail(path: pathlib.Path) -> BusinessCalendar:
    try:
        return load_calendar(path)
    except CalendarError as error:
        raise click.ClickException(f"{path}: {error}") from None
    except OSError as error:
        raise click.ClickException(f"{path}: cannot read the file ({error.strerror})") from None
