"""The filter language: what it accepts, what it refuses (422 naming the condition),
and what the conditions mean."""

import pytest
from django.test import override_settings

from core.http import ApiError
from core.querylang import MATCH_ALL
from ticketing.filters import parse_ticket_filter, parse_ticket_search


def cond(column: str, op: str, operand, id: str = "c1") -> dict:
    return {"id": id, "op": op, "column": column, "operand": operand}


def state(**fields) -> dict:
    base = {
        "id": "5f0c5a9e-3f4b-4a53-9d8e-0b6f3c8f1a11",
        "ticketNumber": "TKT-2026-000001",
        "subject": "VPN down",
        "description": "",
        "status": "open",
        "priority": "high",
        "category": "Network",
        "team": "operation",
        "assignee": None,
        "requester": None,
        "customer": "",
        "parent": None,
        "createdAt": "2026-01-01T10:00:00Z",
        "updatedAt": "2026-01-01T10:00:00Z",
    }
    return {**base, **fields}


def rejects(raw, condition_id=None) -> dict:
    with pytest.raises(ApiError) as caught:
        parse_ticket_filter(raw)
    assert caught.value.status == 422 and caught.value.code == "INVALID_FILTER"
    assert caught.value.details["conditionId"] == condition_id
    return caught.value.details


class TestRefusals:
    def test_unknown_column(self):
        details = rejects({"op": "AND", "operand": [cond("password", "EQ", "x", "c9")]}, "c9")
        assert "status" in details["supportedColumns"]

    def test_unknown_operator(self):
        details = rejects({"op": "AND", "operand": [cond("status", "CONTAINS", "x")]}, "c1")
        assert details["supportedOperators"] == ["EQ", "NE", "GT", "GE", "LT", "LE", "LIKE", "IN"]

    @pytest.mark.parametrize(
        ("column", "op"),
        [("status", "GT"), ("priority", "LIKE"), ("assignee", "LIKE"), ("createdAt", "LIKE"), ("subject", "GE")],
    )
    def test_operator_that_does_not_apply_to_the_column(self, column, op):
        rejects({"op": "AND", "operand": [cond(column, op, "x")]}, "c1")

    @pytest.mark.parametrize(
        ("column", "op", "operand"),
        [
            ("status", "EQ", "done"),
            ("status", "EQ", 3),
            ("priority", "IN", ["high", "extreme"]),
            ("createdAt", "GE", "yesterday"),
            ("createdAt", "GE", "2025-13-01T00:00:00Z"),
            ("assignee", "EQ", "bob"),
            ("subject", "EQ", None),
            ("subject", "IN", []),
            ("subject", "IN", "abc"),
            ("subject", "LIKE", ""),
            ("subject", "EQ", ["a"]),
            ("subject", "EQ", "x" * 501),
        ],
    )
    def test_operand_of_the_wrong_type(self, column, op, operand):
        rejects({"op": "AND", "operand": [cond(column, op, operand)]}, "c1")

    def test_group_op_must_be_and_or(self):
        rejects({"op": "XOR", "operand": []})

    def test_condition_without_operand(self):
        rejects({"op": "AND", "operand": [{"id": "c3", "op": "EQ", "column": "status"}]}, "c3")

    @pytest.mark.parametrize(
        ("entry", "condition_id"),
        [
            ({"id": "x"}, "x"),  # neither a column nor an operand
            ({}, None),
            ({"op": "OR"}, None),  # a group without its operand
            ({"id": "g1", "op": "AND"}, "g1"),
            ({"id": "c2", "op": "EQ", "operand": "open"}, "c2"),  # a condition without its column
        ],
    )
    def test_entry_that_is_neither_a_condition_nor_a_group_is_refused_not_read_as_match_all(self, entry, condition_id):
        rejects({"op": "AND", "operand": [entry]}, condition_id)
        rejects({"op": "OR", "operand": [{"op": "AND", "operand": [entry]}]}, condition_id)

    def test_top_level_entry_that_is_no_filter_is_refused(self):
        rejects({"id": "x"}, "x")
        rejects({"id": "g", "op": "OR"}, "g")

    @override_settings(FILTER_MAX_DEPTH=3)
    def test_too_deep(self):
        tree = {
            "op": "AND",
            "operand": [
                {
                    "op": "OR",
                    "operand": [{"op": "AND", "operand": [{"op": "OR", "operand": [cond("status", "EQ", "open")]}]}],
                }
            ],
        }
        assert rejects(tree)["limit"] == 3

    @override_settings(FILTER_MAX_CONDITIONS=3)
    def test_too_many_conditions_names_the_first_one_over(self):
        tree = {"op": "AND", "operand": [cond("status", "EQ", "open", f"c{i}") for i in range(5)]}
        rejects(tree, "c3")

    @override_settings(FILTER_MAX_IN_VALUES=3)
    def test_too_many_in_values_names_the_limit(self):
        details = rejects({"op": "AND", "operand": [cond("status", "IN", ["open"] * 4, "c1")]}, "c1")
        assert details["limit"] == 3

    @pytest.mark.parametrize(
        "raw", ["status = open", 42, [cond("status", "EQ", "open")], {"op": "AND", "operand": "x"}]
    )
    def test_not_a_filter_object(self, raw):
        rejects(raw)


