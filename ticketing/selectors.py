"""Read queries on tickets: who may see what, and the filtered, sorted list."""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import Case, IntegerField, Q, QuerySet, Value, When

from core import statements
from core.http import ApiError
from core.querylang import MATCH_ALL, Node
from tenants.callers import Caller
from tenants.models import TenantUser
from tenants.policy import authorize_list_scope
from ticketing.filters import parse_ticket_filter, parse_ticket_search
from ticketing.models import CLOSED_STATUSES, PRIORITY_RANK, STATUS_RANK, Approval, Comment, Ticket, TicketMarks
from ticketing.serializers import SORT_COLUMNS

SCOPES = ("user", "agent", "template")


@dataclass(frozen=True)
class Scope(Node):
    """Which tickets a caller sees in a list: `user` = requested by the caller, `agent` =
    assigned to the caller or one of the caller's teams, `template` = all of the tenant."""

    kind: str
    user_id: uuid.UUID
    teams: tuple[str, ...] = ()

    def to_q(self) -> Q:
        if self.kind == "user":
            return Q(requester_id=self.user_id)
        if self.kind == "agent":
            return Q(assignee_id=self.user_id) | Q(team__in=self.teams) if self.teams else Q(assignee_id=self.user_id)
        return Q()

    def matches(self, state: Mapping[str, Any]) -> bool:
        if self.kind == "user":
            return (state.get("requester") or {}).get("id") == str(self.user_id)
        if self.kind == "agent":
            return (state.get("assignee") or {}).get("id") == str(self.user_id) or state.get("team") in self.teams
        return True

    @property
    def match_key(self) -> tuple[Any, ...]:
        # A template list shows the same tickets to every agent of the tenant.
        return ("template",) if self.kind == "template" else (self.kind, self.user_id, self.teams)


def scope_for(caller: Caller, kind: str | None) -> Scope:
    """The list scope a caller asked for; `template` needs an agent or admin role."""
    if kind is None:
        kind = "template" if caller.is_agent else "user"
    if kind not in SCOPES:
        raise ApiError(400, "INVALID_QUERY", "type must be one of user, agent, template.", {"allowed": list(SCOPES)})
    authorize_list_scope(caller, kind)
    return Scope(kind, caller.user.id, caller.teams)


def visible_tickets(caller: Caller) -> QuerySet[Ticket]:
    """Tickets the caller may open: all of the tenant for agents, their own requests otherwise."""
    tickets = Ticket.objects.filter(tenant=caller.tenant).select_related("assignee", "requester")
    tickets = tickets.prefetch_related("products")
    if not caller.is_agent:
        tickets = tickets.filter(requester=caller.user)
    return tickets


def get_visible_ticket(caller: Caller, ticket_id: str, *, to_change: bool = False) -> Ticket:
    """A ticket the caller may open (404 otherwise). `to_change`: only its row, for a view
    that hands it to a service, which locks it and loads what the change shows."""
    try:
        key = uuid.UUID(str(ticket_id))
    except ValueError:
        raise ApiError(404, "TICKET_NOT_FOUND", "No ticket with this id.") from None
    ticket = _visible_ticket_row(caller, key) if to_change else visible_tickets(caller).filter(id=key).first()
    if ticket is None:
        raise ApiError(404, "TICKET_NOT_FOUND", "No ticket with this id.")
    return ticket


def _visible_ticket_row(caller: Caller, key: uuid.UUID) -> Ticket | None:
    """The ticket's row alone, on the terms of `visible_tickets`, in a hand-written
    statement (core.statements): every change of a ticket starts with it."""
    where = "id = %s AND tenant_id = %s"
    params = [statements.value_for(Ticket, "id", key), statements.value_for(Ticket, "tenant", caller.tenant.pk)]
    if not caller.is_agent:
        where += " AND requester_id = %s"
        params.append(statements.value_for(Ticket, "requester", caller.user.pk))
    rows = statements.select(Ticket, where, params)
    return rows[0] if rows else None


@dataclass(frozen=True)
class TicketQuery:
    """A parsed list request: scope, filter, search, order and page."""

    scope: Scope
    filter: Node = MATCH_ALL
    search: Node | None = None
    order: tuple[tuple[str, str], ...] = (("updatedAt", "DESC"),)
    top: int = 30
    offset: int = 0
    nodes: tuple[Node, ...] = field(init=False)
    # Equal for queries that select the same tickets whoever asks (order and page aside),
    # so a live event is matched once per distinct list, not once per stream. A string,
    # because it is a dict key on every event and a string caches its hash.
    match_key: str = field(init=False, compare=False)
    # The request's own `filter` and `search` (JSON), from which the two nodes were parsed:
    # what a list stream held by the edge is rebuilt from (ticketing.streams.query_spec).
    raw_filter: Any = field(default=None, compare=False, repr=False)
    raw_search: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(n for n in (self.scope, self.filter, self.search) if n is not None))
        object.__setattr__(self, "match_key", repr((self.scope.match_key, self.filter, self.search)))

    def matches(self, state: Mapping[str, Any] | None) -> bool:
        return state is not None and all(node.matches(state) for node in self.nodes)

    def to_q(self) -> Q:
        q = Q()
        for node in self.nodes:
            q &= node.to_q()
        return q


