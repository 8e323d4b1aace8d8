"""Triage rules and SLA policies as admins write them (YAML or JSON), and rule evaluation. Pure.

A rules file, in YAML (JSON has the same structure)::

    version: 1
    rules:
      - name: VIP customers to second line
        run_on: create                  # or create_and_customer_message
        conditions:
          match: any                    # all (the default) or any
          vip: true
          sender: ["@acme.example", "ceo@globex.example"]
        actions:
          tier: second_line
          priority: high
          sla_policy: Premium
          add_tags: [vip]
        stop: true                      # later rules are not evaluated when this one matched
      - name: Outage reports are urgent
        conditions:
          subject_keywords: [outage, "is down"]
          body_regex: 'error\\s+5\\d\\d'
        actions: {priority: urgent}

Rules are tried in file order; a rule that is disabled (`enabled: false`) is kept but skipped.

Conditions (a rule without conditions always matches); a list means "any of these":

- `channel`: email, sms, whatsapp or chat.
- `sender`: an address ("ceo@acme.example"), a domain ("acme.example" or "@acme.example", which
  also covers its subdomains) or a phone number or visitor id, matched exactly.
- `customer_tags`: the customer has one of these tags. `vip`: true or false.
- `subject_keywords`, `body_keywords`: whole words or phrases, case-insensitive.
- `subject_regex`, `body_regex`: regular expressions searched case-insensitively, checked at load.
- `language`: ISO 639-1 codes of the detected language.
- `business_hours`: inside or outside, by the default SLA policy's calendar at the message's time
  (without a calendar it never matches).
- `priority`: the ticket's priority as it stands, after the rules before this one.

Actions: `tier` (first_line or second_line), `group` (a group's name), `priority` (low, normal,
high, urgent), `sla_policy` (a policy's name), `add_tags` (a list), `assign` (an agent's email, or
"auto"), `auto_reply` (a template's name). A later rule's value wins; tags and auto-replies add up.

An SLA policies file::

    version: 1
    policies:
      - name: Standard
        default: true
        calendar: {name: Office, timezone: Europe/Stockholm, hours: {mon: [["08:00", "17:00"]]}}
        targets:
          urgent: {first_response: 30, next_response: 60, resolution: 240}
          normal: {first_response: 240, next_response: 480, resolution: 2880}
        warn_at_percent: 75
        escalation: {tier: second_line, raise_priority: true, notify: true}

`calendar` has the shape documented in helpdesk.triage.calendar; targets are business minutes per
priority, and a priority or target left out has no due time. Exactly one policy is the default.
`escalation` says what the SLA sweep does when a target is breached or predicted to be: move the ticket
to the second line (`tier: null` leaves the tier alone), raise its priority one step, and notify the
leads of its tier and its assignee. Each key left out (or the whole object) keeps that default.

Errors name the field, e.g. `rules[2].conditions.subject_regex: invalid regular expression ...`;
a file with any error is refused whole.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import pathlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import yaml

from helpdesk.triage.calendar import BusinessCalendar, CalendarError, calendar_from_dict, calendar_to_dict
from helpdesk.triage.sla import add_business_minutes

FORMAT_VERSION = 1
TIERS = ("first_line", "second_line")
PRIORITIES = ("low", "normal", "high", "urgent")
CHANNELS = ("email", "sms", "whatsapp", "chat")
DEFAULT_TIER = "first_line"
DEFAULT_PRIORITY = "normal"
AUTO_ASSIGN = "auto"
RULE_FIELDS = ("name", "enabled", "run_on", "conditions", "actions", "stop")
CONDITION_MATCHES = ("all", "any")
BUSINESS_HOURS = ("inside", "outside")
TARGET_KINDS = ("first_response", "next_response", "resolution")
POLICY_FIELDS = ("name", "default", "calendar", "targets", "warn_at_percent", "escalation")
ESCALATION_FIELDS = ("tier", "raise_priority", "notify")
ESCALATION_TIERS = ("second_line",)
DEFAULT_WARN_AT_PERCENT = 75
MAX_NAME_LENGTH = 100
MAX_TAG_LENGTH = 50
MAX_PATTERN_LENGTH = 500
#: Keyword and regex conditions read at most this much of a body, so one huge mail costs little.
MAX_SCANNED_CHARS = 50_000

_LANGUAGE_CODE = re.compile(r"[a-z]{2}")


class RunOn(enum.StrEnum):
    CREATE = "create"
    CREATE_AND_CUSTOMER_MESSAGE = "create_and_customer_message"


class TriageConfigError(ValueError):
    """A rules or policies file that is malformed; `field_path` says where."""

    def __init__(self, field_path: str, problem: str) -> None:
        super().__init__(f"{field_path}: {problem}" if field_path else problem)
        self.field_path = field_path
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class TriageFacts:
    """What rules look at: the message, its sender, and the ticket as it stands."""

    channel: str
    #: The sender's normalized address, phone number or visitor id.
    sender: str = ""
    subject: str = ""
    body: str = ""
    customer_tags: frozenset[str] = frozenset()
    is_vip: bool = False
    #: ISO 639-1 code of the detected language, or None.
    language: str | None = None
    #: When the message arrived (aware); business-hours conditions read the calendar at this moment.
    received_at: dt.datetime | None = None
    calendar: BusinessCalendar | None = None
    tier: str = DEFAULT_TIER
    priority: str = DEFAULT_PRIORITY
    #: The ticket's SLA policy; None means the default one.
    sla_policy: str | None = None


Predicate = Callable[[TriageFacts], bool]


@dataclasses.dataclass(frozen=True)
class Condition:
    """One key of a rule's conditions: its normalized value and the test it stands for."""

    key: str
    value: Any
    test: Predicate = dataclasses.field(compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Conditions:
    match: str = "all"
    items: tuple[Condition, ...] = ()

    def hold_for(self, facts: TriageFacts) -> bool:
        """Tell whether these conditions hold (no conditions always hold)."""
        if not self.items:
            return True
        combine = all if self.match == "all" else any
        return combine(condition.test(facts) for condition in self.items)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"match": self.match} if self.match != "all" else {}
        data.update((condition.key, condition.value) for condition in self.items)
        return data


