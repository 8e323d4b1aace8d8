"""Triage on the database: configured rules and SLA policies applied to tickets, inside the caller's transaction.

`apply_triage` runs from ingest: on a new ticket, and on each later customer message (where only rules
with run_on create_and_customer_message take part). Every field a rule changes is an audited change
("rule <name>"), and one "triage.applied" event lists the rules that matched and what they changed.

SLA due times come from the ticket's policy (the one a rule named, else the default policy):

- first response and resolution: business minutes from the ticket's creation, per its priority;
- next response: once an agent has replied, from the first customer message the agent has not
  answered yet; recomputed on every customer message.

A rule's `assign: auto` assigns the ticket right away (helpdesk.triage.assign), after the rules set its
tier and group; when nobody qualifies it stays unassigned. The SLA sweep does not assign.

Automatic mail (out-of-office replies, bounces) starts and restarts no clock, and runs no rule on an
existing ticket. With no policy configured the SLA fields stay empty.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from flask import current_app

from channels.messages import InboundMessage
from helpdesk.customers import find_identity, normalize_identity
from helpdesk.database import begin_write
from helpdesk.extensions import db
from helpdesk.models import (
    Agent,
    Customer,
    Direction,
    Group,
    Message,
    Priority,
    SlaPolicy,
    Ticket,
    Tier,
    TriageRule,
)
from helpdesk.models.base import utcnow
from helpdesk.tickets import change_field, record_event
from helpdesk.triage.assign import auto_assign
from helpdesk.triage.calendar import CalendarError
from helpdesk.triage.clock import is_met, policy_from_row, schedule_check
from helpdesk.triage.language import (
    DEFAULT_LANGUAGES,
    UNDETERMINED,
    UnknownLanguage,
    language_of,
    new_part_of,
    parse_languages,
)
from helpdesk.triage.rules import (
    AUTO_ASSIGN,
    PolicySpec,
    Rule,
    TriageConfigError,
    TriageFacts,
    TriageOutcome,
    check_references,
    evaluate,
    rule_from_dict,
)
from helpdesk.triage.sla import add_business_minutes

log = logging.getLogger(__name__)

ON_CREATE = "create"
ON_CUSTOMER_MESSAGE = "customer_message"


@dataclasses.dataclass(frozen=True)
class TriageConfig:
    """The enabled rules and the SLA policies, as stored."""

    rules: list[Rule]
    policies: dict[str, PolicySpec]

    @classmethod
    def load(cls) -> TriageConfig:
        """Read the rules and policies (load_rules, load_policies)."""
        return cls(load_rules(), load_policies())

    @classmethod
    def current(cls, stamp: tuple | None = None) -> TriageConfig:
        """Return the rules and policies as stored, read again only when they have changed.

        Reading and validating every rule and policy for each message cost more than the rest of triage;
        one small query tells whether any changed since this process last read them, in any process.
        `stamp` is the values of config_stamp_columns(), when the caller's own query read them already.
        """
        if stamp is None:
            stamp = _config_stamp()
        cached = current_app.extensions.get(_CONFIG_CACHE_KEY)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        config = cls.load()
        current_app.extensions[_CONFIG_CACHE_KEY] = (stamp, config)
        return config


_CONFIG_CACHE_KEY = "helpdesk.triage_config"


def _config_stamp() -> tuple:
    return tuple(db.session.execute(_config_stamp_query()).one())


def config_stamp_columns() -> tuple:
    """The columns TriageConfig.current() tells a change by, for a caller's own query to read alongside."""
    return tuple(_config_stamp_query().selected_columns)


@functools.cache
def _config_stamp_query() -> sa.Select:
    # Every change stamps updated_at (an insert too) and a delete changes the count: together they change
    # whenever the stored rules or policies do. Built once: building it cost more than running it.
    def count_and_latest(model):
        return (sa.select(sa.func.count()).select_from(model).scalar_subquery(),
                sa.select(sa.func.max(model.updated_at)).scalar_subquery())

    return sa.select(*count_and_latest(TriageRule), *count_and_latest(SlaPolicy))


