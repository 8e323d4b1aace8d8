"""Forms for agents' pages; Flask-WTF adds the CSRF token to each."""

from __future__ import annotations

import re

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    IntegerField,
    MultipleFileField,
    PasswordField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Email, Length, NumberRange, Optional, ValidationError

from channels.email.imap import Security
from helpdesk.message_templates import TEMPLATE_NAMES
from helpdesk.models import Role, TicketStatus, Tier

# SelectChoice, not (value, label) tuples: WTForms 3.3 deprecates tuples.
ROLE_CHOICES = [SelectChoice(role.value, role.value.capitalize()) for role in Role]
TIER_CHOICES = [SelectChoice(tier.value, tier.label) for tier in Tier]
STATUS_CHOICES = [SelectChoice(status.value, status.label) for status in TicketStatus]
SECURITY_CHOICES = [
    SelectChoice(Security.TLS.value, "TLS (imaps, port 993)"),
    SelectChoice(Security.STARTTLS.value, "STARTTLS (port 143, upgraded)"),
    SelectChoice(Security.NONE.value, "None (plain text, port 143)"),
]
TEMPLATE_CHOICES = [SelectChoice(name, label) for name, label in TEMPLATE_NAMES.items()]

_LANGUAGE_CODE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,4})?")


def split_commas(raw: str | None) -> list[str]:
    """Return the comma-separated names in `raw`, stripped, without blanks or repeats."""
    # Repeats dropped: "Billing, Billing" would link an agent to the same group twice.
    return list(dict.fromkeys(part.strip() for part in (raw or "").split(",") if part.strip()))


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False)])
    password = PasswordField("Password", validators=[DataRequired()])
    remember = BooleanField("Keep me signed in")


class ReplyForm(FlaskForm):
    text = TextAreaField("Reply", validators=[DataRequired(), Length(max=20000)])
    internal = BooleanField("Internal note (the customer does not see it)")
    status = SelectField(
        "Then set status", choices=[SelectChoice("", "Keep status"), *STATUS_CHOICES], validators=[Optional()]
    )
    files = MultipleFileField("Files (sent with an email reply, or kept with a note)")


class AgentForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False)])
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    password = PasswordField("Password", validators=[Optional(), Length(min=10, max=200)])
    role = SelectField("Role", choices=ROLE_CHOICES)
    tier = SelectField("Tier", choices=TIER_CHOICES)
    groups = StringField("Groups (comma-separated)", validators=[Optional(), Length(max=500)])
    languages = StringField("Languages (ISO codes, comma-separated)", validators=[Optional(), Length(max=200)])
    capacity = IntegerField("Capacity (open tickets)", default=10, validators=[NumberRange(min=0, max=1000)])
    is_active = BooleanField("Active", default=True)

    # Checked here because the columns are short: PostgreSQL would fail with a 500, SQLite would keep them.
    def validate_groups(self, field):
        if any(len(name) > 100 for name in split_commas(field.data)):
            raise ValidationError("A group name can be at most 100 characters long.")

    def validate_languages(self, field):
        for code in split_commas(field.data):
            if not _LANGUAGE_CODE.fullmatch(code):
                raise ValidationError(f"{code!r} is not a language code such as en, sv or pt-BR.")


class MailboxForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    host = StringField("IMAP host", validators=[DataRequired(), Length(max=255)])
    port = IntegerField("Port (empty: the usual one for the security chosen)",
                        validators=[Optional(), NumberRange(min=1, max=65535)])
    security = SelectField("Security", choices=SECURITY_CHOICES)
    user = StringField("User", validators=[DataRequired(), Length(max=254)])
    # Never rendered back (PasswordField hides its value); empty on edit keeps the stored one.
    password = PasswordField("Password", validators=[Optional(), Length(max=500)])
    folder = StringField("Folder", default="INBOX", validators=[Optional(), Length(max=200)])
    move_to = StringField("Move handled mail to folder (empty: mark it read)", validators=[Optional(), Length(max=200)])
    is_enabled = BooleanField("Enabled", default=True)

    def validate_host(self, field):
        if "://" in field.data or "/" in field.data or any(char.isspace() for char in field.data):
            raise ValidationError("Give the host name alone, such as imap.example.com.")


class MessageTemplateForm(FlaskForm):
    name = SelectField("Template", choices=TEMPLATE_CHOICES)
    language = StringField("Language (ISO 639-1 such as sv; empty for the default)",
                           validators=[Optional(), Length(max=8)])
    subject = StringField("Subject (optional)", validators=[Optional(), Length(max=500)])
    body = TextAreaField("Text", validators=[DataRequired()])


class ApiTokenForm(FlaskForm):
    name = StringField("Token name", validators=[DataRequired(), Length(max=100)])


class PasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired()])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(min=10, max=200)])


class SimulatorForm(FlaskForm):
    channel = SelectField("Channel", choices=[
        SelectChoice("email", "Email"),
        SelectChoice("sms", "SMS"),
        SelectChoice("whatsapp", "WhatsApp"),
        SelectChoice("chat", "Web chat"),
    ])
    sender = StringField("From (email address, phone number or visitor id)",
                         validators=[DataRequired(), Length(max=254)])
    name = StringField("Sender name", validators=[Optional(), Length(max=200)])
    subject = StringField("Subject (email only)", validators=[Optional(), Length(max=500)])
    text = TextAreaField("Message", validators=[DataRequired(), Length(max=20000)])
    reply_to_ticket = IntegerField("Reply to ticket number (optional)", validators=[Optional()])


class EmptyForm(FlaskForm):
    """A form with only the CSRF token, for buttons that post."""