@dataclasses.dataclass(frozen=True)
class Actions:
    tier: str | None = None
    group: str | None = None
    priority: str | None = None
    sla_policy: str | None = None
    add_tags: tuple[str, ...] = ()
    #: An agent's email, or "auto" for automatic assignment.
    assign: str | None = None
    #: The name of an auto-reply template.
    auto_reply: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name in ACTION_FIELDS:
            value = getattr(self, name)
            if value:
                data[name] = list(value) if isinstance(value, tuple) else value
        return data


ACTION_FIELDS = tuple(field.name for field in dataclasses.fields(Actions))


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    conditions: Conditions = Conditions()
    actions: Actions = Actions()
    run_on: RunOn = RunOn.CREATE
    is_enabled: bool = True
    stops_processing: bool = False

    def runs_on(self, on: str) -> bool:
        """Tell whether this rule takes part on `on` ("create" or "customer_message")."""
        return on == "create" or self.run_on == RunOn.CREATE_AND_CUSTOMER_MESSAGE

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name}
        if not self.is_enabled:
            data["enabled"] = False
        data["run_on"] = str(self.run_on)
        data["conditions"] = self.conditions.to_dict()
        data["actions"] = self.actions.to_dict()
        if self.stops_processing:
            data["stop"] = True
        return data


@dataclasses.dataclass(frozen=True)
class RuleMatch:
    """A rule that matched and the actions it contributed."""

    rule: str
    changes: Mapping[str, Any]
    stopped: bool = False


