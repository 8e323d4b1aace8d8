"""Triage rules, SLA policies and business calendars in and out of the database.

One reader and one writer for the command line and the admin pages, so both take the same files:

    import_rules(raw, filename="rules.yaml")       # replace the whole rule set, or raise TriageConfigError
    export_rules("json")                           # -> the text rules-import reads back
    save_rule(None, rule_from_form(...))           # one rule from the admin form (not committed)
    import_policies(raw, filename="policies.json")
    replace_calendar(policy_row, raw)              # a calendar file, as `sla-due --calendar FILE` reads it

Every error is a TriageConfigError whose `field_path` names the field (for a single rule or policy,
relative to it: "conditions.subject_regex", "calendar.hours.mon[0]"); nothing is changed then.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
import yaml

from channels.messages import ChannelName, IdentityKind, InboundMessage, SenderIdentity
from helpdesk.database import begin_write
from helpdesk.extensions import db
from helpdesk.models import ACTIVE_STATUSES, Agent, Group, SlaPolicy, Ticket, TriageRule
from helpdesk.triage.calendar import BusinessCalendar, CalendarError, calendar_from_json, calendar_to_dict
from helpdesk.triage.clock import policy_from_row
from helpdesk.triage.engine import replace_rules, stored_rules
from helpdesk.triage.rules import (
    PRIORITIES,
    TARGET_KINDS,
    PolicySpec,
    Rule,
    RunOn,
    TriageConfigError,
    check_references,
    dump_policies,
    dump_rules,
    load_document,
    parse_policies,
    parse_rules,
    policy_from_dict,
    rule_from_dict,
)

FORMATS = ("yaml", "json")
#: What a download of each format is sent as.
MEDIA_TYPES = {"yaml": "application/yaml", "json": "application/json"}
_SENDER_KIND = {
    ChannelName.EMAIL: IdentityKind.EMAIL,
    ChannelName.SMS: IdentityKind.PHONE,
    ChannelName.WHATSAPP: IdentityKind.PHONE,
    ChannelName.CHAT: IdentityKind.VISITOR,
}


# --- whole files ------------------------------------------------------------------------------------


def import_rules(raw: str | bytes, *, filename: str | None = None) -> int:
    """Replace every rule with those of a rules file (JSON if `filename` ends in .json, else YAML); commit."""
    return replace_rules(parse_rules(raw, filename=filename))


def export_rules(fmt: str = "yaml") -> str:
    """Return every stored rule, in order, as the text `import_rules` reads back."""
    return dump_rules(stored_rules(), fmt)


def import_policies(raw: str | bytes, *, filename: str | None = None) -> int:
    """Replace every SLA policy with those of a policies file; commit."""
    return replace_policies(parse_policies(raw, filename=filename))


def export_policies(fmt: str = "yaml") -> str:
    """Return every stored SLA policy, every field, as the text `import_policies` reads back."""
    return dump_policies(stored_policies(), fmt)


def stored_policies() -> list[PolicySpec]:
    """Return every stored SLA policy, by name, with all its fields."""
    return [policy_from_row(row) for row in db.session.scalars(sa.select(SlaPolicy).order_by(SlaPolicy.name))]


def replace_policies(policies: Iterable[PolicySpec]) -> int:
    """Replace every SLA policy with `policies` in one transaction; raise TriageConfigError and change nothing."""
    policies = list(policies)
    begin_write()
    try:
        names = {policy.name.casefold() for policy in policies}
        for row in db.session.scalars(sa.select(TriageRule).order_by(TriageRule.position)):
            named = (row.actions or {}).get("sla_policy")
            if named and named.casefold() not in names:
                raise TriageConfigError(
                    "policies",
                    f"triage rule {row.name!r} names the SLA policy {named!r}, which this file leaves out",
                )
        db.session.execute(sa.delete(SlaPolicy))
        db.session.flush()
        for policy in policies:
            db.session.add(SlaPolicy(**policy_values(policy)))
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return len(policies)


def policy_values(policy: PolicySpec) -> dict[str, Any]:
    """Return the column values that store `policy`, every field of the file format included."""
    data = policy.to_dict()
    return {
        "name": policy.name,
        "is_default": policy.is_default,
        "calendar": data["calendar"],
        "targets": data["targets"],
        "warn_at_percent": policy.warn_at_percent,
        "escalation": data["escalation"],
    }


# --- one rule -------------------------------------------------------------------------------------


def rule_from_form(
    *,
    name: str,
    is_enabled: bool,
    runs_on_every_message: bool,
    stops_processing: bool,
    conditions_text: str,
    actions_text: str,
) -> Rule:
    """Build a rule from the admin form, conditions and actions in YAML (or JSON); raise TriageConfigError."""
    data = {
        "name": name,
        "enabled": is_enabled,
        "run_on": str(RunOn.CREATE_AND_CUSTOMER_MESSAGE if runs_on_every_message else RunOn.CREATE),
        "conditions": _read_part(conditions_text, "conditions"),
        "actions": _read_part(actions_text, "actions"),
        "stop": stops_processing,
    }
    try:
        return rule_from_dict(data, "rule")
    except TriageConfigError as error:
        raise _relative(error, "rule") from None


def rule_texts(row: TriageRule) -> tuple[str, str]:
    """Return a stored rule's conditions and actions as YAML for the editor (empty when there are none)."""
    return _yaml_or_empty(row.conditions), _yaml_or_empty(row.actions)