class TestMeaning:
    def test_no_filter_matches_everything(self):
        assert parse_ticket_filter(None) is MATCH_ALL and parse_ticket_filter({}) is MATCH_ALL
        assert parse_ticket_filter({"op": "AND", "operand": []}).matches(state())
        # The spec's top level may leave out its operand list: no conditions.
        assert parse_ticket_filter({"op": "OR"}) is MATCH_ALL and parse_ticket_filter({"op": "and"}) is MATCH_ALL
        # Groups with an operand list stay valid without op (AND) and with an id.
        assert parse_ticket_filter({"operand": [{"id": "g", "op": "OR", "operand": []}]}).matches(state())

    def test_like_is_case_insensitive_substring_with_literal_wildcards(self):
        like = parse_ticket_filter({"op": "AND", "operand": [cond("subject", "LIKE", "50%_off")]})
        assert like.matches(state(subject="Get 50%_OFF now"))
        assert not like.matches(state(subject="Get 50% off now"))

    def test_ne_matches_unassigned_tickets(self):
        alice = "11111111-1111-4111-8111-111111111111"
        ne = parse_ticket_filter({"op": "AND", "operand": [cond("assignee", "NE", alice)]})
        assert ne.matches(state(assignee=None))
        assert not ne.matches(state(assignee={"id": alice, "name": "Alice"}))

    def test_eq_null_means_unassigned(self):
        unassigned = parse_ticket_filter({"op": "AND", "operand": [cond("assignee", "EQ", None)]})
        assert unassigned.matches(state(assignee=None))

    def test_datetimes_compare_as_instants_whatever_the_offset(self):
        after = parse_ticket_filter({"op": "AND", "operand": [cond("createdAt", "GE", "2026-01-01T12:00:00+02:00")]})
        assert after.matches(state(createdAt="2026-01-01T10:00:00Z"))
        assert not after.matches(state(createdAt="2026-01-01T09:59:59.999999Z"))

    def test_nested_groups(self):
        tree = {
            "op": "OR",
            "operand": [
                cond("priority", "EQ", "urgent"),
                {"op": "AND", "operand": [cond("team", "EQ", "network"), cond("status", "IN", ["open", "on_hold"])]},
            ],
        }
        node = parse_ticket_filter(tree)
        assert node.matches(state(priority="urgent", team="operation"))
        assert node.matches(state(priority="low", team="network", status="on_hold"))
        assert not node.matches(state(priority="low", team="network", status="closed"))

    def test_critical_is_read_as_urgent(self):
        node = parse_ticket_filter({"op": "AND", "operand": [cond("priority", "EQ", "critical")]})
        assert node.matches(state(priority="urgent"))

    def test_search_covers_subject_description_and_number(self):
        search = parse_ticket_search("tkt-2026")
        assert search.matches(state())
        assert parse_ticket_search("client crash").matches(state(description="The CLIENT CRASH again"))
        assert parse_ticket_search("   ") is None


def test_lists_that_select_the_same_tickets_share_one_match_key_and_others_do_not():
    """Live events are matched once per distinct list (TicketQuery.match_key): the key must
    ignore what does not change the selection and keep everything that does."""
    import uuid

    from ticketing.selectors import Scope, TicketQuery

    def query(kind: str, user: uuid.UUID, teams=(), *, cid="c1", team="network", search=None) -> TicketQuery:
        condition = {"id": cid, "op": "EQ", "column": "team", "operand": team}
        return TicketQuery(
            scope=Scope(kind, user, teams),
            filter=parse_ticket_filter({"op": "AND", "operand": [condition]}),
            search=parse_ticket_search(search),
        )

    ann, ben = uuid.uuid4(), uuid.uuid4()
    same = query("template", ann, cid="a-random-id").match_key
    assert query("template", ben, cid="another-id").match_key == same  # who asks and the ids do not matter
    assert query("template", ann, team="support").match_key != same
    assert query("template", ann, search="vpn").match_key != same
    assert query("agent", ann, ("network",)).match_key != query("agent", ben, ("network",)).match_key
    assert query("agent", ann, ("network",)).match_key != query("agent", ann, ("support",)).match_key
    assert query("user", ann).match_key != query("agent", ann).match_key
