"""The helpdesk application: create_app() builds it in named steps."""

from __future__ import annotations

import functools
import logging
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from flask import Flask

ROOT = pathlib.Path(__file__).resolve().parent.parent


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app; `config` overrides what the environment says (tests use it)."""
    instance_path = (config or {}).get("INSTANCE_PATH") or os.environ.get("HELPDESK_INSTANCE_PATH") or ROOT / "instance"
    app = Flask(
        __name__,
        instance_path=str(pathlib.Path(instance_path).resolve()),
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    configure(app, config)
    init_extensions(app)
    init_channels(app)
    register_blueprints(app)
    register_namespaces(app)
    register_cli(app)
    init_jobs_runner(app)
    return app


def configure(app: Flask, overrides: Mapping[str, Any] | None) -> None:
    from helpdesk.config import build_config

    app.config.from_mapping(build_config(pathlib.Path(app.instance_path)))
    if overrides:
        app.config.from_mapping(overrides)
    if app.config["HELPDESK_TRUST_PROXY_HEADERS"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Only behind a proxy that sets these headers itself; otherwise clients could forge them.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=1)
    if not app.debug and not app.testing:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def init_extensions(app: Flask) -> None:
    from helpdesk.auth import init_auth
    from helpdesk.chat import socket_origin_check
    from helpdesk.database import init_database
    from helpdesk.extensions import csrf, limiter, migrate, socketio
    from helpdesk.realtime import install_session_hooks

    init_database(app)
    from helpdesk.extensions import db

    migrate.init_app(app, db, directory=str(ROOT / "helpdesk" / "migrations"), render_as_batch=True)
    csrf.init_app(app)
    limiter.init_app(app)
    init_auth(app)
    install_session_hooks()
    socketio.init_app(
        app,
        # threading mode with simple-websocket: no monkey-patching, works under `flask run` and gunicorn gthread.
        async_mode="threading",
        message_queue=app.config["REDIS_URL"],
        # The agents' origins plus the sites that embed the chat widget; each namespace checks its own list.
        cors_allowed_origins=socket_origin_check(app),
        manage_session=False,
    )


def init_channels(app: Flask) -> None:
    """Build the outgoing channels and the mail pollers; by default every channel writes to a folder."""
    from channels.base import ChannelRegistry
    from channels.chat.namespace import ChatChannel
    from channels.email.smtp import SmtpChannel, SmtpSettings
    from channels.local import LocalLogChannel
    from channels.messages import ChannelName
    from channels.sms.twilio import TwilioAccountChannel
    from helpdesk.extensions import socketio
    from helpdesk.mailboxes import poll_all_mailboxes
    from helpdesk.twilio_accounts import settings_for_sending

    registry = ChannelRegistry()
    folder = pathlib.Path(app.config["HELPDESK_OUTGOING_FOLDER"])
    for name in ChannelName:
        registry.register(LocalLogChannel(name, folder, app.config["HELPDESK_SUPPORT_ADDRESS"]))
    if app.config.get("HELPDESK_SMTP_URL"):
        smtp = SmtpSettings.from_url(app.config["HELPDESK_SMTP_URL"])
        registry.register(SmtpChannel(smtp, app.config["HELPDESK_SUPPORT_ADDRESS"]))
    # Texts go through the Twilio account admins saved (else TWILIO_*), looked up at each send so a saved
    # account needs no restart; with no account that has a sender for the channel they stay in the local log.
    for name in (ChannelName.SMS, ChannelName.WHATSAPP):
        settings_for = functools.partial(settings_for_sending, app.config)
        registry.register(TwilioAccountChannel(name, settings_for, fallback=registry.get(name)))
    # Chat replies go to the visitor's room on /chat (through the Redis queue when a worker sends them).
    registry.register(ChatChannel(socketio.emit))
    app.extensions["helpdesk.channels"] = registry
    # Called by the poll_mailboxes job inside an app context; mailboxes come from the database and
    # HELPDESK_IMAP_URL at each call, so accounts added later are polled too.
    app.extensions["helpdesk.mail_pollers"] = [poll_all_mailboxes]


def register_blueprints(app: Flask) -> None:
    from helpdesk.sms import create_twilio_blueprint
    from helpdesk.web import (
        admin,
        admin_channels,
        api,
        auth,
        customers,
        errors,
        inbox,
        simulator,
        tickets,
        triage_admin,
        widget,
    )
    from helpdesk.web import dashboard as dashboard_views
    from helpdesk.web.chat_admin import bp as chat_admin_bp

    for module in (auth, inbox, tickets, customers, admin, admin_channels, simulator, widget, errors):
        app.register_blueprint(module.bp)
    app.register_blueprint(dashboard_views.bp)
    app.register_blueprint(triage_admin.bp)
    app.register_blueprint(chat_admin_bp)
    app.register_blueprint(api.bp, url_prefix="/api/v1")
    # Twilio's signed webhooks (SMS, WhatsApp, delivery status), built with this app's callbacks.
    app.register_blueprint(create_twilio_blueprint())


def register_namespaces(app: Flask) -> None:
    from channels.chat.namespace import CHAT_NAMESPACE
    from helpdesk.chat import create_chat_namespace
    from helpdesk.extensions import socketio
    from helpdesk.realtime import AGENT_NAMESPACE, AgentNamespace

    if AGENT_NAMESPACE not in socketio.server.namespace_handlers:
        socketio.on_namespace(AgentNamespace(AGENT_NAMESPACE))
    if CHAT_NAMESPACE not in socketio.server.namespace_handlers:
        socketio.on_namespace(create_chat_namespace())


def register_cli(app: Flask) -> None:
    from helpdesk import mail_commands
    from helpdesk.cli import helpdesk_cli
    from helpdesk.triage import commands as sla_commands

    sla_commands.register(helpdesk_cli)
    mail_commands.register(helpdesk_cli)
    app.cli.add_command(helpdesk_cli)


def init_jobs_runner(app: Flask) -> None:
    from helpdesk.tasks import init_jobs
    from helpdesk.triage.sweep import sweep_sla

    init_jobs(app)
    app.extensions["helpdesk.sla_sweep"] = sweep_sla