@dataclasses.dataclass(frozen=True)
class TriageOutcome:
    """Which rules matched and where the ticket ends up; fields no rule set keep the facts' values."""

    on: str = "create"
    matched: tuple[RuleMatch, ...] = ()
    tier: str = DEFAULT_TIER
    priority: str = DEFAULT_PRIORITY
    #: The SLA policy's name; None means the default policy.
    sla_policy: str | None = None
    #: A group's name; None leaves the group as it is.
    group: str | None = None
    add_tags: tuple[str, ...] = ()
    assign: str | None = None
    auto_replies: tuple[str, ...] = ()
    language: str | None = None
    #: The rule that stopped processing, if one did.
    stopped_by: str | None = None
    #: For each field a rule set, the name of the last rule that set it.
    set_by: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def matched_rules(self) -> list[str]:
        return [match.rule for match in self.matched]

    def changes(self) -> dict[str, Any]:
        """Return the fields rules set, with their final values."""
        values = {
            "tier": self.tier,
            "priority": self.priority,
            "sla_policy": self.sla_policy,
            "group": self.group,
            "add_tags": list(self.add_tags),
            "assign": self.assign,
            "auto_reply": list(self.auto_replies),
        }
        return {name: values[name] for name in ACTION_FIELDS if name in self.set_by}


def evaluate(facts: TriageFacts, rules: Sequence[Rule], *, on: str = "create") -> TriageOutcome:
    """Try `rules` in order on `facts`; return which matched and the resulting ticket fields."""
    if on not in ("create", "customer_message"):
        raise ValueError(f"on must be 'create' or 'customer_message', not {on!r}")
    current = facts
    matched: list[RuleMatch] = []
    set_by: dict[str, str] = {}
    group = assign = None
    tags: list[str] = []
    auto_replies: list[str] = []
    stopped_by = None
    for rule in rules:
        if not rule.is_enabled or not rule.runs_on(on) or not rule.conditions.hold_for(current):
            continue
        actions = rule.actions
        if actions.tier:
            current = dataclasses.replace(current, tier=actions.tier)
        if actions.priority:
            current = dataclasses.replace(current, priority=actions.priority)
        if actions.sla_policy:
            current = dataclasses.replace(current, sla_policy=actions.sla_policy)
        group = actions.group or group
        assign = actions.assign or assign
        tags.extend(tag for tag in actions.add_tags if tag not in tags)
        if actions.auto_reply and actions.auto_reply not in auto_replies:
            auto_replies.append(actions.auto_reply)
        for name in actions.to_dict():
            set_by[name] = rule.name
        matched.append(RuleMatch(rule.name, actions.to_dict(), stopped=rule.stops_processing))
        if rule.stops_processing:
            stopped_by = rule.name
            break
    return TriageOutcome(
        on=on,
        matched=tuple(matched),
        tier=current.tier,
        priority=current.priority,
        sla_policy=current.sla_policy,
        group=group,
        add_tags=tuple(tags),
        assign=assign,
        auto_replies=tuple(auto_replies),
        language=facts.language,
        stopped_by=stopped_by,
        set_by=set_by,
    )


def is_open_at(calendar: BusinessCalendar, moment: dt.datetime) -> bool:
    """Tell whether `moment` falls inside the calendar's business hours."""
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=dt.UTC)
    try:
        # Adding nothing gives the first minute the clock runs: the moment itself (to the minute) when open.
        return add_business_minutes(moment, 0, calendar) <= moment
    except CalendarError:
        return False


# --- reading and writing rules ------------------------------------------------------------------


def parse_rules(text: str | bytes, *, filename: str | None = None) -> list[Rule]:
    """Read a rules file (JSON if `filename` ends in .json, else YAML); raise TriageConfigError."""
    return rules_from_data(load_document(text, filename=filename))


def rules_from_data(data: Any) -> list[Rule]:
    """Build the rules of a loaded rules document, or raise TriageConfigError at the first bad field."""
    return _named_entries(data, "rules", rule_from_dict)


def rule_from_dict(data: Any, path: str = "rule") -> Rule:
    """Build one rule from its dict form; `path` prefixes the field named in errors."""
    if not isinstance(data, Mapping):
        raise TriageConfigError(path, "must be an object with name, conditions and actions")
    _reject_unknown(data, RULE_FIELDS, path)
    name = _name(data.get("name"), f"{path}.name")
    is_enabled = _boolean(data.get("enabled", True), f"{path}.enabled")
    run_on = _choice(data.get("run_on", "create"), tuple(RunOn), f"{path}.run_on")
    conditions = conditions_from_dict(data.get("conditions", {}), f"{path}.conditions")
    actions = actions_from_dict(data.get("actions", {}), f"{path}.actions")
    stops = _boolean(data.get("stop", False), f"{path}.stop")
    if actions == Actions() and not stops:
        raise TriageConfigError(f"{path}.actions", "give at least one action (or stop: true)")
    return Rule(name, conditions, actions, RunOn(run_on), is_enabled, stops)


