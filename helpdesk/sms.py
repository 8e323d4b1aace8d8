"""SMS and WhatsApp on the helpdesk side: what the webhooks do, media retries, and the checks on texts.

    create_twilio_blueprint()                      # the signed webhooks, CSRF-exempt and rate-limited
    keep_received_text(received)                   # the webhook: the form stored as posted, ingest started
    ingest_queued_texts()                          # the job: each kept form read, its media fetched, ingested
    store_text(inbound)                            # ingest, then STOP/START and media notes
    retry_media_downloads()                        # the job: media that failed is fetched again, with backoff
    record_status_report(report)                   # queued -> sent -> delivered, never backwards
    text_reply_refusal(channel, address, text)     # -> None, or why a reply cannot go out

At most once, and the window that is left. The outbox commits its claim before the worker calls Twilio, and
Twilio's Messages API takes no idempotency key (I-Twilio-Idempotency-Token only comes on webhooks Twilio sends
us). So TwilioChannel retries only what Twilio did not take: a connection that never opened, HTTP 429 and 5xx.
Any other failure once the request may have reached Twilio (a read timeout, a dropped connection) is recorded
as failed with "outcome unknown" and never retried by itself. Every send puts our id in its status callback URL
(`?ref=`), so the first status report settles a send whose answer was lost or never recorded, because the worker
died after Twilio accepted it: the outbox item becomes sent, the SID is recorded, no second copy goes out.
What is left: a worker that dies after Twilio accepted a text, with no status report reaching us within the
outbox lease (5 minutes; say the public URL is unreachable). The lease then lapses and the text is sent again.

Inbound texts are kept before they are read. The webhook checks the signature, commits the form as Twilio
posted it (an InboundQueueItem, unique by MessageSid) and answers; the ingest_texts job, started at once, reads
it, fetches its media and ingests it, and deletes the rows of each batch it handled. So Twilio's
answer never waits on ingest, triage or a media download, and a burst of texts is absorbed at the cost of one
insert each. A worker that dies mid-way lets its rows go when their lease ends; a redelivery finds the stored
message and is dropped.

Opt-out is per phone number, so STOP on SMS or WhatsApp stops replies on both (Twilio enforces it for SMS).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time

import sqlalchemy as sa
from flask import Blueprint, current_app
from sqlalchemy.exc import IntegrityError

from channels.messages import Attachment as AttachmentData
from channels.messages import ChannelName, DeliveryStatus, IdentityKind
from channels.sms.segments import MAX_CHARACTERS, MAX_SEGMENTS, count_segments, sms_body
from channels.sms.twilio import (
    InvalidWebhook,
    Keyword,
    MediaItem,
    MediaProblem,
    ReceivedWebhook,
    StatusReport,
    TwilioInbound,
    WebhookHooks,
    create_webhook_blueprint,
    fetch_media,
    is_allowed_media_type,
    media_account_sid,
    read_webhook,
)
from helpdesk.attachments import store_attachment
from helpdesk.customers import find_identity
from helpdesk.database import begin_write
from helpdesk.extensions import csrf, db, limiter
from helpdesk.ingest import IngestResult, find_message_by_dedupe_key, ingest
from helpdesk.models import (
    Attachment,
    Direction,
    InboundQueueItem,
    Message,
    OutboxItem,
    OutboxState,
    Ticket,
    TicketEvent,
)
from helpdesk.models.base import utcnow
from helpdesk.quarantine import quarantine
from helpdesk.realtime import publish_after_commit
from helpdesk.tickets import record_event
from helpdesk.twilio_accounts import install_account_hooks, settings_for_account

log = logging.getLogger(__name__)

TEXT_CHANNELS = (ChannelName.SMS, ChannelName.WHATSAPP)
#: WhatsApp lets a business answer freely only this long after the customer's last message.
WHATSAPP_WINDOW = dt.timedelta(hours=24)
#: How far along a message is; a report never moves it back (a late "sent" after "delivered").
STATUS_RANK = {
    DeliveryStatus.PENDING: 0,
    DeliveryStatus.QUEUED: 1,
    DeliveryStatus.SENT: 2,
    DeliveryStatus.DELIVERED: 3,
    DeliveryStatus.UNDELIVERED: 3,
    DeliveryStatus.FAILED: 3,
}
_KEYWORD_EVENTS = {Keyword.STOP: "customer.opted_out", Keyword.START: "customer.opted_in"}


def webhook_rate_limit() -> str:
    return current_app.config.get("TWILIO_WEBHOOK_RATE_LIMIT") or "600 per minute"


def create_twilio_blueprint() -> Blueprint:
    """Build Twilio's webhook blueprint wired to this app; signed requests need no CSRF token."""
    bp = create_webhook_blueprint(WebhookHooks(
        settings_for=settings_for_account,
        on_received=keep_received_text,
        on_status=record_status_report,
        on_unreadable=keep_unreadable_webhook,
    ))
    csrf.exempt(bp)
    install_account_hooks()
    # The limit counts forged requests too: it applies before the signature is checked.
    limiter.limit(webhook_rate_limit)(bp)
    return bp


