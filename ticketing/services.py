"""Write operations on tickets. Each is a unit of work (events.recording): it locks what it
changes, changes it, and records what happened with `_record` (the ticket event
vocabulary is ticketing.events). Other apps react to those events through their
handlers (notifications, SLA), inside the same transaction; this module calls none of
them.

Lock order (the whole of it is in events.recording): every change of a ticket starts by
locking the ticket's row (several tickets, a new parent among them: in one statement,
in primary-key order, lock_tickets_closed when the set depends on links to them); then
the tenant's parent-link lock, only when a parent changes; then rows that belong to the
ticket. The
tenant's log lock is taken last, by the unit, just before COMMIT."""

import zlib
from collections.abc import Callable, Iterable
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from core import statements
from core.http import ApiError
from events.recording import record_event, unit_of_work
from events.serializers import iso
from tenants.callers import Caller
from tenants.models import TenantUser
from tenants.permissions import require_agent
from ticketing.events import TicketChange, TicketEvent, TicketState, update_type
from ticketing.models import (
    CLOSED_STATUSES,
    PRIORITY_RANK,
    TICKET_NUMBER_PREFIX,
    Approval,
    Comment,
    Priority,
    Status,
    Ticket,
    TicketMarks,
    TicketProduct,
    TicketSequence,
    Watcher,
)
from ticketing.selectors import can_see_ticket, merged_into_id
from ticketing.serializers import (
    MAX_PRODUCT_QUANTITY,
    ticket_detail,
    ticket_payload,
    ticket_products,
    user_ref,
)

END_USER_EDITABLE = frozenset({"subject", "description"})
# What an end user may set on a ticket they open (they are its requester).
END_USER_CREATABLE = END_USER_EDITABLE | {"category", "priority"}
# Advisory-lock namespace of parent changes (first key of the two-key form), "TPAR".
_PARENT_LOCK_CLASS = 0x54504152 - 2**31


def next_ticket_number(*, tenant_id: Any, year: int) -> str:
    """TKT-<year>-<6 digits>, unique per tenant even under concurrent creation: the
    sequence row stays locked until the creating transaction commits."""
    sequence, _ = TicketSequence.objects.select_for_update().get_or_create(tenant_id=tenant_id, year=year)
    sequence.last_value += 1
    sequence.save(update_fields=["last_value"])
    return f"{TICKET_NUMBER_PREFIX}{year}-{sequence.last_value:06d}"


def lock_ticket(ticket: Ticket) -> Ticket:
    """The ticket's row, locked until commit, then read with what its events and the
    response show (users, parent, products); 404 if it was deleted meanwhile.

    Lock first, read second. A locking query that joins the users would, when it has to
    wait for a concurrent change of the ticket, be re-checked by PostgreSQL against the
    new row but with the user rows it had joined before: the new assignee would come back
    as nobody. A plain read after the lock sees the latest committed version whole."""
    locked = lock_tickets([ticket.pk])
    if not locked:
        raise ApiError(404, "TICKET_NOT_FOUND", "No ticket with this id.")
    return locked[0]


def lock_tickets(ids: Iterable[Any]) -> list[Ticket]:
    """Several tickets, locked in one statement in primary-key order (the order every
    writer locks tickets in), then completed as `lock_ticket` says; those deleted
    meanwhile are left out.

    Hand-written statements (core.statements): every change of a ticket runs them. The
    locking one reads the ticket's own row only, which PostgreSQL re-reads whole when it
    had to wait; the users, the parent and the products are read after it."""
    ids = set(ids)  # the statement orders them
    if not ids:
        return []
    tickets = statements.select(Ticket, *statements.where_in(Ticket, "id", ids), order_by="id", lock=True)
    if not tickets:
        return []
    _attach_people_and_parents(tickets)
    _attach_products(tickets)
    return tickets


# How many times lock_tickets_closed reads and locks again before it takes the rest out of order.
_CLOSED_LOCK_ATTEMPTS = 10


