"""The read API with and without a token, its filters, pagination and errors."""

import datetime as dt

import pytest

from channels.messages import Attachment, IdentityKind, SenderIdentity
from helpdesk.agents import create_api_token, revoke_api_token
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import ApiToken, Ticket, TicketStatus, Tier
from helpdesk.outbound import reply
from helpdesk.tickets import change_field
from tests.factories import make_agent, make_inbound

pytestmark = pytest.mark.integration


@pytest.fixture
def agent():
    agent = make_agent()
    db.session.commit()
    return agent


@pytest.fixture
def token(agent):
    return create_api_token(agent, "tests")


@pytest.fixture
def api(client, token):
    def get(path, **kwargs):
        return client.get(path, headers={"Authorization": f"Bearer {token}"}, **kwargs)

    return get


@pytest.mark.parametrize("path", ["/api/v1/tickets", "/api/v1/tickets/1001", "/api/v1/customers/1"])
@pytest.mark.parametrize("header", [None, "Bearer", "Bearer hd_not-a-real-token", "Basic dXNlcjpwdw=="])
def test_every_endpoint_refuses_a_missing_or_wrong_token_with_json_401(client, path, header):
    headers = {"Authorization": header} if header else {}
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_token_or_deactivated_agent_is_refused(client, agent, token):
    assert client.get("/api/v1/tickets", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    agent.is_active = False
    db.session.commit()
    assert client.get("/api/v1/tickets", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    agent.is_active = True
    db.session.commit()
    token_row = db.session.scalars(db.select(ApiToken)).one()
    assert revoke_api_token(agent, token_row.id)
    assert client.get("/api/v1/tickets", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_a_token_is_stored_only_as_its_hash(token):
    row = db.session.scalars(db.select(ApiToken)).one()
    assert token not in (row.token_hash, row.prefix)
    assert len(row.token_hash) == 64 and token.startswith(row.prefix)


def test_ticket_list_has_the_documented_shape(api):
    ingest(make_inbound(subject="First"))
    body = api("/api/v1/tickets").json
    assert set(body) == {"items", "page", "per_page", "total"}
    assert (body["page"], body["per_page"], body["total"]) == (1, 25, 1)
    item = body["items"][0]
    for key in ("number", "subject", "status", "priority", "tier", "channel", "customer_id", "assignee",
                "created_at", "updated_at"):
        assert key in item
    assert (item["number"], item["subject"], item["status"], item["tier"]) == (1001, "First", "new", "first_line")


def test_ticket_list_filters_by_status_tier_customer_and_update_time(api):
    maria = SenderIdentity(IdentityKind.EMAIL, "maria@example.org")
    first = ingest(make_inbound(sender=maria)).ticket
    second = ingest(make_inbound()).ticket
    third = ingest(make_inbound(sender=maria)).ticket
    change_field(second, "status", TicketStatus.PENDING)
    change_field(third, "tier", Tier.SECOND_LINE)
    first.updated_at = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    db.session.commit()

    def numbers(query):
        response = api(f"/api/v1/tickets?{query}")
        assert response.status_code == 200, response.json
        return sorted(item["number"] for item in response.json["items"])

    assert numbers("status=pending") == [second.number]
    assert numbers("status=new,pending") == [1001, 1002, 1003]
    assert numbers("status=on-hold") == []
    assert numbers("tier=second_line") == [third.number]
    assert numbers(f"customer={first.customer_id}") == [first.number, third.number]
    assert numbers("updated_since=2021-01-01T00:00:00Z") == [second.number, third.number]


def test_ticket_list_pages_up_to_one_hundred_per_page(api):
    for _ in range(7):
        ingest(make_inbound())
    page = api("/api/v1/tickets?per_page=3&page=3").json
    assert (page["total"], page["page"], page["per_page"], len(page["items"])) == (7, 3, 3, 1)
    assert api("/api/v1/tickets?per_page=100").status_code == 200
    assert api("/api/v1/tickets?page=9&per_page=3").json["items"] == []


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("per_page=101", "per_page must be between 1 and 100"),
        ("per_page=0", "per_page must be between 1 and 100"),
        ("page=0", "page must be at least 1"),
        ("page=two", "page must be a whole number"),
        ("status=lost", "status must be one of"),
        ("tier=third", "tier must be first_line or second_line"),
        ("updated_since=yesterday", "updated_since must be an ISO 8601"),
        ("customer=x", "customer must be a whole number"),
    ],
)
def test_malformed_filters_get_400_with_the_reason(api, query, reason):
    response = api(f"/api/v1/tickets?{query}")
    assert response.status_code == 400
    assert response.json["error"] == "bad_request"
    assert reason in response.json["message"]


def test_one_ticket_comes_with_its_messages_and_events(api, agent):
    result = ingest(make_inbound(external_id="<m1@example.org>", dedupe_key="email:<m1@example.org>",
                                 html="<p>Hi<script>x()</script></p>",
                                 attachments=(Attachment("a.pdf", "application/pdf", b"%PDF-1.4"),)))
    reply(result.ticket, agent, "Internal: check billing", is_public=False)
    body = api(f"/api/v1/tickets/{result.ticket.number}").json
    inbound, note = body["messages"]
    assert inbound["external_id"] == "<m1@example.org>"
    assert (inbound["direction"], inbound["channel"], inbound["public"]) == ("inbound", "email", True)
    assert inbound["author"]["type"] == "customer"
    assert "script" not in inbound["html"]
    assert inbound["attachments"] == [{"id": inbound["attachments"][0]["id"], "filename": "a.pdf",
                                       "content_type": "application/pdf", "size": 8, "content_id": None,
                                       "inline": False, "refused_reason": None}]
    assert (note["public"], note["author"]["name"], note["delivery_status"]) == (False, agent.name, None)
    assert [event["kind"] for event in body["events"]] == ["ticket.created", "message.received", "note.added"]
    for key in ("id", "direction", "channel", "external_id", "author", "public", "text", "html", "created_at",
                "delivery_status", "attachments"):
        assert key in inbound


def test_an_unknown_ticket_customer_or_path_is_a_json_404(api):
    for path in ("/api/v1/tickets/999999", "/api/v1/customers/424242", "/api/v1/nothing-here"):
        response = api(path)
        assert response.status_code == 404
        assert response.json["error"] == "not_found"


def test_a_customer_comes_with_identities_and_tickets_across_channels(api):
    email = ingest(make_inbound(sender=SenderIdentity(IdentityKind.EMAIL, "maria@example.org")))
    ingest(make_inbound(channel="sms", sender=SenderIdentity(IdentityKind.PHONE, "+34600123456"),
                        other_identities=(SenderIdentity(IdentityKind.EMAIL, "maria@example.org"),)))
    body = api(f"/api/v1/customers/{email.ticket.customer_id}").json
    assert sorted((i["kind"], i["value"]) for i in body["identities"]) == [
        ("email", "maria@example.org"), ("phone", "+34600123456")]
    assert sorted(t["channel"] for t in body["tickets"]) == ["email", "sms"]
    assert db.session.scalar(db.select(db.func.count()).select_from(Ticket)) == 2


def test_the_api_needs_no_csrf_token_and_offers_no_writes(api, client, token):
    assert client.post("/api/v1/tickets", headers={"Authorization": f"Bearer {token}"}).status_code == 405
