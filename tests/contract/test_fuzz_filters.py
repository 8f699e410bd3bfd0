"""Property-based fuzzing through the real server: random and adversarial filter trees
(valid and not: wrong types, odd date-times and offsets, deep nesting, unicode, NUL, lone
surrogates, huge numbers, NaN) against the ticket list, the notification list (body and
query forms) and the list stream, and random JSON bodies for ticket create, patch and
comment.

The properties: never a 5xx; every 4xx is JSON in the error envelope; a stream that
answers 200 delivers `connected` and then its `snapshot` (it never opens and then dies
without an `error` event). Bounded for CI: a few hundred requests in all, well under a
minute and a half on two busy cores."""

from __future__ import annotations

import json
import string
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.querylang import OPS
from notifications.filters import FIELDS
from tests.builders import World
from tests.sse_client import list_updates_url
from ticketing.filters import COLUMNS

pytestmark = [pytest.mark.contract, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

API = "/api/v2/ticketing"
TIMEOUT = 15


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,  # nothing written into the working tree
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- values ---------------------------------------------------------------------------------

# Text with the characters that hurt: NUL, lone surrogates (sent as \\udXXX escapes by
# json.dumps), LIKE wildcards, quotes, astral and combining characters, right-to-left marks.
nasty_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(["\x00", "\ud800", "\udfff", "%", "_", "\\", "'", '"', "ß", "İ", "😀", "\u202e", "\u0301"]),
        st.characters(codec="utf-8"),
    ),
    max_size=30,
)


@st.composite
def odd_datetimes(draw: st.DrawFn) -> str:
    """ISO 8601-ish date-times: years 1..9999, offsets up to ±23:59, odd fractions, or a
    date alone; sometimes broken on purpose."""
    year = draw(st.integers(1, 9999))
    month, day = draw(st.integers(1, 12)), draw(st.integers(1, 28))
    hour, minute, second = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    text = f"{year:04d}-{month:02d}-{day:02d}"
    if draw(st.sampled_from([True, True, True, False])):  # mostly with a time (and so, maybe, an offset)
        text += f"T{hour:02d}:{minute:02d}:{second:02d}"
        text += draw(st.sampled_from(["", ".5", ".123456", ".123456789"]))
        # Minutes; the edges first (PostgreSQL takes up to ±15:59, Python up to ±23:59).
        edges = [0, 330, 14 * 60, 15 * 60 + 59, 16 * 60, 23 * 60 + 59, -(12 * 60), -(15 * 60 + 59), -(16 * 60)]
        offset = draw(st.one_of(st.sampled_from(edges), st.integers(-(24 * 60 - 1), 24 * 60 - 1)))
        sign = "+" if offset >= 0 else "-"
        written = f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
        text += draw(st.sampled_from([written, written, "Z", ""]))
    mangle = draw(st.sampled_from(["", "", "", "", "", "", "x", "\x00", " ", "T25:00:00"]))
    return text + mangle


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
    odd_datetimes(),
    st.uuids().map(str),
    st.sampled_from(["open", "OPEN", "critical", "urgent", "assignment", "", "TKT-2026-000001"]),
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4), max_leaves=12
)


# --- ticket filters ---------------------------------------------------------------------------


def ticket_conditions() -> st.SearchStrategy[dict[str, Any]]:
    condition = st.fixed_dictionaries(
        {
            "column": st.one_of(st.sampled_from(sorted(COLUMNS)), nasty_text, st.integers()),
            "op": st.one_of(st.sampled_from(OPS), st.sampled_from(["eq", "in", "like", "XOR"]), st.none()),
            "operand": st.one_of(scalars, st.lists(scalars, max_size=5), json_values),
        },
        optional={"id": st.one_of(nasty_text, st.integers()), "extra": scalars},
    )
    return condition


ticket_trees = st.recursive(
    ticket_conditions(),
    lambda inner: st.fixed_dictionaries(
        {
            "op": st.one_of(st.sampled_from(["AND", "OR", "and", "or"]), scalars),
            "operand": st.one_of(st.lists(inner, max_size=4), scalars),
        }
    ),
    max_leaves=10,
)