# --- inbound -----------------------------------------------------------------------------------------


#: A worker holds the texts it took this long; if it dies, another takes them over afterwards.
INBOUND_LEASE = dt.timedelta(minutes=5)
#: Texts a worker claims at a time (each is then stored in a transaction of its own).
INBOUND_BATCH = 50
TWILIO_SOURCE = "twilio"
#: The quarantine's source of a text that could not be stored; requeue-quarantined reads it as a Twilio form.
TWILIO_QUARANTINE_SOURCE = "twilio webhook"


def keep_received_text(received: ReceivedWebhook) -> None:
    """Commit a signed inbound webhook as posted, then start the job that ingests it (the webhook's hook)."""
    from helpdesk.tasks import enqueue  # the jobs import this module

    # A POST's transaction is already a writer's (see database.py); nothing was written in it yet.
    begin_write()
    try:
        db.session.execute(_KEEP_TEXT, {"dedupe_key": received.dedupe_key, "source": TWILIO_SOURCE,
                                        "payload": received.raw, "received_at": utcnow(), "attempts": 0})
        db.session.commit()
    except IntegrityError:
        # Twilio delivered it again while the first copy waits to be ingested: that one will do.
        db.session.rollback()
    enqueue("ingest_texts")


#: Built once: the webhook's one statement.
_KEEP_TEXT = sa.insert(InboundQueueItem)


def ingest_queued_texts(limit: int | None = None) -> int:
    """Ingest every kept inbound webhook, oldest first, batch by batch; return how many were handled."""
    handled = 0
    while limit is None or handled < limit:
        batch = _claim_queued_texts(INBOUND_BATCH if limit is None else min(INBOUND_BATCH, limit - handled))
        if not batch:
            break
        done = []
        try:
            for item_id, payload, received_at in batch:
                ingest_webhook_payload(payload, received_at=received_at)
                done.append(item_id)
        finally:
            # Once per batch: a text stored (or quarantined) whose row outlives a crash is claimed again when
            # its lease ends, found stored, and dropped.
            _forget_queue_items(done)
        handled += len(batch)
    return handled


@dataclasses.dataclass(frozen=True)
class TextsWaiting:
    count: int
    oldest_received_at: dt.datetime | None

    @property
    def is_stalled(self) -> bool:
        """Texts wait longer than the ingest job's lease: no worker is storing them."""
        return self.oldest_received_at is not None and utcnow() - self.oldest_received_at > INBOUND_LEASE


def texts_waiting() -> TextsWaiting:
    """How many kept texts wait to be stored, and since when: for admins, when the ingest job falls behind."""
    count, oldest = db.session.execute(
        sa.select(sa.func.count(), sa.func.min(InboundQueueItem.received_at))
        .where(InboundQueueItem.source == TWILIO_SOURCE)
    ).one()
    return TextsWaiting(count, oldest)


