"""Twilio accounts: those admins keep in the database, and the environment's TWILIO_* account as the default.

    list_twilio_accounts()                                  # -> [ChannelAccount, ...] by name
    save_twilio_account(None, TwilioAccountInput(...))      # -> a new ChannelAccount (not committed)
    settings_for_account("AC…")                             # -> the account a webhook says it comes from
    settings_for_sending(config, ChannelName.SMS)           # -> the account replies go out through

An account saved in the admin pages is used by the next webhook, send or media download, with no restart (other
processes re-read the accounts within TWILIO_ACCOUNTS_CACHE_SECONDS). The order: enabled accounts in the
database, by name, then the environment's account. A disabled account is never used; when it is the only one
that could send on a channel, replies wait in the outbox (retried, with the reason shown) instead of being
logged locally as if sent.
"""

from __future__ import annotations

import dataclasses
import hmac
import re
import time
from collections.abc import Mapping
from typing import Any

import phonenumbers
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app, has_app_context

from channels.messages import ChannelName
from channels.sms.twilio import WHATSAPP_PREFIX, NoSendingAccount, TwilioSettings
from helpdesk.extensions import db
from helpdesk.models import ChannelAccount

#: Marks a ChannelAccount (channel "sms") as a Twilio account; its settings hold the non-secret fields.
PROVIDER = "twilio"
ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")
_CACHE_KEY = "helpdesk.twilio_accounts"
_CHANGED = "twilio_accounts_changed"
MESSAGING_SERVICE_SID = re.compile(r"MG[0-9a-f]{32}")


class TwilioAccountInvalid(ValueError):
    """The account cannot be saved; `errors` maps each form field at fault to what is wrong with it."""

    def __init__(self, errors: Mapping[str, str]):
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = dict(errors)


@dataclasses.dataclass(frozen=True)
class TwilioAccountInput:
    name: str
    account_sid: str
    #: None or empty keeps the stored token.
    auth_token: str | None = dataclasses.field(default=None, repr=False)
    from_number: str | None = None
    messaging_service_sid: str | None = None
    whatsapp_from: str | None = None
    is_enabled: bool = True


def is_twilio_account(account: ChannelAccount) -> bool:
    return account.channel == ChannelName.SMS and (account.settings or {}).get("provider") == PROVIDER


def list_twilio_accounts() -> list[ChannelAccount]:
    """Return every Twilio account in the database, by name (the order replies pick an account in)."""
    accounts = db.session.scalars(
        sa.select(ChannelAccount).where(ChannelAccount.channel == ChannelName.SMS).order_by(ChannelAccount.name)
    )
    return [account for account in accounts if is_twilio_account(account)]


def get_twilio_account(account_id: int) -> ChannelAccount | None:
    """Return the Twilio account with this id, or None."""
    account = db.session.get(ChannelAccount, account_id)
    return account if account is not None and is_twilio_account(account) else None


def environment_settings(config: Mapping[str, Any]) -> TwilioSettings | None:
    """Return the account TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN name, or None when they are unset."""
    account_sid, auth_token = config.get("TWILIO_ACCOUNT_SID"), config.get("TWILIO_AUTH_TOKEN")
    if not account_sid or not auth_token:
        return None
    return _settings(config, account_sid, auth_token, config.get("TWILIO_FROM_NUMBER"),
                     config.get("TWILIO_MESSAGING_SERVICE_SID"), config.get("TWILIO_WHATSAPP_FROM"))


@dataclasses.dataclass(frozen=True)
class SavedAccount:
    """A Twilio account as saved in the database, copied out of the session so a process can keep it a while."""

    name: str
    is_enabled: bool
    account_sid: str | None
    auth_token: str | None = dataclasses.field(repr=False)
    from_number: str | None = None
    messaging_service_sid: str | None = None
    whatsapp_from: str | None = None

    @classmethod
    def of(cls, account: ChannelAccount) -> SavedAccount:
        stored = account.settings or {}
        return cls(account.name, account.is_enabled, stored.get("account_sid"),
                   (account.secrets or {}).get("auth_token"), stored.get("from_number"),
                   stored.get("messaging_service_sid"), stored.get("whatsapp_from"))

    def settings(self, config: Mapping[str, Any]) -> TwilioSettings | None:
        """Return its settings, or None if it lacks its SID or token."""
        if not self.account_sid or not self.auth_token:
            return None
        return _settings(config, self.account_sid, self.auth_token, self.from_number, self.messaging_service_sid,
                         self.whatsapp_from)


