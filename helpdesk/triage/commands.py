"""Triage from the command line: the SLA clock (`sla-due`, `sla-minutes`), rules and SLA policies
imported, exported and tried out (`rules-import`, `rules-export`, `rules-dry-run`, `sla-policy-import`,
`sla-policy-export`)."""

from __future__ import annotations

import datetime as dt
import pathlib
import re
from collections.abc import Callable
from typing import Any

import click
import sqlalchemy as sa
from flask.cli import with_appcontext

from channels.email.parse import UnparseableEmail, parse_email
from channels.messages import ChannelName, InboundMessage
from helpdesk.extensions import db
from helpdesk.models import Ticket
from helpdesk.triage.calendar import BusinessCalendar, CalendarError, load_calendar
from helpdesk.triage.config_io import (
    export_policies,
    export_rules,
    import_policies,
    import_rules,
    pasted_message,
)
from helpdesk.triage.engine import dry_run
from helpdesk.triage.rules import TriageConfigError, TriageOutcome
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


CONFIG_FILE = click.Path(exists=True, dir_okay=False, path_type=pathlib.Path)
OUTPUT_FILE = click.Path(dir_okay=False, writable=True, path_type=pathlib.Path)
FORMAT_OPTION = click.option(
    "--format",
    "fmt",
    type=click.Choice(["yaml", "json"]),
    default=None,
    help="Output format; by default from FILE's extension (.json), else YAML.",
)
_HEADER_LINE = re.compile(rb"[A-Za-z][A-Za-z0-9-]*:[ \t]")


@click.command("rules-import")
@click.argument("path", metavar="FILE", type=CONFIG_FILE)
@with_appcontext
def rules_import_command(path: pathlib.Path) -> None:
    """Replace every triage rule with those in FILE (YAML, or JSON if it ends in .json).

    A file with any error is refused whole, naming the field, and the rules in place stay as they were.
    """
    count = _import_file(path, import_rules)
    click.echo(f"imported {count} triage rule{'' if count == 1 else 's'} from {path}")


@click.command("rules-export")
@click.argument("path", metavar="[FILE]", required=False, type=OUTPUT_FILE)
@FORMAT_OPTION
@with_appcontext
def rules_export_command(path: pathlib.Path | None, fmt: str | None) -> None:
    """Write every triage rule, in order, to FILE or standard output, in the format rules-import reads."""
    _write_output(_exported(export_rules, _format_for(path, fmt)), path)


@click.command("rules-dry-run")
@click.option("--ticket", "ticket_number", type=int, help="A ticket's number: triage it as if it were new.")
@click.option(
    "--message-file",
    type=CONFIG_FILE,
    help="A message to triage: a raw email (.eml), or pasted text described by the options below.",
)
@click.option("--sender", default="", help="For pasted text: the sender's address or phone number.")
@click.option("--subject", default=None, help="For pasted text: the subject.")
@click.option(
    "--channel",
    type=click.Choice([str(name) for name in ChannelName]),
    default="email",
    show_default=True,
    help="For pasted text: the channel it came on.",
)
@with_appcontext
def rules_dry_run_command(
    ticket_number: int | None,
    message_file: pathlib.Path | None,
    sender: str,
    subject: str | None,
    channel: str,
) -> None:
    """Show which rules would match a ticket or a message and what they would change; change nothing."""
    if (ticket_number is None) == (message_file is None):
        raise click.UsageError("give either --ticket or --message-file")
    if ticket_number is not None:
        ticket = db.session.scalar(sa.select(Ticket).where(Ticket.number == ticket_number))
        if ticket is None:
            raise click.ClickException(f"no ticket #{ticket_number}")
        outcome = dry_run(ticket)
    else:
        outcome = dry_run(_message_from_file(message_file, sender, subject, ChannelName(channel)))
    db.session.rollback()
    for line in describe_outcome(outcome):
        click.echo(line)