def _claim_queued_texts(limit: int) -> list[tuple[int, bytes, dt.datetime]]:
    now = utcnow()
    free = sa.or_(InboundQueueItem.claimed_until.is_(None), InboundQueueItem.claimed_until < now)
    db.session.rollback()
    begin_write()
    rows = db.session.execute(
        sa.select(InboundQueueItem.id, InboundQueueItem.payload, InboundQueueItem.received_at)
        .where(InboundQueueItem.source == TWILIO_SOURCE, free)
        .order_by(InboundQueueItem.id)
        .limit(limit)
        # Two workers never take the same text (PostgreSQL); SQLite serializes writers anyway.
        .with_for_update(skip_locked=True)
    ).all()
    if rows:
        db.session.execute(
            sa.update(InboundQueueItem)
            .where(InboundQueueItem.id.in_([row.id for row in rows]))
            .values(claimed_until=now + INBOUND_LEASE, attempts=InboundQueueItem.attempts + 1)
        )
    db.session.commit()
    return [(row.id, row.payload, row.received_at) for row in rows]


def _forget_queue_items(item_ids: list[int]) -> None:
    if not item_ids:
        return
    db.session.rollback()
    begin_write()
    db.session.execute(sa.delete(InboundQueueItem).where(InboundQueueItem.id.in_(item_ids)))
    db.session.commit()


def ingest_webhook_payload(payload: bytes, *, received_at: dt.datetime | None = None) -> IngestResult | None:
    """Read a kept inbound webhook, fetch its media and store it; None if it was quarantined instead.

    A form that makes no message is quarantined; so is one whose message fails to store.
    """
    try:
        return store_kept_webhook(payload, received_at=received_at)
    except InvalidWebhook as error:
        keep_unreadable_webhook(payload, str(error))
    except Exception as error:  # noqa: BLE001 - kept for an admin; nothing is lost
        quarantine(_channel_of(payload), TWILIO_QUARANTINE_SOURCE, payload, error)
    return None


def store_kept_webhook(payload: bytes, *, received_at: dt.datetime | None = None) -> IngestResult:
    """Read a kept inbound webhook, fetch its media and store it; raise what went wrong (InvalidWebhook...)."""
    inbound, media = read_webhook(payload)
    if received_at is not None:
        inbound = dataclasses.replace(inbound, message=dataclasses.replace(inbound.message, received_at=received_at))
    if media and not is_stored_text(inbound.message.dedupe_key):
        inbound = _with_media(inbound, media)
    return store_text(inbound)


def _with_media(inbound: TwilioInbound, media: list[MediaItem]) -> TwilioInbound:
    settings = settings_for_account(inbound.account_sid)
    db.session.rollback()  # no transaction held during the download
    if settings is None:
        # The account was disabled or removed since the webhook came: keep the text, retry the files later.
        reason = f"no enabled Twilio account {inbound.account_sid or '(none)'} to fetch it with"
        problems = tuple(MediaProblem(item.index, item.url, item.content_type, reason, is_temporary=True)
                         for item in media)
        return dataclasses.replace(inbound, media_problems=problems)
    attachments, problems = fetch_media(settings, media)
    return dataclasses.replace(inbound, media_problems=problems,
                               message=dataclasses.replace(inbound.message, attachments=attachments))


def is_stored_text(dedupe_key: str) -> bool:
    """Tell whether a text is already stored, so its media is not fetched again; ends the read."""
    known = find_message_by_dedupe_key(dedupe_key) is not None
    # The media download comes next and may take seconds: hold no transaction (on SQLite, no write lock).
    db.session.rollback()
    return known


def keep_unreadable_webhook(raw: bytes, reason: str) -> None:
    """Quarantine a signed webhook that makes no message (a short-code sender, no MessageSid)."""
    quarantine(_channel_of(raw), TWILIO_QUARANTINE_SOURCE, raw, reason)


def _channel_of(raw: bytes) -> ChannelName:
    return ChannelName.WHATSAPP if b"whatsapp%3A" in raw else ChannelName.SMS


