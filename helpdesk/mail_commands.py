"""`helpdesk fetch-mail`: poll the configured mailboxes from the command line."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from helpdesk.mailboxes import MailboxOutcome, drain_mailboxes, wait_for_new_mail


def register(group: click.Group) -> None:
    """Add the mail commands to `group` (the `helpdesk` command group)."""
    group.add_command(fetch_mail_command)


@click.command("fetch-mail")
@click.option("--once", is_flag=True, help="Drain every mailbox once and exit.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Messages per mailbox per round (default: HELPDESK_IMAP_MESSAGES_PER_RUN).")
@with_appcontext
def fetch_mail_command(once, limit):
    """Fetch new mail from every configured mailbox: once, or waiting for more (IDLE) until interrupted."""
    if once:
        stored = _report(drain_mailboxes(limit))
        click.echo(f"{stored} new messages ingested")
        return
    idle_seconds = current_app.config.get("HELPDESK_IMAP_IDLE_SECONDS", 300)
    click.echo("fetching mail until interrupted (Ctrl-C to stop)")
    try:
        while True:
            outcomes = drain_mailboxes(limit)
            stored = _report(outcomes)
            if stored:
                click.echo(f"{stored} new messages ingested")
            wait_for_new_mail(idle_seconds, uid_next=outcomes[0].uid_next if len(outcomes) == 1 else None)
    except KeyboardInterrupt:
        click.echo("stopped")


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