_PRIORITY_RANK = Case(*[When(priority=k, then=Value(v)) for k, v in PRIORITY_RANK.items()], output_field=IntegerField())
_STATUS_RANK = Case(*[When(status=k, then=Value(v)) for k, v in STATUS_RANK.items()], output_field=IntegerField())


def matching_tickets(caller: Caller, query: TicketQuery) -> QuerySet[Ticket]:
    tickets = Ticket.objects.filter(tenant=caller.tenant).filter(query.to_q())
    return tickets


@dataclass(frozen=True)
class TicketPage:
    tickets: list[Ticket]
    total: int
    total_exact: bool

    def as_data(self) -> dict[str, Any]:
        from ticketing.serializers import ticket_state

        return {"tickets": [ticket_state(t) for t in self.tickets], "total": self.total, "totalExact": self.total_exact}


def count_up_to(tickets: QuerySet[Ticket], cap: int) -> tuple[int, bool]:
    """The number of tickets, counted exactly up to `cap`.

    An exact count costs time in proportion to the matches (a tenant with a million
    tickets pays hundreds of milliseconds for "all open tickets"); past the cap the
    client gets `cap` and `totalExact: false`, shown as "10,000+"."""
    counted = tickets.order_by()[: cap + 1].count()
    return min(counted, cap), counted <= cap


def list_tickets(caller: Caller, query: TicketQuery) -> TicketPage:
    """One page of the caller's matching tickets, in the requested order, and the total."""
    tickets = matching_tickets(caller, query)
    total, exact = count_up_to(tickets, settings.TICKET_LIST_COUNT_LIMIT)
    ordering = []
    for column, direction in query.order:
        name = SORT_COLUMNS[column]
        if name == "priority_rank":
            tickets = tickets.annotate(priority_rank=_PRIORITY_RANK)
        elif name == "status_rank":
            tickets = tickets.annotate(status_rank=_STATUS_RANK)
        ordering.append(f"-{name}" if direction == "DESC" else name)
    # The id makes the order total, so pages never overlap or skip under equal keys.
    ordering.append("id")
    page = list(
        tickets.select_related("assignee", "requester")
        .prefetch_related("products")
        .order_by(*ordering)[query.offset : query.offset + query.top]
    )
    return TicketPage(page, total, exact)


def ticket_comments(ticket: Ticket) -> QuerySet[Comment]:
    return ticket.comments.select_related("author")


def ticket_query_from(caller: Caller, scope_kind: str | None, body: Mapping[str, Any]) -> TicketQuery:
    """A TicketQuery from a validated list body (TicketListBodySerializer)."""
    scope = scope_for(caller, scope_kind)
    order: list[tuple[str, str]] = []
    if body.get("sort"):
        order.append((body["sort"], (body.get("searchOrder") or "DESC").upper()))
    for item in body.get("sortOrder") or []:
        if item["column"] not in {c for c, _ in order}:
            order.append((item["column"], item["order"].upper()))
    return ticket_query(
        scope,
        body.get("filter"),
        body.get("search"),
        order=tuple(order) or (("updatedAt", "DESC"),),
        top=body["top"],
        offset=body["offset"],
    )


def ticket_query(scope: Scope, raw_filter: Any, raw_search: Any, **page: Any) -> TicketQuery:
    """A TicketQuery from a scope and the JSON `filter` and `search` (422 if invalid)."""
    return TicketQuery(
        scope=scope,
        filter=parse_ticket_filter(raw_filter),
        search=parse_ticket_search(raw_search),
        raw_filter=raw_filter,
        raw_search=raw_search,
        **page,
    )


def merged_into_id(ticket: Ticket) -> uuid.UUID | None:
    """The id of the ticket this one is merged into, None when it is not merged. A merged
    ticket is closed and stays closed (its reopening is refused), so an open one needs no
    read: the answer to most changes of a ticket costs no query for it."""
    if ticket.status not in CLOSED_STATUSES:
        return None
    return TicketMarks.objects.filter(ticket=ticket).values_list("merged_into_id", flat=True).first()


def can_see_ticket(user: TenantUser, ticket: Ticket) -> bool:
    """The rule of visible_tickets for one user: agents and admins see every ticket of
    their tenant, end users the tickets they requested."""
    return user.tenant_id == ticket.tenant_id and (
        bool({"agent", "admin"} & set(user.roles or [])) or user.id == ticket.requester_id
    )


def get_visible_ticket_or_approver(caller: Caller, ticket_id: str) -> Ticket:
    """A ticket the caller may open, or one they were asked to approve."""
    try:
        return get_visible_ticket(caller, ticket_id)
    except ApiError:
        ticket = Ticket.objects.filter(
            tenant=caller.tenant, approvals__approver=caller.user, id=_uuid_or_none(ticket_id)
        ).first()
        if ticket is None:
            raise
        return ticket


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def get_ticket_approval(ticket: Ticket, approval_id: str) -> Approval:
    key = _uuid_or_none(approval_id)
    approval = Approval.objects.filter(ticket=ticket, id=key).select_related("ticket").first() if key else None
    if approval is None:
        raise ApiError(404, "APPROVAL_NOT_FOUND", "No approval of this ticket has this id.")
    return approval
