"""Mail from the command line: `helpdesk fetch-mail` polls the mailboxes, `parse-email` shows a parse."""

from __future__ import annotations

import json
import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from helpdesk.email_intake import languages_to_detect
from helpdesk.email_parsing import start_parser_processes, stop_parser_processes
from helpdesk.mailboxes import MailboxOutcome, configured_mailboxes, drain_mailboxes, wait_for_new_mail


def register(group: click.Group) -> None:
    """Add the mail commands to `group` (the `helpdesk` command group)."""
    group.add_command(fetch_mail_command)
    group.add_command(parse_email_command)


@click.command("parse-email")
@click.argument("source", type=click.File("rb"))
@click.option("--json", "as_json", is_flag=True, help="Print the parsed message as one JSON object.")
def parse_email_command(source, as_json):
    """Parse a raw email from FILE (or '-' for standard input) without storing it."""
    from channels.email.parse import parsed_email_json

    parsed = parsed_email_json(source.read())
    if as_json:
        click.echo(json.dumps(parsed, ensure_ascii=False, indent=2))
    else:
        for key in ("message_id", "from_address", "subject", "date", "is_auto_reply", "is_bounce", "error"):
            if key in parsed:
                click.echo(f"{key}: {parsed[key]}")
        click.echo("")
        click.echo(parsed.get("reply_text") or parsed.get("text") or "")
    if "error" in parsed:
        # The error is in the output already; the exit status tells scripts the message is unusable.
        sys.exit(1)


@click.command("fetch-mail")
@click.option("--once", is_flag=True, help="Drain every mailbox once and exit.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Messages per mailbox per round (default: HELPDESK_IMAP_MESSAGES_PER_RUN).")
@with_appcontext
def fetch_mail_command(once, limit):
    """Fetch new mail from every configured mailbox: once, or waiting for more (IDLE) until interrupted."""
    if configured_mailboxes():
        # The parser process loads its language models while the mailboxes are connected to and read.
        start_parser_processes(current_app.config.get("HELPDESK_EMAIL_PARSER_PROCESSES", 1),
                               languages_to_detect(), wait=False)
    try:
        if once:
            click.echo(f"{_report(drain_mailboxes(limit))} new messages ingested")
            return
        idle_seconds = current_app.config.get("HELPDESK_IMAP_IDLE_SECONDS", 300)
        click.echo("fetching mail until interrupted (Ctrl-C to stop)")
        while True:
            outcomes = drain_mailboxes(limit)
            stored = _report(outcomes)
            if stored:
                click.echo(f"{stored} new messages ingested")
            wait_for_new_mail(idle_seconds, uid_next=outcomes[0].uid_next if len(outcomes) == 1 else None)
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        stop_parser_processes()


def _report(outcomes: list[MailboxOutcome]) -> int:
    if not outcomes:
        click.echo("no mailbox is configured (set HELPDESK_IMAP_URL or add an email account)", err=True)
    for outcome in outcomes:
        if outcome.error:
            click.echo(f"{outcome.mailbox}: failed: {outcome.error}", err=True)
        elif outcome.not_polled:
            click.echo(f"{outcome.mailbox}: not polled: {outcome.not_polled}", err=True)
        for problem in outcome.problems:
            click.echo(f"{outcome.mailbox}: {problem}", err=True)
    return sum(outcome.stored for outcome in outcomes)