def conditions_from_dict(data: Any, path: str) -> Conditions:
    """Build a rule's conditions from their dict form (None or {} always holds)."""
    if data is None:
        return Conditions()
    if not isinstance(data, Mapping):
        raise TriageConfigError(path, "must be an object of conditions, e.g. {vip: true}")
    _reject_unknown(data, ("match", *CONDITION_PARSERS), path)
    match = _choice(data.get("match", "all"), CONDITION_MATCHES, f"{path}.match")
    items = tuple(
        CONDITION_PARSERS[key](data[key], f"{path}.{key}") for key in CONDITION_PARSERS if key in data
    )
    return Conditions(match, items)


def actions_from_dict(data: Any, path: str) -> Actions:
    """Build a rule's actions from their dict form."""
    if data is None:
        return Actions()
    if not isinstance(data, Mapping):
        raise TriageConfigError(path, "must be an object of actions, e.g. {priority: high}")
    _reject_unknown(data, ACTION_FIELDS, path)
    values: dict[str, Any] = {}
    if "tier" in data:
        values["tier"] = _choice(data["tier"], TIERS, f"{path}.tier")
    if "priority" in data:
        values["priority"] = _choice(data["priority"], PRIORITIES, f"{path}.priority")
    for key in ("group", "sla_policy", "auto_reply"):
        if key in data:
            values[key] = _name(data[key], f"{path}.{key}")
    if "add_tags" in data:
        values["add_tags"] = tuple(
            _tag(tag, f"{path}.add_tags[{i}]")
            for i, tag in enumerate(_list_of(data["add_tags"], f"{path}.add_tags"))
        )
    if "assign" in data:
        values["assign"] = _assignee(data["assign"], f"{path}.assign")
    return Actions(**values)


def rules_to_data(rules: Iterable[Rule]) -> dict[str, Any]:
    """Return the rules as a document that `rules_from_data` reads back unchanged."""
    return {"version": FORMAT_VERSION, "rules": [rule.to_dict() for rule in rules]}


def dump_rules(rules: Iterable[Rule], fmt: str = "yaml") -> str:
    """Write the rules as YAML or JSON text."""
    return dump_document(rules_to_data(rules), fmt)


def check_references(
    rules: Iterable[Rule], *, groups: Iterable[str], policies: Iterable[str], agents: Iterable[str]
) -> None:
    """Raise TriageConfigError for the first rule naming a group, policy or agent that does not exist."""
    known = {
        "group": {name.casefold(): name for name in groups},
        "sla_policy": {name.casefold(): name for name in policies},
        "assign": {email.casefold(): email for email in agents},
    }
    what = {
        "group": "no group named",
        "sla_policy": "no SLA policy named",
        "assign": "no agent with the email",
    }
    for index, rule in enumerate(rules):
        for field in ("group", "sla_policy", "assign"):
            value = getattr(rule.actions, field)
            if value is None or (field == "assign" and value == AUTO_ASSIGN):
                continue
            if value.casefold() not in known[field]:
                raise TriageConfigError(f"rules[{index}].actions.{field}", f"{what[field]} {value!r}")


# --- SLA policies ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SlaTargets:
    """Business minutes allowed per clock; None means no target."""

    first_response: int | None = None
    next_response: int | None = None
    resolution: int | None = None

    def to_dict(self) -> dict[str, int]:
        return {kind: getattr(self, kind) for kind in TARGET_KINDS if getattr(self, kind) is not None}


