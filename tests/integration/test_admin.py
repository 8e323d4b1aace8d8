"""Administration: who may see it, and creating and editing agents."""

import pytest
import sqlalchemy as sa

from helpdesk.extensions import db
from helpdesk.models import Agent, Group, QuarantinedMessage, Role, Tier
from tests.conftest import AuthActions
from tests.factories import make_agent

pytestmark = pytest.mark.integration

ADMIN_PAGES = ["/admin/agents", "/admin/agents/new", "/admin/agents/{own_id}", "/admin/quarantine"]


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def agent_by_email(address: str) -> Agent | None:
    return db.session.scalar(sa.select(Agent).where(Agent.email == address))


def agent_form(**overrides) -> dict:
    form = {
        "email": "kim@example.com",
        "name": "Kim Berg",
        "password": "kims long password",
        "role": "lead",
        "tier": "second_line",
        "groups": "Billing, Technical",
        "languages": "SV, de",
        "capacity": "7",
        "is_active": "y",
    }
    form.update(overrides)
    return {key: value for key, value in form.items() if value is not None}


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_admin_pages_send_anonymous_visitors_to_login(client, path):
    response = client.get(path.format(own_id=1))
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("role", ["agent", "lead"])
@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_admin_pages_are_forbidden_to_agents_and_leads(client, login_as, role, path):
    agent = login_as(role)
    assert client.get(path.format(own_id=agent.id)).status_code == 403


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_admin_pages_open_for_admins(client, admin, path):
    assert client.get(path.format(own_id=admin.id)).status_code == 200


@pytest.mark.parametrize("role", ["agent", "lead"])
def test_non_admins_cannot_create_or_edit_agents(client, login_as, post, role):
    agent = login_as(role)
    assert post("/admin/agents/new", **agent_form()).status_code == 403
    assert post(f"/admin/agents/{agent.id}", **agent_form(email=agent.email, role="admin")).status_code == 403
    assert agent_by_email("kim@example.com") is None
    assert db.session.get(Agent, agent.id).role == role


@pytest.mark.parametrize("role, shown", [("agent", False), ("lead", False), ("admin", True)])
def test_the_admin_menu_shows_only_to_admins(client, login_as, role, shown):
    login_as(role)
    assert ('href="/admin/agents"' in client.get("/inbox").get_data(as_text=True)) is shown


def test_quarantine_lists_messages_that_could_not_be_ingested(client, admin):
    db.session.add(QuarantinedMessage(channel="email", source="pipe", raw=b"garbage", error="no From header"))
    db.session.commit()
    page = client.get("/admin/quarantine").get_data(as_text=True)
    assert "no From header" in page and "7 bytes" in page


def test_an_admin_creates_an_agent_with_role_tier_groups_and_languages(client, admin, post):
    db.session.add(Group(name="Billing"))
    db.session.commit()
    response = post("/admin/agents/new", **agent_form())
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/agents"

    kim = agent_by_email("kim@example.com")
    assert (kim.name, kim.role, kim.tier, kim.capacity, kim.is_active) == (
        "Kim Berg",
        Role.LEAD,
        Tier.SECOND_LINE,
        7,
        True,
    )
    assert sorted(group.name for group in kim.groups) == ["Billing", "Technical"]
    assert count(Group) == 2  # the existing Billing group was reused, Technical created
    assert kim.languages == ["de", "sv"]
    assert kim.password_hash.startswith("$argon2id$")
    listing = client.get("/admin/agents").get_data(as_text=True)
    assert "Kim Berg" in listing and "Billing, Technical" in listing


def test_the_new_agent_can_sign_in_with_the_password_set(app, post, admin):
    post("/admin/agents/new", **agent_form())
    other_browser = app.test_client()
    assert AuthActions(other_browser).login("kim@example.com", "kims long password").status_code == 302
    assert "Kim Berg" in other_browser.get("/inbox").get_data(as_text=True)


@pytest.mark.parametrize("email", ["BOSS@example.com", "boss@example.com"])
def test_a_taken_email_is_refused_with_a_message_and_nothing_is_written(admin, post, email):
    before = (count(Agent), count(Group))
    response = post("/admin/agents/new", **agent_form(email=email, groups="Brand new group"))
    assert response.status_code == 400
    assert "already exists" in response.get_data(as_text=True)
    assert (count(Agent), count(Group)) == before