def save_rule(row: TriageRule | None, rule: Rule) -> TriageRule:
    """Store a new rule (tried last) or change `row`; raise TriageConfigError; the caller commits."""
    begin_write()
    rows = _locked_rules()
    for other in rows:
        if other is not row and other.name.casefold() == rule.name.casefold():
            raise TriageConfigError("name", f"{rule.name!r} is already the name of another rule")
    try:
        check_references(
            [rule],
            groups=db.session.scalars(sa.select(Group.name)),
            policies=db.session.scalars(sa.select(SlaPolicy.name)),
            agents=db.session.scalars(sa.select(Agent.email)),
        )
    except TriageConfigError as error:
        raise _relative(error, "rules[0]") from None
    if row is None:
        row = TriageRule(position=max((other.position for other in rows), default=-1) + 1)
        db.session.add(row)
    row.name = rule.name
    row.is_enabled = rule.is_enabled
    row.run_on = rule.run_on
    row.conditions = rule.conditions.to_dict()
    row.actions = rule.actions.to_dict()
    row.stops_processing = rule.stops_processing
    db.session.flush()
    return row


def delete_rule(row: TriageRule) -> None:
    """Delete a rule; the others keep their order. The caller commits."""
    begin_write()
    db.session.delete(row)
    db.session.flush()


def set_rule_enabled(row: TriageRule, is_enabled: bool) -> None:
    """Turn a rule on or off, keeping its place. The caller commits."""
    begin_write()
    row.is_enabled = is_enabled
    db.session.flush()


def move_rule(row: TriageRule, index: int) -> int:
    """Move a rule to `index` (0 is tried first; clamped to the list); return where it landed. The caller commits."""
    begin_write()
    rows = [other for other in _locked_rules() if other is not row]
    index = max(0, min(index, len(rows)))
    rows.insert(index, row)
    # Positions are unique: park every row on a distinct negative number first, so no two ever collide.
    for offset, other in enumerate(rows):
        other.position = -1 - offset
    db.session.flush()
    for offset, other in enumerate(rows):
        other.position = offset
    db.session.flush()
    return index


def ordered_rules() -> list[TriageRule]:
    """Return every stored rule row, in the order they are tried."""
    return list(db.session.scalars(sa.select(TriageRule).order_by(TriageRule.position)))


def _locked_rules() -> list[TriageRule]:
    # Locking every rule row makes concurrent edits of the order wait for each other (PostgreSQL).
    return list(db.session.scalars(sa.select(TriageRule).order_by(TriageRule.position).with_for_update()))


# --- one SLA policy -------------------------------------------------------------------------------


def policy_from_form(
    *,
    name: str,
    is_default: bool,
    targets: Mapping[str, Mapping[str, int | None]],
    warn_at_percent: int | None,
    escalation: Mapping[str, Any],
    calendar_text: str,
) -> PolicySpec:
    """Build a policy from the admin form, its calendar as JSON text; raise TriageConfigError naming the field."""
    try:
        calendar = json.loads(calendar_text)
    except json.JSONDecodeError as error:
        raise TriageConfigError(
            "calendar", f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    data = {
        "name": name,
        "default": is_default,
        "calendar": calendar,
        "targets": {
            priority: {kind: minutes for kind, minutes in by_kind.items() if minutes is not None}
            for priority, by_kind in targets.items()
            if any(minutes is not None for minutes in by_kind.values())
        },
        "escalation": dict(escalation),
    }
    if warn_at_percent is not None:
        data["warn_at_percent"] = warn_at_percent
    try:
        return policy_from_dict(data, "policy")
    except TriageConfigError as error:
        raise _relative(error, "policy") from None


def policy_form_values(row: SlaPolicy) -> dict[str, Any]:
    """Return a stored policy as the admin form shows it: targets per priority and kind, the calendar as JSON."""
    spec = policy_from_row(row)
    return {
        "name": spec.name,
        "is_default": spec.is_default,
        "targets": {
            priority: {kind: getattr(spec.targets_for(priority), kind) for kind in TARGET_KINDS}
            for priority in PRIORITIES
        },
        "warn_at_percent": spec.warn_at_percent,
        "escalation": spec.escalation.to_dict(),
        "calendar_text": json.dumps(calendar_to_dict(spec.calendar), indent=2, ensure_ascii=False),
    }


def save_policy(row: SlaPolicy | None, policy: PolicySpec) -> tuple[SlaPolicy, list[str]]:
    """Store a new policy or change `row`; return it and notes for the admin. The caller commits.

    Marking a policy as the default takes the mark from the others; the first policy is always the
    default. A renamed policy keeps its rules and tickets: they follow the new name.
    """
    begin_write()
    others = [other for other in _locked_policies() if other is not row]
    notes: list[str] = []
    for other in others:
        if other.name.casefold() == policy.name.casefold():
            raise TriageConfigError("name", f"{policy.name!r} is already the name of another SLA policy")
    values = policy_values(policy)
    if not policy.is_default:
        if not others:
            values["is_default"] = True
            notes.append(f"{policy.name} is the default policy, as the only one.")
        elif row is not None and row.is_default:
            raise TriageConfigError(
                "default", "this is the default policy; mark another policy as the default instead"
            )
    else:
        for other in others:
            if other.is_default:
                other.is_default = False
                notes.append(f"{other.name} is no longer the default policy.")
        db.session.flush()
    if row is None:
        row = SlaPolicy(**values)
        db.session.add(row)
    else:
        old_name = row.name
        for key, value in values.items():
            setattr(row, key, value)
        if old_name != policy.name:
            notes.extend(_follow_rename(old_name, policy.name))
    db.session.flush()
    return row, notes


def delete_policy(row: SlaPolicy) -> int:
    """Delete a policy no rule names (and not the default while others exist); return its open tickets.

    Those tickets keep their due times, but the SLA sweep stops watching them. The caller commits.
    """
    begin_write()
    others = [other for other in _locked_policies() if other is not row]
    for rule in db.session.scalars(sa.select(TriageRule).order_by(TriageRule.position)):
        named = (rule.actions or {}).get("sla_policy")
        if named and named.casefold() == row.name.casefold():
            raise TriageConfigError("name", f"triage rule {rule.name!r} names this policy; change that rule first")
    if row.is_default and others:
        raise TriageConfigError("default", "this is the default policy; mark another policy as the default first")
    open_tickets = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Ticket)
        .where(Ticket.sla_policy_name == row.name, Ticket.status.in_(ACTIVE_STATUSES))
    )
    db.session.delete(row)
    db.session.flush()
    return open_tickets or 0