@dataclasses.dataclass(frozen=True)
class Escalation:
    """What the SLA sweep does to a ticket whose target is breached or predicted to be."""

    #: The tier the ticket moves to; None leaves its tier alone.
    tier: str | None = "second_line"
    raise_priority: bool = True
    #: Tell the leads of the ticket's tier and its assignee in their inbox.
    notify: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "raise_priority": self.raise_priority, "notify": self.notify}


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    name: str
    calendar: BusinessCalendar
    targets: Mapping[str, SlaTargets] = dataclasses.field(default_factory=dict)
    is_default: bool = False
    warn_at_percent: int = DEFAULT_WARN_AT_PERCENT
    escalation: Escalation = Escalation()

    def targets_for(self, priority: str) -> SlaTargets:
        return self.targets.get(priority, SlaTargets())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "default": self.is_default,
            "calendar": calendar_to_dict(self.calendar),
            "targets": targets_to_dict(self.targets),
            "warn_at_percent": self.warn_at_percent,
            "escalation": self.escalation.to_dict(),
        }


def parse_policies(text: str | bytes, *, filename: str | None = None) -> list[PolicySpec]:
    """Read an SLA policies file (JSON if `filename` ends in .json, else YAML); raise TriageConfigError."""
    return policies_from_data(load_document(text, filename=filename))


def policies_from_data(data: Any) -> list[PolicySpec]:
    """Build the policies of a loaded document: unique names, exactly one default."""
    policies = _named_entries(data, "policies", policy_from_dict)
    defaults = [index for index, policy in enumerate(policies) if policy.is_default]
    if policies and not defaults:
        raise TriageConfigError("policies", "mark exactly one policy as default: true")
    if len(defaults) > 1:
        raise TriageConfigError(
            f"policies[{defaults[1]}].default", f"policies[{defaults[0]}] is already the default"
        )
    return policies


def policy_from_dict(data: Any, path: str = "policy") -> PolicySpec:
    """Build one SLA policy from its dict form; `path` prefixes the field named in errors."""
    if not isinstance(data, Mapping):
        raise TriageConfigError(path, "must be an object with name, calendar and targets")
    _reject_unknown(data, POLICY_FIELDS, path)
    name = _name(data.get("name"), f"{path}.name")
    is_default = _boolean(data.get("default", False), f"{path}.default")
    if "calendar" not in data:
        raise TriageConfigError(f"{path}.calendar", "missing (a business calendar object)")
    try:
        calendar = calendar_from_dict(data["calendar"])
    except CalendarError as error:
        raise TriageConfigError(_join(f"{path}.calendar", error.field_path), error.problem) from None
    if not (calendar.always_open or calendar.open_dates or any(calendar.hours.values())):
        raise TriageConfigError(
            f"{path}.calendar.hours", "the calendar is never open, so no SLA clock could run"
        )
    targets = targets_from_dict(data.get("targets", {}), f"{path}.targets")
    warn_at = data.get("warn_at_percent", DEFAULT_WARN_AT_PERCENT)
    if not _is_int(warn_at) or not 1 <= warn_at <= 100:
        raise TriageConfigError(f"{path}.warn_at_percent", "must be a whole number from 1 to 100")
    escalation = escalation_from_dict(data.get("escalation"), f"{path}.escalation")
    return PolicySpec(name, calendar, targets, is_default, warn_at, escalation)


def escalation_from_dict(data: Any, path: str = "escalation") -> Escalation:
    """Build a policy's escalation from its dict form; None, and each key left out, keep the default."""
    if data is None:
        return Escalation()
    if not isinstance(data, Mapping):
        raise TriageConfigError(path, 'must be an object, e.g. {"tier": "second_line", "raise_priority": true}')
    _reject_unknown(data, ESCALATION_FIELDS, path)
    values: dict[str, Any] = {}
    if "tier" in data:
        tier = data["tier"]
        if tier is not None and tier not in ESCALATION_TIERS:
            raise TriageConfigError(f"{path}.tier", "must be second_line, or null to leave the tier alone")
        values["tier"] = tier
    for key in ("raise_priority", "notify"):
        if key in data:
            values[key] = _boolean(data[key], f"{path}.{key}")
    return Escalation(**values)


