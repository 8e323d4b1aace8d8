"""Administration of channel accounts: the Twilio accounts SMS and WhatsApp go through."""

from __future__ import annotations

import dataclasses

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, Optional

from channels.messages import ChannelName
from channels.sms.twilio import SMS_PATH, STATUS_PATH, WHATSAPP_PATH, NoSendingAccount
from helpdesk.auth import role_required
from helpdesk.extensions import db
from helpdesk.models import ChannelAccount, Role
from helpdesk.sms import texts_waiting
from helpdesk.twilio_accounts import (
    TwilioAccountInput,
    TwilioAccountInvalid,
    environment_settings,
    forget_saved_accounts,
    get_twilio_account,
    list_twilio_accounts,
    save_twilio_account,
    settings_for_sending,
)

bp = Blueprint("admin_channels", __name__, url_prefix="/admin/channels")


class TwilioAccountForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    account_sid = StringField("Account SID (AC followed by 32 characters, from the Twilio console)",
                              validators=[DataRequired(), Length(max=64)])
    # Never rendered back (PasswordField hides its value); empty on edit keeps the stored one.
    auth_token = PasswordField("Auth token", validators=[Optional(), Length(max=200)])
    from_number = StringField("Sending number, with its country code (such as +14155550100)",
                              validators=[Optional(), Length(max=40)])
    messaging_service_sid = StringField("Messaging Service SID (MG…), used when there is no sending number",
                                        validators=[Optional(), Length(max=64)])
    whatsapp_from = StringField("WhatsApp sender number (empty: WhatsApp replies only through a Messaging Service)",
                                validators=[Optional(), Length(max=50)])
    is_enabled = BooleanField("Enabled (a disabled account neither receives nor sends)", default=True)


@dataclasses.dataclass(frozen=True)
class SenderSummary:
    """Which account replies on one channel go out through right now, in words."""

    channel: ChannelName
    account: str | None
    problem: str | None = None


def summarize_senders(accounts: list[ChannelAccount]) -> list[SenderSummary]:
    """Return, for SMS and WhatsApp, the account replies go out through (or why none does)."""
    summaries = []
    for channel in (ChannelName.SMS, ChannelName.WHATSAPP):
        try:
            settings = settings_for_sending(current_app.config, channel)
        except NoSendingAccount as error:
            summaries.append(SenderSummary(channel, None, str(error)))
            continue
        if settings is None:
            summaries.append(SenderSummary(channel, None))
            continue
        name = next((account.name for account in accounts if account.is_enabled
                     and (account.settings or {}).get("account_sid") == settings.account_sid), None)
        summaries.append(SenderSummary(channel, name or "the environment's account (TWILIO_ACCOUNT_SID)"))
    return summaries


@bp.get("/twilio")
@role_required(Role.ADMIN)
def twilio_accounts():
    """List the Twilio accounts, which one sends each channel's replies, and the webhook addresses."""
    accounts = list_twilio_accounts()
    public_url = current_app.config["HELPDESK_PUBLIC_URL"].rstrip("/")
    webhooks = {"SMS": public_url + SMS_PATH, "WhatsApp": public_url + WHATSAPP_PATH,
                "Delivery status": public_url + STATUS_PATH}
    return render_template("admin/twilio_accounts.html", accounts=accounts, senders=summarize_senders(accounts),
                           environment=environment_settings(current_app.config), webhooks=webhooks,
                           waiting=texts_waiting())


@bp.route("/twilio/new", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def new_twilio_account():
    """Add a Twilio account."""
    return _twilio_account_form(None)


@bp.route("/twilio/<int:account_id>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def edit_twilio_account(account_id: int):
    """Change a Twilio account's senders, auth token or enabled state; it is used from the next text on."""
    account = get_twilio_account(account_id)
    if account is None:
        abort(404, f"There is no Twilio account {account_id}.")
    return _twilio_account_form(account)


def _twilio_account_form(account: ChannelAccount | None):
    form = TwilioAccountForm()
    if account is not None and not form.is_submitted():
        settings = account.settings or {}
        form.name.data, form.is_enabled.data = account.name, account.is_enabled
        for name in ("account_sid", "from_number", "messaging_service_sid", "whatsapp_from"):
            getattr(form, name).data = settings.get(name)
    if form.validate_on_submit():
        data = TwilioAccountInput(
            name=form.name.data, account_sid=form.account_sid.data, auth_token=form.auth_token.data or None,
            from_number=form.from_number.data, messaging_service_sid=form.messaging_service_sid.data,
            whatsapp_from=form.whatsapp_from.data, is_enabled=form.is_enabled.data,
        )
        try:
            account = save_twilio_account(account, data)
        except TwilioAccountInvalid as error:
            db.session.rollback()
            for field, message in error.errors.items():
                getattr(form, field).errors.append(message)
        else:
            db.session.commit()
            forget_saved_accounts()
            flash(f"Twilio account {account.name} saved; it is used from the next text on.", "info")
            return redirect(url_for("admin_channels.twilio_accounts"))
    return (render_template("admin/twilio_account_form.html", form=form, account=account),
            400 if form.errors else 200)