def apply_triage(
    ticket: Ticket,
    inbound: InboundMessage,
    customer: Customer,
    *,
    on: str = ON_CREATE,
    config: TriageConfig | None = None,
    clock_inputs_before: tuple | None = None,
) -> TriageOutcome:
    """Apply the rules and the SLA policy to `ticket` for the customer's `inbound` message; the caller commits.

    `config` is the rules and policies when the caller read them already in this transaction (ingest reads
    them before it adds anything, so the reads need not flush its work first); by default they are read here.
    `clock_inputs_before` is clock_inputs(ticket) from before the message changed the ticket, if it was taken.
    """
    if on not in (ON_CREATE, ON_CUSTOMER_MESSAGE):
        raise ValueError(f"on must be {ON_CREATE!r} or {ON_CUSTOMER_MESSAGE!r}, not {on!r}")
    if on == ON_CUSTOMER_MESSAGE and inbound.is_automatic:
        return TriageOutcome(
            on=on,
            tier=str(ticket.tier),
            priority=str(ticket.priority),
            sla_policy=ticket.sla_policy_name,
            language=ticket.language,
        )
    detect_ticket_language(ticket, inbound)
    policies = config.policies if config is not None else load_policies()
    default_policy = _default_policy(policies)
    facts = TriageFacts(
        channel=str(inbound.channel),
        sender=_sender_value(inbound),
        subject=inbound.subject or ticket.subject or "",
        body=new_part_of(inbound),
        customer_tags=_tags_of(customer),
        is_vip=customer.is_vip,
        language=ticket.language,
        received_at=_aware(inbound.received_at) or utcnow(),
        calendar=default_policy.calendar if default_policy else None,
        tier=str(ticket.tier),
        priority=str(ticket.priority),
        sla_policy=ticket.sla_policy_name if on == ON_CUSTOMER_MESSAGE else None,
    )
    outcome = evaluate(facts, config.rules if config is not None else load_rules(), on=on)
    skipped = _apply_rule_changes(ticket, outcome)

    if on == ON_CREATE:
        policy = _policy_named(outcome.sla_policy, policies, skipped) or default_policy
    elif "sla_policy" in outcome.set_by:
        policy = _policy_named(outcome.sla_policy, policies, skipped) or policies.get(
            ticket.sla_policy_name or ""
        )
    else:
        policy = policies.get(ticket.sla_policy_name or "")
    due: dict[str, str | None] = {}
    if policy is not None:
        named_by_rule = (
            "sla_policy" in outcome.set_by and policy.name.casefold() == outcome.sla_policy.casefold()
        )
        reason = f"rule {outcome.set_by['sla_policy']}" if named_by_rule else "default SLA policy"
        change_field(ticket, "sla_policy_name", policy.name, reason=reason)
        if not inbound.is_automatic:
            due = _set_due_times(
                ticket,
                policy,
                on=on,
                rules_changed_clock=bool({"priority", "sla_policy"} & set(outcome.set_by)),
            )
            # A customer writing again to a ticket that waits on the agents moves no clock: working its next
            # check out again would read its alerts and pauses for the same answer.
            if on == ON_CREATE or clock_inputs_before is None or clock_inputs(ticket) != clock_inputs_before:
                schedule_check(ticket, policy)
    outcome = dataclasses.replace(
        outcome, sla_policy=policy.name if policy else None, language=ticket.language
    )

    if outcome.matched or (on == ON_CREATE and policy is not None):
        record_event(
            ticket, "triage.applied", _event_data(outcome, due, skipped), reason=_event_reason(outcome)
        )
    return outcome


def detect_ticket_language(ticket: Ticket, inbound: InboundMessage) -> None:
    """Set the ticket's language from the customer's message, unless it has one already."""
    if ticket.language is None:
        ticket.language = message_language(inbound)


def message_language(inbound: InboundMessage) -> str | None:
    """Return the language the customer's message is written in, if it can be told."""
    if inbound.language is not None:  # told where the message was parsed
        return None if inbound.language == UNDETERMINED else inbound.language
    return _detect(inbound.subject, new_part_of(inbound))