def targets_from_dict(data: Any, path: str) -> dict[str, SlaTargets]:
    """Build a policy's targets per priority from their dict form."""
    if not isinstance(data, Mapping):
        raise TriageConfigError(
            path, 'must be an object of priorities, e.g. {"high": {"first_response": 60}}'
        )
    _reject_unknown(data, PRIORITIES, path)
    targets: dict[str, SlaTargets] = {}
    for priority in PRIORITIES:
        if priority not in data:
            continue
        minutes = data[priority]
        here = f"{path}.{priority}"
        if not isinstance(minutes, Mapping):
            raise TriageConfigError(here, 'must be an object, e.g. {"first_response": 60, "resolution": 480}')
        _reject_unknown(minutes, TARGET_KINDS, here)
        for kind, value in minutes.items():
            if value is not None and (not _is_int(value) or value < 1):
                raise TriageConfigError(
                    f"{here}.{kind}", "must be a whole number of business minutes, 1 or more"
                )
        targets[priority] = SlaTargets(**{kind: minutes.get(kind) for kind in TARGET_KINDS})
    return targets


def targets_to_dict(targets: Mapping[str, SlaTargets]) -> dict[str, dict[str, int]]:
    """Return targets per priority in their dict form, priorities in order."""
    return {priority: targets[priority].to_dict() for priority in PRIORITIES if priority in targets}


def policies_to_data(policies: Iterable[PolicySpec]) -> dict[str, Any]:
    """Return the policies as a document that `policies_from_data` reads back unchanged."""
    return {"version": FORMAT_VERSION, "policies": [policy.to_dict() for policy in policies]}


def dump_policies(policies: Iterable[PolicySpec], fmt: str = "yaml") -> str:
    """Write the policies as YAML or JSON text."""
    return dump_document(policies_to_data(policies), fmt)


# --- documents ------------------------------------------------------------------------------------


class _Yaml12Loader(yaml.SafeLoader):
    """yaml.safe_load's loader, with YAML 1.2 scalars: 17:00, 2026-12-24 and `no` stay strings."""


def _plain_scalar_resolvers() -> None:
    # PyYAML follows YAML 1.1, where 17:00 is the integer 1020 (base 60), an unquoted date is a date
    # and yes/no/on/off are booleans; calendars and tags would be misread. Keep the safe constructor
    # and resolve only what YAML 1.2's core schema does.
    replaced = (
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:timestamp",
    )
    _Yaml12Loader.yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag not in replaced]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    _Yaml12Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    _Yaml12Loader.add_implicit_resolver(
        "tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789")
    )
    _Yaml12Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+0123456789."),
    )


_plain_scalar_resolvers()


def load_document(text: str | bytes, *, filename: str | None = None) -> Any:
    """Parse YAML or JSON text (JSON when `filename` ends in .json); raise TriageConfigError."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise TriageConfigError("", "the file is not UTF-8 text") from None
    if filename is not None and pathlib.PurePath(filename).suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise TriageConfigError(
                "", f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
            ) from None
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # a SafeLoader: builds plain data only
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise TriageConfigError("", f"not valid YAML: {problem}{where}") from None


def dump_document(data: Mapping[str, Any], fmt: str = "yaml") -> str:
    """Write a document as YAML or JSON text."""
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(
            dict(data), sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
        )
    raise ValueError(f"unknown format {fmt!r} (yaml or json)")


def _named_entries(data: Any, key: str, build: Callable[[Any, str], Any]) -> list[Any]:
    """Build each entry of the document's `key` list, refusing a name used twice (case-insensitively)."""
    built: list[Any] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(_document_list(data, key)):
        item = build(entry, f"{key}[{index}]")
        folded = item.name.casefold()
        if folded in seen:
            raise TriageConfigError(
                f"{key}[{index}].name", f"{item.name!r} is already the name of {key}[{seen[folded]}]"
            )
        seen[folded] = index
        built.append(item)
    return built


def _document_list(data: Any, key: str) -> list[Any]:
    if not isinstance(data, Mapping) or key not in data:
        raise TriageConfigError("", f"must be an object with a {key!r} list (and optionally version: 1)")
    _reject_unknown(data, ("version", key), "")
    if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        raise TriageConfigError("version", f"only version {FORMAT_VERSION} is known")
    entries = data[key]
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise TriageConfigError(key, "must be a list")
    return entries


