"""Who is told about what: every notification type's recipients and metadata, the actor
never told of their own action, preferences honoured, nothing left by a rollback."""

import pytest
from django.db import transaction

from events.models import Event
from notifications.models import Notification, NotificationCounter
from notifications.services import set_notification_preferences
from tests.builders import World
from tests.notifications.support import as_user, make_ticket, recipients, told
from ticketing import services

pytestmark = pytest.mark.django_db


def test_assignment_goes_to_the_new_assignee_with_who_assigned(acme: World):
    ticket = make_ticket(acme, by="bob")
    services.update_ticket(caller=as_user(acme, "admin"), ticket=ticket, data={"assignee": acme.users["alice"]})
    (note,) = told(acme, "assignment")["alice"]
    assert note.priority == "high"
    assert note.message == f"You have been assigned ticket {ticket.number}"
    assert note.metadata == {"previousAssignee": None, "assignedBy": str(acme.users["admin"].id)}
    assert note.actor == acme.users["admin"]
    assert note.action_url == f"/tickets/{ticket.id}"
    assert recipients(acme, "assignment") == {"alice"}


def test_an_agent_assigning_a_ticket_to_themselves_is_not_notified(acme: World):
    ticket = make_ticket(acme, by="bob")
    services.update_ticket(caller=as_user(acme, "alice"), ticket=ticket, data={"assignee": acme.users["alice"]})
    assert told(acme) == {}


def test_a_ticket_created_with_an_assignee_notifies_that_assignee(acme: World):
    make_ticket(acme, by="admin", assignee=acme.users["carol"])
    assert recipients(acme, "assignment") == {"carol"}


def test_reassignment_tells_the_previous_assignee_and_assignment_the_new_one(acme: World):
    ticket = make_ticket(acme, by="bob")
    services.update_ticket(caller=as_user(acme, "admin"), ticket=ticket, data={"assignee": acme.users["alice"]})
    services.update_ticket(caller=as_user(acme, "admin"), ticket=ticket, data={"assignee": acme.users["carol"]})
    (reassigned,) = told(acme, "reassignment")["alice"]
    assert reassigned.priority == "medium"
    assert reassigned.metadata == {"newAssignee": str(acme.users["carol"].id)}
    assert recipients(acme, "reassignment") == {"alice"}
    (assigned,) = told(acme, "assignment")["carol"]
    assert assigned.metadata["previousAssignee"] == str(acme.users["alice"].id)


def test_status_change_tells_requester_assignee_and_watchers_but_not_the_actor(acme: World):
    ticket = make_ticket(acme, by="bob")
    services.update_ticket(caller=as_user(acme, "admin"), ticket=ticket, data={"assignee": acme.users["alice"]})
    services.add_watcher(caller=as_user(acme, "admin"), ticket=ticket, user=acme.users["carol"])
    services.add_watcher(caller=as_user(acme, "admin"), ticket=ticket, user=acme.users["admin"])
    services.update_ticket(caller=as_user(acme, "admin"), ticket=ticket, data={"status": "in_progress"})
    assert recipients(acme, "statusChange") == {"bob", "alice", "carol"}
    note = told(acme, "statusChange")["bob"][0]
    assert note.metadata == {"previousStatus": "open", "newStatus": "in_progress"}
    assert note.message == "Ticket status changed from Open to In Progress"
    assert note.priority == "medium"


def test_resolving_sends_resolution_and_reopening_sends_reopened_instead_of_status_change(acme: World):
    ticket = make_ticket(acme, by="bob")
    alice = as_user(acme, "alice")
    services.update_ticket(caller=alice, ticket=ticket, data={"status": "resolved"})
    assert recipients(acme, "resolution") == {"bob"}
    assert told(acme, "resolution")["bob"][0].metadata == {"previousStatus": "open", "newStatus": "resolved"}
    services.reopen_ticket(caller=as_user(acme, "bob"), ticket=ticket)
    assert recipients(acme, "reopened") == set()  # bob reopened it himself: nobody else concerned
    services.update_ticket(caller=alice, ticket=ticket, data={"status": "closed"})
    services.reopen_ticket(caller=alice, ticket=ticket)
    assert recipients(acme, "reopened") == {"bob"}
    assert told(acme, "statusChange")["bob"][0].metadata["newStatus"] == "closed"
    assert len(told(acme, "statusChange")["bob"]) == 1


