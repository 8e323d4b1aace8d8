"""The agents' pages: inbox views, a ticket's conversation, replies, notes and triage, customer history."""

import email
import email.message
import email.policy
import html
import io
import pathlib
import re

import pytest
import sqlalchemy as sa

from channels.messages import ChannelName, DeliveryStatus, IdentityKind, SenderIdentity
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import (
    Attachment,
    Direction,
    Message,
    OutboxItem,
    OutboxState,
    Priority,
    TicketEvent,
    TicketStatus,
    Tier,
)
from helpdesk.tickets import change_field
from tests.factories import make_agent, make_inbound

pytestmark = pytest.mark.integration

MARIA = SenderIdentity(IdentityKind.EMAIL, "maria@example.org", "Maria Lopez")


@pytest.fixture
def agent(login_as):
    return login_as(name="Alex Agent")


@pytest.fixture
def ticket():
    return ingest(make_inbound(sender=MARIA, subject="Invoice shows the wrong VAT")).ticket


@pytest.fixture
def outgoing(app) -> pathlib.Path:
    return pathlib.Path(app.config["HELPDESK_OUTGOING_FOLDER"])


def eml_files(folder: pathlib.Path) -> set[pathlib.Path]:
    return set(folder.glob("*.eml")) if folder.exists() else set()


def events_of(ticket, kind=None) -> list[TicketEvent]:
    query = sa.select(TicketEvent).where(TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id)
    if kind:
        query = query.where(TicketEvent.kind == kind)
    return list(db.session.scalars(query))


def inbox_numbers(client, query="") -> list[int]:
    page = client.get("/inbox" + query)
    assert page.status_code == 200
    return sorted(int(n) for n in re.findall(r'<tr data-ticket="(\d+)"', page.get_data(as_text=True)))


def new_ticket(status=TicketStatus.NEW, tier=Tier.FIRST_LINE, assignee=None) -> int:
    ticket = ingest(make_inbound()).ticket
    change_field(ticket, "status", status)
    change_field(ticket, "tier", tier)
    change_field(ticket, "assignee", assignee)
    db.session.commit()
    return ticket.number


def test_the_inbox_lists_tickets_by_view_and_tier(client, agent):
    fresh = new_ticket()
    waiting = new_ticket(TicketStatus.PENDING)
    escalated = new_ticket(TicketStatus.OPEN, Tier.SECOND_LINE)
    mine = new_ticket(TicketStatus.OPEN, assignee=agent)
    done = new_ticket(TicketStatus.CLOSED)

    assert inbox_numbers(client) == sorted([fresh, waiting, escalated, mine])
    assert inbox_numbers(client, "?view=closed") == [done]
    assert inbox_numbers(client, "?view=pending") == [waiting]
    assert inbox_numbers(client, "?view=open") == sorted([escalated, mine])
    assert inbox_numbers(client, "?tier=second_line") == [escalated]
    assert inbox_numbers(client, "?view=closed&tier=second_line") == []
    assert inbox_numbers(client, "?mine=1") == [mine]
    assert inbox_numbers(client, "?view=nonsense&tier=nonsense") == sorted([fresh, waiting, escalated, mine])


def test_the_inbox_pages_keep_the_tier_filter(client, agent):
    escalated = [new_ticket(TicketStatus.OPEN, Tier.SECOND_LINE) for _ in range(51)]
    new_ticket()
    first = client.get("/inbox?tier=second_line").get_data(as_text=True)
    assert len(re.findall(r'<tr data-ticket="', first)) == 50
    older = re.search(r'<a href="([^"]+)">Older</a>', first).group(1).replace("&amp;", "&")
    assert inbox_numbers(client, older.removeprefix("/inbox")) == [escalated[0]]


def test_the_inbox_shows_counts_per_status(client, agent):
    new_ticket(TicketStatus.PENDING)
    new_ticket(TicketStatus.PENDING)
    page = client.get("/inbox").get_data(as_text=True)
    assert re.search(r'view=pending[^>]*>\s*Pending\s*<span class="count" data-count="pending">2</span>', page)