def replace_calendar(row: SlaPolicy, raw: str | bytes) -> BusinessCalendar:
    """Give a policy the calendar in a JSON file (the `sla-due --calendar` format); the caller commits.

    Errors name the field inside the calendar file ("hours.mon[0]: ...").
    """
    try:
        calendar = calendar_from_json(raw)
    except CalendarError as error:
        raise TriageConfigError(error.field_path, error.problem) from None
    data = {
        "name": row.name,
        "default": row.is_default,
        "calendar": calendar_to_dict(calendar),
        "targets": row.targets or {},
        "warn_at_percent": row.warn_at_percent,
    }
    if row.escalation is not None:
        data["escalation"] = row.escalation
    try:
        policy_from_dict(data, "policy")  # the checks a calendar gets inside a policy (it must open some time)
    except TriageConfigError as error:
        raise _relative(error, "policy.calendar") from None
    begin_write()
    row.calendar = data["calendar"]
    db.session.flush()
    return calendar


def ordered_policies() -> list[SlaPolicy]:
    """Return every stored policy row, by name."""
    return list(db.session.scalars(sa.select(SlaPolicy).order_by(SlaPolicy.name)))


def _locked_policies() -> list[SlaPolicy]:
    return list(db.session.scalars(sa.select(SlaPolicy).order_by(SlaPolicy.name).with_for_update()))


def _follow_rename(old_name: str, new_name: str) -> list[str]:
    notes = []
    for rule in db.session.scalars(sa.select(TriageRule).order_by(TriageRule.position)):
        actions = dict(rule.actions or {})
        if (actions.get("sla_policy") or "").casefold() == old_name.casefold():
            actions["sla_policy"] = new_name
            rule.actions = actions
            notes.append(f"Rule {rule.name} now names {new_name}.")
    moved = db.session.execute(
        sa.update(Ticket).where(Ticket.sla_policy_name == old_name).values(sla_policy_name=new_name)
    ).rowcount
    if moved:
        notes.append(f"{moved} ticket{'' if moved == 1 else 's'} now show{'s' if moved == 1 else ''} {new_name}.")
    return notes


# --- dry runs -------------------------------------------------------------------------------------


def pasted_message(channel: str, sender: str, subject: str | None, text: str) -> InboundMessage:
    """Return a message typed or pasted by an admin, for a dry run of the rules."""
    name = ChannelName(channel)
    return InboundMessage(
        channel=name,
        sender=SenderIdentity(_SENDER_KIND[name], sender.strip()),
        dedupe_key="dry-run",
        external_id="dry-run",
        text=text,
        subject=subject or None,
    )


# --- small helpers --------------------------------------------------------------------------------


def _read_part(text: str, field: str) -> Any:
    if not (text or "").strip():
        return {}
    try:
        return load_document(text)
    except TriageConfigError as error:
        raise TriageConfigError(field, error.problem) from None


def _relative(error: TriageConfigError, prefix: str) -> TriageConfigError:
    """Return the error with its field named relative to `prefix` (the rule or policy it is about)."""
    path = error.field_path
    if path == prefix:
        path = ""
    elif path.startswith(prefix + "."):
        path = path[len(prefix) + 1 :]
    return TriageConfigError(path, error.problem)


def _yaml_or_empty(data: Mapping[str, Any] | None) -> str:
    if not data:
        return ""
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
