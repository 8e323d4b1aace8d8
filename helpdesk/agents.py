"""Creating and changing agents, and their API tokens."""

from __future__ import annotations

import sqlalchemy as sa

from channels.identities import InvalidIdentity, normalize_email
from helpdesk.extensions import db
from helpdesk.models import Agent, ApiToken, Group, Role, Tier
from helpdesk.models.base import utcnow
from helpdesk.security import (
    hash_api_token,
    hash_password,
    new_api_token,
    password_needs_rehash,
    verify_password,
)

MIN_PASSWORD_LENGTH = 10


class AgentError(ValueError):
    """A request about an agent that cannot be carried out; the message says why."""


def find_agent_by_email(address: str) -> Agent | None:
    try:
        address = normalize_email(address)
    except InvalidIdentity:
        return None
    return db.session.scalar(sa.select(Agent).where(Agent.email == address))


def check_password_strength(password: str) -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise AgentError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")


def create_agent(
    email: str,
    name: str,
    password: str | None = None,
    *,
    role: Role = Role.AGENT,
    tier: Tier = Tier.FIRST_LINE,
    groups: list[Group] = (),
    languages: list[str] = (),
    capacity: int = 10,
) -> Agent:
    """Add an agent; the caller commits. Raise AgentError on a taken or malformed address."""
    try:
        address = normalize_email(email)
    except InvalidIdentity as error:
        raise AgentError(str(error)) from None
    if find_agent_by_email(address) is not None:
        raise AgentError(f"an agent with the address {address} already exists")
    if password is not None:
        check_password_strength(password)
    agent = Agent(
        email=address,
        name=(name or address.partition("@")[0]).strip()[:200],
        password_hash=hash_password(password) if password else None,
        role=Role(role),
        tier=Tier(tier),
        capacity=capacity,
        groups=list(groups),
    )
    agent.set_languages(list(languages))
    db.session.add(agent)
    return agent


def set_password(agent: Agent, password: str) -> None:
    check_password_strength(password)
    agent.password_hash = hash_password(password)


def authenticate(email: str, password: str) -> Agent | None:
    """Return the active agent with these credentials, or None; upgrades an outdated hash."""
    agent = find_agent_by_email(email)
    if not verify_password(agent.password_hash if agent else None, password or ""):
        return None
    if not agent.is_active:
        return None
    if password_needs_rehash(agent.password_hash):
        agent.password_hash = hash_password(password)
    agent.last_login_at = utcnow()
    db.session.commit()
    return agent


def create_api_token(agent: Agent, name: str = "personal token") -> str:
    """Store a new token for `agent` and return it; only its hash is kept, so show it once."""
    token = new_api_token()
    db.session.add(ApiToken(agent=agent, name=name.strip()[:100] or "personal token",
                            token_hash=hash_api_token(token), prefix=token[:10]))
    db.session.commit()
    return token


def revoke_api_token(agent: Agent, token_id: int) -> bool:
    row = db.session.get(ApiToken, token_id)
    if row is None or row.agent_id != agent.id or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    db.session.commit()
    return True


def get_or_create_group(name: str) -> Group:
    group = db.session.scalar(sa.select(Group).where(Group.name == name))
    if group is None:
        group = Group(name=name)
        db.session.add(group)
    return group
