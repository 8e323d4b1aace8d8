"""Automatic messages admins edit, rendered in a Jinja sandbox; the built-in file is the fallback.

    render_acknowledgement(ticket)      # -> ("Re: ... [#1001]" or None, "Hello Maria, ...")
    save_message_template(None, "acknowledgement", "sv", None, "Hej {{ customer_name }}")
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from typing import Any

import sqlalchemy as sa
from flask import current_app
from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from helpdesk.database import once_per_transaction
from helpdesk.extensions import db
from helpdesk.models import MessageTemplate, Ticket

log = logging.getLogger(__name__)

ACKNOWLEDGEMENT = "acknowledgement"
#: The templates admins may edit, and the file each falls back to.
TEMPLATE_NAMES = {ACKNOWLEDGEMENT: "Acknowledgement of a new ticket"}
FALLBACK_FILES = {ACKNOWLEDGEMENT: "mail/acknowledgement.txt"}
MAX_BODY_CHARS = 20_000
#: Rendered text longer than this is refused, so a template cannot blow up every new ticket's mail.
MAX_RENDERED_CHARS = 100_000

_LANGUAGE = re.compile(r"[a-z]{2}")


class TemplateInvalid(ValueError):
    """The template cannot be saved; `field` names the form field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class TicketPlaceholders:
    """What a template sees as `ticket`: plain values, never the model with its relations."""

    number: int
    subject: str
    language: str | None = None


class _Sandbox(SandboxedEnvironment):
    # The sandbox blocks attribute tricks (ticket.__class__...) but not arithmetic; cap the operators that
    # can build huge values ('x' * 10**9), since the template is rendered inside mail intake.
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 100:
            raise SecurityError("exponent too large")
        if operator == "*":
            sized = left if isinstance(left, str | list | tuple) else right
            factor = right if sized is left else left
            if isinstance(sized, str | list | tuple) and isinstance(factor, int) \
                    and len(sized) * factor > MAX_RENDERED_CHARS:
                raise SecurityError("repetition too large")
        return super().call_binop(context, operator, left, right)


# Mail is plain text, so nothing is escaped; StrictUndefined turns a misspelt or blocked name into an error
# that the save refuses, instead of an empty gap in the customer's mail.
_sandbox = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)

SAMPLE_CONTEXT = {
    "ticket": TicketPlaceholders(number=1001, subject="The invoice shows the wrong VAT", language="en"),
    "customer_name": "Maria Lopez",
}


def render_sandboxed(source: str, context: dict[str, Any]) -> str:
    """Render template `source` in the sandbox; raise on syntax errors, unsafe access and unknown names."""
    text = _compiled(source).render(context)
    if len(text) > MAX_RENDERED_CHARS:
        raise SecurityError(f"the rendered text is longer than {MAX_RENDERED_CHARS} characters")
    return text


@functools.lru_cache(maxsize=64)
def _compiled(source: str) -> Template:
    # Compiling is most of the cost of rendering, and every new ticket renders the same few templates.
    return _sandbox.from_string(source)


def check_template_source(field: str, source: str) -> None:
    """Raise TemplateInvalid (naming the line) unless `source` parses and renders with sample values."""
    try:
        _sandbox.parse(source)
    except TemplateSyntaxError as error:
        raise TemplateInvalid(field, f"Line {error.lineno}: {error.message}") from None
    try:
        render_sandboxed(source, SAMPLE_CONTEXT)
    except Exception as error:  # any failure here would also fail at send time
        raise TemplateInvalid(field, f"The template cannot be rendered: {error}") from None


def find_message_template(name: str, language: str | None) -> MessageTemplate | None:
    """Return the `name` template for `language`, else its default (no language), else None."""
    candidates = db.session.scalars(
        sa.select(MessageTemplate).where(
            MessageTemplate.name == name,
            sa.or_(MessageTemplate.language.is_(None), MessageTemplate.language == (language or "").lower()),
        )
    ).all()
    by_language = {template.language: template for template in candidates}
    return by_language.get((language or "").lower() or None) or by_language.get(None)


def render_acknowledgement(ticket: Ticket) -> tuple[str | None, str]:
    """Return the acknowledgement of `ticket`: a subject (None when not customised) and the text."""
    customer_name = ticket.customer.name
    template = once_per_transaction(f"template:{ACKNOWLEDGEMENT}:{ticket.language}",
                                    lambda: find_message_template(ACKNOWLEDGEMENT, ticket.language))
    if template is not None:
        context = {
            "ticket": TicketPlaceholders(ticket.number, ticket.subject or "", ticket.language),
            "customer_name": customer_name or "",
        }
        try:
            subject = render_sandboxed(template.subject, context).strip() if template.subject else None
            return subject or None, render_sandboxed(template.body, context)
        except Exception:  # a broken admin template must never stop the acknowledgement
            log.exception("message template %s (%s) failed to render; the built-in text is sent",
                          template.name, template.language or "default")
    # The file needs nothing from the request context: rendered straight, without Flask's context processors.
    fallback = current_app.jinja_env.get_template(FALLBACK_FILES[ACKNOWLEDGEMENT])
    return None, fallback.render(ticket=ticket, customer_name=customer_name)


def list_message_templates() -> list[MessageTemplate]:
    """Return every stored template, by name and then language (the default first)."""
    return list(db.session.scalars(
        sa.select(MessageTemplate).order_by(MessageTemplate.name, MessageTemplate.language.is_not(None),
                                            MessageTemplate.language)
    ))


def save_message_template(template: MessageTemplate | None, name: str, language: str | None,
                          subject: str | None, body: str) -> MessageTemplate:
    """Check and store a new or changed template (not committed); raise TemplateInvalid when it is not usable."""
    if name not in TEMPLATE_NAMES:
        raise TemplateInvalid("name", f"{name!r} is not a template that can be edited.")
    language = (language or "").strip().lower() or None
    if language is not None and not _LANGUAGE.fullmatch(language):
        raise TemplateInvalid("language", f"{language!r} is not a two-letter language code such as en or sv.")
    subject = (subject or "").strip() or None
    body = (body or "").replace("\r\n", "\n")
    if not body.strip():
        raise TemplateInvalid("body", "The text is empty.")
    if len(body) > MAX_BODY_CHARS:
        raise TemplateInvalid("body", f"The text can be at most {MAX_BODY_CHARS} characters long.")
    if subject is not None:
        check_template_source("subject", subject)
    check_template_source("body", body)
    taken = db.session.scalar(
        sa.select(MessageTemplate.id).where(
            MessageTemplate.name == name,
            MessageTemplate.language.is_(None) if language is None else MessageTemplate.language == language,
        )
    )
    if taken is not None and (template is None or taken != template.id):
        which = f"language {language}" if language else "the default language"
        raise TemplateInvalid("language", f"The {name} template for {which} exists already.")
    if template is None:
        template = MessageTemplate(name=name)
        db.session.add(template)
    template.name, template.language, template.subject, template.body = name, language, subject, body
    return template