def test_the_ticket_page_shows_the_conversation_and_its_history(client, agent, ticket):
    page = client.get(f"/tickets/{ticket.number}").get_data(as_text=True)
    assert "Invoice shows the wrong VAT" in page
    assert "Hello, I need help with my order." in page
    assert "Maria Lopez" in page
    assert "ticket.created" in page and "message.received" in page


def test_an_unknown_ticket_is_404(client, agent):
    assert client.get("/tickets/99999").status_code == 404


def test_message_text_is_shown_as_text_never_as_markup(client, agent):
    ticket = ingest(
        make_inbound(subject="<b>Urgent</b>", text="<script>alert(1)</script> please help")
    ).ticket
    page = client.get(f"/tickets/{ticket.number}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; please help" in page
    assert "<b>Urgent</b>" not in page and "&lt;b&gt;Urgent&lt;/b&gt;" in page
    inbox = client.get("/inbox").get_data(as_text=True)
    assert "<b>Urgent</b>" not in inbox and "&lt;b&gt;Urgent&lt;/b&gt;" in inbox


def test_an_html_body_is_sanitized_and_shown_as_its_text(client, agent):
    html = '<p>Hi <b>there</b></p><script>alert(1)</script><img src="x" onerror="alert(2)">'
    result = ingest(make_inbound(text="", html=html))
    stored = db.session.get(Message, result.message.id)
    assert "<script" not in stored.html and "onerror" not in stored.html
    page = client.get(f"/tickets/{result.ticket.number}").get_data(as_text=True)
    assert "Hi there" in page
    assert "alert(1)" not in page and "onerror" not in page


def post_reply(client, auth, number, **data):
    token = auth.csrf_token(f"/tickets/{number}")
    return client.post(f"/tickets/{number}/reply", data={**data, "csrf_token": token})


def test_a_reply_is_stored_sent_by_the_job_and_written_as_an_eml_file(client, auth, agent, ticket, outgoing):
    before = eml_files(outgoing)
    response = post_reply(
        client, auth, ticket.number, text="Sorry about that, a corrected invoice is on its way."
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"/tickets/{ticket.number}"

    message = db.session.scalars(sa.select(Message).where(Message.direction == Direction.OUTBOUND)).one()
    assert (message.is_public, message.author_agent_id, message.address) == (
        True,
        agent.id,
        "maria@example.org",
    )
    assert message.delivery_status is DeliveryStatus.SENT
    assert db.session.scalars(sa.select(OutboxItem)).one().state is OutboxState.SENT

    written = eml_files(outgoing) - before
    assert len(written) == 1
    mail = email.message_from_bytes(written.pop().read_bytes(), policy=email.policy.default)
    assert mail["To"] == "maria@example.org"
    assert mail["Message-ID"] == message.external_id
    assert f"[#{ticket.number}]" in mail["Subject"]
    assert "a corrected invoice is on its way" in mail.get_content()

    page = client.get(f"/tickets/{ticket.number}").get_data(as_text=True)
    assert "Reply queued for delivery." in page
    assert "a corrected invoice is on its way" in page
    assert "delivery-sent" in page
    db.session.refresh(ticket)
    assert ticket.status is TicketStatus.OPEN  # the first reply opens a new ticket


def test_a_reply_can_set_the_status(client, auth, agent, ticket):
    post_reply(client, auth, ticket.number, text="Fixed, closing.", status="solved")
    db.session.refresh(ticket)
    assert ticket.status is TicketStatus.SOLVED


def test_an_empty_reply_is_refused_and_nothing_is_stored(client, auth, agent, ticket):
    response = post_reply(client, auth, ticket.number, text="")
    assert response.status_code == 302
    assert "Write something before sending." in client.get(response.headers["Location"]).get_data(
        as_text=True
    )
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1


def test_an_internal_note_is_kept_private_and_never_sent(client, auth, agent, ticket, outgoing):
    before = eml_files(outgoing)
    post_reply(client, auth, ticket.number, text="Customer is on the old plan.", internal="y")
    note = db.session.scalars(sa.select(Message).where(Message.direction == Direction.OUTBOUND)).one()
    assert note.is_public is False
    assert note.delivery_status is None
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem)) == 0
    assert eml_files(outgoing) == before
    assert [event.actor_agent_id for event in events_of(ticket, "note.added")] == [agent.id]
    page = client.get(f"/tickets/{ticket.number}").get_data(as_text=True)
    assert "Internal note added." in page and "internal note" in page


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40  # enough of a PNG for a browser to be told it is one
PDF = b"%PDF-1.4\n% the corrected invoice\n"


