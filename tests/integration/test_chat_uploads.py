"""Files in the chat: visitors upload through the widget's endpoint (token, origin, size, type and rate checked),
the file is stored as an attachment through ingest, and only that visitor and the agents can fetch it."""

import io

import pytest
import sqlalchemy as sa

from channels.chat.namespace import CHAT_NAMESPACE
from channels.chat.tokens import VisitorTokens
from channels.messages import Attachment as AttachmentData
from channels.messages import ChannelName
from helpdesk.attachments import attachment_path, store_attachment
from helpdesk.extensions import db, socketio
from helpdesk.ingest import ingest
from helpdesk.models import Attachment, Direction, Message
from helpdesk.realtime import AGENT_NAMESPACE
from tests.conftest import clear_g
from tests.factories import make_agent, make_inbound
from tests.integration.chat_client import SHOP, configure_chat

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.7\n" + b"0" * 500


@pytest.fixture(autouse=True)
def chat_config(app, monkeypatch):
    configure_chat(app, monkeypatch)


@pytest.fixture
def token_for(app):
    """Issue a visitor token as the chat namespace does when a visitor connects."""
    tokens = VisitorTokens(app.config["SECRET_KEY"])
    return lambda visitor_id: tokens.issue(visitor_id)


def upload(client, token, *, name="photo.png", content=PNG, client_id="f-1", origin=SHOP, text=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if origin:
        headers["Origin"] = origin
    data = {"client_id": client_id, "file": (io.BytesIO(content), name)}
    if text is not None:
        data["text"] = text
    return client.post("/chat/upload", data=data, headers=headers, content_type="multipart/form-data")


def fetch(client, path, token, origin=SHOP):
    headers = {"Origin": origin}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return read_and_close(client.get(path, headers=headers))


def read_and_close(response):
    """Buffer a (possibly streamed) file response and close it, as a browser does once it has the bytes."""
    response.get_data()
    response.close()
    return response


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def test_a_visitors_image_is_stored_as_an_attachment_of_their_chat_message(client, token_for):
    response = upload(client, token_for("v_ada"), text="The scratch on the lid")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert "Origin" in response.headers["Vary"]
    answer = response.get_json()
    assert answer["ok"] is True and answer["client_id"] == "f-1" and answer["seq"] == answer["id"]
    [entry] = answer["attachments"]
    assert entry["filename"] == "photo.png" and entry["content_type"] == "image/png" and entry["is_image"] is True
    assert entry["path"] == f"/chat/attachments/{entry['id']}"

    message = db.session.get(Message, answer["id"])
    assert (message.channel, message.ticket.channel, message.address) == (ChannelName.CHAT, ChannelName.CHAT, "v_ada")
    assert message.text == "The scratch on the lid"
    [row] = message.attachments
    assert attachment_path(row).read_bytes() == PNG and row.size == len(PNG)


def test_a_resent_upload_is_stored_once(client, token_for):
    token = token_for("v_ada")
    first = upload(client, token).get_json()
    again = upload(client, token).get_json()
    assert first["id"] == again["id"] and first["attachments"] == again["attachments"]
    assert count(Message) == 1 and count(Attachment) == 1


def test_the_visitor_sees_their_file_in_the_history_and_fetches_it_with_their_token(client, token_for):
    token = token_for("v_ada")
    path = upload(client, token).get_json()["attachments"][0]["path"]
    clear_g()
    connection = socketio.test_client(client.application, namespace=CHAT_NAMESPACE, headers={"Origin": SHOP},
                                      auth={"token": token})
    [entry] = connection.emit("history", {"after": 0}, namespace=CHAT_NAMESPACE, callback=True)["messages"]
    connection.disconnect(namespace=CHAT_NAMESPACE)
    assert entry["attachments"][0]["path"] == path

    response = fetch(client, path, token)
    assert response.status_code == 200 and response.data == PNG
    assert response.mimetype == "image/png"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.headers["Content-Security-Policy"]
    assert response.headers["Access-Control-Allow-Origin"] == SHOP


@pytest.mark.parametrize("who", ["another visitor", "no token", "a forged token"])
def test_nobody_else_can_fetch_a_visitors_file(app, client, token_for, who):
    path = upload(client, token_for("v_ada")).get_json()["attachments"][0]["path"]
    upload(client, token_for("v_eve"), client_id="e-1")
    token = {"another visitor": token_for("v_eve"), "no token": None,
             "a forged token": VisitorTokens("guessed").issue("v_ada")}[who]
    response = fetch(client, path, token)
    assert response.status_code == 404 and PNG not in response.data


def test_a_pdf_is_offered_as_a_download_never_shown_inline(client, token_for):
    token = token_for("v_ada")
    entry = upload(client, token, name="invoice.pdf", content=PDF).get_json()["attachments"][0]
    assert entry["is_image"] is False
    response = fetch(client, entry["path"], token)
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert "invoice.pdf" in response.headers["Content-Disposition"]


def test_an_agents_file_on_the_visitors_conversation_shows_in_the_widget(client, token_for):
    token = token_for("v_ada")
    ticket = db.session.get(Message, upload(client, token).get_json()["id"]).ticket
    agent = make_agent(name="Ada Agent")
    answer = Message(ticket=ticket, direction=Direction.OUTBOUND, channel=ChannelName.CHAT, author_agent=agent,
                     text="Here is the return label.", address="v_ada", external_id="helpdesk-label",
                     dedupe_key="out:helpdesk-label")
    answer.attachments = [store_attachment(AttachmentData("label.pdf", "application/pdf", PDF))]
    db.session.add(answer)
    db.session.commit()
    clear_g()
    connection = socketio.test_client(client.application, namespace=CHAT_NAMESPACE, headers={"Origin": SHOP},
                                      auth={"token": token})
    history = connection.emit("history", {"after": 0}, namespace=CHAT_NAMESPACE, callback=True)["messages"]
    connection.disconnect(namespace=CHAT_NAMESPACE)
    [files] = [m["attachments"] for m in history if m["direction"] == "agent"]
    assert files[0]["filename"] == "label.pdf"
    assert fetch(client, files[0]["path"], token).data == PDF


def test_an_oversized_file_is_refused_with_a_message_the_widget_can_read(app, client, token_for, monkeypatch):
    monkeypatch.setitem(app.config, "HELPDESK_CHAT_MAX_UPLOAD_BYTES", 1000)
    token = token_for("v_ada")
    # Over the limit but within the request's slack: the file itself is measured.
    near = upload(client, token, content=PNG[:8] + b"\x00" * 1500)
    # Far over: refused from the request's length before the body is read.
    far = upload(client, token, content=PNG[:8] + b"\x00" * 200_000, client_id="f-2")
    for response in (near, far):
        assert response.status_code == 413
        answer = response.get_json()
        assert answer["ok"] is False and answer["error"] == "too_large"
        assert "limited to 1000 bytes" in answer["message"]
        assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert count(Message) == 0 and count(Attachment) == 0


@pytest.mark.parametrize("name, content, code", [
    ("run.exe", b"MZ\x90\x00" * 10, "type_not_allowed"),
    ("logo.svg", b"<svg onload=alert(1)/>", "type_not_allowed"),
    ("photo.png", b"<html><script>alert(1)</script></html>", "type_mismatch"),
])
def test_a_file_of_a_refused_type_is_not_stored(client, token_for, name, content, code):
    response = upload(client, token_for("v_ada"), name=name, content=content)
    assert response.status_code == 400
    assert response.get_json()["error"] == code and response.get_json()["message"]
    assert count(Message) == 0


def test_an_upload_needs_a_genuine_token_and_an_allowed_origin(client, token_for):
    assert upload(client, None).status_code == 401
    assert upload(client, VisitorTokens("guessed").issue("v_ada")).status_code == 401
    refused = upload(client, token_for("v_ada"), origin="https://evil.example.net")
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers
    assert count(Message) == 0


def test_the_browsers_preflight_is_answered_only_for_allowed_sites(client):
    allowed = client.options("/chat/upload", headers={"Origin": SHOP, "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "authorization"})
    assert allowed.headers["Access-Control-Allow-Origin"] == SHOP
    assert "Authorization" in allowed.headers["Access-Control-Allow-Headers"]
    other = client.options("/chat/attachments/1", headers={"Origin": "https://evil.example.net",
                                                           "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_a_visitor_uploading_too_fast_is_held_back(app, client, token_for, monkeypatch):
    monkeypatch.setitem(app.config, "HELPDESK_CHAT_UPLOAD_RATE_LIMIT", "2 per minute")
    token = token_for("v_ada")
    statuses = [upload(client, token, client_id=f"f-{n}").status_code for n in range(3)]
    assert statuses == [200, 200, 429]
    third = upload(client, token, client_id="f-9")
    assert third.get_json()["error"] == "rate_limited" and third.headers["Access-Control-Allow-Origin"] == SHOP
    assert count(Message) == 2


def test_agents_see_chat_files_on_the_ticket_and_fetch_them_signed_in(client, login_as, token_for):
    path = upload(client, token_for("v_ada")).get_json()["attachments"][0]["path"]
    attachment_id = int(path.rsplit("/", 1)[1])
    number = db.session.scalar(sa.select(Message)).ticket.number
    agent_url = f"/chat/agent/attachments/{attachment_id}"
    assert client.get(agent_url).status_code == 302  # to the login page

    login_as()
    page = client.get(f"/tickets/{number}").get_data(as_text=True)
    assert "photo.png" in page and "chat_agent.js" in page
    clear_g()
    agent = socketio.test_client(client.application, namespace=AGENT_NAMESPACE, flask_test_client=client)
    state = agent.emit("chat_state", {"number": number}, namespace=AGENT_NAMESPACE, callback=True)
    agent.disconnect(namespace=AGENT_NAMESPACE)
    [file] = next(iter(state["attachments"].values()))
    assert file["url"] == agent_url and file["is_image"] is True
    response = read_and_close(client.get(agent_url))
    assert response.status_code == 200 and response.data == PNG
    assert "Access-Control-Allow-Origin" not in response.headers


def test_the_agent_file_route_serves_only_chat_files(client, login_as):
    message = ingest(make_inbound(attachments=(AttachmentData("notes.txt", "text/plain", b"hello"),))).message
    login_as()
    assert client.get(f"/chat/agent/attachments/{message.attachments[0].id}").status_code == 404