def lock_tickets_closed(read: Callable[[], set[Any]]) -> dict[Any, Ticket]:
    """The tickets `read` names, locked in one statement in primary-key order, by id.

    `read` names tickets by links that a writer changes only while holding the ticket
    they point at, which is among those named (the tickets merged into a merge's ticket
    or a deleted one, the children of a deleted one): once they are locked, the set can
    no longer grow. A change that committed while this one waited for the locks may have
    added one; the locks are then let go (a savepoint rolled back) and the new set is
    locked in one statement again. Locking the newcomer after the others, out of order,
    deadlocked with writers locking the same tickets in order (a merge of the newcomer
    waiting for a ticket held here). After `_CLOSED_LOCK_ATTEMPTS` the newcomers are
    locked after the others; a deadlock there is retried by the request."""
    wanted = read()
    for _ in range(_CLOSED_LOCK_ATTEMPTS - 1):
        savepoint = transaction.savepoint()
        locked = {t.pk: t for t in lock_tickets(wanted)}
        named = read()
        if named <= wanted:
            transaction.savepoint_commit(savepoint)
            return locked
        transaction.savepoint_rollback(savepoint)  # lets go of the locks taken since
        wanted = named
    locked = {t.pk: t for t in lock_tickets(wanted)}
    locked.update((t.pk, t) for t in lock_tickets(read() - wanted))
    return locked


def _attach_people_and_parents(tickets: list[Ticket]) -> None:
    """Set each ticket's assignee, requester and parent as `select_related` would."""
    user_ids = {pk for t in tickets for pk in (t.assignee_id, t.requester_id) if pk is not None}
    users = {}
    if user_ids:
        users = {
            user.pk: user for user in statements.select(TenantUser, *statements.where_in(TenantUser, "id", user_ids))
        }
    parent_ids = {t.parent_id for t in tickets if t.parent_id is not None}
    parents = Ticket.objects.in_bulk(parent_ids) if parent_ids else {}
    for ticket in tickets:
        for name, related in (("assignee", users), ("requester", users), ("parent", parents)):
            field = Ticket._meta.get_field(name)
            field.set_cached_value(ticket, related.get(getattr(ticket, field.attname)))


def _attach_products(tickets: list[Ticket]) -> None:
    """Each ticket's products, sku order, as `prefetch_related("products")` leaves them."""
    by_ticket: dict[Any, list[TicketProduct]] = {t.pk: [] for t in tickets}
    where, params = statements.where_in(TicketProduct, "ticket", list(by_ticket))
    for product in statements.select(TicketProduct, where, params, order_by="sku"):
        by_ticket[product.ticket_id].append(product)
    ticket_field = TicketProduct._meta.get_field("ticket")
    for ticket in tickets:
        for product in by_ticket[ticket.pk]:
            ticket_field.set_cached_value(product, ticket)
        # What Django's prefetch leaves on an instance: the related manager's queryset
        # with its result cache filled, so `ticket.products.all()` reads no more (any
        # other prefetched relation stays as it was).
        prefetched = ticket.__dict__.setdefault("_prefetched_objects_cache", {})
        prefetched.pop("products", None)
        cached = ticket.products.all()
        cached._result_cache = by_ticket[ticket.pk]
        cached._prefetch_done = True
        prefetched["products"] = cached


def check_version(ticket: Ticket, if_match: frozenset[str] | None) -> None:
    """Refuse (`412 PRECONDITION_FAILED`, with the ticket as it is) a change made against
    another version than the current one. `if_match`: the entity tags of the request's
    `If-Match` (core.preconditions), None when it sent none (the change is then
    unconditional). Called on the locked row, so no change can slip in between the
    check and the write."""
    if if_match is None or "*" in if_match or f'"{ticket.version}"' in if_match:
        return
    raise ApiError(
        412,
        "PRECONDITION_FAILED",
        "The ticket has changed since this version was read; nothing was changed. "
        "Apply the change to the current version (in details) and send it again.",
        {"currentVersion": ticket.version, "ticket": ticket_detail(ticket, merged_into_id(ticket))},
        headers={"ETag": f'"{ticket.version}"'},
    )


def _reload_products(ticket: Ticket) -> None:
    """After its products changed: what lock_ticket loaded of them is stale."""
    _attach_products([ticket])