def dry_run(ticket_or_inbound: Ticket | InboundMessage) -> TriageOutcome:
    """Return what triage would make of a ticket (as if just created) or of a message; write nothing."""
    if isinstance(ticket_or_inbound, Ticket):
        facts = _facts_for_ticket(ticket_or_inbound)
    else:
        facts = _facts_for_message(ticket_or_inbound)
    policies = load_policies()
    default_policy = _default_policy(policies)
    facts = dataclasses.replace(facts, calendar=default_policy.calendar if default_policy else None)
    outcome = evaluate(facts, load_rules(), on=ON_CREATE)
    policy = policies.get(outcome.sla_policy or "") or default_policy
    return dataclasses.replace(outcome, sla_policy=policy.name if policy else None)


def load_rules() -> list[Rule]:
    """Return the enabled rules in order; a stored rule that no longer reads is logged and left out."""
    rules = []
    for row in db.session.scalars(
        sa.select(TriageRule).where(TriageRule.is_enabled).order_by(TriageRule.position)
    ):
        try:
            rules.append(rule_from_row(row))
        except TriageConfigError as error:
            log.error("triage rule %r is skipped: %s", row.name, error)
    return rules


def load_policies() -> dict[str, PolicySpec]:
    """Return the SLA policies by name; a stored policy that no longer reads is logged and left out."""
    policies = {}
    for row in db.session.scalars(sa.select(SlaPolicy).order_by(SlaPolicy.name)):
        try:
            policies[row.name] = policy_from_row(row)
        except TriageConfigError as error:
            log.error("SLA policy %r is skipped: %s", row.name, error)
    return policies


def rule_from_row(row: TriageRule) -> Rule:
    """Read a stored rule back, validated as an imported one is."""
    data = {
        "name": row.name,
        "enabled": row.is_enabled,
        "run_on": str(row.run_on),
        "conditions": row.conditions or {},
        "actions": row.actions or {},
        "stop": row.stops_processing,
    }
    return rule_from_dict(data, f"rule {row.name!r}")


def stored_rules() -> list[Rule]:
    """Return every stored rule, disabled ones too, in order."""
    rows = db.session.scalars(sa.select(TriageRule).order_by(TriageRule.position))
    return [rule_from_row(row) for row in rows]


def replace_rules(rules: Iterable[Rule]) -> int:
    """Replace the whole rule set with `rules` in one transaction; raise TriageConfigError and change nothing."""
    rules = list(rules)
    begin_write()
    try:
        check_references(
            rules,
            groups=db.session.scalars(sa.select(Group.name)),
            policies=db.session.scalars(sa.select(SlaPolicy.name)),
            agents=db.session.scalars(sa.select(Agent.email)),
        )
        db.session.execute(sa.delete(TriageRule))
        for position, rule in enumerate(rules):
            db.session.add(
                TriageRule(
                    position=position,
                    name=rule.name,
                    is_enabled=rule.is_enabled,
                    run_on=rule.run_on,
                    conditions=rule.conditions.to_dict(),
                    actions=rule.actions.to_dict(),
                    stops_processing=rule.stops_processing,
                )
            )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return len(rules)


def configured_languages() -> tuple[str, ...]:
    """Return the languages to detect: HELPDESK_LANGUAGES from the app config (or environment), else the defaults."""
    value = current_app.config.get("HELPDESK_LANGUAGES")
    if value is None:
        value = os.environ.get("HELPDESK_LANGUAGES") or ",".join(DEFAULT_LANGUAGES)
    return parse_languages(value)


def _detect(subject: str | None, body: str) -> str | None:
    try:
        languages = configured_languages()
    except UnknownLanguage as error:
        log.error("HELPDESK_LANGUAGES is wrong, no language is detected: %s", error)
        return None
    return language_of(subject, body, languages)


def _apply_rule_changes(ticket: Ticket, outcome: TriageOutcome) -> list[str]:
    """Set what the rules decided, each change audited with the rule behind it; return what could not be done."""
    skipped: list[str] = []

    def because(field: str) -> str:
        return f"rule {outcome.set_by[field]}"

    if "tier" in outcome.set_by:
        change_field(ticket, "tier", Tier(outcome.tier), reason=because("tier"))
    if "priority" in outcome.set_by:
        change_field(ticket, "priority", Priority(outcome.priority), reason=because("priority"))
    if "group" in outcome.set_by:
        group = db.session.scalar(sa.select(Group).where(sa.func.lower(Group.name) == outcome.group.lower()))
        if group is None:
            skipped.append(f"group {outcome.group!r} does not exist")
        else:
            change_field(ticket, "group", group, reason=because("group"))
    if "add_tags" in outcome.set_by:
        tags = [tag for tag in (ticket.tags or "").split(",") if tag.strip()]
        known = {tag.strip().casefold() for tag in tags}
        for tag in outcome.add_tags:
            if tag.casefold() in known:
                continue
            if len(",".join([*tags, tag])) > Ticket.tags.type.length:
                skipped.append(f"tag {tag!r} does not fit")
                continue
            tags.append(tag)
            known.add(tag.casefold())
        change_field(ticket, "tags", ",".join(tags), reason=because("add_tags"))
    wants_auto = "assign" in outcome.set_by and outcome.assign == AUTO_ASSIGN and ticket.assignee_id is None
    if wants_auto and auto_assign(ticket, reason=because("assign")) is None:
        skipped.append("no agent qualified for automatic assignment")
    if "assign" in outcome.set_by and outcome.assign != AUTO_ASSIGN:
        agent = db.session.scalar(
            sa.select(Agent).where(sa.func.lower(Agent.email) == outcome.assign.lower())
        )
        if agent is None or not agent.is_active:
            skipped.append(f"agent {outcome.assign!r} does not exist or is inactive")
        else:
            change_field(ticket, "assignee", agent, reason=because("assign"))
    return skipped


def _set_due_times(
    ticket: Ticket, policy: PolicySpec, *, on: str, rules_changed_clock: bool
) -> dict[str, str | None]:
    """Set the due times the policy gives for the ticket's priority; return those set, as ISO strings."""
    targets = policy.targets_for(str(ticket.priority))
    created_at = ticket.created_at or utcnow()
    due: dict[str, str | None] = {}
    if on == ON_CREATE or rules_changed_clock:
        if ticket.first_responded_at is None:
            ticket.first_response_due_at = _due(created_at, targets.first_response, policy)
            due["first_response"] = _iso(ticket.first_response_due_at)
        ticket.resolution_due_at = _due(created_at, targets.resolution, policy)
        due["resolution"] = _iso(ticket.resolution_due_at)
    if ticket.last_agent_reply_at is not None:
        ticket.next_response_due_at = _due(_waiting_since(ticket), targets.next_response, policy)
        due["next_response"] = _iso(ticket.next_response_due_at)
    return due


#: The ticket's columns its next SLA check (schedule_check) is worked out from, besides its alerts and pauses.
_CLOCK_COLUMNS = (
    "status", "priority", "assignee_id", "sla_policy_name", "first_response_due_at", "next_response_due_at",
    "resolution_due_at", "first_responded_at", "sla_check_at",
)


def clock_inputs(ticket: Ticket) -> tuple:
    """Return what the ticket's next SLA check depends on, besides its alerts and pauses (which ingest never
    changes): take it before a customer's message changes the ticket and hand it to apply_triage."""
    return (*(getattr(ticket, name) for name in _CLOCK_COLUMNS), is_met(ticket, "next_response"))


def _waiting_since(ticket: Ticket) -> dt.datetime:
    """Return when the customer began waiting: their first message after the agents' last reply."""
    replied_at = ticket.last_agent_reply_at
    first_unanswered = db.session.scalar(
        sa.select(Message.created_at)
        .where(
            Message.ticket_id == ticket.id,
            Message.direction == Direction.INBOUND,
            Message.is_automatic.is_(False),
            Message.created_at > replied_at,
        )
        .order_by(Message.created_at, Message.id)
        .limit(1)
    )
    # Mail that crossed the reply (sent before it, stored after it) starts waiting now, when it is seen.
    return first_unanswered or utcnow()


def _due(start: dt.datetime, minutes: int | None, policy: PolicySpec) -> dt.datetime | None:
    if minutes is None:
        return None
    try:
        return add_business_minutes(start, minutes, policy.calendar).astimezone(dt.UTC)
    except CalendarError as error:
        # A calendar that never opens again must not stop the message from being stored.
        log.error("SLA policy %r gives no due time: %s", policy.name, error)
        return None


def _policy_named(
    name: str | None, policies: Mapping[str, PolicySpec], skipped: list[str]
) -> PolicySpec | None:
    if name is None:
        return None
    policy = policies.get(name) or next(
        (policy for policy in policies.values() if policy.name.casefold() == name.casefold()), None
    )
    if policy is None:
        skipped.append(f"SLA policy {name!r} does not exist")
    return policy


def _default_policy(policies: Mapping[str, PolicySpec]) -> PolicySpec | None:
    return next((policy for policy in policies.values() if policy.is_default), None)


def _event_data(outcome: TriageOutcome, due: Mapping[str, str | None], skipped: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "on": outcome.on,
        "matched": [{"rule": match.rule, "changes": dict(match.changes)} for match in outcome.matched],
        "changes": outcome.changes(),
        "sla_policy": outcome.sla_policy,
        "language": outcome.language,
    }
    if due:
        data["due"] = dict(due)
    if outcome.stopped_by:
        data["stopped_by"] = outcome.stopped_by
    if skipped:
        data["skipped"] = skipped
    return data


def _event_reason(outcome: TriageOutcome) -> str:
    if not outcome.matched:
        return "no rule matched; the default SLA policy applies"
    reason = "rules matched: " + ", ".join(outcome.matched_rules)
    return reason if len(reason) <= 500 else reason[:497] + "..."


def _facts_for_ticket(ticket: Ticket) -> TriageFacts:
    first = db.session.scalar(
        sa.select(Message)
        .where(Message.ticket_id == ticket.id, Message.direction == Direction.INBOUND)
        .order_by(Message.id)
        .limit(1)
    )
    body = (first.reply_text or first.text or "") if first is not None else ""
    return TriageFacts(
        channel=str(ticket.channel),
        sender=(first.address or "") if first is not None else "",
        subject=ticket.subject or "",
        body=body,
        customer_tags=_tags_of(ticket.customer),
        is_vip=ticket.customer.is_vip,
        language=ticket.language or _detect(ticket.subject, body),
        received_at=ticket.created_at,
    )


def _facts_for_message(inbound: InboundMessage) -> TriageFacts:
    sender = _sender_value(inbound)
    customer = None
    if sender:
        identity = find_identity(inbound.sender.kind, sender)
        customer = identity.customer if identity is not None else None
        while customer is not None and customer.merged_into_id is not None:
            customer = db.session.get(Customer, customer.merged_into_id)
    body = new_part_of(inbound)
    return TriageFacts(
        channel=str(inbound.channel),
        sender=sender,
        subject=inbound.subject or "",
        body=body,
        customer_tags=_tags_of(customer),
        is_vip=customer.is_vip if customer is not None else False,
        language=_detect(inbound.subject, body),
        received_at=_aware(inbound.received_at) or utcnow(),
    )


def _sender_value(inbound: InboundMessage) -> str:
    try:
        return normalize_identity(inbound.sender).value
    except ValueError:
        return (inbound.sender.value or "").strip().lower()




def _tags_of(customer: Customer | None) -> frozenset[str]:
    if customer is None:
        return frozenset()
    return frozenset(tag.strip() for tag in (customer.tags or "").split(",") if tag.strip())


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None or moment.utcoffset() is not None:
        return moment
    return moment.replace(tzinfo=dt.UTC)


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