@st.composite
def valid_conditions(draw: st.DrawFn) -> dict[str, Any]:
    """A condition of the right shape and operand type, with adversarial values: these
    pass the parser and reach the database (and a stream's snapshot)."""
    # Date-times weigh more: their offsets and years are where the database disagrees.
    column = COLUMNS[draw(st.sampled_from([*sorted(COLUMNS), "createdAt", "updatedAt", "createdAt", "updatedAt"]))]
    op = draw(st.sampled_from(column.ops))
    clean_text = nasty_text.map(lambda t: t.replace("\x00", "").encode("utf-8", "ignore").decode())
    one = {
        "text": clean_text,
        "enum": st.sampled_from(sorted(column.choices) or ["x"]),
        "uuid": st.uuids().map(str),
        "datetime": odd_datetimes(),
    }[column.kind]
    if column.nullable and op in ("EQ", "NE"):
        one = st.one_of(one, st.none())
    operand = draw(st.lists(one, min_size=1, max_size=4) if op == "IN" else one)
    return {"id": draw(clean_text), "column": column.name, "op": op, "operand": operand}


valid_trees = st.recursive(
    valid_conditions(),
    lambda inner: st.fixed_dictionaries({"op": st.sampled_from(["AND", "OR"]), "operand": st.lists(inner, max_size=3)}),
    max_leaves=6,
)

datetime_bodies = st.fixed_dictionaries(
    {
        "filter": st.fixed_dictionaries(
            {
                "op": st.just("AND"),
                "operand": st.lists(
                    st.fixed_dictionaries(
                        {
                            "column": st.sampled_from(["createdAt", "updatedAt"]),
                            "op": st.sampled_from(["EQ", "NE", "GT", "GE", "LT", "LE"]),
                            "operand": odd_datetimes(),
                        }
                    ),
                    min_size=2,
                    max_size=3,
                ),
            }
        )
    }
)

list_bodies = st.fixed_dictionaries(
    {},
    optional={
        "filter": st.one_of(valid_trees, ticket_trees, json_values),
        "search": st.one_of(nasty_text, scalars),
        "top": st.one_of(st.integers(-5, 300), scalars),
        "offset": st.one_of(st.integers(-5, 10**12), scalars),
        "sort": st.one_of(st.sampled_from(["updatedAt", "priority", "subject"]), scalars),
        "searchOrder": st.one_of(st.sampled_from(["ASC", "desc"]), scalars),
        "sortOrder": st.one_of(
            st.lists(
                st.one_of(
                    st.fixed_dictionaries({"column": st.sampled_from(["status", "createdAt"]), "order": scalars}),
                    scalars,
                ),
                max_size=3,
            ),
            scalars,
        ),
        "lastEventId": st.one_of(
            st.sampled_from(["7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "00000000000000000000000000"]), scalars
        ),
    },
)


def assert_never_a_5xx(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), response.text[:300]
        body = response.json()
        assert body["success"] is False and {"code", "message", "details"} == set(body["error"]), body


def post_json(server, path: str, headers: dict[str, str], body: Any) -> httpx.Response:
    # json.dumps as clients do: NaN/Infinity written bare, lone surrogates as \\udXXX escapes.
    return httpx.post(
        f"{server.url}{path}",
        headers={**headers, "content-type": "application/json"},
        content=json.dumps(body),
        timeout=TIMEOUT,
    )


def test_ticket_list_answers_every_filter_without_a_5xx(server, acme: World):
    ticket = httpx.post(
        f"{server.url}{API}/ticket", headers=acme.headers("alice"), json={"subject": "Fuzz target"}, timeout=TIMEOUT
    )
    assert ticket.status_code == 201
    headers = {"alice": acme.headers("alice"), "bob": acme.headers("bob")}

    @fuzz_settings(100)
    @given(
        body=st.one_of(datetime_bodies, st.fixed_dictionaries({"filter": valid_trees}), list_bodies),
        user=st.sampled_from(["alice", "bob"]),
    )
    def check(body: dict[str, Any], user: str) -> None:
        response = post_json(server, f"{API}/ticket/list", headers[user], body)
        assert_never_a_5xx(response)
        if response.status_code == 200:
            assert isinstance(response.json()["data"]["tickets"], list)

    check()


# --- notification filters -------------------------------------------------------------------

notification_conditions = st.fixed_dictionaries(
    {
        "field": st.one_of(st.sampled_from(sorted(FIELDS)), nasty_text),
        "op": st.one_of(st.sampled_from(OPS), nasty_text, st.none()),
        "value": st.one_of(scalars, st.lists(scalars, max_size=4), json_values),
    },
    optional={"extra": scalars},
)
notification_filters = st.one_of(
    st.lists(
        st.one_of(
            notification_conditions,
            st.fixed_dictionaries(
                {
                    "op": st.sampled_from(["AND", "OR", "nand"]),
                    "operand": st.lists(notification_conditions, max_size=3),
                }
            ),
        ),
        max_size=4,
    ),
    notification_conditions,
    json_values,
)


def test_notification_list_answers_every_filter_without_a_5xx(server, acme: World):
    headers = acme.headers("bob")

    @fuzz_settings(60)
    @given(
        filter_=notification_filters,
        extra=st.dictionaries(st.sampled_from(["top", "offset", "sort", "searchOrder", "search"]), scalars),
    )
    def check(filter_: Any, extra: dict[str, Any]) -> None:
        assert_never_a_5xx(post_json(server, f"{API}/ticket/notifications", headers, {"filter": filter_, **extra}))
        query = httpx.get(
            f"{server.url}{API}/ticket/notification/list",
            params={"filter": json.dumps(filter_), **{k: json.dumps(v) for k, v in extra.items()}},
            headers=headers,
            timeout=TIMEOUT,
        )
        assert_never_a_5xx(query)

    check()


# --- the list stream --------------------------------------------------------------------------


def test_list_stream_refuses_before_starting_or_delivers_its_snapshot(server, acme: World):
    headers = {**acme.headers("alice"), "accept": "text/event-stream", "content-type": "application/json"}
    statuses: list[int] = []

    @fuzz_settings(30)
    @given(
        body=st.one_of(
            datetime_bodies, st.fixed_dictionaries({"top": st.integers(1, 5), "filter": valid_trees}), list_bodies
        )
    )
    def check(body: dict[str, Any]) -> None:
        with (
            httpx.Client(timeout=TIMEOUT) as client,
            client.stream("POST", list_updates_url(server.url), headers=headers, content=json.dumps(body)) as response,
        ):
            statuses.append(response.status_code)
            if response.status_code != 200:
                response.read()
                assert_never_a_5xx(response)
                return
            events = []
            for line in response.iter_lines():
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
                    if events[-1] in ("snapshot", "error"):
                        break
            assert events[:2] == ["connected", "snapshot"], events

    check()
    print(f"list streams: {statuses.count(200)} of {len(statuses)} started")
    assert 200 in statuses, "no generated body opened a stream: the property was not exercised"


# --- ticket bodies ----------------------------------------------------------------------------

TICKET_FIELDS = ["subject", "description", "status", "priority", "category", "team", "assignee", "requester"]
ticket_bodies = st.one_of(
    st.dictionaries(
        st.one_of(st.sampled_from([*TICKET_FIELDS, "customer", "parent"]), nasty_text),
        st.one_of(scalars, json_values, st.sampled_from(["alice", "bob", "in_progress", "high"])),
        max_size=5,
    ),
    json_values,
)
raw_bodies = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"{", b'{"subject": NaN}', b'{"subject": "\\ud800"}', b"[" * 3000, b'{"subject": 1e999}']),
)