def test_an_agents_files_go_out_with_the_reply_and_open_from_the_ticket(client, auth, agent, ticket, outgoing):
    before = eml_files(outgoing)
    response = post_reply(client, auth, ticket.number, text="The corrected invoice and a screenshot.",
                          files=[(io.BytesIO(PDF), "Rechnung März.pdf", "application/pdf"),
                                 (io.BytesIO(PNG), "screen.png", "image/png")])
    assert response.status_code == 302

    message = db.session.scalars(sa.select(Message).where(Message.direction == Direction.OUTBOUND)).one()
    assert [(row.filename, row.content_type, row.size) for row in message.attachments] == [
        ("Rechnung März.pdf", "application/pdf", len(PDF)), ("screen.png", "image/png", len(PNG))]
    [written] = eml_files(outgoing) - before
    mail = email.message_from_bytes(written.read_bytes(), policy=email.policy.default)
    assert mail.get_body(("plain",)).get_content().strip().startswith("The corrected invoice and a screenshot.")
    assert [(part.get_filename(), part.get_content()) for part in mail.iter_attachments()] == [
        ("Rechnung März.pdf", PDF), ("screen.png", PNG)]

    page = client.get(f"/tickets/{ticket.number}").get_data(as_text=True)
    links = re.findall(rf'href="(/tickets/{ticket.number}/files/\d+)"', page)
    assert len(links) == 2
    pdf = client.get(links[0])
    assert pdf.get_data() == PDF and pdf.headers["Content-Disposition"].startswith("attachment")
    pdf.close()
    assert "sandbox" in pdf.headers["Content-Security-Policy"] and pdf.headers["X-Content-Type-Options"] == "nosniff"
    image = client.get(links[1])
    assert image.get_data() == PNG and image.mimetype == "image/png"
    image.close()
    assert image.headers["Content-Disposition"].startswith("inline")
    # A file is opened through its own ticket only, and by agents only.
    other = ingest(make_inbound(subject="Another question")).ticket
    assert client.get(links[0].replace(f"/tickets/{ticket.number}/", f"/tickets/{other.number}/")).status_code == 404
    client.post("/logout", data={"csrf_token": auth.csrf_token("/profile")})
    assert client.get(links[0]).status_code == 302


def test_files_cannot_go_out_by_text_so_the_reply_is_refused_with_its_text_kept(client, auth, agent):
    sms = ingest(make_inbound(channel=ChannelName.SMS)).ticket
    response = post_reply(client, auth, sms.number, text="Here is the label to print.",
                          files=[(io.BytesIO(PDF), "label.pdf", "application/pdf")])

    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Not sent: files go out with email replies only, and this reply goes out by sms" in page
    assert "Here is the label to print.</textarea>" in page
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message).where(
        Message.direction == Direction.OUTBOUND)) == 0
    # Kept with an internal note instead, it is never sent.
    post_reply(client, auth, sms.number, text="The label, for whoever prints it.", internal="y",
               files=[(io.BytesIO(PDF), "label.pdf", "application/pdf")])
    note = db.session.scalars(sa.select(Message).where(Message.direction == Direction.OUTBOUND)).one()
    assert not note.is_public and [row.filename for row in note.attachments] == ["label.pdf"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem)) == 0


