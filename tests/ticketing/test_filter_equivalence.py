"""The database filter and the in-memory matcher must select exactly the same tickets,
for any filter: the list snapshot and the live events of a stream depend on it."""

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import World
from ticketing.filters import COLUMNS, parse_ticket_filter
from ticketing.models import Priority, Status, Ticket
from ticketing.serializers import ticket_state

TRICKY_TEXT = [
    "VPN",
    "vpn",
    "Vpn down",
    "100%",
    "a_b",
    "ab",
    "back\\slash",
    "",
    " ",
    "Straße",
    "STRASSE",
    "École",
    "école",
    "o'clock",
    "Network",
    "network ",
]
BASE_TIME = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TIMES = [BASE_TIME + timedelta(microseconds=m) for m in (-1, 0, 1)] + [BASE_TIME + timedelta(days=d) for d in (-3, 2)]


def text_pool() -> list[str]:
    if connection.vendor == "postgresql":
        return TRICKY_TEXT
    # SQLite folds case for ASCII only; the embedded default documents that.
    return [t for t in TRICKY_TEXT if t.isascii()]


@pytest.fixture
def tickets(acme: World) -> list[dict]:
    rng = random.Random(7)
    users = [None, acme.users["alice"], acme.users["carol"]]
    texts = text_pool()
    rows = []
    for i in range(60):
        rows.append(
            Ticket(
                tenant=acme.tenant,
                number=f"TKT-2026-{i:06d}",
                subject=rng.choice(texts) + rng.choice(texts),
                description=rng.choice(texts),
                status=rng.choice(Status.values),
                priority=rng.choice(Priority.values),
                category=rng.choice(texts),
                team=rng.choice(["operation", "network", ""]),
                customer=rng.choice(texts),
                assignee=rng.choice(users),
                requester=rng.choice(users),
            )
        )
    # Test data straight into the table: these tickets need chosen timestamps, not events.
    Ticket.objects.bulk_create(rows)
    for ticket in rows:
        Ticket.objects.filter(pk=ticket.pk).update(created_at=rng.choice(TIMES), updated_at=rng.choice(TIMES))
    parents = rows[:5]
    for ticket in rows[10:30]:
        Ticket.objects.filter(pk=ticket.pk).update(parent=rng.choice(parents))
    stored = Ticket.objects.filter(tenant=acme.tenant).select_related("assignee", "requester")
    return [ticket_state(t) for t in stored]


def id_values(tickets: list[dict]) -> dict[str, tuple[str | None, ...]]:
    """Per id column, the values the tickets hold (and one nobody holds)."""
    return {
        name: tuple(
            sorted({str(v) if v else None for v in {c.state_value(t) for t in tickets} | {uuid.uuid4()}}, key=str)
        )
        for name, c in COLUMNS.items()
        if c.kind == "uuid"
    }


def operand_for(column: str, ids: dict[str, tuple[str | None, ...]]) -> st.SearchStrategy:
    spec = COLUMNS[column]
    if spec.kind == "enum":
        return st.sampled_from(sorted(spec.choices))
    if spec.kind == "datetime":
        return st.sampled_from(TIMES).map(lambda t: t.isoformat()) | st.datetimes(
            # hypothesis takes naive bounds and attaches the time zone itself
            min_value=datetime(2026, 2, 20),  # noqa: DTZ001
            max_value=datetime(2026, 3, 10),  # noqa: DTZ001
            timezones=st.just(UTC),
        ).map(lambda t: t.isoformat())
    if spec.kind == "uuid":
        return st.sampled_from(ids[column])
    texts = text_pool()
    return st.sampled_from(texts) | st.text(alphabet="aAbB%_\\ ßé", min_size=1, max_size=3)


@st.composite
def conditions(draw, ids):
    column = draw(st.sampled_from(sorted(COLUMNS)))
    spec = COLUMNS[column]
    op = draw(st.sampled_from(spec.ops))
    value_strategy = operand_for(column, ids)
    operand = draw(st.lists(value_strategy, min_size=1, max_size=3) if op == "IN" else value_strategy)
    if operand is None and not (spec.nullable and op in ("EQ", "NE")) and op != "IN":
        operand = draw(value_strategy.filter(lambda v: v is not None))
    if op == "IN" and not spec.nullable:
        operand = [v for v in operand if v is not None] or [draw(value_strategy.filter(lambda v: v is not None))]
    if op == "LIKE" and operand == "":
        operand = "a"
    return {"id": draw(st.uuids()).hex[:8], "op": op, "column": column, "operand": operand}


def trees(ids):
    return st.recursive(
        conditions(ids),
        lambda children: st.fixed_dictionaries(
            {"op": st.sampled_from(["AND", "OR"]), "operand": st.lists(children, max_size=3)}
        ),
        max_leaves=6,
    ).map(lambda node: node if "operand" in node and "column" not in node else {"op": "AND", "operand": [node]})


@pytest.mark.django_db
def test_sql_and_in_memory_select_the_same_tickets(acme: World, tickets: list[dict]):
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(raw=trees(id_values(tickets)))
    def check(raw: dict) -> None:
        node = parse_ticket_filter(raw)
        in_sql = {
            str(i) for i in Ticket.objects.filter(tenant=acme.tenant).filter(node.to_q()).values_list("id", flat=True)
        }
        in_memory = {t["id"] for t in tickets if node.matches(t)}
        assert in_sql == in_memory, raw

    check()
