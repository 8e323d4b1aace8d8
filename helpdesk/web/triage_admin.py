"""Administration of triage: routing rules in order, dry runs, SLA policies and their business calendars.

Admins only. Rules and policies are read and written by helpdesk.triage.config_io, the same code the
`rules-*` and `sla-policy-*` commands use, so a file exported here imports there and back.
"""

from __future__ import annotations

import json
import pathlib

import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired, FileSize
from werkzeug.utils import secure_filename
from wtforms import (
    BooleanField,
    HiddenField,
    IntegerField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import AnyOf, DataRequired, InputRequired, Length, NumberRange, Optional

from helpdesk.auth import role_required
from helpdesk.extensions import db
from helpdesk.models import Role, SlaPolicy, Ticket, TriageRule
from helpdesk.triage import config_io
from helpdesk.triage.calendar import calendar_to_json
from helpdesk.triage.clock import policy_from_row
from helpdesk.triage.engine import dry_run as run_rules_dry
from helpdesk.triage.engine import rule_from_row
from helpdesk.triage.rules import CHANNELS, PRIORITIES, TARGET_KINDS, RunOn, TriageConfigError
from helpdesk.triage.summary import ticket_triage_summary
from helpdesk.web.forms import EmptyForm

bp = Blueprint("triage_admin", __name__, url_prefix="/admin/triage")
# The ticket page's triage panel (templates/tickets/_triage.html) asks for its data through this.
bp.add_app_template_global(ticket_triage_summary, "ticket_triage_summary")

#: Rules, policies and calendars are small; a bigger upload is a mistake.
MAX_CONFIG_BYTES = 1024 * 1024
CONFIG_FILE_VALIDATORS = [
    FileRequired("Choose a file."),
    FileSize(max_size=MAX_CONFIG_BYTES, message="The file is larger than 1 MB."),
]
NEW_CALENDAR = """{
  "name": "Office hours",
  "timezone": "UTC",
  "hours": {"mon": [["09:00", "17:00"]], "tue": [["09:00", "17:00"]], "wed": [["09:00", "17:00"]],
            "thu": [["09:00", "17:00"]], "fri": [["09:00", "17:00"]]},
  "holidays": null,
  "closed_dates": [],
  "open_dates": {}
}"""


# --- forms ------------------------------------------------------------------------------------------


class RuleForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    is_enabled = BooleanField("Enabled", default=True)
    runs_on_every_message = BooleanField("Also run on every later customer message (not only on a new ticket)")
    stops_processing = BooleanField("Stop: when this rule matches, later rules are not tried")
    conditions = TextAreaField("Conditions (YAML or JSON; empty: always matches)",
                               validators=[Optional(), Length(max=20000)])
    actions = TextAreaField("Actions (YAML or JSON)", validators=[Optional(), Length(max=20000)])


class ConfigFileForm(FlaskForm):
    file = FileField("File", validators=CONFIG_FILE_VALIDATORS)


class RuleStateForm(FlaskForm):
    enabled = HiddenField(validators=[AnyOf(["1", "0"])])


class MoveRuleForm(FlaskForm):
    direction = HiddenField(validators=[Optional(), AnyOf(["up", "down"])])
    position = IntegerField("Position", validators=[Optional(), NumberRange(min=1)])


class DryRunTicketForm(FlaskForm):
    # InputRequired, not DataRequired: it keeps "Not a valid integer value." for a number that is not one.
    ticket_number = IntegerField("Ticket number", validators=[InputRequired(), NumberRange(min=1)])


class DryRunMessageForm(FlaskForm):
    channel = SelectField("Channel", choices=[SelectChoice(name, name) for name in CHANNELS])
    sender = StringField("From (email address, phone number or visitor id)",
                         validators=[Optional(), Length(max=254)])
    subject = StringField("Subject", validators=[Optional(), Length(max=500)])
    body = TextAreaField("Message", validators=[DataRequired(), Length(max=50000)])


class PolicyForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    is_default = BooleanField("Default policy (for tickets no rule gives a policy)")
    warn_at_percent = IntegerField("Warn when this share of a target has passed (%)", default=75,
                                   validators=[DataRequired(), NumberRange(min=1, max=100)])
    escalation_tier = SelectField(
        "At a breach (or a predicted one)",
        choices=[SelectChoice("second_line", "move the ticket to the second line"),
                 SelectChoice("", "leave the ticket's tier alone")],
        default="second_line",
    )
    escalation_raise_priority = BooleanField("and raise its priority one step", default=True)
    escalation_notify = BooleanField("and notify the tier's leads and the assignee", default=True)
    calendar = TextAreaField("Business calendar (JSON)", validators=[DataRequired(), Length(max=100000)])

    def target_fields(self, priority: str) -> list:
        """Return the priority's target fields, in the order first response, next response, resolution."""
        return [self[target_field_name(priority, kind)] for kind in TARGET_KINDS]


def target_field_name(priority: str, kind: str) -> str:
    return f"target_{priority}_{kind}"


for _priority in PRIORITIES:
    for _kind in TARGET_KINDS:
        setattr(PolicyForm, target_field_name(_priority, _kind), IntegerField(
            f"{_priority} {_kind.replace('_', ' ')}", validators=[Optional(), NumberRange(min=1, max=10_000_000)]
        ))


# --- rules ------------------------------------------------------------------------------------------


@bp.get("/rules")
@role_required(Role.ADMIN)
def rules():
    """List the rules in the order they are tried, with their conditions and actions."""
    return _rules_page(ConfigFileForm())


@bp.route("/rules/new", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def new_rule():
    """Add a rule; it is tried after the others."""
    return _rule_form(None)


@bp.route("/rules/<int:rule_id>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def edit_rule(rule_id: int):
    """Change a rule's name, switches, conditions or actions."""
    return _rule_form(_rule_or_404(rule_id))


@bp.post("/rules/<int:rule_id>/delete")
@role_required(Role.ADMIN)
def delete_rule(rule_id: int):
    """Delete a rule."""
    row = _rule_or_404(rule_id)
    if not EmptyForm().validate_on_submit():
        abort(400, "The form expired; reload the page and try again.")
    name = row.name
    config_io.delete_rule(row)
    db.session.commit()
    flash(f"Rule {name} deleted.", "info")
    return redirect(url_for("triage_admin.rules"))


@bp.post("/rules/<int:rule_id>/enabled")
@role_required(Role.ADMIN)
def set_rule_enabled(rule_id: int):
    """Turn a rule on or off."""
    row = _rule_or_404(rule_id)
    form = RuleStateForm()
    if not form.validate_on_submit():
        abort(400, "Say enabled=1 or enabled=0.")
    config_io.set_rule_enabled(row, form.enabled.data == "1")
    db.session.commit()
    flash(f"Rule {row.name} {'enabled' if row.is_enabled else 'disabled'}.", "info")
    return redirect(url_for("triage_admin.rules"))


@bp.post("/rules/<int:rule_id>/move")
@role_required(Role.ADMIN)
def move_rule(rule_id: int):
    """Move a rule one place up or down, or to a position (1 is tried first)."""
    row = _rule_or_404(rule_id)
    form = MoveRuleForm()
    if not form.validate_on_submit() or (form.position.data is None) == (not form.direction.data):
        abort(400, "Give either direction (up or down) or a position of 1 or more.")
    current = config_io.ordered_rules().index(row)
    if form.position.data is not None:
        wanted = form.position.data - 1
    else:
        wanted = current - 1 if form.direction.data == "up" else current + 1
    landed = config_io.move_rule(row, wanted)
    db.session.commit()
    flash(f"Rule {row.name} is now number {landed + 1}.", "info")
    return redirect(url_for("triage_admin.rules"))


@bp.post("/rules/import")
@role_required(Role.ADMIN)
def import_rules():
    """Replace every rule with those in an uploaded YAML or JSON file; a file with any error changes nothing."""
    form = ConfigFileForm()
    if form.validate_on_submit():
        upload = form.file.data
        try:
            count = config_io.import_rules(upload.read(), filename=upload.filename)
        except TriageConfigError as error:
            db.session.rollback()
            form.file.errors.append(f"{_shown_name(upload.filename)}: {error}")
        else:
            flash(f"Imported {count} rule{'' if count == 1 else 's'} from {_shown_name(upload.filename)}.", "info")
            return redirect(url_for("triage_admin.rules"))
    return _rules_page(form), 400


@bp.get("/rules/export")
@role_required(Role.ADMIN)
def export_rules():
    """Download every rule in the format rules-import and this page's import read."""
    fmt = _format_arg()
    try:
        text = config_io.export_rules(fmt)
    except TriageConfigError as error:
        flash(f"Not exported: a stored rule no longer reads ({error}); fix or delete it first.", "error")
        return redirect(url_for("triage_admin.rules"))
    return _download(text, fmt, f"triage-rules.{_extension(fmt)}")


# --- dry run ----------------------------------------------------------------------------------------


@bp.get("/dry-run")
@role_required(Role.ADMIN)
def dry_run():
    """Offer a dry run of the rules against a ticket or a pasted message."""
    return _dry_run_page(DryRunTicketForm(), DryRunMessageForm())


@bp.post("/dry-run/ticket")
@role_required(Role.ADMIN)
def dry_run_ticket():
    """Show what the rules would make of an existing ticket, as if it were new; change nothing."""
    form = DryRunTicketForm()
    if not form.validate_on_submit():
        return _dry_run_page(form, DryRunMessageForm()), 400
    ticket = db.session.scalar(sa.select(Ticket).where(Ticket.number == form.ticket_number.data))
    if ticket is None:
        form.ticket_number.errors.append(f"There is no ticket #{form.ticket_number.data}.")
        return _dry_run_page(form, DryRunMessageForm()), 400
    outcome = run_rules_dry(ticket)
    db.session.rollback()
    return _dry_run_page(form, DryRunMessageForm(), outcome=outcome, subject=f"ticket #{ticket.number}")


@bp.post("/dry-run/message")
@role_required(Role.ADMIN)
def dry_run_message():
    """Show what the rules would make of a pasted message; change nothing."""
    form = DryRunMessageForm()
    if not form.validate_on_submit():
        return _dry_run_page(DryRunTicketForm(), form), 400
    inbound = config_io.pasted_message(form.channel.data, form.sender.data or "", form.subject.data,
                                       form.body.data)
    outcome = run_rules_dry(inbound)
    db.session.rollback()
    return _dry_run_page(DryRunTicketForm(), form, outcome=outcome, subject="the pasted message")


# --- SLA policies -----------------------------------------------------------------------------------


@bp.get("/policies")
@role_required(Role.ADMIN)
def policies():
    """List the SLA policies with their targets, calendar and escalation."""
    return _policies_page(ConfigFileForm())


@bp.route("/policies/new", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def new_policy():
    """Add an SLA policy."""
    return _policy_form(None)


@bp.route("/policies/<int:policy_id>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def edit_policy(policy_id: int):
    """Change an SLA policy's targets, escalation, default flag or business calendar."""
    return _policy_form(_policy_or_404(policy_id))


@bp.post("/policies/<int:policy_id>/delete")
@role_required(Role.ADMIN)
def delete_policy(policy_id: int):
    """Delete an SLA policy that no rule names."""
    row = _policy_or_404(policy_id)
    if not EmptyForm().validate_on_submit():
        abort(400, "The form expired; reload the page and try again.")
    name = row.name
    try:
        open_tickets = config_io.delete_policy(row)
    except TriageConfigError as error:
        db.session.rollback()
        flash(f"{name} was not deleted: {error.problem}.", "error")
        return redirect(url_for("triage_admin.edit_policy", policy_id=policy_id))
    db.session.commit()
    note = f" {open_tickets} open ticket(s) named it; their due times stay but are no longer watched." \
        if open_tickets else ""
    flash(f"SLA policy {name} deleted.{note}", "info")
    return redirect(url_for("triage_admin.policies"))


@bp.post("/policies/import")
@role_required(Role.ADMIN)
def import_policies():
    """Replace every SLA policy with those in an uploaded YAML or JSON file; a file with any error changes nothing."""
    form = ConfigFileForm()
    if form.validate_on_submit():
        upload = form.file.data
        try:
            count = config_io.import_policies(upload.read(), filename=upload.filename)
        except TriageConfigError as error:
            db.session.rollback()
            form.file.errors.append(f"{_shown_name(upload.filename)}: {error}")
        else:
            flash(f"Imported {count} SLA polic{'y' if count == 1 else 'ies'} from {_shown_name(upload.filename)}.",
                  "info")
            return redirect(url_for("triage_admin.policies"))
    return _policies_page(form), 400


@bp.get("/policies/export")
@role_required(Role.ADMIN)
def export_policies():
    """Download every SLA policy in the format sla-policy-import and this page's import read."""
    fmt = _format_arg()
    try:
        text = config_io.export_policies(fmt)
    except TriageConfigError as error:
        flash(f"Not exported: a stored policy no longer reads ({error}); fix or delete it first.", "error")
        return redirect(url_for("triage_admin.policies"))
    return _download(text, fmt, f"sla-policies.{_extension(fmt)}")


@bp.get("/policies/<int:policy_id>/calendar.json")
@role_required(Role.ADMIN)
def export_calendar(policy_id: int):
    """Download the policy's business calendar as the JSON file `sla-due --calendar` reads."""
    row = _policy_or_404(policy_id)
    try:
        spec = policy_from_row(row)
    except TriageConfigError as error:
        flash(f"Not exported: the stored policy no longer reads ({error}).", "error")
        return redirect(url_for("triage_admin.edit_policy", policy_id=policy_id))
    filename = f"{secure_filename(spec.calendar.name) or 'calendar'}.json"
    return _download(calendar_to_json(spec.calendar), "json", filename)


@bp.post("/policies/<int:policy_id>/calendar")
@role_required(Role.ADMIN)
def import_calendar(policy_id: int):
    """Replace the policy's business calendar with an uploaded JSON calendar file."""
    row = _policy_or_404(policy_id)
    form = ConfigFileForm()
    if form.validate_on_submit():
        upload = form.file.data
        try:
            config_io.replace_calendar(row, upload.read())
        except TriageConfigError as error:
            db.session.rollback()
            form.file.errors.append(f"{_shown_name(upload.filename)}: {error}")
        else:
            db.session.commit()
            flash(f"{row.name} now uses the calendar from {_shown_name(upload.filename)}.", "info")
            return redirect(url_for("triage_admin.edit_policy", policy_id=policy_id))
    db.session.rollback()
    return _policy_form(row, calendar_form=form, status=400)


# --- helpers ----------------------------------------------------------------------------------------


def _rule_or_404(rule_id: int) -> TriageRule:
    row = db.session.get(TriageRule, rule_id)
    if row is None:
        abort(404, f"There is no rule {rule_id}.")
    return row


def _policy_or_404(policy_id: int) -> SlaPolicy:
    row = db.session.get(SlaPolicy, policy_id)
    if row is None:
        abort(404, f"There is no SLA policy {policy_id}.")
    return row


def _rules_page(import_form: ConfigFileForm):
    listed = []
    for row in config_io.ordered_rules():
        try:
            rule_from_row(row)
            problem = None
        except TriageConfigError as error:
            problem = str(error)
        listed.append((row, problem))
    return render_template(
        "admin/triage/rules.html", rules=listed, import_form=import_form, button_form=EmptyForm(),
    )


def _rule_form(row: TriageRule | None):
    form = RuleForm()
    if row is not None and not form.is_submitted():
        form.name.data = row.name
        form.is_enabled.data = row.is_enabled
        form.runs_on_every_message.data = row.run_on == RunOn.CREATE_AND_CUSTOMER_MESSAGE
        form.stops_processing.data = row.stops_processing
        form.conditions.data, form.actions.data = config_io.rule_texts(row)
    if form.validate_on_submit():
        try:
            rule = config_io.rule_from_form(
                name=form.name.data,
                is_enabled=form.is_enabled.data,
                runs_on_every_message=form.runs_on_every_message.data,
                stops_processing=form.stops_processing.data,
                conditions_text=form.conditions.data or "",
                actions_text=form.actions.data or "",
            )
            row = config_io.save_rule(row, rule)
        except TriageConfigError as error:
            db.session.rollback()
            _errors_for(form, error.field_path, RULE_FIELD_FOR).append(str(error))
        else:
            db.session.commit()
            flash(f"Rule {row.name} saved.", "info")
            return redirect(url_for("triage_admin.rules"))
    return render_template("admin/triage/rule_form.html", form=form, rule=row), 400 if form.errors else 200


#: The form field a rule error belongs to, by the first part of the field it names.
RULE_FIELD_FOR = {
    "name": "name",
    "enabled": "is_enabled",
    "run_on": "runs_on_every_message",
    "stop": "stops_processing",
    "conditions": "conditions",
    "actions": "actions",
    "": "actions",
}
#: The same for a policy; None means the form as a whole (errors about the targets, shown above them).
POLICY_FIELD_FOR = {
    "name": "name",
    "default": "is_default",
    "calendar": "calendar",
    "warn_at_percent": "warn_at_percent",
    "escalation": "escalation_tier",
    "targets": None,
    "": None,
}


def _errors_for(form: FlaskForm, field_path: str, fields: dict[str, str | None]) -> list[str]:
    """Return the error list of the form field that `field_path` ("conditions.vip") is about."""
    first = field_path.split(".", 1)[0].split("[", 1)[0]
    name = fields.get(first, fields[""])
    return form.form_errors if name is None else form[name].errors


def _dry_run_page(ticket_form, message_form, *, outcome=None, subject: str | None = None):
    return render_template(
        "admin/triage/dry_run.html", ticket_form=ticket_form, message_form=message_form, outcome=outcome,
        subject=subject,
    )


def _policies_page(import_form: ConfigFileForm):
    listed = []
    for row in config_io.ordered_policies():
        try:
            spec, problem = policy_from_row(row), None
        except TriageConfigError as error:
            spec, problem = None, str(error)
        listed.append((row, spec, problem))
    return render_template(
        "admin/triage/policies.html", policies=listed, import_form=import_form, priorities=PRIORITIES,
        target_kinds=TARGET_KINDS,
    )


def _policy_form(row: SlaPolicy | None, *, calendar_form: ConfigFileForm | None = None, status: int = 200):
    form = PolicyForm()
    if not form.is_submitted() or calendar_form is not None:
        if row is not None:
            _fill_policy_form(form, row)
        else:
            form.calendar.data = NEW_CALENDAR
    elif form.validate_on_submit():
        try:
            spec = config_io.policy_from_form(
                name=form.name.data,
                is_default=form.is_default.data,
                targets={
                    priority: {kind: form[target_field_name(priority, kind)].data for kind in TARGET_KINDS}
                    for priority in PRIORITIES
                },
                warn_at_percent=form.warn_at_percent.data,
                escalation={
                    "tier": form.escalation_tier.data or None,
                    "raise_priority": form.escalation_raise_priority.data,
                    "notify": form.escalation_notify.data,
                },
                calendar_text=form.calendar.data,
            )
            row, notes = config_io.save_policy(row, spec)
        except TriageConfigError as error:
            db.session.rollback()
            _errors_for(form, error.field_path, POLICY_FIELD_FOR).append(str(error))
        else:
            db.session.commit()
            flash(" ".join([f"SLA policy {row.name} saved.", *notes]), "info")
            return redirect(url_for("triage_admin.policies"))
    if form.errors:
        status = 400
    return render_template(
        "admin/triage/policy_form.html", form=form, policy=row, calendar_form=calendar_form or ConfigFileForm(),
        delete_form=EmptyForm(), priorities=PRIORITIES, target_kinds=TARGET_KINDS,
    ), status


def _fill_policy_form(form: PolicyForm, row: SlaPolicy) -> None:
    try:
        values = config_io.policy_form_values(row)
    except TriageConfigError as error:
        # A stored policy that no longer reads is shown as stored, so the admin can correct it.
        form.name.data, form.is_default.data = row.name, row.is_default
        form.warn_at_percent.data = row.warn_at_percent
        form.calendar.data = json.dumps(row.calendar, indent=2, ensure_ascii=False)
        form.calendar.errors = [f"The stored policy no longer reads: {error}"]
        return
    form.name.data, form.is_default.data = values["name"], values["is_default"]
    form.warn_at_percent.data = values["warn_at_percent"]
    for priority, by_kind in values["targets"].items():
        for kind, minutes in by_kind.items():
            form[target_field_name(priority, kind)].data = minutes
    escalation = values["escalation"]
    form.escalation_tier.data = escalation["tier"] or ""
    form.escalation_raise_priority.data = escalation["raise_priority"]
    form.escalation_notify.data = escalation["notify"]
    form.calendar.data = values["calendar_text"]


def _format_arg() -> str:
    fmt = request.args.get("format", "yaml")
    if fmt not in config_io.FORMATS:
        abort(400, "format must be yaml or json.")
    return fmt


def _extension(fmt: str) -> str:
    return "json" if fmt == "json" else "yaml"


def _download(text: str, fmt: str, filename: str) -> Response:
    return Response(
        text,
        mimetype=config_io.MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _shown_name(filename: str | None) -> str:
    return pathlib.PurePath(filename or "the file").name[:100]