def test_a_formatted_emails_inline_images_come_from_the_ticket_and_nothing_else_is_loaded(client, agent):
    from helpdesk.email_intake import take_in_email

    mail = email.message.EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "maria@example.org", "support@example.com", "Blank page"
    mail["Message-ID"] = "<formatted-2@example.org>"
    mail.set_content("See below.")
    mail.add_alternative('<p>Here:</p><img src="cid:shot%401@example.org" alt="encoded">'
                         '<img src="cid:missing@example.org" alt="missing"><img src="https://t.example/p.gif">',
                         subtype="html")
    mail.get_payload()[1].add_related(PNG, maintype="image", subtype="png", cid="<shot@1@example.org>")
    ticket = take_in_email(bytes(mail), "test").result.ticket

    page = client.get(f"/tickets/{ticket.number}").get_data(as_text=True)

    [srcdoc] = re.findall(r'srcdoc="([^"]*)"', page)
    document = html.unescape(srcdoc)
    image = db.session.scalars(sa.select(Attachment).where(Attachment.content_id == "shot@1@example.org")).one()
    assert f'<img src="/tickets/{ticket.number}/files/{image.id}" alt="encoded">' in document
    assert '<img src="" alt="missing">' in document
    # Remote images stay in the markup, and the frame's own policy never loads them.
    assert "img-src 'self'" in document and "default-src 'none'" in document
    assert re.search(r'<iframe class="formatted-body"[^>]*sandbox="allow-same-origin allow-popups', page)
    assert "allow-scripts" not in page


def test_a_files_name_is_stored_without_folders_or_control_characters(client, auth, agent, ticket):
    post_reply(client, auth, ticket.number, text="Attached.",
               files=[(io.BytesIO(PDF), "/home/maria/in\tvoice\x7f.pdf", "application/pdf"),
                      (io.BytesIO(PDF), "../../\x1b", "application/pdf")])
    message = db.session.scalars(sa.select(Message).where(Message.direction == Direction.OUTBOUND)).one()
    assert [row.filename for row in message.attachments] == ["invoice.pdf", "file"]


def test_a_file_over_the_limit_refuses_the_reply_with_the_reason(client, auth, agent, ticket, app, monkeypatch):
    monkeypatch.setitem(app.config, "HELPDESK_MAX_ATTACHMENT_BYTES", 1000)
    response = post_reply(client, auth, ticket.number, text="The whole log.",
                          files=[(io.BytesIO(b"x" * 1001), "server.log", "text/plain")])
    assert response.status_code == 422
    assert "Not sent: server.log is 1001 bytes, over the 1000-byte limit" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem)) == 0


def post_update(client, auth, number, **fields):
    token = auth.csrf_token(f"/tickets/{number}")
    return client.post(f"/tickets/{number}/update", data={**fields, "csrf_token": token})


def test_triage_changes_are_recorded_with_who_old_and_new(client, auth, agent, ticket):
    colleague = make_agent(name="Sam Second", tier=Tier.SECOND_LINE)
    db.session.commit()
    response = post_update(
        client,
        auth,
        ticket.number,
        status="on_hold",
        priority="high",
        tier="second_line",
        assignee_id=str(colleague.id),
    )
    assert response.status_code == 302
    db.session.refresh(ticket)
    assert (ticket.status, ticket.priority, ticket.tier, ticket.assignee_id) == (
        TicketStatus.ON_HOLD,
        Priority.HIGH,
        Tier.SECOND_LINE,
        colleague.id,
    )
    changes = {
        event.data["field"]: (event.actor_agent_id, event.actor_label, event.data["old"], event.data["new"])
        for event in events_of(ticket)
        if event.kind.endswith(".changed")
    }
    assert changes == {
        "status": (agent.id, "Alex Agent", "new", "on_hold"),
        "priority": (agent.id, "Alex Agent", "normal", "high"),
        "tier": (agent.id, "Alex Agent", "first_line", "second_line"),
        "assignee": (agent.id, "Alex Agent", None, colleague.id),
    }
    page = client.get(f"/tickets/{ticket.number}").get_data(as_text=True)
    assert "status: new → on_hold" in page