@click.command("sla-policy-import")
@click.argument("path", metavar="FILE", type=CONFIG_FILE)
@with_appcontext
def sla_policy_import_command(path: pathlib.Path) -> None:
    """Replace every SLA policy with those in FILE (YAML, or JSON if it ends in .json).

    A file with any error is refused whole, naming the field, and the policies in place stay as they were.
    """
    count = _import_file(path, import_policies)
    click.echo(f"imported {count} SLA polic{'y' if count == 1 else 'ies'} from {path}")


@click.command("sla-policy-export")
@click.argument("path", metavar="[FILE]", required=False, type=OUTPUT_FILE)
@FORMAT_OPTION
@with_appcontext
def sla_policy_export_command(path: pathlib.Path | None, fmt: str | None) -> None:
    """Write every SLA policy to FILE or standard output, in the format sla-policy-import reads."""
    _write_output(_exported(export_policies, _format_for(path, fmt)), path)


def describe_outcome(outcome: TriageOutcome) -> list[str]:
    """Return a dry run's outcome as lines for people: language, each rule matched, the result."""
    lines = [f"language: {outcome.language or 'not detected'}"]
    if not outcome.matched:
        lines.append("matched: no rule (defaults apply)")
    for match in outcome.matched:
        changes = ", ".join(f"{name}={_plain(value)}" for name, value in match.changes.items())
        lines.append(
            f"matched: {match.rule} ({changes or 'no changes'})"
            + ("; later rules not tried" if match.stopped else "")
        )
    result = {
        "tier": outcome.tier,
        "priority": outcome.priority,
        "sla_policy": outcome.sla_policy or "none configured",
        "group": outcome.group or "-",
        "add_tags": _plain(list(outcome.add_tags)) or "-",
        "assign": outcome.assign or "-",
        "auto_reply": _plain(list(outcome.auto_replies)) or "-",
    }
    lines.append("result: " + ", ".join(f"{name}={value}" for name, value in result.items()))
    return lines


def register(group: click.Group) -> None:
    """Add the SLA clock, triage rule and SLA policy commands to `group`."""
    for command in (
        sla_due_command,
        sla_minutes_command,
        rules_import_command,
        rules_export_command,
        rules_dry_run_command,
        sla_policy_import_command,
        sla_policy_export_command,
    ):
        group.add_command(command)


def _load_or_fail(path: pathlib.Path) -> BusinessCalendar:
    try:
        return load_calendar(path)
    except CalendarError as error:
        raise click.ClickException(f"{path}: {error}") from None
    except OSError as error:
        raise click.ClickException(f"{path}: cannot read the file ({error.strerror})") from None


def _import_file(path: pathlib.Path, import_text: Callable[..., int]) -> int:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise click.ClickException(f"{path}: cannot read the file ({error.strerror})") from None
    try:
        return import_text(raw, filename=path.name)
    except TriageConfigError as error:
        raise click.ClickException(f"{path}: {error}") from None


def _exported(export: Callable[[str], str], fmt: str) -> str:
    try:
        return export(fmt)
    except TriageConfigError as error:
        raise click.ClickException(f"a stored entry no longer reads, fix or delete it first: {error}") from None


def _format_for(path: pathlib.Path | None, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    return "json" if path is not None and path.suffix.lower() == ".json" else "yaml"


def _write_output(text: str, path: pathlib.Path | None) -> None:
    if path is None:
        click.echo(text, nl=False)
        return
    path.write_text(text, encoding="utf-8")
    click.echo(f"written to {path}", err=True)


def _message_from_file(
    path: pathlib.Path, sender: str, subject: str | None, channel: ChannelName
) -> InboundMessage:
    raw = path.read_bytes()
    if _HEADER_LINE.match(raw):
        try:
            return parse_email(raw)
        except UnparseableEmail as error:
            raise click.ClickException(f"{path}: not an email message we can read ({error})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise click.ClickException(f"{path}: the file is not UTF-8 text") from None
    return pasted_message(channel, sender, subject, text)


def _plain(value: Any) -> str:
    return ",".join(str(item) for item in value) if isinstance(value, list) else str(value)