def store_text(inbound: TwilioInbound) -> IngestResult:
    """Store an inbound text, then apply its STOP/START keyword and note media that was not fetched."""
    result = ingest(inbound.message)
    if inbound.keyword not in _KEYWORD_EVENTS and not (inbound.media_problems and not result.is_duplicate):
        return result
    message_id, ticket_id = result.message_id, result.ticket_id
    if inbound.keyword in _KEYWORD_EVENTS:
        apply_keyword(inbound.keyword, inbound.message.sender.value, message_id, ticket_id)
    if inbound.media_problems and not result.is_duplicate:
        note_media_problems(inbound, message_id, ticket_id)
    return result


def apply_keyword(keyword: Keyword, phone: str, message_id: int, ticket_id: int) -> None:
    """Opt the number out (STOP) or back in (START), once per message even if Twilio redelivers it."""
    kind = _KEYWORD_EVENTS[keyword]
    db.session.rollback()  # end the reads, so the write below starts its own transaction
    begin_write()
    # Checked again on a redelivery: a crash after ingest but before this must not lose the opt-out.
    done = db.session.scalars(sa.select(TicketEvent).where(TicketEvent.ticket_id == ticket_id,
                                                           TicketEvent.kind == kind))
    if any(event.data.get("message_id") == message_id for event in done):
        db.session.rollback()
        return
    identity = find_identity(IdentityKind.PHONE, phone)
    ticket = db.session.get(Ticket, ticket_id)
    if identity is None:
        db.session.rollback()
        return
    if keyword is Keyword.STOP:
        identity.opted_out_at = identity.opted_out_at or utcnow()
        reason = "the customer texted STOP: no texts to this number until they text START"
    else:
        identity.opted_out_at = None
        reason = "the customer texted START: texts to this number are allowed again"
    record_event(ticket, kind, {"message_id": message_id, "address": phone}, reason=reason,
                 customer=identity.customer)
    publish_after_commit(db.session(), "ticket.updated",
                         {"ticket": ticket.number, "opted_out": keyword is Keyword.STOP})
    db.session.commit()


def note_media_problems(inbound: TwilioInbound, message_id: int, ticket_id: int) -> None:
    """Record each media file that was not fetched on the message, with the reason; schedule a retry if worth it."""
    max_attempts, first_delay = media_retry_limits()
    db.session.rollback()
    begin_write()
    message = db.session.get(Message, message_id)
    ticket = db.session.get(Ticket, ticket_id)
    for problem in inbound.media_problems:
        # The URL is kept so the file can be fetched again; Twilio keeps media until it is deleted.
        source_url = problem.url if len(problem.url) <= 1000 else None
        will_retry = problem.is_temporary and max_attempts > 1 and source_url is not None
        reason = f"not downloaded from Twilio: {problem.reason}"
        if will_retry:
            reason += f"; trying again (attempt 1 of {max_attempts})"
        message.attachments.append(Attachment(
            filename=problem.filename, content_type=(problem.content_type or "application/octet-stream")[:255],
            size=0, refused_reason=reason[:500], source_url=source_url, fetch_attempts=1,
            next_fetch_at=utcnow() + media_retry_delay(1, first_delay) if will_retry else None,
        ))
        record_event(ticket, "attachment.refused", {"message_id": message_id, "filename": problem.filename,
                                                    "media_url": problem.url, "will_retry": will_retry},
                     reason=reason[:500])
    publish_after_commit(db.session(), "message.updated", {"ticket": ticket.number, "message_id": message_id})
    db.session.commit()


# --- media retries -----------------------------------------------------------------------------------

#: A retry holds its attachment this long, so another worker leaves it alone; a crash frees it afterwards.
MEDIA_RETRY_LEASE = dt.timedelta(minutes=5)
MAX_MEDIA_RETRY_DELAY = dt.timedelta(hours=6)