# --- conditions -----------------------------------------------------------------------------------


def _channel_condition(value: Any, path: str) -> Condition:
    channels = [_choice(item, CHANNELS, here) for item, here in _items(value, path)]
    wanted = frozenset(channels)
    return Condition("channel", _one_or_list(channels), lambda facts: facts.channel in wanted)


def _sender_condition(value: Any, path: str) -> Condition:
    entries = [_sender_entry(item, here) for item, here in _items(value, path)]
    exact = frozenset(entry for entry in entries if not entry.startswith("@"))
    domains = tuple(entry for entry in entries if entry.startswith("@"))

    def test(facts: TriageFacts) -> bool:
        sender = facts.sender.casefold()
        if sender in exact:
            return True
        domain = "@" + sender.rpartition("@")[2] if "@" in sender else None
        return domain is not None and any(domain == d or domain.endswith("." + d[1:]) for d in domains)

    return Condition("sender", _one_or_list(entries), test)


def _sender_entry(value: Any, path: str) -> str:
    text = _text(value, path).strip().casefold()
    local, at, domain = text.rpartition("@")
    if at and local:
        if not _looks_like_domain(domain):
            raise TriageConfigError(path, f"{value!r} is not an email address")
        return text
    if at or _looks_like_domain(text):
        domain = domain if at else text
        if not _looks_like_domain(domain):
            raise TriageConfigError(path, f"{value!r} is not a domain")
        return "@" + domain
    return text  # a phone number or a chat visitor id


def _looks_like_domain(text: str) -> bool:
    return "." in text and all(label and " " not in label for label in text.split("."))


def _tags_condition(value: Any, path: str) -> Condition:
    tags = [_tag(item, here) for item, here in _items(value, path)]
    wanted = frozenset(tag.casefold() for tag in tags)
    return Condition(
        "customer_tags",
        _one_or_list(tags),
        lambda facts: any(tag.casefold() in wanted for tag in facts.customer_tags),
    )


def _vip_condition(value: Any, path: str) -> Condition:
    wanted = _boolean(value, path)
    return Condition("vip", wanted, lambda facts: facts.is_vip == wanted)


def _keywords_condition(key: str, part: str) -> Callable[[Any, str], Condition]:
    def parse(value: Any, path: str) -> Condition:
        words: list[str] = []
        for item, here in _items(value, path):
            word = _text(item, here).strip()
            if not word:
                raise TriageConfigError(here, "must not be empty")
            words.append(word)
        # Whole words: "urgent" finds "URGENT!" but not "insurgent"; phrases match across any spacing.
        alternatives = "|".join(r"\s+".join(re.escape(piece) for piece in word.split()) for word in words)
        pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
        return Condition(key, _one_or_list(words), lambda facts: _search(pattern, facts, part))

    return parse


def _regex_condition(key: str, part: str) -> Callable[[Any, str], Condition]:
    def parse(value: Any, path: str) -> Condition:
        sources: list[str] = []
        patterns: list[re.Pattern[str]] = []
        for item, here in _items(value, path):
            source = _text(item, here)
            if not source:
                raise TriageConfigError(here, "must not be empty")
            if len(source) > MAX_PATTERN_LENGTH:
                raise TriageConfigError(here, f"longer than {MAX_PATTERN_LENGTH} characters")
            try:
                patterns.append(re.compile(source, re.IGNORECASE))
            except re.error as error:
                where = f" at position {error.pos}" if error.pos is not None else ""
                raise TriageConfigError(
                    here, f"invalid regular expression {source!r}: {error.msg}{where}"
                ) from None
            sources.append(source)
        return Condition(
            key, _one_or_list(sources), lambda facts: any(_search(p, facts, part) for p in patterns)
        )

    return parse


def _search(pattern: re.Pattern[str], facts: TriageFacts, part: str) -> bool:
    text = facts.subject if part == "subject" else facts.body
    return pattern.search(text[:MAX_SCANNED_CHARS]) is not None


