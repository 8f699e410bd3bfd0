"""The ticket features behind the notifications, through their REST endpoints: watchers,
approvals, merge, escalation, reopening and SLA policies, with their permission checks."""

import pytest

from notifications.models import Notification
from sla.models import SlaPolicy
from tests.builders import World
from tests.notifications.support import make_ticket, recipients
from ticketing.models import Approval, TicketMarks, Watcher

pytestmark = pytest.mark.django_db

T = "/api/v2/ticketing/ticket"


def test_watchers_add_list_remove(api, acme: World):
    ticket = make_ticket(acme, by="bob")
    headers = acme.headers("alice")
    added = api.post(f"{T}/{ticket.id}/watchers", {"user": "carol"}, format="json", headers=headers)
    assert added.status_code == 201 and added.json()["data"]["added"] is True
    again = api.post(f"{T}/{ticket.id}/watchers", {"user": str(acme.users["carol"].id)}, format="json", headers=headers)
    assert again.status_code == 200 and again.json()["data"]["added"] is False
    listed = api.get(f"{T}/{ticket.id}/watchers", headers=headers).json()["data"]
    assert [w["name"] for w in listed] == ["Carol"]
    assert recipients(acme, "watchAdded") == {"carol"}
    assert api.delete(f"{T}/{ticket.id}/watchers/carol", headers=headers).status_code == 204
    assert api.delete(f"{T}/{ticket.id}/watchers/carol", headers=headers).status_code == 404
    assert not Watcher.objects.exists()


def test_end_users_may_only_watch_for_themselves_and_only_tickets_they_may_see(api, acme: World):
    ticket = make_ticket(acme, by="bob")
    bob = acme.headers("bob")
    assert api.post(f"{T}/{ticket.id}/watchers", {"user": "carol"}, format="json", headers=bob).status_code == 403
    assert api.post(f"{T}/{ticket.id}/watchers", {"user": "bob"}, format="json", headers=bob).status_code == 201
    # dave may not see bob's ticket: 404 for him, 422 when an agent tries to add him
    dave = acme.headers("dave")
    assert api.post(f"{T}/{ticket.id}/watchers", {"user": "dave"}, format="json", headers=dave).status_code == 404
    refused = api.post(f"{T}/{ticket.id}/watchers", {"user": "dave"}, format="json", headers=acme.headers("alice"))
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "WATCHER_CANNOT_SEE_TICKET"
    assert set(Watcher.objects.values_list("user__username", flat=True)) == {"bob"}


def test_watchers_of_another_tenant_cannot_be_added(api, acme: World, globex: World):
    ticket = make_ticket(acme, by="bob")
    response = api.post(
        f"{T}/{ticket.id}/watchers",
        {"user": str(globex.users["carol"].id)},
        format="json",
        headers=acme.headers("alice"),
    )
    assert response.status_code == 400
    assert api.get(f"{T}/{ticket.id}/watchers", headers=globex.headers("alice")).status_code == 404
    assert not Watcher.objects.exists() and not Notification.objects.exists()


def test_approval_request_and_decision(api, acme: World):
    ticket = make_ticket(acme, by="bob", subject="Software License Request")
    requested = api.post(
        f"{T}/{ticket.id}/approvals",
        {"approver": "admin", "approvalType": "manager", "note": "Needed for the project"},
        format="json",
        headers=acme.headers("alice"),
    )
    assert requested.status_code == 201
    approval = requested.json()["data"]
    assert approval["state"] == "pending" and approval["approver"]["name"] == "Admin"
    url = f"{T}/{ticket.id}/approvals/{approval['id']}"
    assert api.post(f"{url}/approve", {}, format="json", headers=acme.headers("carol")).status_code == 403
    approved = api.post(f"{url}/approve", {"comment": "OK"}, format="json", headers=acme.headers("admin"))
    assert approved.status_code == 200 and approved.json()["data"]["state"] == "approved"
    twice = api.post(f"{url}/reject", {}, format="json", headers=acme.headers("admin"))
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "APPROVAL_ALREADY_DECIDED"
    assert Approval.objects.get().state == "approved"
    assert recipients(acme, "approval") == {"admin"}
    assert recipients(acme, "approvalDecision") == {"alice", "bob"}


def test_an_end_user_approver_may_decide_without_seeing_the_ticket_list(api, acme: World):
    ticket = make_ticket(acme, by="bob")
    approval = api.post(
        f"{T}/{ticket.id}/approvals", {"approver": "dave"}, format="json", headers=acme.headers("alice")
    ).json()["data"]
    rejected = api.post(
        f"{T}/{ticket.id}/approvals/{approval['id']}/reject",
        {"comment": "No"},
        format="json",
        headers=acme.headers("dave"),
    )
    assert rejected.status_code == 200 and rejected.json()["data"]["state"] == "rejected"