@pytest.mark.parametrize("email", ["not-an-address", "kim@", "kim example.com", ""])
def test_a_malformed_email_is_refused(admin, post, email):
    response = post("/admin/agents/new", **agent_form(email=email))
    assert response.status_code == 400
    assert 'class="error"' in response.get_data(as_text=True)
    assert count(Agent) == 1


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("groups", "Billing, " + "x" * 101, "at most 100 characters"),
        ("languages", "sv, english", "&#39;english&#39; is not a language code"),
        ("languages", "de; fr", "&#39;de; fr&#39; is not a language code"),
    ],
)
@pytest.mark.parametrize("editing", [False, True])
def test_an_overlong_group_or_a_malformed_language_is_refused(admin, post, field, value, message, editing):
    path = "/admin/agents/new"
    if editing:
        kim = make_agent(email="kim@example.com", languages=["en"])
        db.session.commit()
        path = f"/admin/agents/{kim.id}"
    before = (count(Agent), count(Group))
    response = post(path, **agent_form(**{field: value}))
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert (count(Agent), count(Group)) == before
    kim = agent_by_email("kim@example.com")
    assert kim is None or (kim.languages, kim.groups) == (["en"], [])


def test_regional_language_codes_are_accepted(admin, post):
    assert post("/admin/agents/new", **agent_form(languages="pt-BR, en")).status_code == 302
    assert agent_by_email("kim@example.com").languages == ["en", "pt-br"]


def test_a_short_password_is_refused(admin, post):
    response = post("/admin/agents/new", **agent_form(password="short"))
    assert response.status_code == 400
    assert agent_by_email("kim@example.com") is None


def test_an_admin_edits_role_tier_groups_languages_capacity_and_active(admin, post):
    kim = make_agent(email="kim@example.com", name="Kim", languages=["en"])
    db.session.commit()
    old_hash = kim.password_hash
    response = post(
        f"/admin/agents/{kim.id}",
        **agent_form(
            name="Kim Berg",
            password="",
            role="admin",
            tier="second_line",
            groups="Escalations",
            languages="fi",
            capacity="3",
            is_active=None,
        ),
    )
    assert response.status_code == 302
    db.session.refresh(kim)
    assert (kim.name, kim.role, kim.tier, kim.capacity, kim.is_active) == (
        "Kim Berg",
        Role.ADMIN,
        Tier.SECOND_LINE,
        3,
        False,
    )
    assert [group.name for group in kim.groups] == ["Escalations"]
    assert kim.languages == ["fi"]
    assert kim.password_hash == old_hash  # an empty password field keeps the password


def test_the_edit_form_shows_the_agents_groups_and_languages(client, admin):
    kim = make_agent(email="kim@example.com", languages=["sv", "de"])
    kim.groups = [Group(name="Billing"), Group(name="Technical")]
    db.session.commit()
    page = client.get(f"/admin/agents/{kim.id}").get_data(as_text=True)
    assert 'value="Billing, Technical"' in page
    assert 'value="de, sv"' in page


def test_editing_to_a_taken_email_is_refused_and_nothing_changes(admin, post):
    kim = make_agent(email="kim@example.com", role="agent")
    db.session.commit()
    response = post(f"/admin/agents/{kim.id}", **agent_form(email="boss@example.com", role="lead"))
    assert response.status_code == 400
    assert "Another agent already uses this address." in response.get_data(as_text=True)
    db.session.refresh(kim)
    assert (kim.email, kim.role) == ("kim@example.com", Role.AGENT)


@pytest.mark.parametrize("change", [{"role": "lead"}, {"role": "agent"}, {"is_active": None}])
def test_an_admin_cannot_remove_their_own_admin_role_or_deactivate_themselves(client, admin, post, change):
    form = agent_form(email="boss@example.com", name="Boss", role="admin")
    response = post(
        f"/admin/agents/{admin.id}",
        **{key: value for key, value in {**form, **change}.items() if value is not None},
    )
    assert response.status_code == 400
    assert "You cannot remove your own admin role or deactivate yourself." in response.get_data(as_text=True)
    db.session.refresh(admin)
    assert (admin.role, admin.is_active) == (Role.ADMIN, True)
    assert client.get("/admin/agents").status_code == 200


def test_an_admin_can_still_edit_their_own_other_fields(admin, post):
    response = post(
        f"/admin/agents/{admin.id}",
        **agent_form(email="boss@example.com", name="The Boss", role="admin", password=""),
    )
    assert response.status_code == 302
    db.session.refresh(admin)
    assert (admin.name, admin.role, admin.tier) == ("The Boss", Role.ADMIN, Tier.SECOND_LINE)


def test_editing_an_unknown_agent_is_404(client, admin):
    assert client.get("/admin/agents/999999").status_code == 404


@pytest.mark.parametrize("editing", [False, True])
def test_a_group_named_twice_is_linked_once(admin, post, editing):
    path = "/admin/agents/new"
    if editing:
        kim = make_agent(email="kim@example.com")
        db.session.commit()
        path = f"/admin/agents/{kim.id}"
    response = post(path, **agent_form(groups="Billing, Technical, Billing,"))
    assert response.status_code == 302
    kim = agent_by_email("kim@example.com")
    assert sorted(group.name for group in kim.groups) == ["Billing", "Technical"]