def _record(
    type: TicketEvent,
    *,
    ticket: Ticket,
    actor: TenantUser | None,
    support: bool,
    changes: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    ticket_extra: dict[str, Any] | None = None,
    **context: Any,
) -> None:
    """Record one ticket event: the ticket as it is now (`ticket_payload`, its `ticket`
    part updated with `ticket_extra`) and `extra` beside it."""
    payload = ticket_payload(ticket)
    payload["ticket"].update(ticket_extra or {})
    payload.update(extra or {})
    record_event(
        tenant=ticket.tenant_id,
        type=type,
        payload=payload,
        changes=changes,
        ticket_id=ticket.id,
        actor=actor,
        support=support,
        message=TicketChange(ticket=ticket, actor=actor, **context),
    )


def _save_fields(
    ticket: Ticket,
    values: dict[str, Any],
    *,
    actor: TenantUser | None,
    support: bool,
    part_of: TicketEvent | None = None,
    beside: dict[str, dict[str, Any]] | None = None,
) -> TicketState:
    """Set fields of a locked ticket, save it, and record the change. When no tracked
    field changes (and nothing beside it), nothing is saved or recorded, unless the save
    is `part_of` another event (an escalation), which still writes a new version.
    `beside`: changes the caller made to rows kept beside the ticket (its marks), already
    saved, as `changes` shows them (`{apiName: {from, to}}`); they count as a change of
    the ticket. Returns the state before."""
    before, updated_before = TicketState.of(ticket), ticket.updated_at
    for name, value in values.items():
        setattr(ticket, name, value)
    after = TicketState.of(ticket)
    changes: dict[str, Any] = {**before.changes_to(after), **(beside or {})}
    if not changes and part_of is None:
        # Every value is the one the ticket has (a PATCH that sends the form back as it
        # is): nothing is written, so neither `version` nor `updatedAt` moves. A new
        # version without an event would make every copy held from the log, a stream or
        # an earlier answer look stale (412 on its next If-Match) with nothing to show.
        return before
    ticket.version += 1  # the row is locked (lock_ticket): no lost increment
    # Only what changes: every other column was read under the lock and is unchanged.
    ticket.save(update_fields=[*values, "version", "updated_at"])
    if changes:
        changes["updatedAt"] = {"from": iso(updated_before), "to": iso(ticket.updated_at)}
        _record(
            update_type(before, after),
            ticket=ticket,
            actor=actor,
            support=support,
            changes=changes,
            before=before,
            after=after,
            part_of=part_of,
        )
    return before


@unit_of_work()
def create_ticket(*, caller: Caller, data: dict[str, Any]) -> Ticket:
    fields = dict(data)
    if not caller.is_agent:
        # End users open tickets for themselves, and only set what they can describe;
        # anything else is refused as PATCH refuses it, never silently dropped.
        forbidden = set(fields) - END_USER_CREATABLE
        if forbidden:
            raise ApiError(
                403,
                "FORBIDDEN",
                "End users may set subject, description, category and priority of a new ticket.",
                {"fields": sorted(forbidden)},
            )
    fields.setdefault("requester", caller.user)
    if fields.get("parent") is not None:
        _, fields = _lock_with_parent(None, fields)  # before the number sequence's row
    ticket = Ticket(
        tenant=caller.tenant,
        number=next_ticket_number(tenant_id=caller.tenant.id, year=timezone.now().year),
        **fields,
    )
    ticket.save()
    _record(
        TicketEvent.CREATED,
        ticket=ticket,
        actor=caller.user,
        support=caller.support,
        after=TicketState.of(ticket),
    )
    return ticket


@unit_of_work()
def update_ticket(
    *, caller: Caller, ticket: Ticket, data: dict[str, Any], if_match: frozenset[str] | None = None
) -> Ticket:
    if not caller.is_agent:
        forbidden = set(data) - END_USER_EDITABLE - {"status"}
        if forbidden or data.get("status", Status.CANCELLED) != Status.CANCELLED:
            raise ApiError(
                403,
                "FORBIDDEN",
                "End users may change subject and description, or cancel their ticket.",
                {"fields": sorted(forbidden | ({"status"} if "status" in data else set()))},
            )
    if data.get("parent") is not None:
        ticket, data = _lock_with_parent(ticket, data)
    else:
        ticket = lock_ticket(ticket)
    check_version(ticket, if_match)
    if ticket.status in CLOSED_STATUSES and data.get("status", Status.CLOSED) not in CLOSED_STATUSES:
        # A status that reopens the ticket: refused for a merged one (always closed), as
        # /reopen is. An open ticket cannot be merged, and needs no look at its marks.
        _refuse_if_merged(ticket)
    if data.get("parent") is not None:
        check_parent(ticket=ticket, parent=data["parent"])
    _save_fields(ticket, data, actor=caller.user, support=caller.support)
    if "requester" in data:
        _let_go_watchers_who_cannot_see(ticket, actor=caller.user, support=caller.support)
    return ticket


def _lock_with_parent(ticket: Ticket | None, data: dict[str, Any]) -> tuple[Ticket | None, dict[str, Any]]:
    """Lock the ticket (None: one being created) and the parent `data` names, in one
    statement in primary-key order; `data` then names the locked parent. 404 if the ticket
    was deleted meanwhile, 400 if the parent was.

    The row that points at a parent is checked by PostgreSQL's foreign key at COMMIT,
    which locks the parent's row (FOR KEY SHARE) after the tenant's log lock: a writer
    of the parent holding its row and waiting for the log lock deadlocked with it (and
    two tickets made each other's parent at once always did). Held from the start, the
    parent's row costs the COMMIT no wait, and a deletion of the parent cannot miss the
    new child."""
    parent = data["parent"]
    ids = [parent.pk] if ticket is None else [ticket.pk, parent.pk]
    locked = {t.pk: t for t in lock_tickets(ids)}
    if ticket is not None:
        if ticket.pk not in locked:
            raise ApiError(404, "TICKET_NOT_FOUND", "No ticket with this id.")
        ticket = locked[ticket.pk]
    if parent.pk not in locked:
        raise _no_ticket_named("parent")
    return ticket, {**data, "parent": locked[parent.pk]}


def _no_ticket_named(field: str) -> ApiError:
    """The body's `field` names a ticket deleted while the change waited for its lock:
    the answer the body would have got a moment later (ParentTicketField's)."""
    return ApiError(
        400, "INVALID_BODY", "The request body is not valid.", {field: ["No ticket of this tenant has this id."]}
    )


def _let_go_watchers_who_cannot_see(ticket: Ticket, *, actor: TenantUser | None, support: bool) -> None:
    """After a requester change: an end user who is no longer the requester may not see
    the ticket, so they stop watching it, each with its own `watcher_removed` event (as
    an agent could not add them as a watcher now). Left listed, they would show on the
    ticket as following what they can no longer open."""
    links = Watcher.objects.filter(ticket=ticket).exclude(user_id=ticket.requester_id).select_related("user")
    for link in links.order_by("user__username"):
        if can_see_ticket(link.user, ticket):
            continue
        link.delete()
        _record(
            TicketEvent.WATCHER_REMOVED,
            ticket=ticket,
            actor=actor,
            support=support,
            extra={"watcher": user_ref(link.user)},
            watcher=link.user,
        )


def check_parent(*, ticket: Ticket, parent: Ticket) -> None:
    """Refuse (400) a parent that is the ticket itself or one of its descendants: the
    parent links must stay a forest. Parent changes of a tenant are serialized (an
    advisory lock on PostgreSQL, held to the end of the transaction), so two concurrent
    changes (A under B, B under A) cannot each pass the check and make a cycle together."""
    if parent.pk == ticket.pk:
        raise ApiError(400, "INVALID_BODY", "A ticket cannot be its own parent.", {"parent": ["Self reference."]})
    if connection.vendor == "postgresql":
        key = zlib.crc32(ticket.tenant_id.bytes) - 2**31
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_PARENT_LOCK_CLASS, key])
    # Walk up from the new parent, reading committed links (after the lock, so a change
    # that committed while this one waited is seen).
    links = Ticket.objects.filter(tenant_id=ticket.tenant_id)
    seen: set[Any] = set()
    ancestor: Any = parent.pk
    while ancestor is not None and ancestor not in seen:
        if ancestor == ticket.pk:
            raise ApiError(
                400,
                "INVALID_BODY",
                "This parent would make a cycle: it is the ticket's own descendant.",
                {"parent": ["Cycle: the parent is a descendant of this ticket."]},
            )
        seen.add(ancestor)
        ancestor = links.filter(pk=ancestor).values_list("parent_id", flat=True).first()


@unit_of_work()
def delete_ticket(*, caller: Caller, ticket: Ticket, if_match: frozenset[str] | None = None) -> None:
    if not caller.is_admin:
        raise ApiError(403, "FORBIDDEN", "Deleting a ticket needs the `admin` role.")
    delete_tickets(
        tickets=Ticket.objects.filter(pk=ticket.pk),
        actor=caller.user,
        support=caller.support,
        precondition=lambda locked: check_version(locked, if_match),
    )


@unit_of_work()
def delete_tickets(
    *,
    tickets: QuerySet[Ticket],
    actor: TenantUser | None,
    support: bool,
    precondition: Callable[[Ticket], None] | None = None,
) -> int:
    """Delete tickets (the API's DELETE, the admin), each with its `deleted` event. The
    tickets that point at them are let go first, each with its own change: children lose
    their parent, tickets merged into them their `mergedInto` (the database's SET NULL
    would change them silently, with no event and no new version). Tickets and those
    pointing at them are locked together, in primary-key order; `precondition` is then
    called with each ticket to delete (locked) and may refuse."""
    ids = list(tickets.values_list("pk", flat=True))

    def pointing() -> set[Any]:
        children = Ticket.objects.filter(parent_id__in=ids).values_list("pk", flat=True)
        return {*ids, *children, *_merged_into(ids).values_list("ticket_id", flat=True)}

    locked = lock_tickets_closed(pointing)
    if precondition is not None:
        for pk in sorted(ids):
            if pk in locked:
                precondition(locked[pk])
    # The marks belong to their tickets, locked above: they are locked after them.
    marks_of = {m.ticket_id: m for m in _merged_into(ids).select_for_update().order_by("ticket_id")}
    for pk in sorted(locked):
        if pk in ids:
            continue
        ticket = locked[pk]
        values: dict[str, Any] = {"parent": None} if ticket.parent_id in ids else {}
        beside: dict[str, dict[str, Any]] = {}
        marks = marks_of.get(pk)
        if marks is not None:
            beside["mergedInto"] = {"from": str(marks.merged_into_id), "to": None}
            marks.merged_into, marks.merged_at = None, None
            marks.save(update_fields=["merged_into", "merged_at"])
        if values or beside:
            _save_fields(ticket, values, actor=actor, support=support, beside=beside)
    deleted = 0
    for ticket in (locked[pk] for pk in sorted(ids) if pk in locked):
        _record(
            TicketEvent.DELETED,
            ticket=ticket,
            actor=actor,
            support=support,
            ticket_extra={"deletedAt": iso(timezone.now())},
            before=TicketState.of(ticket),
        )
        ticket.delete()
        deleted += 1
    return deleted


def _merged_into(ids: list[Any]) -> QuerySet[TicketMarks]:
    """The marks of the tickets merged into one of `ids` (and not among them)."""
    return TicketMarks.objects.filter(merged_into_id__in=ids).exclude(ticket_id__in=ids)


@unit_of_work()
def add_comment(*, caller: Caller, ticket: Ticket, body: str) -> Comment:
    ticket = lock_ticket(ticket)  # the event shows the ticket as it is when the comment commits
    comment = Comment.objects.create(ticket=ticket, author=caller.user, body=body)
    _record(
        TicketEvent.COMMENT_ADDED,
        ticket=ticket,
        actor=caller.user,
        support=caller.support,
        extra={"comment": {"id": str(comment.id), "author": user_ref(caller.user), "body": body}},
        comment=comment,
        # An agent's comment to someone else's ticket is a response (SLA).
        is_response=caller.is_agent and caller.user.id != ticket.requester_id,
    )
    return comment


@unit_of_work()
def bulk_set_status(*, tickets: QuerySet[Ticket], status: str, actor: TenantUser | None, support: bool) -> int:
    """Set one status on many tickets (support staff in the admin), one event per changed
    ticket: a queryset update() would bypass the event log."""
    changed = 0
    for ticket in lock_tickets(tickets.exclude(status=status).values_list("pk", flat=True)):
        if ticket.status != status:
            _save_fields(ticket, {"status": status}, actor=actor, support=support)
            changed += 1
    return changed


# --- watchers, approvals, merge, escalation, reopening, products ------------------------


@unit_of_work()
def add_watcher(*, caller: Caller, ticket: Ticket, user: TenantUser) -> bool:
    """Add a watcher (agents: anyone who may see the ticket; end users: themselves).
    Returns False when they were already watching (nothing is recorded again)."""
    if not caller.is_agent and user.id != caller.user.id:
        raise ApiError(403, "FORBIDDEN", "End users may only add themselves as watchers.")
    ticket = lock_ticket(ticket)
    if not can_see_ticket(user, ticket):
        raise ApiError(422, "WATCHER_CANNOT_SEE_TICKET", "This user may not see the ticket.", {"user": str(user.id)})
    _, created = Watcher.objects.get_or_create(ticket=ticket, user=user)
    if created:
        _record(
            TicketEvent.WATCHER_ADDED,
            ticket=ticket,
            actor=caller.user,
            support=caller.support,
            extra={"watcher": user_ref(user)},
            watcher=user,
        )
    return created


@unit_of_work()
def remove_watcher(*, caller: Caller, ticket: Ticket, user: TenantUser) -> bool:
    if not caller.is_agent and user.id != caller.user.id:
        raise ApiError(403, "FORBIDDEN", "End users may only remove themselves as watchers.")
    ticket = lock_ticket(ticket)
    deleted, _ = Watcher.objects.filter(ticket=ticket, user=user).delete()
    if deleted:
        _record(
            TicketEvent.WATCHER_REMOVED,
            ticket=ticket,
            actor=caller.user,
            support=caller.support,
            extra={"watcher": user_ref(user)},
            watcher=user,
        )
    return bool(deleted)


def _approval_dict(approval: Approval) -> dict[str, Any]:
    return {
        "id": str(approval.id),
        "approvalType": approval.approval_type,
        "approver": user_ref(approval.approver),
        "requestedBy": user_ref(approval.requested_by),
        "state": approval.state,
        "note": approval.note,
        "decisionComment": approval.decision_comment,
        "decidedAt": iso(approval.decided_at) if approval.decided_at else None,
    }


@unit_of_work()
def request_approval(
    *, caller: Caller, ticket: Ticket, approver: TenantUser, approval_type: str = "manager", note: str = ""
) -> Approval:
    require_agent(caller)
    ticket = lock_ticket(ticket)
    approval = Approval.objects.create(
        ticket=ticket, approver=approver, requested_by=caller.user, approval_type=approval_type, note=note
    )
    _record(
        TicketEvent.APPROVAL_REQUESTED,
        ticket=ticket,
        actor=caller.user,
        support=caller.support,
        extra={"approval": _approval_dict(approval)},
        approval=approval,
    )
    return approval


@unit_of_work()
def decide_approval(*, caller: Caller, approval: Approval, approve: bool, comment: str = "") -> Approval:
    """The approver (or an admin) approves or rejects a pending approval, once."""
    if caller.user.id != approval.approver_id and not caller.is_admin:
        raise ApiError(403, "FORBIDDEN", "Only the approver (or an admin) may decide this approval.")
    ticket = lock_ticket(approval.ticket)
    approval = Approval.objects.select_for_update().get(pk=approval.pk)
    if approval.state != Approval.State.PENDING:
        raise ApiError(409, "APPROVAL_ALREADY_DECIDED", f"This approval is already {approval.state}.")
    approval.state = Approval.State.APPROVED if approve else Approval.State.REJECTED
    approval.decision_comment = comment
    approval.decided_at = timezone.now()
    approval.save()
    approval.ticket = ticket
    _record(
        TicketEvent.APPROVAL_DECIDED,
        ticket=ticket,
        actor=caller.user,
        support=caller.support,
        extra={"approval": _approval_dict(approval)},
        approval=approval,
    )
    return approval


@unit_of_work()
def merge_ticket(*, caller: Caller, ticket: Ticket, into: Ticket, if_match: frozenset[str] | None = None) -> Ticket:
    """Close `ticket` as a duplicate merged into `into`; watchers of both are told.
    `if_match` is compared with the version of `ticket` (the one the merge changes).

    A target is never itself merged (TARGET_MERGED), so `mergedInto` always names a ticket
    whose conversation goes on: the tickets already merged into `ticket` are re-pointed
    at `into`, each with its own change (`changes.mergedInto` from `ticket` to `into`)
    and a new version, instead of being left pointing at a closed, merged ticket."""
    require_agent(caller)
    if ticket.pk == into.pk or ticket.tenant_id != into.tenant_id:
        # The body's field is named, as for every other bad body (details were null).
        raise ApiError(
            400,
            "INVALID_BODY",
            "The request body is not valid.",
            {"into": ["A ticket can only be merged into another ticket of its tenant."]},
        )
    # Both rows and those merged into `ticket`, locked in one statement in primary-key
    # order, so that two merges meeting on the same tickets cannot deadlock (see
    # lock_tickets_closed).
    pair = {ticket.pk, into.pk}
    locked = lock_tickets_closed(lambda: pair | set(_merged_into([ticket.pk]).values_list("ticket_id", flat=True)))
    if ticket.pk not in locked:
        raise ApiError(404, "TICKET_NOT_FOUND", "No ticket with this id.")
    if into.pk not in locked:
        raise _no_ticket_named("into")  # deleted since the body was read: as if it had been before
    ticket, into = locked[ticket.pk], locked[into.pk]
    check_version(ticket, if_match)
    marks, _ = TicketMarks.objects.select_for_update().get_or_create(ticket=ticket)
    if marks.merged_into_id:
        raise ApiError(
            409, "ALREADY_MERGED", "This ticket is already merged.", {"mergedInto": str(marks.merged_into_id)}
        )
    if TicketMarks.objects.filter(ticket=into, merged_into__isnull=False).exists():
        raise ApiError(409, "TARGET_MERGED", "The target ticket is itself merged into another one.")
    if ticket.status != Status.CLOSED:
        _save_fields(
            ticket, {"status": Status.CLOSED}, actor=caller.user, support=caller.support, part_of=TicketEvent.MERGED
        )
    marks.merged_into, marks.merged_at = into, timezone.now()
    marks.save(update_fields=["merged_into", "merged_at"])
    _record(
        TicketEvent.MERGED,
        ticket=ticket,
        actor=caller.user,
        support=caller.support,
        extra={"mergedInto": {"id": str(into.id), "ticketNumber": into.number}},
        merged_into=into,
    )
    # The marks belong to their tickets, locked above: they are locked after them.
    for earlier_marks in _merged_into([ticket.pk]).select_for_update().order_by("ticket_id"):
        earlier_marks.merged_into = into
        earlier_marks.save(update_fields=["merged_into"])
        moved = {"mergedInto": {"from": str(ticket.id), "to": str(into.id)}}
        _save_fields(locked[earlier_marks.ticket_id], {}, actor=caller.user, support=caller.support, beside=moved)
    return ticket


@unit_of_work()
def escalate_ticket(
    *,
    caller: Caller | None,
    ticket: Ticket,
    reason: str = "",
    team: str | None = None,
    if_match: frozenset[str] | None = None,
) -> TicketMarks:
    """Raise the escalation level, the priority to at least `high`, and optionally hand the
    ticket to another team. `caller` None is the system (no actor)."""
    if caller is not None:
        require_agent(caller)
    actor = caller.user if caller is not None else None
    support = caller.support if caller is not None else False
    ticket = lock_ticket(ticket)
    check_version(ticket, if_match)
    marks, _ = TicketMarks.objects.select_for_update().get_or_create(ticket=ticket)
    values: dict[str, Any] = {}
    if PRIORITY_RANK[ticket.priority] < PRIORITY_RANK[Priority.HIGH]:
        values["priority"] = Priority.HIGH
    if team is not None:
        values["team"] = team
    _save_fields(ticket, values, actor=actor, support=support, part_of=TicketEvent.ESCALATED)
    marks.escalation_level += 1
    marks.escalated_at = timezone.now()
    marks.save(update_fields=["escalation_level", "escalated_at"])
    _record(
        TicketEvent.ESCALATED,
        ticket=ticket,
        actor=actor,
        support=support,
        extra={"escalation": {"level": marks.escalation_level, "reason": reason}},
        escalation_level=marks.escalation_level,
        escalation_reason=reason,
    )
    return marks


@unit_of_work()
def reopen_ticket(*, caller: Caller, ticket: Ticket, if_match: frozenset[str] | None = None) -> Ticket:
    """Back to `open` from resolved, closed or cancelled (agents, or the requester)."""
    if not caller.is_agent and caller.user.id != ticket.requester_id:
        raise ApiError(403, "FORBIDDEN", "Only agents or the requester may reopen a ticket.")
    ticket = lock_ticket(ticket)
    check_version(ticket, if_match)
    if ticket.status not in CLOSED_STATUSES:
        raise ApiError(409, "TICKET_NOT_CLOSED", f"The ticket is {ticket.status}, not closed.")
    _refuse_if_merged(ticket)
    _save_fields(ticket, {"status": Status.OPEN}, actor=caller.user, support=caller.support)
    return ticket


def _refuse_if_merged(ticket: Ticket) -> None:
    """A merged ticket stays closed (409): its conversation goes on in its target, and an
    open ticket still marked as merged would be both."""
    marks = TicketMarks.objects.filter(ticket=ticket, merged_into__isnull=False).first()
    if marks is not None:
        raise ApiError(
            409,
            "ALREADY_MERGED",
            "A merged ticket cannot be reopened; reopen its target.",
            {"mergedInto": str(marks.merged_into_id)},
        )


def _record_products_change(
    *, caller: Caller, ticket: Ticket, type: TicketEvent, before: list[dict[str, Any]], product: dict[str, Any]
) -> None:
    ticket.version += 1
    ticket.save(update_fields=["updated_at", "version"])
    _reload_products(ticket)
    payload_products = ticket_products(ticket)
    _record(
        type,
        ticket=ticket,
        actor=caller.user,
        support=caller.support,
        changes={"products": {"from": before, "to": payload_products}},
        extra={"product": product},
    )


@unit_of_work()
def add_product(
    *,
    caller: Caller,
    ticket: Ticket,
    sku: str,
    name: str,
    quantity: int,
    if_match: frozenset[str] | None = None,
) -> TicketProduct:
    """Put `quantity` more of a product on the ticket (a new SKU, or more of one already there)."""
    if not caller.is_agent:
        raise ApiError(403, "FORBIDDEN", "Adding products needs the `agent` or `admin` role.")
    ticket = lock_ticket(ticket)
    check_version(ticket, if_match)
    before = ticket_products(ticket)
    product, created = TicketProduct.objects.get_or_create(
        ticket=ticket, sku=sku, defaults={"name": name, "quantity": quantity}
    )
    if not created:
        if product.quantity + quantity > MAX_PRODUCT_QUANTITY:
            # Summed without a bound, repeated additions ran past the column's integer
            # range (a 500); refused like a single addition over the limit.
            raise ApiError(
                400,
                "INVALID_BODY",
                f"The ticket would hold more than {MAX_PRODUCT_QUANTITY:,} of this product.",
                {
                    "quantity": [f"The ticket holds {product.quantity}; at most {MAX_PRODUCT_QUANTITY} in all."],
                    "limit": MAX_PRODUCT_QUANTITY,
                },
            )
        product.quantity += quantity
        product.name = name or product.name
        product.save(update_fields=["quantity", "name"])
    _record_products_change(
        caller=caller,
        ticket=ticket,
        type=TicketEvent.PRODUCT_ADDED,
        before=before,
        product={"sku": sku, "name": product.name, "quantity": quantity},
    )
    return product


@unit_of_work()
def remove_product(*, caller: Caller, ticket: Ticket, sku: str, if_match: frozenset[str] | None = None) -> None:
    if not caller.is_agent:
        raise ApiError(403, "FORBIDDEN", "Removing products needs the `agent` or `admin` role.")
    ticket = lock_ticket(ticket)
    check_version(ticket, if_match)
    before = ticket_products(ticket)
    product = TicketProduct.objects.filter(ticket=ticket, sku=sku).first()
    if product is None:
        raise ApiError(404, "PRODUCT_NOT_FOUND", "The ticket has no product with this SKU.")
    product.delete()
    _record_products_change(
        caller=caller,
        ticket=ticket,
        type=TicketEvent.PRODUCT_REMOVED,
        before=before,
        product={"sku": sku, "name": product.name, "quantity": product.quantity},
    )