def saved_accounts() -> list[SavedAccount]:
    """Return the saved Twilio accounts by name, read again at most every TWILIO_ACCOUNTS_CACHE_SECONDS.

    Every webhook, reply and media download looks its account up here: on PostgreSQL the query was a tenth of
    a webhook's time. A change committed in this process is seen at once (see install_account_hooks);
    other processes see it within the cache time.
    """
    cache = current_app.extensions.setdefault(_CACHE_KEY, {})
    now = time.monotonic()
    if cache.get("expires", 0) > now:
        return cache["accounts"]
    accounts = [SavedAccount.of(account) for account in list_twilio_accounts()]
    cache.update(accounts=accounts, expires=now + float(current_app.config.get("TWILIO_ACCOUNTS_CACHE_SECONDS", 5)))
    return accounts


def forget_saved_accounts() -> None:
    """Read the accounts from the database again on next use."""
    current_app.extensions.pop(_CACHE_KEY, None)


def _note_account_changes(session: so.Session, flush_context) -> None:
    if any(isinstance(row, ChannelAccount) for row in (*session.new, *session.dirty, *session.deleted)):
        session.info[_CHANGED] = True


def _forget_after_commit(session: so.Session) -> None:
    if session.info.pop(_CHANGED, False) and has_app_context():
        forget_saved_accounts()


def _drop_note(session: so.Session, previous_transaction) -> None:
    session.info.pop(_CHANGED, None)


def install_account_hooks() -> None:
    """Forget the kept accounts whenever this process commits a change to a channel account (idempotent)."""
    if not sa.event.contains(so.Session, "after_flush", _note_account_changes):
        sa.event.listen(so.Session, "after_flush", _note_account_changes)
        sa.event.listen(so.Session, "after_commit", _forget_after_commit)
        sa.event.listen(so.Session, "after_soft_rollback", _drop_note)


def _settings(config: Mapping[str, Any], account_sid: str, auth_token: str, from_number: str | None,
              messaging_service_sid: str | None, whatsapp_from: str | None) -> TwilioSettings:
    # Where Twilio reaches us and how we reach it are the deployment's, whichever account is used.
    return TwilioSettings(
        account_sid=account_sid,
        auth_token=auth_token,
        from_number=from_number or None,
        messaging_service_sid=messaging_service_sid or None,
        whatsapp_from=(whatsapp_from or "").removeprefix(WHATSAPP_PREFIX) or None,
        public_url=config.get("HELPDESK_PUBLIC_URL") or "http://127.0.0.1:5000",
        api_base_url=config.get("TWILIO_API_BASE_URL") or None,
        timeout=float(config.get("TWILIO_TIMEOUT_SECONDS") or 8.0),
        media_max_bytes=int(config.get("TWILIO_MEDIA_MAX_BYTES") or 10 * 1024 * 1024),
    )


