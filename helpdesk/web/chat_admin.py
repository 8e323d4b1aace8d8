"""Administration of the web chat widget: allowed sites, look, pre-chat questions, identity secret, embed code."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, ValidationError

from channels.chat.settings import (
    MAX_GREETING,
    MAX_OFFLINE_MESSAGE,
    SettingsInvalid,
    WidgetAppearance,
    clean_text,
    normalize_color,
    parse_origins,
)
from helpdesk.auth import role_required
from helpdesk.chat import (
    chat_allowed_origins,
    identity_secret_source,
    rotate_identity_secret,
    save_widget_settings,
    saved_chat_settings,
)
from helpdesk.models import Role
from helpdesk.web.forms import EmptyForm

bp = Blueprint("chat_admin", __name__, url_prefix="/admin/chat")


class ChatSettingsForm(FlaskForm):
    allowed_origins = TextAreaField(
        "Sites that may embed the widget (one origin per line, such as https://shop.example.com; "
        "empty: HELPDESK_CHAT_ALLOWED_ORIGINS)",
        validators=[Length(max=5000)],
    )
    primary_color = StringField("Primary colour (hex, such as #1f6feb)", validators=[DataRequired(), Length(max=20)])
    greeting = TextAreaField("Greeting shown when the chat opens")
    ask_name = BooleanField("Ask for the visitor's name before the chat starts")
    ask_email = BooleanField("Ask for the visitor's email address before the chat starts")
    offline_message = TextAreaField("Shown when no agent is online (the visitor may leave a message by email)")

    # The pure parsers say exactly what is wrong; WTForms shows it next to the field.
    def validate_allowed_origins(self, field):
        try:
            field.parsed = parse_origins(field.data)
        except SettingsInvalid as error:
            raise ValidationError(str(error)) from None

    def validate_primary_color(self, field):
        try:
            field.parsed = normalize_color(field.data)
        except SettingsInvalid as error:
            raise ValidationError(str(error)) from None

    def validate_greeting(self, field):
        try:
            field.parsed = clean_text("greeting", field.data, MAX_GREETING)
        except SettingsInvalid as error:
            raise ValidationError(str(error)) from None

    def validate_offline_message(self, field):
        try:
            field.parsed = clean_text("offline_message", field.data, MAX_OFFLINE_MESSAGE)
        except SettingsInvalid as error:
            raise ValidationError(str(error)) from None


def _render(form: ChatSettingsForm, *, new_secret: str | None = None, status: int = 200):
    config = current_app.config
    widget_src = config["HELPDESK_PUBLIC_URL"] + url_for("widget.serve_widget")
    return render_template(
        "admin/chat_settings.html",
        form=form,
        secret_form=EmptyForm(),
        saved=saved_chat_settings(),
        effective_origins=chat_allowed_origins(config),
        secret_source=identity_secret_source(config),
        new_secret=new_secret,
        widget_src=widget_src,
    ), status


@bp.route("", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def settings():
    """Show and save the chat widget's settings, with the code to embed it."""
    form = ChatSettingsForm()
    if not form.is_submitted():
        saved = saved_chat_settings()
        look = saved.appearance
        form.allowed_origins.data = "\n".join(saved.allowed_origins)
        form.primary_color.data = look.primary_color
        form.greeting.data = look.greeting
        form.ask_name.data, form.ask_email.data = look.ask_name, look.ask_email
        form.offline_message.data = look.offline_message
    if form.validate_on_submit():
        defaults = WidgetAppearance()
        look = WidgetAppearance(
            primary_color=form.primary_color.parsed,
            greeting=form.greeting.parsed,
            ask_name=form.ask_name.data,
            ask_email=form.ask_email.data,
            offline_message=form.offline_message.parsed or defaults.offline_message,
        )
        save_widget_settings(form.allowed_origins.parsed, look)
        flash("Chat widget settings saved; open widgets pick them up when they reconnect.", "info")
        return redirect(url_for("chat_admin.settings"))
    return _render(form, status=400 if form.errors else 200)


@bp.post("/identity-secret")
@role_required(Role.ADMIN)
def new_identity_secret():
    """Generate a new identity secret and show it this once; sites signing with the old one stop verifying."""
    if not EmptyForm().validate_on_submit():
        flash("The form expired; try again.", "error")
        return redirect(url_for("chat_admin.settings"))
    secret = rotate_identity_secret()
    form = ChatSettingsForm(formdata=None)
    saved = saved_chat_settings()
    form.allowed_origins.data = "\n".join(saved.allowed_origins)
    look = saved.appearance
    form.primary_color.data, form.greeting.data = look.primary_color, look.greeting
    form.ask_name.data, form.ask_email.data = look.ask_name, look.ask_email
    form.offline_message.data = look.offline_message
    return _render(form, new_secret=secret)