def test_end_users_cannot_request_approvals(api, acme: World):
    ticket = make_ticket(acme, by="bob")
    response = api.post(f"{T}/{ticket.id}/approvals", {"approver": "admin"}, format="json", headers=acme.headers("bob"))
    assert response.status_code == 403
    assert not Approval.objects.exists() and not Notification.objects.exists()


def test_merge_closes_the_source_and_refuses_loops(api, acme: World):
    source, target = make_ticket(acme, by="bob"), make_ticket(acme, by="dave")
    merged = api.post(f"{T}/{source.id}/merge", {"into": str(target.id)}, format="json", headers=acme.headers("alice"))
    assert merged.status_code == 200
    assert merged.json()["data"]["status"] == "closed" and merged.json()["data"]["mergedInto"] == str(target.id)
    assert TicketMarks.objects.get(ticket=source).merged_into_id == target.id
    again = api.post(f"{T}/{source.id}/merge", {"into": str(target.id)}, format="json", headers=acme.headers("alice"))
    assert again.status_code == 409
    into_merged = api.post(
        f"{T}/{target.id}/merge", {"into": str(source.id)}, format="json", headers=acme.headers("alice")
    )
    assert into_merged.status_code == 409
    itself = api.post(f"{T}/{target.id}/merge", {"into": str(target.id)}, format="json", headers=acme.headers("alice"))
    assert itself.status_code == 400
    reopen = api.post(f"{T}/{source.id}/reopen", {}, format="json", headers=acme.headers("alice"))
    assert reopen.status_code == 409
    by_user = api.post(f"{T}/{target.id}/merge", {"into": str(source.id)}, format="json", headers=acme.headers("dave"))
    assert by_user.status_code == 403


def test_escalate_raises_level_and_priority(api, acme: World):
    ticket = make_ticket(acme, by="bob", priority="low")
    first = api.post(
        f"{T}/{ticket.id}/escalate",
        {"reason": "Customer waiting", "team": "network"},
        format="json",
        headers=acme.headers("alice"),
    )
    assert first.status_code == 200
    data = first.json()["data"]
    assert data["escalationLevel"] == 1 and data["priority"] == "high" and data["team"] == "network"
    second = api.post(f"{T}/{ticket.id}/escalate", {}, format="json", headers=acme.headers("alice"))
    assert second.json()["data"]["escalationLevel"] == 2
    assert recipients(acme, "escalation") == {"carol", "admin"}  # unassigned: the network team's agents
    assert api.post(f"{T}/{ticket.id}/escalate", {}, format="json", headers=acme.headers("bob")).status_code == 403


def test_reopen_only_closed_tickets_by_agents_or_the_requester(api, acme: World):
    ticket = make_ticket(acme, by="bob")
    assert api.post(f"{T}/{ticket.id}/reopen", {}, format="json", headers=acme.headers("alice")).status_code == 409
    api.patch(f"{T}/{ticket.id}", {"status": "resolved"}, format="json", headers=acme.headers("alice"))
    reopened = api.post(f"{T}/{ticket.id}/reopen", {}, format="json", headers=acme.headers("bob"))
    assert reopened.status_code == 200 and reopened.json()["data"]["status"] == "open"
    assert recipients(acme, "resolution") == {"bob"}


def test_sla_policies_are_admin_only_and_validated(api, acme: World, globex: World):
    url = "/api/v2/ticketing/sla/policy"
    body = {"priority": "critical", "responseMinutes": 15, "resolutionMinutes": 120, "warningPercent": 80}
    assert api.put(url, body, format="json", headers=acme.headers("alice")).status_code == 403
    saved = api.put(url, body, format="json", headers=acme.headers("admin"))
    assert saved.status_code == 200 and saved.json()["data"]["priority"] == "urgent"
    assert (
        api.put(url, {**body, "warningPercent": 100}, format="json", headers=acme.headers("admin")).status_code == 400
    )
    assert api.put(url, {**body, "responseMinutes": 0}, format="json", headers=acme.headers("admin")).status_code == 400
    listed = api.get(url, headers=acme.headers("admin")).json()["data"]
    assert listed == [
        {"priority": "urgent", "responseMinutes": 15, "resolutionMinutes": 120, "warningPercent": 80, "calendar": None}
    ]
    assert api.get(url, headers=globex.headers("admin")).json()["data"] == []
    assert SlaPolicy.objects.count() == 1
