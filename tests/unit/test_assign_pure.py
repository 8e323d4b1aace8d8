"""Choosing an assignee without a database: who qualifies, and how each strategy picks."""

import pytest

from helpdesk.triage.assign import Candidate, Need, choose_agent

NEED = Need(tier="first_line", group_id=1)


def agent(id_, *, load=0, capacity=5, tier="first_line", groups=(1,), languages=(), online=True):
    return Candidate(id_, tier, frozenset(groups), load, capacity, frozenset(languages), online)


@pytest.mark.parametrize(
    ("candidates", "need", "strategy", "last", "expected"),
    [
        ([], NEED, "least_loaded", None, None),
        ([agent(1, load=3), agent(2, load=1), agent(3, load=2)], NEED, "least_loaded", None, 2),
        ([agent(1, load=1), agent(2, load=1)], NEED, "least_loaded", None, 1),
        ([agent(1, online=False), agent(2, load=4)], NEED, "least_loaded", None, 2),
        ([agent(1, load=5, capacity=5), agent(2, load=4)], NEED, "least_loaded", None, 2),
        ([agent(1, tier="second_line"), agent(2, load=3)], NEED, "least_loaded", None, 2),
        ([agent(1, groups=(2,)), agent(2, load=3)], NEED, "least_loaded", None, 2),
        ([agent(1, online=False), agent(2, load=5, capacity=5)], NEED, "least_loaded", None, None),
        ([agent(1), agent(2, languages=("de",), load=3)], Need("first_line", 1, "de", True), "least_loaded", None, 2),
        ([agent(1), agent(2, load=3)], Need("first_line", 1, "de", True), "least_loaded", None, None),
        ([agent(1), agent(2, load=3)], Need("first_line", 1, "de", False), "least_loaded", None, 1),
        ([agent(1), agent(2), agent(3)], NEED, "round_robin", None, 1),
        ([agent(1), agent(2), agent(3)], NEED, "round_robin", 1, 2),
        ([agent(1), agent(2), agent(3)], NEED, "round_robin", 3, 1),
        ([agent(1), agent(2, online=False), agent(3)], NEED, "round_robin", 1, 3),
        ([agent(1), agent(3)], NEED, "round_robin", 2, 3),
    ],
)
def test_choose_agent(candidates, need, strategy, last, expected):
    assert choose_agent(candidates, need, strategy, last) == expected