def media_retry_limits() -> tuple[int, float]:
    """Return how many downloads a media file gets in all, and the wait in seconds after the first failure."""
    config = current_app.config
    return (int(config.get("TWILIO_MEDIA_RETRY_ATTEMPTS", 8)),
            float(config.get("TWILIO_MEDIA_RETRY_SECONDS", 60)))


def media_retry_delay(failed_attempts: int, first_delay: float) -> dt.timedelta:
    """Return the wait after `failed_attempts` failed downloads: `first_delay` seconds, doubling, at most 6 hours."""
    seconds = first_delay * 2 ** min(max(failed_attempts - 1, 0), 30)
    return min(MAX_MEDIA_RETRY_DELAY, dt.timedelta(seconds=seconds))


@dataclasses.dataclass(frozen=True)
class MediaRetry:
    attachment_id: int
    url: str
    content_type: str
    #: This download's number, the first (in the webhook) being 1.
    attempt: int


def retry_media_downloads(limit: int = 20) -> int:
    """Download again each text's media file whose retry is due; return how many were tried."""
    claimed = _claim_due_media(limit)
    for retry in claimed:
        content, problem = _download_again(retry)
        _record_media_retry(retry, content, problem)
    return len(claimed)


def _claim_due_media(limit: int) -> list[MediaRetry]:
    now = utcnow()
    due = (
        sa.select(Attachment)
        .join(Message, Message.id == Attachment.message_id)
        .where(Attachment.next_fetch_at <= now, Attachment.source_url.is_not(None),
               Message.channel.in_(TEXT_CHANNELS))
        .order_by(Attachment.next_fetch_at)
        .limit(limit)
        # Two workers never take the same file (PostgreSQL); SQLite serializes writers anyway.
        .with_for_update(skip_locked=True, of=Attachment)
    )
    db.session.rollback()
    begin_write()
    claimed = []
    for row in db.session.scalars(due):
        row.fetch_attempts += 1
        row.next_fetch_at = now + MEDIA_RETRY_LEASE
        # The type was accepted before the first download failed; only a known-good one is checked again.
        declared = row.content_type if is_allowed_media_type(row.content_type) else ""
        claimed.append(MediaRetry(row.id, row.source_url, declared, row.fetch_attempts))
    db.session.commit()
    return claimed


def _download_again(retry: MediaRetry) -> tuple[AttachmentData | None, MediaProblem | None]:
    account_sid = media_account_sid(retry.url)
    settings = settings_for_account(account_sid) if account_sid else None
    db.session.rollback()  # no transaction held during the download
    if settings is None:
        return None, MediaProblem(0, retry.url, retry.content_type,
                                  f"no enabled Twilio account {account_sid or '(none in the URL)'} to fetch it with",
                                  is_temporary=account_sid is not None)
    attachments, problems = fetch_media(settings, [MediaItem(0, retry.url, retry.content_type)])
    return (attachments[0], None) if attachments else (None, problems[0])


def _record_media_retry(retry: MediaRetry, content: AttachmentData | None, problem: MediaProblem | None) -> None:
    max_attempts, first_delay = media_retry_limits()
    begin_write()
    row = db.session.get(Attachment, retry.attachment_id)
    if row is None:  # the message went away meanwhile
        db.session.rollback()
        return
    message = row.message
    data = {"message_id": message.id, "attachment_id": row.id, "filename": row.filename, "attempts": retry.attempt}
    if content is not None:
        stored = store_attachment(content)  # within the helpdesk's attachment size limit too
        row.content_type, row.size = stored.content_type, stored.size
        row.storage_path, row.sha256, row.refused_reason = stored.storage_path, stored.sha256, stored.refused_reason
        row.next_fetch_at = None
        record_event(message.ticket, "attachment.fetched", data,
                     reason=f"downloaded from Twilio on attempt {retry.attempt}")
    elif not problem.is_temporary or retry.attempt >= max_attempts:
        row.next_fetch_at = None
        ending = (f"gave up after {retry.attempt} attempts" if problem.is_temporary
                  else "not tried again: this would fail the same way")
        row.refused_reason = f"not downloaded from Twilio: {problem.reason}; {ending}"[:500]
        record_event(message.ticket, "attachment.refused", {**data, "media_url": retry.url, "gave_up": True},
                     reason=row.refused_reason)
    else:
        row.next_fetch_at = utcnow() + media_retry_delay(retry.attempt, first_delay)
        row.refused_reason = (f"not downloaded from Twilio: {problem.reason}; trying again "
                              f"(attempt {retry.attempt} of {max_attempts})")[:500]
    publish_after_commit(db.session(), "message.updated",
                         {"ticket": message.ticket.number, "message_id": message.id})
    db.session.commit()


