"""`flask --app wsgi helpdesk ...`: set-up, demo data, tokens, workers and mail intake."""

from __future__ import annotations

import getpass
import os
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from helpdesk.extensions import db

helpdesk_cli = AppGroup("helpdesk", help="Helpdesk administration commands.")


@helpdesk_cli.command("seed-demo")
def seed_demo_command():
    """Create demo agents, customers and tickets (safe to run again)."""
    from helpdesk.demo import seed_demo

    counts = seed_demo()
    click.echo(f"demo data ready: {counts['agents']} agents and {counts['tickets']} tickets added "
               f"({counts['agents_total']} agents in all)")


@helpdesk_cli.command("create-admin")
@click.argument("email")
@click.option("--name", default="", help="Display name (defaults to the address's local part).")
@click.option("--password", envvar="HELPDESK_ADMIN_PASSWORD", default=None,
              help="Password; asked for when not given (or set HELPDESK_ADMIN_PASSWORD).")
def create_admin_command(email, name, password):
    """Create an admin agent, or make an existing agent an admin."""
    from helpdesk.agents import AgentError, create_agent, find_agent_by_email, set_password
    from helpdesk.models import Role

    agent = find_agent_by_email(email)
    if password is None and sys.stdin.isatty():
        password = getpass.getpass("Password (10 characters or more): ")
    try:
        if agent is None:
            agent = create_agent(email, name, password, role=Role.ADMIN)
            verb = "created"
        else:
            agent.role = Role.ADMIN
            agent.is_active = True
            if password:
                set_password(agent, password)
            verb = "promoted to admin"
    except AgentError as error:
        raise click.ClickException(str(error)) from None
    db.session.commit()
    click.echo(f"admin {agent.email} {verb}" + ("" if agent.password_hash else " (no password set yet)"))


@helpdesk_cli.command("create-api-token")
@click.argument("email")
@click.option("--name", default="cli", help="A name to tell this token apart.")
def create_api_token_command(email, name):
    """Print a new personal API token for the agent, on the last line."""
    from helpdesk.agents import create_api_token, find_agent_by_email

    agent = find_agent_by_email(email)
    if agent is None or not agent.is_active:
        raise click.ClickException(f"no active agent with the address {email}")
    token = create_api_token(agent, name)
    click.echo(f"API token for {agent.email} (shown once, store it now):")
    click.echo(token)


@helpdesk_cli.command("ingest-email")
@click.argument("source", type=click.File("rb"))
def ingest_email_command(source):
    """Ingest one raw email from FILE, or from standard input with '-'."""
    from helpdesk.email_intake import take_in_email

    intake = take_in_email(source.read(), source="pipe")
    if intake.dropped_reason:
        click.echo(f"not stored: {intake.dropped_reason}")
        return
    if intake.result is None:
        raise click.ClickException("the message could not be ingested and was quarantined for an admin to review")
    result = intake.result
    state = "duplicate of" if result.is_duplicate else ("new ticket" if result.is_new_ticket else "added to")
    click.echo(f"{state} #{result.ticket.number}: {result.thread_reason}")


@helpdesk_cli.command("requeue-quarantined")
def requeue_quarantined_command():
    """Try every quarantined message again (emails and texts); fixed ones leave the quarantine.

    An email goes the way a polled one does: parsed in a parser process with its deadline, our own mail coming
    back dropped, a bounce applied to what bounced, a new ticket acknowledged.
    """
    from helpdesk.email_intake import configured_parsing, store_email
    from helpdesk.email_parsing import stop_parser_processes
    from helpdesk.models import QuarantinedMessage
    from helpdesk.quarantine import mark_resolved, record_failed_retry, unresolved_quarantine
    from helpdesk.sms import TWILIO_QUARANTINE_SOURCE, store_kept_webhook

    fixed = failed = 0
    parsing = configured_parsing()
    for row in unresolved_quarantine():
        row_id = row.id
        try:
            if row.source == TWILIO_QUARANTINE_SOURCE:
                store_kept_webhook(row.raw)
            else:
                parsing.add([row.raw])
                store_email(row.raw, f"requeued from {row.source}", inbound=parsing.result(row.raw))
        except Exception as error:  # still broken: count another attempt and keep it
            record_failed_retry(db.session.get(QuarantinedMessage, row_id), error)
            failed += 1
        else:
            mark_resolved(db.session.get(QuarantinedMessage, row_id))
            fixed += 1
    stop_parser_processes()
    click.echo(f"{fixed} ingested, {failed} still quarantined")


@helpdesk_cli.command("worker")
@click.option("--concurrency", default=2, show_default=True, help="Celery worker processes.")
def worker_command(concurrency):
    """Run background jobs in the foreground (Celery worker with beat when REDIS_URL is set)."""
    if current_app.config["HELPDESK_JOBS_MODE"] == "celery":
        celery = current_app.extensions["celery"]
        celery.worker_main(["worker", "--beat", "--loglevel=INFO", f"--concurrency={concurrency}"])
        return
    from helpdesk.tasks import InProcessScheduler

    click.echo("running jobs in this process (no REDIS_URL); Ctrl-C to stop")
    InProcessScheduler(current_app._get_current_object()).run_forever()


@helpdesk_cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--with-jobs/--without-jobs", default=True, show_default=True,
              help="Run the periodic jobs inside this process (the embedded default).")
def serve_command(host, port, with_jobs):
    """Serve the helpdesk with Socket.IO on the built-in server, for the embedded default."""
    from helpdesk.demo import DEMO_AGENTS, DEMO_PASSWORD
    from helpdesk.extensions import socketio
    from helpdesk.tasks import InProcessScheduler

    app = current_app._get_current_object()
    if with_jobs and app.config["HELPDESK_JOBS_MODE"] != "celery":
        InProcessScheduler(app).start()
    url = f"http://{host}:{port}/"
    click.echo(f"\nHelpdesk is running at {url}  (Ctrl-C to stop)")
    click.echo(f"Database: {app.config['SQLALCHEMY_DATABASE_URI']}")
    click.echo("Demo logins (password for all: " + DEMO_PASSWORD + "):")
    for address, name, role, tier, _, _ in DEMO_AGENTS:
        click.echo(f"  {address:<22} {role.value:<6} {tier.label}")
    click.echo(f"Try the channel simulator at {url}simulator\n", nl=True)
    sys.stdout.flush()
    # Flask ignores app.run() under its own CLI unless this marker is gone; serving is the point here.
    os.environ.pop("FLASK_RUN_FROM_CLI", None)
    socketio.run(app, host=host, port=port, allow_unsafe_werkzeug=True, use_reloader=False,
                 debug=os.environ.get("FLASK_DEBUG") == "1", log_output=True)