def test_comment_tells_watchers_requester_and_assignee_and_mention_replaces_comment(acme: World):
    ticket = make_ticket(acme, by="bob")
    admin = as_user(acme, "admin")
    services.update_ticket(caller=admin, ticket=ticket, data={"assignee": acme.users["alice"]})
    services.add_watcher(caller=admin, ticket=ticket, user=acme.users["carol"])
    comment = services.add_comment(caller=admin, ticket=ticket, body="@carol can you take a look at this?")
    assert recipients(acme, "mention") == {"carol"}
    assert recipients(acme, "comment") == {"bob", "alice"}
    (mention,) = told(acme, "mention")["carol"]
    assert mention.priority == "high"
    assert mention.message == "Admin mentioned you in a comment"
    assert mention.metadata == {"commentId": str(comment.id), "commentPreview": "@carol can you take a look at this?"}
    assert mention.action_url == f"/tickets/{ticket.id}#comment-{comment.id}"


def test_mentions_reach_only_users_of_the_tenant_who_may_see_the_ticket(acme: World, globex: World):
    ticket = make_ticket(acme, by="bob")
    services.add_comment(
        caller=as_user(acme, "alice"),
        ticket=ticket,
        body="@dave (an end user, not the requester), @nobody, @ALICE (me) and @carol.",
    )
    assert recipients(acme, "mention") == {"carol"}
    assert told(globex) == {}


def test_the_comment_author_is_never_notified_of_their_own_comment(acme: World):
    ticket = make_ticket(acme, by="bob")
    services.add_comment(caller=as_user(acme, "bob"), ticket=ticket, body="Any news? @bob")
    assert told(acme) == {}


def test_watch_added_tells_the_new_watcher_once(acme: World):
    ticket = make_ticket(acme, by="bob")
    admin = as_user(acme, "admin")
    assert services.add_watcher(caller=admin, ticket=ticket, user=acme.users["alice"]) is True
    assert services.add_watcher(caller=admin, ticket=ticket, user=acme.users["alice"]) is False
    (note,) = told(acme, "watchAdded")["alice"]
    assert note.priority == "low" and note.actor == acme.users["admin"]


def test_approval_request_tells_the_approver_with_a_deep_link(acme: World):
    ticket = make_ticket(acme, by="bob", subject="Software License Request")
    approval = services.request_approval(
        caller=as_user(acme, "alice"), ticket=ticket, approver=acme.users["admin"], approval_type="manager"
    )
    (note,) = told(acme, "approval")["admin"]
    assert note.message == "Approval requested for Software License Request"
    assert note.action_url == f"/tickets/{ticket.id}/approvals/{approval.id}"
    assert note.metadata == {
        "approvalId": str(approval.id),
        "approvalType": "manager",
        "requestedBy": str(acme.users["alice"].id),
    }
    assert recipients(acme, "approval") == {"admin"}


def test_approval_decision_tells_who_requested_it_and_the_ticket_requester(acme: World):
    ticket = make_ticket(acme, by="bob")
    approval = services.request_approval(caller=as_user(acme, "alice"), ticket=ticket, approver=acme.users["carol"])
    services.decide_approval(caller=as_user(acme, "carol"), approval=approval, approve=False, comment="No budget")
    assert recipients(acme, "approvalDecision") == {"alice", "bob"}
    note = told(acme, "approvalDecision")["alice"][0]
    assert note.metadata["decision"] == "rejected" and note.metadata["approvalId"] == str(approval.id)


def test_merge_tells_the_merged_tickets_people_and_the_watchers_of_both_tickets(acme: World):
    source, target = make_ticket(acme, by="bob"), make_ticket(acme, by="dave")
    admin = as_user(acme, "admin")
    services.update_ticket(caller=admin, ticket=source, data={"assignee": acme.users["admin"]})
    services.add_watcher(caller=admin, ticket=source, user=acme.users["alice"])
    services.add_watcher(caller=admin, ticket=target, user=acme.users["carol"])
    services.add_watcher(caller=admin, ticket=target, user=acme.users["dave"])
    services.merge_ticket(caller=as_user(acme, "alice"), ticket=source, into=target)
    # Alice merged it; bob (whose ticket it closed) and its assignee are told, and no
    # statusChange besides; dave watches the target but may not see bob's ticket, which
    # the notification shows.
    assert recipients(acme, "merge") == {"bob", "admin", "carol"}
    assert "bob" not in recipients(acme, "statusChange")
    note = told(acme, "merge")["carol"][0]
    assert note.priority == "low" and note.ticket_number == source.number
    assert note.metadata == {"mergedIntoId": str(target.id), "mergedIntoNumber": target.number}
    source.refresh_from_db()
    assert source.status == "closed"
    assert Event.objects.filter(ticket_id=source.id, type="tickets.ticket.merged").count() == 1