# --- delivery reports --------------------------------------------------------------------------------


def find_sent_message(report: StatusReport) -> Message | None:
    """Return our message a report is about: by its SID, or by the ref we put in the callback URL."""
    ids = [report.message_sid, *([report.ref] if report.ref else [])]
    return db.session.scalar(
        sa.select(Message)
        .where(Message.direction == Direction.OUTBOUND, Message.channel.in_(TEXT_CHANNELS),
               Message.external_id.in_(ids))
        .order_by(Message.id)
        .limit(1)
    )


def _wait_for_worker(message_id: int) -> None:
    # Twilio can report before the worker has recorded the send (its SID, "queued"): that record would
    # overwrite this report. So wait while the outbox item is still being sent; the Twilio client's
    # timeout (8 s) is below this wait (10 s), which is below Twilio's webhook timeout (15 s).
    deadline = time.monotonic() + float(current_app.config.get("TWILIO_STATUS_WAIT_SECONDS", 10.0))
    while True:
        db.session.rollback()  # a fresh snapshot each time, to see the worker's commit
        state = db.session.scalar(sa.select(OutboxItem.state).where(OutboxItem.message_id == message_id))
        if state is not OutboxState.SENDING or time.monotonic() >= deadline:
            return
        time.sleep(0.05)


def record_status_report(report: StatusReport) -> None:
    """Move the message's delivery status forward (never back), with Twilio's error; publish the change."""
    message = find_sent_message(report)
    if message is None:
        log.info("Twilio status %s for unknown message %s (ref %s)", report.twilio_status, report.message_sid,
                 report.ref)
        db.session.rollback()
        return
    message_id = message.id
    _wait_for_worker(message_id)
    db.session.rollback()
    begin_write()
    message = db.session.get(Message, message_id)
    item = db.session.scalar(sa.select(OutboxItem).where(OutboxItem.message_id == message_id))
    changed = False
    if item is not None and item.state is not OutboxState.SENT:
        # Twilio reports on it, so Twilio has it: the worker lost the answer (a timeout, a crash after the
        # request) or recorded a failure. Settle it as sent, so the outbox never sends a second copy.
        item.state, item.claimed_at, item.last_error = OutboxState.SENT, None, None
        message.external_id = report.message_sid
        message.delivery_status, message.delivery_error = DeliveryStatus.QUEUED, None
        record_event(message.ticket, "delivery.confirmed", {"message_id": message_id, "sid": report.message_sid},
                     reason="Twilio reported on a send whose answer was lost; it is not sent again")
        changed = True
    current = message.delivery_status or DeliveryStatus.PENDING
    if STATUS_RANK[report.status] > STATUS_RANK[current]:
        message.delivery_status = report.status
        changed = True
        if report.status in (DeliveryStatus.UNDELIVERED, DeliveryStatus.FAILED):
            message.delivery_error = (report.error or f"Twilio reported the message {report.twilio_status}")[:1000]
            record_event(message.ticket, "delivery.failed", {"message_id": message_id, "sid": report.message_sid},
                         reason=message.delivery_error[:500])
            if report.error_code == 21610:
                _opt_out_from_report(message)
        else:
            message.delivery_error = None
    if not changed:
        db.session.rollback()
        return
    publish_after_commit(db.session(), "message.updated",
                         {"ticket": message.ticket.number, "message_id": message_id,
                          "delivery_status": str(message.delivery_status)})
    db.session.commit()


def _opt_out_from_report(message: Message) -> None:
    # Twilio refuses the number because it texted STOP (maybe before this helpdesk existed): show that.
    identity = find_identity(IdentityKind.PHONE, message.address or "")
    if identity is not None and identity.opted_out_at is None:
        identity.opted_out_at = utcnow()
        record_event(message.ticket, "customer.opted_out", {"message_id": message.id, "address": message.address},
                     reason="Twilio reports the number unsubscribed (21610)")


# --- replies -----------------------------------------------------------------------------------------


def last_whatsapp_message_at(address: str) -> dt.datetime | None:
    """Return when the customer at `address` last wrote on WhatsApp (any ticket)."""
    return db.session.scalar(
        sa.select(sa.func.max(Message.created_at))
        .where(Message.direction == Direction.INBOUND, Message.channel == ChannelName.WHATSAPP,
               Message.address == address)
    )


def _ago(moment: dt.datetime) -> str:
    hours = (utcnow() - moment).total_seconds() / 3600
    return f"{hours:.0f} hours ago" if hours < 48 else f"{hours / 24:.0f} days ago"


def text_reply_refusal(channel: ChannelName, address: str | None, text: str) -> str | None:
    """Return why a reply cannot be texted to `address` (opted out, WhatsApp window, too long), or None."""
    if channel not in TEXT_CHANNELS:
        return None
    identity = find_identity(IdentityKind.PHONE, address) if address else None
    if identity is not None and identity.opted_out_at is not None:
        return (f"{address} texted STOP on {identity.opted_out_at:%Y-%m-%d %H:%M} UTC and is opted out: no texts "
                "can be sent to this number until the customer texts START. Reach them another way, such as email.")
    if channel is ChannelName.WHATSAPP:
        last = last_whatsapp_message_at(address or "")
        if last is None or utcnow() - last > WHATSAPP_WINDOW:
            when = f"the last was {_ago(last)}" if last else "there is none"
            return ("WhatsApp allows free-form replies only within 24 hours of the customer's last message "
                    f"({when}). Outside that window only an approved template message can be sent; "
                    "reach the customer another way or wait for them to write.")
    body = sms_body(text)
    if len(body) > MAX_CHARACTERS:
        return (f"the text is {len(body)} characters; Twilio accepts at most {MAX_CHARACTERS}. "
                "Shorten it or send it as two replies.")
    if channel is ChannelName.SMS:
        count = count_segments(body)
        if count.segments > MAX_SEGMENTS:
            because = ""
            if count.non_gsm_characters:
                because = " because of " + " ".join(repr(ch) for ch in count.non_gsm_characters[:5])
            return (f"the text needs {count.segments} SMS segments ({count.characters} characters, "
                    f"{count.encoding}{because}); a reply may use at most {MAX_SEGMENTS}. "
                    "Shorten it or send it as two replies.")
    return None


@dataclasses.dataclass(frozen=True)
class TextReplyState:
    """What an agent should know before texting a customer, for the ticket page."""

    channel: ChannelName
    address: str
    opted_out_at: dt.datetime | None
    #: WhatsApp only: when free-form replies stop being allowed (in the past when already closed).
    window_closes_at: dt.datetime | None
    max_segments: int = MAX_SEGMENTS
    max_characters: int = MAX_CHARACTERS

    @property
    def is_window_closed(self) -> bool:
        return self.channel is ChannelName.WHATSAPP and (
            self.window_closes_at is None or self.window_closes_at < utcnow())


def text_reply_state(channel: ChannelName, address: str) -> TextReplyState | None:
    """Return the opt-out and WhatsApp-window state of a reply to `address`, or None if it is not a text."""
    if channel not in TEXT_CHANNELS:
        return None
    identity = find_identity(IdentityKind.PHONE, address)
    closes = None
    if channel is ChannelName.WHATSAPP:
        last = last_whatsapp_message_at(address)
        closes = last + WHATSAPP_WINDOW if last else None
    return TextReplyState(channel, address, identity.opted_out_at if identity else None, closes)