def test_ticket_create_patch_and_comment_take_any_body_without_a_5xx(server, acme: World):
    alice = acme.headers("alice")
    target = httpx.post(f"{server.url}{API}/ticket", headers=alice, json={"subject": "Patch me"}, timeout=TIMEOUT)
    ticket_id = target.json()["data"]["id"]
    users = {"alice": alice, "bob": acme.headers("bob")}

    @fuzz_settings(90)
    @given(
        body=st.one_of(ticket_bodies.map(lambda b: json.dumps(b).encode()), raw_bodies),
        user=st.sampled_from(["alice", "bob"]),
        route=st.sampled_from(["create", "patch", "comment"]),
    )
    def check(body: bytes, user: str, route: str) -> None:
        method, path = {
            "create": ("POST", f"{API}/ticket"),
            "patch": ("PATCH", f"{API}/ticket/{ticket_id}"),
            "comment": ("POST", f"{API}/ticket/{ticket_id}/comments"),
        }[route]
        response = httpx.request(
            method,
            f"{server.url}{path}",
            headers={**users[user], "content-type": "application/json"},
            content=body,
            timeout=TIMEOUT,
        )
        assert_never_a_5xx(response)

    check()


def test_printable_garbage_is_not_json(server, acme: World):
    """A sanity anchor for the properties above: one plain refusal, exactly as documented."""
    response = post_json(server, f"{API}/ticket/list", acme.headers("alice"), None)
    assert response.status_code == 400
    garbage = httpx.post(
        f"{server.url}{API}/ticket/list",
        headers={**acme.headers("alice"), "content-type": "application/json"},
        content=string.ascii_letters,
        timeout=TIMEOUT,
    )
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "INVALID_JSON"
