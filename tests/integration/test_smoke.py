import pytest

from helpdesk.ingest import ingest
from tests.factories import make_inbound

pytestmark = pytest.mark.integration


def test_ingest_opens_a_ticket_on_the_migrated_database():
    result = ingest(make_inbound())
    assert result.is_new_ticket
    assert result.ticket.number == 1001
