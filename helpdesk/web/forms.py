"""Forms for agents' pages; Flask-WTF adds the CSRF token to each."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, IntegerField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Email, Length, NumberRange, Optional

from helpdesk.models import Role, TicketStatus, Tier

ROLE_CHOICES = [(role.value, role.value.capitalize()) for role in Role]
TIER_CHOICES = [(tier.value, tier.label) for tier in Tier]
STATUS_CHOICES = [(status.value, status.label) for status in TicketStatus]


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False)])
    password = PasswordField("Password", validators=[DataRequired()])
    remember = BooleanField("Keep me signed in")


class ReplyForm(FlaskForm):
    text = TextAreaField("Reply", validators=[DataRequired(), Length(max=20000)])
    internal = BooleanField("Internal note (the customer does not see it)")
    status = SelectField("Then set status", choices=[("", "Keep status")] + STATUS_CHOICES, validators=[Optional()])


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


class ApiTokenForm(FlaskForm):
    name = StringField("Token name", validators=[DataRequired(), Length(max=100)])


class PasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired()])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(min=10, max=200)])


class SimulatorForm(FlaskForm):
    channel = SelectField("Channel", choices=[("email", "Email"), ("sms", "SMS"), ("whatsapp", "WhatsApp"),
                                              ("chat", "Web chat")])
    sender = StringField("From (email address, phone number or visitor id)",
                         validators=[DataRequired(), Length(max=254)])
    name = StringField("Sender name", validators=[Optional(), Length(max=200)])
    subject = StringField("Subject (email only)", validators=[Optional(), Length(max=500)])
    text = TextAreaField("Message", validators=[DataRequired(), Length(max=20000)])
    reply_to_ticket = IntegerField("Reply to ticket number (optional)", validators=[Optional()])


class EmptyForm(FlaskForm):
    """A form with only the CSRF token, for buttons that post."""