def test_escalation_tells_the_assignee_and_watchers_or_the_team_when_unassigned(acme: World):
    assigned = make_ticket(acme, by="bob")
    admin = as_user(acme, "admin")
    services.update_ticket(caller=admin, ticket=assigned, data={"assignee": acme.users["alice"]})
    services.add_watcher(caller=admin, ticket=assigned, user=acme.users["bob"])
    services.escalate_ticket(caller=admin, ticket=assigned, reason="VIP")
    assert recipients(acme, "escalation") == {"alice", "bob"}
    note = told(acme, "escalation")["alice"][0]
    assert note.metadata == {"escalationLevel": 1, "reason": "VIP"} and note.priority == "high"
    assigned.refresh_from_db()
    assert assigned.priority == "high"

    unassigned = make_ticket(acme, by="admin", team="network", requester=acme.users["dave"])
    services.escalate_ticket(caller=None, ticket=unassigned, reason="No answer")
    network = {u for u, notes in told(acme, "escalation").items() if any(n.ticket_id == unassigned.id for n in notes)}
    assert network == {"carol", "admin"}
    # (its creation queued it for carol, by admin: only the escalation is the system's)
    assert all(n.actor is None for n in Notification.objects.filter(ticket_id=unassigned.id, type="escalation"))


def test_a_disabled_type_creates_nothing_for_that_user_only(acme: World):
    set_notification_preferences(user=acme.users["bob"], types={"statusChange": False})
    ticket = make_ticket(acme, by="bob")
    services.add_watcher(caller=as_user(acme, "admin"), ticket=ticket, user=acme.users["carol"])
    services.update_ticket(caller=as_user(acme, "alice"), ticket=ticket, data={"status": "on_hold"})
    assert recipients(acme, "statusChange") == {"carol"}
    assert not Event.objects.filter(recipient=acme.users["bob"], type="notifications.notification.created").exists()


def test_a_rolled_back_change_leaves_no_notification_event_or_count(acme: World):
    ticket = make_ticket(acme, by="bob")
    with pytest.raises(RuntimeError), transaction.atomic():
        services.update_ticket(caller=as_user(acme, "admin"), ticket=ticket, data={"assignee": acme.users["alice"]})
        assert recipients(acme, "assignment") == {"alice"}
        raise RuntimeError("the request failed after the change")
    assert told(acme) == {}
    assert not Event.objects.filter(recipient__isnull=False).exists()
    assert not NotificationCounter.objects.filter(user=acme.users["alice"], unread__gt=0).exists()


def test_notification_events_are_private_and_announced_only_after_commit(
    acme: World, django_capture_on_commit_callbacks
):
    ticket = make_ticket(acme, by="bob")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.update_ticket(caller=as_user(acme, "admin"), ticket=ticket, data={"assignee": acme.users["alice"]})
    events = Event.objects.filter(type="notifications.notification.created")
    (event,) = events
    assert event.recipient == acme.users["alice"] and event.audience == "user"
    assert event.payload["type"] == "assignment" and event.payload["id"].startswith("notif-")
    assert event.changes["counts"]["to"]["unread"] == 1
    # One announcement for the change, after commit: "the log grew" up to its newest event,
    # which is the notification's (a change's events are numbered together, its own first).
    assert len(callbacks) == 1
    newest = Event.objects.filter(tenant=acme.tenant).order_by("-id").first()
    assert newest == event and Event.objects.filter(type="tickets.ticket.assigned", id__lt=event.id).exists()


def test_notification_events_never_reach_the_partner_feed(api, acme: World):
    ticket = make_ticket(acme, by="bob")
    services.update_ticket(caller=as_user(acme, "admin"), ticket=ticket, data={"assignee": acme.users["alice"]})
    feed = api.get("/v2/system/events", {"limit": 100}, headers=acme.headers("admin")).json()["result"]
    assert [e["type"] for e in feed] == ["tickets.ticket.created", "tickets.ticket.assigned"]
    assert Event.objects.filter(type="notifications.notification.created").count() == 1