def test_an_unchanged_field_records_nothing_and_unassigning_is_recorded(client, auth, agent, ticket):
    change_field(ticket, "assignee", agent)
    db.session.commit()
    before = len(events_of(ticket))
    post_update(
        client, auth, ticket.number, status="new", priority="normal", tier="first_line", assignee_id=""
    )
    db.session.refresh(ticket)
    assert ticket.assignee_id is None
    added = events_of(ticket)[before:]
    assert [(event.kind, event.data["old"], event.data["new"]) for event in added] == [
        ("assignee.changed", agent.id, None)
    ]


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"status": "done", "priority": "high"}, "'done' is not a valid status."),
        ({"status": "solved", "priority": "whenever"}, "'whenever' is not a valid priority."),
        ({"status": "solved", "tier": "third_line"}, "'third_line' is not a valid tier."),
        ({"status": "solved", "assignee_id": "999999"}, "That agent does not exist or is inactive."),
        ({"status": "solved", "assignee_id": "nobody"}, "That agent does not exist or is inactive."),
    ],
)
def test_an_invalid_value_gives_400_and_changes_nothing(client, auth, agent, ticket, fields, reason):
    before = len(events_of(ticket))
    response = post_update(client, auth, ticket.number, **fields)
    assert response.status_code == 400
    assert reason in response.get_data(as_text=True).replace("&#39;", "'")
    db.session.refresh(ticket)
    assert (ticket.status, ticket.priority, ticket.tier, ticket.assignee_id) == (
        TicketStatus.NEW,
        Priority.NORMAL,
        Tier.FIRST_LINE,
        None,
    )
    assert len(events_of(ticket)) == before


def test_an_inactive_agent_cannot_be_assigned(client, auth, agent, ticket):
    gone = make_agent()
    gone.is_active = False
    db.session.commit()
    assert post_update(client, auth, ticket.number, assignee_id=str(gone.id)).status_code == 400
    db.session.refresh(ticket)
    assert ticket.assignee_id is None


def test_saving_other_fields_keeps_a_deactivated_assignee(client, auth, agent, ticket):
    gone = make_agent(name="Gone Agent")
    db.session.commit()
    change_field(ticket, "assignee", gone)
    gone.is_active = False
    db.session.commit()
    page = client.get(f"/tickets/{ticket.number}").get_data(as_text=True)
    assignee_select = re.search(r'<select name="assignee_id">(.*?)</select>', page).group(1)
    assert re.findall(r'<option value="(\d*)" selected>', assignee_select) == [str(gone.id)]

    response = post_update(
        client,
        auth,
        ticket.number,
        status="new",
        priority="high",
        tier="first_line",
        assignee_id=str(gone.id),
    )
    assert response.status_code == 302
    db.session.refresh(ticket)
    assert (ticket.priority, ticket.assignee_id) == (Priority.HIGH, gone.id)
    assert len(events_of(ticket, "assignee.changed")) == 1  # only the original assignment


def test_the_customer_page_shows_identities_on_every_channel_and_all_tickets(client, agent):
    by_mail = ingest(make_inbound(sender=MARIA, subject="Invoice question")).ticket
    phone = SenderIdentity(IdentityKind.PHONE, "+46701234567")
    by_sms = ingest(
        make_inbound(channel=ChannelName.SMS, sender=phone, text="Any news?", other_identities=(MARIA,))
    ).ticket
    by_chat = ingest(
        make_inbound(
            channel=ChannelName.CHAT,
            sender=SenderIdentity(IdentityKind.VISITOR, "v-77"),
            text="Chat about my order",
            other_identities=(phone,),
        )
    ).ticket
    someone_else = ingest(make_inbound(subject="Not Maria")).ticket
    assert by_mail.customer_id == by_sms.customer_id == by_chat.customer_id != someone_else.customer_id

    page = client.get(f"/customers/{by_mail.customer_id}").get_data(as_text=True)
    assert "Maria Lopez" in page
    for kind, value in [("email", "maria@example.org"), ("phone", "+46701234567"), ("visitor", "v-77")]:
        assert f"{kind}: <code>{value}</code>" in page
    shown = {int(n) for n in re.findall(r'href="/tickets/(\d+)"', page)}
    assert shown == {by_mail.number, by_sms.number, by_chat.number}


def test_an_unknown_customer_is_404(client, agent):
    assert client.get("/customers/999999").status_code == 404