def _same_sid(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def settings_for_account(account_sid: str, config: Mapping[str, Any] | None = None) -> TwilioSettings | None:
    """Return the settings of the enabled account with this SID (the database's first, then the environment's)."""
    config = current_app.config if config is None else config
    account_sid = (account_sid or "").strip()
    if not account_sid:
        return None
    for account in saved_accounts():
        settings = account.settings(config) if account.is_enabled else None
        if settings is not None and _same_sid(settings.account_sid, account_sid):
            return settings
    settings = environment_settings(config)
    if settings is not None and _same_sid(settings.account_sid, account_sid):
        return settings
    return None


def settings_for_sending(config: Mapping[str, Any], channel: ChannelName) -> TwilioSettings | None:
    """Return the account replies on `channel` go out through now; None when texts stay in the local log.

    Raises NoSendingAccount when only a disabled account could send them: they wait rather than vanish.
    """
    disabled = []
    for account in saved_accounts():
        settings = account.settings(config)
        if settings is None or not settings.can_send(channel):
            continue
        if account.is_enabled:
            return settings
        disabled.append(account.name)
    settings = environment_settings(config)
    if settings is not None and settings.can_send(channel):
        return settings
    if disabled:
        label = "WhatsApp" if channel is ChannelName.WHATSAPP else "SMS"
        raise NoSendingAccount(f"the Twilio account {disabled[0]!r} that sends {label} replies is disabled; "
                               "replies wait until an admin enables it or another account")
    return None


# --- saving ------------------------------------------------------------------------------------------


def e164_or_error(value: str | None, errors: dict[str, str], field: str) -> str | None:
    """Return the number in E.164, or None if empty; note in `errors` why it is not a usable number."""
    raw = (value or "").strip().removeprefix(WHATSAPP_PREFIX).strip()
    if not raw:
        return None
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        errors[field] = (f"{raw!r} is not a phone number in international format; give it with its country code, "
                         "such as +14155550100.")
        return None
    if not phonenumbers.is_valid_number(parsed):
        errors[field] = f"{raw!r} is not a valid phone number (check the country code and the digits)."
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def validate_twilio_account(account: ChannelAccount | None, data: TwilioAccountInput) -> dict[str, Any]:
    """Return the settings to store for `data`; raise TwilioAccountInvalid naming every field at fault."""
    errors: dict[str, str] = {}
    name = (data.name or "").strip()
    if not name:
        errors["name"] = "Give the account a name."
    elif len(name) > 100:
        errors["name"] = "Keep the name to 100 characters."
    else:
        taken = db.session.scalar(sa.select(ChannelAccount.id).where(ChannelAccount.name == name))
        if taken is not None and (account is None or taken != account.id):
            errors["name"] = "Another channel account already uses this name."
    account_sid = (data.account_sid or "").strip()
    if account_sid[:2].upper() == "AC":
        account_sid = "AC" + account_sid[2:].lower()
    if not ACCOUNT_SID.fullmatch(account_sid):
        errors["account_sid"] = ("An account SID is AC followed by 32 hexadecimal characters; copy it from the "
                                 "Twilio console.")
    else:
        for other in list_twilio_accounts():
            if (account is None or other.id != account.id) and (other.settings or {}).get("account_sid") == account_sid:
                errors["account_sid"] = f"The account {other.name!r} already has this account SID."
    token = (data.auth_token or "").strip()  # pasted tokens often carry a newline or a space
    if token and (len(token) < 16 or len(token) > 200 or any(char.isspace() for char in token)):
        errors["auth_token"] = "An auth token is a single word of 32 characters, with no spaces; copy it again."
    elif not token and (account is None or not (account.secrets or {}).get("auth_token")):
        errors["auth_token"] = "A new account needs its auth token."
    from_number = e164_or_error(data.from_number, errors, "from_number")
    whatsapp_from = e164_or_error(data.whatsapp_from, errors, "whatsapp_from")
    service = (data.messaging_service_sid or "").strip()
    if service[:2].upper() == "MG":
        service = "MG" + service[2:].lower()
    if service and not MESSAGING_SERVICE_SID.fullmatch(service):
        errors["messaging_service_sid"] = "A Messaging Service SID is MG followed by 32 hexadecimal characters."
    if not ((data.from_number or "").strip() or service or (data.whatsapp_from or "").strip()):
        errors["from_number"] = ("Give a sending number, a Messaging Service SID or a WhatsApp sender: "
                                 "replies need one to go out.")
    if errors:
        raise TwilioAccountInvalid(errors)
    return {"provider": PROVIDER, "account_sid": account_sid, "from_number": from_number,
            "messaging_service_sid": service or None, "whatsapp_from": whatsapp_from}


def save_twilio_account(account: ChannelAccount | None, data: TwilioAccountInput) -> ChannelAccount:
    """Store a new or changed Twilio account (not committed); an empty auth token keeps the stored one."""
    settings = validate_twilio_account(account, data)
    if account is None:
        account = ChannelAccount(channel=ChannelName.SMS, name=data.name.strip(), settings={}, secrets={})
        db.session.add(account)
    account.name = data.name.strip()
    account.is_enabled = data.is_enabled
    # New dicts, not changes in place: the JSON columns only notice assignment.
    account.settings = settings
    token = (data.auth_token or "").strip()
    if token:
        account.secrets = {**(account.secrets or {}), "auth_token": token}
    account.unhealthy_since = None
    account.last_error = None
    return account