def _language_condition(value: Any, path: str) -> Condition:
    codes = []
    for item, here in _items(value, path):
        code = _text(item, here).strip().lower()
        if not _LANGUAGE_CODE.fullmatch(code):
            raise TriageConfigError(here, f"{item!r} is not an ISO 639-1 language code such as en or sv")
        codes.append(code)
    wanted = frozenset(codes)
    return Condition("language", _one_or_list(codes), lambda facts: facts.language in wanted)


def _business_hours_condition(value: Any, path: str) -> Condition:
    wanted = _choice(value, BUSINESS_HOURS, path)

    def test(facts: TriageFacts) -> bool:
        if facts.calendar is None or facts.received_at is None:
            return False
        return is_open_at(facts.calendar, facts.received_at) == (wanted == "inside")

    return Condition("business_hours", wanted, test)


def _priority_condition(value: Any, path: str) -> Condition:
    priorities = [_choice(item, PRIORITIES, here) for item, here in _items(value, path)]
    wanted = frozenset(priorities)
    return Condition("priority", _one_or_list(priorities), lambda facts: facts.priority in wanted)


#: Each condition key and how to read it, in the order conditions are written back.
CONDITION_PARSERS: dict[str, Callable[[Any, str], Condition]] = {
    "channel": _channel_condition,
    "sender": _sender_condition,
    "customer_tags": _tags_condition,
    "vip": _vip_condition,
    "subject_keywords": _keywords_condition("subject_keywords", "subject"),
    "subject_regex": _regex_condition("subject_regex", "subject"),
    "body_keywords": _keywords_condition("body_keywords", "body"),
    "body_regex": _regex_condition("body_regex", "body"),
    "language": _language_condition,
    "business_hours": _business_hours_condition,
    "priority": _priority_condition,
}


# --- small readers ---------------------------------------------------------------------------------


def _reject_unknown(data: Mapping[str, Any], known: Sequence[str], path: str) -> None:
    for key in data:
        if key not in known:
            raise TriageConfigError(_join(path, str(key)), f"unknown field (known: {', '.join(known)})")


def _join(path: str, field: str) -> str:
    if not field:
        return path
    if not path:
        return field
    return f"{path}{field}" if field.startswith("[") else f"{path}.{field}"


def _items(value: Any, path: str) -> list[tuple[Any, str]]:
    """Return a value given as one item or a non-empty list, each item with its own path."""
    if isinstance(value, list):
        if not value:
            raise TriageConfigError(path, "must not be an empty list")
        return [(item, f"{path}[{index}]") for index, item in enumerate(value)]
    return [(value, path)]


def _list_of(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise TriageConfigError(path, "must be a non-empty list")
    return value


def _one_or_list(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else list(values)


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise TriageConfigError(path, f"must be a string, not {_kind(value)}")
    return value


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TriageConfigError(path, "must be a non-empty string")
    if len(value.strip()) > MAX_NAME_LENGTH:
        raise TriageConfigError(path, f"longer than {MAX_NAME_LENGTH} characters")
    return value.strip()


def _tag(value: Any, path: str) -> str:
    tag = _text(value, path).strip()
    if not tag or "," in tag or len(tag) > MAX_TAG_LENGTH:
        raise TriageConfigError(path, f"must be a tag of 1 to {MAX_TAG_LENGTH} characters without commas")
    return tag


def _assignee(value: Any, path: str) -> str:
    text = _text(value, path).strip()
    if text == AUTO_ASSIGN:
        return text
    local, at, domain = text.rpartition("@")
    if not (at and local and _looks_like_domain(domain)):
        raise TriageConfigError(path, f'must be an agent\'s email address or "{AUTO_ASSIGN}"')
    return text.casefold()


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise TriageConfigError(path, "must be true or false")
    return value


def _choice(value: Any, choices: Sequence[str], path: str) -> str:
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(str(choice) for choice in choices)
        if len(choices) == 2:
            options = f"{choices[0]} or {choices[1]}"
        raise TriageConfigError(path, f"must be {'one of ' if len(choices) > 2 else ''}{options}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )
