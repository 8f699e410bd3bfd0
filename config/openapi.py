"""The OpenAPI schema (drf-spectacular, served at /api/schema/): everything that exists only
to describe the API.

- `TicketingAutoSchema` (REST_FRAMEWORK's DEFAULT_SCHEMA_CLASS) adds to every operation the
  tenant headers its authentication reads and the error statuses every caller can get, in
  the error envelope, so views only name their own request and success shapes.
- Authentication extensions: bearer JWT for the tenant API; the event API also takes a
  partner key as `X-API-Key` or `Authorization: ApiKey <key>`.
- Output shapes (the views build plain dicts) as schema-only serializers, each wrapped in the
  success envelope by `ok()` below.
- The two SSE streams are plain async Django views, invisible to drf-spectacular; the
  preprocessing hook `add_stream_endpoints` documents them through stub views.

Views reference this module in small `@extend_schema(...)` decorators."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_basic_type
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.serializers import ListBodySerializer
from events.serializers import EventQuerySerializer
from notifications.models import NotificationType
from notifications.serializers import SORT_FIELDS, NotificationListSerializer
from ticketing.models import Priority, Status
from ticketing.serializers import (
    SORT_COLUMNS,
    ApprovalDecisionSerializer,
    EscalateSerializer,
    MergeSerializer,
    ProductWriteSerializer,
    TicketListBodySerializer,
    TicketWriteSerializer,
    WatcherWriteSerializer,
)
from ticketing.streams import PresenceWriteSerializer

# ENUM_NAME_OVERRIDES: the sortable columns of the two lists are different choice sets.
TICKET_SORT_CHOICES = sorted(SORT_COLUMNS)
NOTIFICATION_SORT_CHOICES = sorted(SORT_FIELDS)

# --- the envelopes ------------------------------------------------------------------------


class ErrorBodySchema(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. `TICKET_NOT_FOUND`.")
    message = serializers.CharField(help_text="For people; may change.")
    details = serializers.JSONField(allow_null=True, help_text="Field errors, limits or allowed values; or null.")

    class Meta:
        ref_name = "ErrorBody"


class ErrorEnvelopeSerializer(serializers.Serializer):
    """Every non-2xx JSON response (core/http.py)."""

    success = serializers.BooleanField(help_text="Always false.")
    error = ErrorBodySchema()
    timestamp = serializers.DateTimeField()

    class Meta:
        ref_name = "ErrorEnvelope"


ERROR = ErrorEnvelopeSerializer

_envelopes: dict[str, type[serializers.Serializer]] = {}


def ok(name: str, data: Any) -> type[serializers.Serializer]:
    """The success envelope `{"success": true, "data", "timestamp"}` around `data` (a
    serializer instance or field), as the reusable component `<name>Envelope`."""
    if name not in _envelopes:
        _envelopes[name] = inline_serializer(
            name=f"{name}Envelope",
            fields={
                "success": serializers.BooleanField(help_text="Always true."),
                "message": serializers.CharField(required=False),
                "data": data,
                "timestamp": serializers.DateTimeField(),
            },
        )
    return _envelopes[name]


# --- output shapes ------------------------------------------------------------------------


class UserRefSchema(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()

    class Meta:
        ref_name = "UserRef"


class ProductSchema(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField(allow_blank=True)
    quantity = serializers.IntegerField()

    class Meta:
        ref_name = "Product"


class TicketSchema(serializers.Serializer):
    id = serializers.UUIDField()
    ticketNumber = serializers.CharField(help_text="`TKT-<year>-<6 digits>`")
    subject = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    status = serializers.ChoiceField(choices=Status.choices)
    priority = serializers.ChoiceField(choices=Priority.choices)
    category = serializers.CharField(allow_blank=True)
    team = serializers.CharField(allow_blank=True)
    assignee = UserRefSchema(allow_null=True)
    requester = UserRefSchema(allow_null=True)
    customer = serializers.CharField(allow_blank=True)
    parent = serializers.UUIDField(allow_null=True)
    products = ProductSchema(many=True)
    createdAt = serializers.DateTimeField()
    updatedAt = serializers.DateTimeField()
    slaDueAt = serializers.DateTimeField(
        allow_null=True, help_text="Due time of the next unmet SLA target (business time); null: no SLA clock running"
    )
    slaState = serializers.ChoiceField(
        choices=["ok", "warning", "breached", "paused"], allow_null=True, help_text="null: no SLA clock running"
    )
    version = serializers.IntegerField(
        help_text='Raised with every change of the ticket; also the response\'s `ETag` (`"<version>"`), '
        "to send back in `If-Match`."
    )

    class Meta:
        ref_name = "Ticket"


class TicketDetailSchema(TicketSchema):
    """One ticket as its own answers show it: the list's shape plus `mergedInto`."""

    mergedInto = serializers.UUIDField(
        allow_null=True,
        help_text="The ticket this one was merged into (its conversation goes on there); null: not merged",
    )

    class Meta:
        ref_name = "TicketDetail"


class MergedTicketSchema(TicketDetailSchema):
    mergedInto = serializers.UUIDField()

    class Meta:
        ref_name = "MergedTicket"


class EscalatedTicketSchema(TicketDetailSchema):
    escalationLevel = serializers.IntegerField()

    class Meta:
        ref_name = "EscalatedTicket"


class TicketPageSchema(serializers.Serializer):
    tickets = TicketSchema(many=True)
    total = serializers.IntegerField()
    totalExact = serializers.BooleanField(help_text="false when `total` is capped at TICKET_LIST_COUNT_LIMIT")
    top = serializers.IntegerField()
    offset = serializers.IntegerField()

    class Meta:
        ref_name = "TicketPage"


class CommentSchema(serializers.Serializer):
    id = serializers.UUIDField()
    ticketId = serializers.UUIDField()
    author = UserRefSchema(allow_null=True)
    body = serializers.CharField()
    createdAt = serializers.DateTimeField()

    class Meta:
        ref_name = "Comment"


class WatcherAddedSchema(serializers.Serializer):
    user = UserRefSchema()
    added = serializers.BooleanField(help_text="false (and status 200) when they already watched it")

    class Meta:
        ref_name = "WatcherAdded"


class ApprovalSchema(serializers.Serializer):
    id = serializers.UUIDField()
    ticketId = serializers.UUIDField()
    approvalType = serializers.CharField()
    approver = UserRefSchema(allow_null=True)
    requestedBy = UserRefSchema(allow_null=True)
    note = serializers.CharField(allow_blank=True)
    state = serializers.CharField()
    decisionComment = serializers.CharField(allow_blank=True)
    decidedAt = serializers.DateTimeField(allow_null=True)
    createdAt = serializers.DateTimeField()

    class Meta:
        ref_name = "Approval"


class SlaPolicyOutSchema(serializers.Serializer):
    priority = serializers.ChoiceField(choices=Priority.choices)
    responseMinutes = serializers.IntegerField()
    resolutionMinutes = serializers.IntegerField()
    warningPercent = serializers.IntegerField()
    calendar = serializers.UUIDField(allow_null=True, help_text="The calendar the targets count in; null: 24x7")

    class Meta:
        ref_name = "SlaPolicy"


class SlaWorkingHoursSchema(serializers.Serializer):
    day = serializers.ChoiceField(choices=["mon", "tue", "wed", "thu", "fri", "sat", "sun"])
    start = serializers.CharField(help_text="HH:MM local time")
    end = serializers.CharField(help_text="HH:MM local time (24:00 = midnight)")

    class Meta:
        ref_name = "SlaWorkingHours"


class SlaHolidaySchema(serializers.Serializer):
    date = serializers.DateField()
    name = serializers.CharField(allow_blank=True)
    yearly = serializers.BooleanField(help_text="Recurs every year on this month and day")

    class Meta:
        ref_name = "SlaHoliday"


class SlaCalendarOutSchema(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    timeZone = serializers.CharField(help_text="IANA time zone")
    workingHours = SlaWorkingHoursSchema(many=True)
    holidays = SlaHolidaySchema(many=True)
    createdAt = serializers.DateTimeField()
    updatedAt = serializers.DateTimeField()

    class Meta:
        ref_name = "SlaCalendar"


class ActorSchema(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    email = serializers.CharField(allow_null=True)
    avatar = serializers.CharField(allow_null=True)

    class Meta:
        ref_name = "NotificationActor"


class NotificationSchema(serializers.Serializer):
    id = serializers.CharField(help_text="`notif-<uuid>`")
    type = serializers.ChoiceField(choices=NotificationType.choices)
    ticketId = serializers.UUIDField(allow_null=True)
    ticketNumber = serializers.CharField(allow_blank=True)
    title = serializers.CharField(allow_blank=True)
    message = serializers.CharField(allow_blank=True)
    priority = serializers.ChoiceField(choices=Priority.choices)
    category = serializers.CharField(allow_blank=True)
    read = serializers.BooleanField()
    notified_at = serializers.DateTimeField()
    createdAt = serializers.DateTimeField()
    actionUrl = serializers.CharField(allow_blank=True)
    actor = ActorSchema(allow_null=True)
    metadata = serializers.DictField()

    class Meta:
        ref_name = "Notification"


class NotificationCountsSchema(serializers.Serializer):
    total = serializers.IntegerField()
    unread = serializers.IntegerField()
    count = serializers.IntegerField(help_text="Same as `unread`.")
    byType = serializers.DictField(child=serializers.IntegerField())
    byPriority = serializers.DictField(child=serializers.IntegerField())
    lastUpdated = serializers.DateTimeField(allow_null=True)

    class Meta:
        ref_name = "NotificationCounts"


class NotificationPaginationSchema(serializers.Serializer):
    total = serializers.IntegerField()
    top = serializers.IntegerField()
    offset = serializers.IntegerField()
    hasMore = serializers.BooleanField()

    class Meta:
        ref_name = "NotificationPagination"


class NotificationSummarySchema(serializers.Serializer):
    totalUnread = serializers.IntegerField()
    byType = serializers.DictField(child=serializers.IntegerField())
    byPriority = serializers.DictField(child=serializers.IntegerField())

    class Meta:
        ref_name = "NotificationSummary"


class NotificationPageSchema(serializers.Serializer):
    notifications = NotificationSchema(many=True)
    pagination = NotificationPaginationSchema()
    summary = NotificationSummarySchema()

    class Meta:
        ref_name = "NotificationPage"


class MarkReadResultSchema(serializers.Serializer):
    updated = serializers.IntegerField()
    counts = NotificationCountsSchema()

    class Meta:
        ref_name = "MarkReadResult"


class PreferencesSchema(serializers.Serializer):
    notificationTypes = serializers.DictField(child=serializers.BooleanField())
    channels = serializers.DictField(
        child=serializers.ChoiceField(choices=["inApp", "email", "both", "none"]),
        help_text="Per type: in the app (default), by email, both, or none (= turned off).",
    )
    emailDigestMinutes = serializers.IntegerField(
        help_text="Delay of the email digest of medium and low notifications still unread (default 15)."
    )

    class Meta:
        ref_name = "NotificationPreferences"


class NotificationListQuerySchema(serializers.Serializer):
    """GET ticket/notification/list: the POST body's fields as query parameters."""

    search = serializers.CharField(required=False, allow_blank=True, max_length=200)
    top = serializers.IntegerField(required=False, min_value=1, max_value=100)
    offset = serializers.IntegerField(required=False, min_value=0, max_value=1_000_000)
    sort = serializers.ChoiceField(choices=NOTIFICATION_SORT_CHOICES, required=False, allow_blank=True)
    searchOrder = serializers.ChoiceField(choices=["ASC", "DESC", "asc", "desc"], required=False, allow_blank=True)
    filter = serializers.CharField(required=False, help_text="The filter array, as JSON.")


class EventActorSchema(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()

    class Meta:
        ref_name = "EventActor"


class EventSchema(serializers.Serializer):
    id = serializers.CharField(help_text="ULID; increases in commit order within the tenant")
    type = serializers.CharField(help_text="e.g. `tickets.ticket.created` (docs/events.md lists them all)")
    occurred_at = serializers.DateTimeField()
    payload = serializers.DictField(help_text="`{ticket, parent_ticket, customer}`")
    changes = serializers.DictField(required=False, help_text="`{field: {from, to}}`, on updates")
    actor = EventActorSchema(allow_null=True)
    support = serializers.BooleanField()
    replayed = serializers.BooleanField(required=False)

    class Meta:
        ref_name = "Event"


class EventQueryEchoSchema(serializers.Serializer):
    limit = serializers.IntegerField()
    after_id = serializers.CharField(required=False)
    occurred_after = serializers.CharField(required=False)
    type = serializers.CharField(required=False)

    class Meta:
        ref_name = "EventQuery"


class EventPageSchema(serializers.Serializer):
    """The event API keeps the spec's own shape, without the envelope."""

    query = EventQueryEchoSchema()
    result = EventSchema(many=True)

    class Meta:
        ref_name = "EventPage"


TICKET = ok("Ticket", TicketDetailSchema())
MERGED_TICKET = ok("MergedTicket", MergedTicketSchema())
ESCALATED_TICKET = ok("EscalatedTicket", EscalatedTicketSchema())
TICKET_PAGE = ok("TicketPage", TicketPageSchema())
COMMENT = ok("Comment", CommentSchema())
COMMENTS = ok("CommentList", CommentSchema(many=True))
WATCHERS = ok("WatcherList", UserRefSchema(many=True))
WATCHER_ADDED = ok("WatcherAdded", WatcherAddedSchema())
APPROVAL = ok("Approval", ApprovalSchema())
APPROVALS = ok("ApprovalList", ApprovalSchema(many=True))
SLA_POLICY = ok("SlaPolicy", SlaPolicyOutSchema())
SLA_POLICIES = ok("SlaPolicyList", SlaPolicyOutSchema(many=True))
SLA_CALENDAR = ok("SlaCalendar", SlaCalendarOutSchema())
SLA_CALENDARS = ok("SlaCalendarList", SlaCalendarOutSchema(many=True))
NOTIFICATION_PAGE = ok("NotificationPage", NotificationPageSchema())
NOTIFICATION_COUNTS = ok("NotificationCounts", NotificationCountsSchema())
MARK_READ_RESULT = ok("MarkReadResult", MarkReadResultSchema())
PREFERENCES = ok("NotificationPreferences", PreferencesSchema())
NO_CONTENT = OpenApiResponse(description="Done; no body.")


def conflict(description: str) -> OpenApiResponse:
    return OpenApiResponse(ERROR, description=description)


INVALID_FILTER = OpenApiResponse(ERROR, description="`INVALID_FILTER` (details.conditionId names the condition)")

# Operations whose request, parameters and answers take more than a line (views use
# `@extend_schema(**openapi.X)`).
TICKET_LIST = {
    "summary": "List tickets with filter, search, sort and paging",
    "request": TicketListBodySerializer,
    "parameters": [
        OpenApiParameter(
            "type",
            str,
            enum=["user", "agent", "template"],
            description="The list's scope; default `template` for agents, `user` for end users.",
        )
    ],
    "responses": {200: TICKET_PAGE, 422: INVALID_FILTER},
}
WATCHER_ADD = {
    "summary": "Add a watcher (notifies them: watchAdded)",
    "request": WatcherWriteSerializer,
    "responses": {
        201: WATCHER_ADDED,
        200: OpenApiResponse(WATCHER_ADDED, description="They already watched it (`added: false`)."),
        422: OpenApiResponse(ERROR, description="`WATCHER_CANNOT_SEE_TICKET`"),
    },
}
APPROVAL_DECISION = {
    "summary": "Approve or reject (the approver)",
    "request": ApprovalDecisionSerializer,
    "responses": {200: APPROVAL, 409: conflict("`APPROVAL_ALREADY_DECIDED`")},
}
IF_MATCH_HEADER = OpenApiParameter(
    "If-Match",
    str,
    OpenApiParameter.HEADER,
    description='The ticket\'s `ETag` as last read (`"<version>"`; a list or `*` also work). Another '
    "version is current: 412 PRECONDITION_FAILED, nothing changed, the current ticket in "
    "`details.ticket`. Absent: the change is unconditional. Not a list of entity tags: 400 INVALID_HEADER.",
)
PRECONDITION_FAILED = OpenApiResponse(
    ERROR,
    description="`PRECONDITION_FAILED`: `If-Match` names another version; `details.currentVersion` and "
    "`details.ticket` show the ticket as it is now (also its `ETag` header).",
)
TICKET_MERGE = {
    "summary": "Merge this ticket into another (watchers of both notified)",
    "request": MergeSerializer,
    "parameters": [IF_MATCH_HEADER],
    "responses": {
        200: MERGED_TICKET,
        409: conflict("`ALREADY_MERGED` or `TARGET_MERGED`"),
        412: PRECONDITION_FAILED,
    },
}
TICKET_REOPEN = {
    "summary": "Reopen a resolved, closed or cancelled ticket",
    "request": None,
    "parameters": [IF_MATCH_HEADER],
    "responses": {200: TICKET, 409: conflict("`TICKET_NOT_CLOSED` or `ALREADY_MERGED`"), 412: PRECONDITION_FAILED},
}
TICKET_ESCALATE = {
    "summary": "Escalate a ticket",
    "request": EscalateSerializer,
    "parameters": [IF_MATCH_HEADER],
    "responses": {200: ESCALATED_TICKET, 412: PRECONDITION_FAILED},
}
PRODUCT_ADD = {
    "summary": "Add a product or asset to a ticket",
    "request": ProductWriteSerializer,
    "parameters": [IF_MATCH_HEADER],
    "responses": {201: TICKET, 412: PRECONDITION_FAILED},
}
PRODUCT_REMOVE = {
    "summary": "Remove a product from a ticket",
    "parameters": [IF_MATCH_HEADER],
    "responses": {204: NO_CONTENT, 412: PRECONDITION_FAILED},
}
TICKET_PATCH = {
    "summary": "Change a ticket",
    "request": TicketWriteSerializer,
    "parameters": [IF_MATCH_HEADER],
    "responses": {200: TICKET, 412: PRECONDITION_FAILED},
}
TICKET_DELETE = {
    "summary": "Delete a ticket (admin)",
    "parameters": [IF_MATCH_HEADER],
    "responses": {204: NO_CONTENT, 412: PRECONDITION_FAILED},
}
NOTIFICATION_LIST = {
    "summary": "The caller's notifications: filter, search, sort, page",
    "request": NotificationListSerializer,
    "responses": {200: NOTIFICATION_PAGE, 422: INVALID_FILTER},
}
NOTIFICATION_LIST_GET = {
    "summary": "The same list with the body's fields as query parameters (filter as JSON)",
    "parameters": [NotificationListQuerySchema],
    "responses": {200: NOTIFICATION_PAGE, 422: INVALID_FILTER},
}
SYSTEM_EVENTS = {
    "summary": "The tenant's event log, oldest first, paged with after_id",
    "parameters": [EventQuerySerializer],
    "responses": {
        200: EventPageSchema,
        410: OpenApiResponse(ERROR, description="`CURSOR_EXPIRED`: after_id is older than the retention"),
    },
}


# --- headers and error statuses added to every operation -----------------------------------

TENANT_HEADER = OpenApiParameter(
    "x-tenantid",
    OpenApiTypes.UUID,
    OpenApiParameter.HEADER,
    required=True,
    description="The tenant's id. Missing: 400 MISSING_HEADER; not a UUID: 400 INVALID_HEADER; "
    "unknown or inactive: 404 TENANT_NOT_FOUND.",
)
REALM_HEADER = OpenApiParameter(
    "realmname",
    str,
    OpenApiParameter.HEADER,
    required=True,
    pattern=r"^[A-Za-z0-9._-]{1,100}$",
    description="The authentication realm that signed the token (404 REALM_NOT_FOUND when unknown).",
)
SUPPORT_HEADER = OpenApiParameter(
    "issupportrequest",
    str,
    OpenApiParameter.HEADER,
    pattern=r"^\s*([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])?\s*$",
    description="`true` or `false` in any case; empty is `false`. `true`: act as support staff "
    "(needs the `support` role: else 403 SUPPORT_ROLE_REQUIRED).",
)
EVENT_TENANT_HEADER = OpenApiParameter(
    "x-tenantid",
    OpenApiTypes.UUID,
    OpenApiParameter.HEADER,
    description="Required with a bearer token; with an API key it may be given and must name the key's tenant.",
)
EVENT_REALM_HEADER = OpenApiParameter(
    "realmname",
    str,
    OpenApiParameter.HEADER,
    pattern=r"^[A-Za-z0-9._-]{1,100}$",
    description="Required with a bearer token.",
)
LAST_EVENT_ID_HEADER = OpenApiParameter(
    "Last-Event-ID",
    str,
    OpenApiParameter.HEADER,
    description="Resume after this event-log id (EventSource sends it on reconnect).",
)

IDEMPOTENCY_KEY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    pattern=r"^[\x21-\x7e]{1,255}$",
    description="Optional; 1 to 255 visible ASCII characters (a UUID is a good choice), else 400 "
    "INVALID_HEADER. The first successful answer is stored per tenant, caller and key for 24 h; a repeat "
    "with the same method, path and body gets it again (with `Idempotent-Replayed: true`) and changes "
    "nothing. Same key, other request: 422 IDEMPOTENCY_KEY_REUSED; while the first is still in flight: "
    "409 IDEMPOTENCY_KEY_IN_USE (with `Retry-After`).",
)
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_IDEMPOTENCY_ERRORS = {
    "409": "`IDEMPOTENCY_KEY_IN_USE`: a request with this `Idempotency-Key` is still in flight (`Retry-After`)",
    "422": "`IDEMPOTENCY_KEY_REUSED`: the `Idempotency-Key` was used for another method, path or body",
}
_RATE_LIMITED = (
    "`TOO_MANY_REQUESTS`: too many requests in the time window, per user, API key or tenant "
    "(`details.scope`); `Retry-After` and `details.retryAfter` say when to try again"
)
RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": "Requests allowed in the window, of the caller's bucket closest to running out.",
    "RateLimit-Remaining": "Requests left in that window.",
    "RateLimit-Reset": "Seconds until that window ends.",
}


def _integer_header(description: str) -> dict[str, Any]:
    return {"schema": {"type": "integer", "minimum": 0}, "description": description}


# The error codes each generic status can carry, as the code raises them (an `ApiError`
# with that status, or core.errors' code for a bare status). Kept true by
# tests/contract/test_openapi_schema.py, which greps the code for every code it raises.
# Not listed: `VALIDATION_ERROR`, core.errors' mapping of a DRF ValidationError, which no
# view lets through (they validate with `is_valid()` and answer `INVALID_BODY`).
ERROR_CODES: dict[int, tuple[str, ...]] = {
    400: (
        "MISSING_HEADER",
        "INVALID_HEADER",
        "INVALID_QUERY",
        "INVALID_BODY",
        "INVALID_JSON",
        "INVALID_FILTER",
        "INVALID_LAST_EVENT_ID",
        "TOO_MANY_PARAMETERS",
        "BAD_REQUEST",
        "INVALID_WEBHOOK_URL",
    ),
    401: (
        "MISSING_TOKEN",
        "INVALID_TOKEN",
        "TOKEN_EXPIRED",
        "INVALID_API_KEY",
        "REVOKED_API_KEY",
        "API_KEY_EXPIRED",
        "AMBIGUOUS_CREDENTIALS",  # X-API-Key and Authorization both sent
        "UNAUTHORIZED",  # /metrics without its bearer token (docs/operations.md)
    ),
    403: ("MISSING_ROLE", "FORBIDDEN", "INSUFFICIENT_SCOPE", "SUPPORT_ROLE_REQUIRED", "CSRF_FAILED"),
    404: (
        "TENANT_NOT_FOUND",
        "REALM_NOT_FOUND",
        "TICKET_NOT_FOUND",
        "NOTIFICATION_NOT_FOUND",
        "APPROVAL_NOT_FOUND",
        "WATCHER_NOT_FOUND",
        "PRODUCT_NOT_FOUND",
        "CALENDAR_NOT_FOUND",
        "VIEW_NOT_FOUND",
        "VIEWER_NOT_FOUND",
        "NOT_FOUND",
        "WEBHOOK_ENDPOINT_NOT_FOUND",
        "EVENT_NOT_FOUND",
    ),
    406: ("NOT_ACCEPTABLE",),
    413: ("PAYLOAD_TOO_LARGE",),
    415: ("UNSUPPORTED_MEDIA_TYPE",),
    503: ("SERVICE_UNAVAILABLE",),
}
_ERROR_SUMMARIES = {
    400: "Malformed headers, query or body",
    401: "No or bad credentials",
    403: "The caller's roles do not allow this",
    404: "Unknown tenant, realm or object, or one the caller may not see",
    406: "The `Accept` header excludes JSON",
    413: "The body is larger than the upload limit (`details.limit`)",
    415: "The body is not `application/json`",
    503: "The database or Redis is unreachable, with `Retry-After`; a database failure carries "
    "`details.outcome` (`not_applied` or `unknown`)",
}
_ERROR_DESCRIPTIONS = {
    status: f"{_ERROR_SUMMARIES[status]} ({', '.join(f'`{code}`' for code in codes)})"
    for status, codes in ERROR_CODES.items()
}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class TicketingAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus what every operation of this API shares."""

    def _authenticator_names(self) -> set[str]:
        return {type(a).__name__ for a in self.view.get_authenticators()}

    def get_override_parameters(self) -> list[Any]:
        params = list(super().get_override_parameters())
        names = self._authenticator_names()
        if "TenantJWTAuthentication" in names:
            params += [TENANT_HEADER, REALM_HEADER, SUPPORT_HEADER]
        elif "EventReaderAuthentication" in names:
            params += [EVENT_TENANT_HEADER, EVENT_REALM_HEADER]
        if names and self.method in _WRITE_METHODS and "/sse/" not in self.path:
            params.append(IDEMPOTENCY_KEY_HEADER)
        return params

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        if not self._authenticator_names():
            return responses  # the schema and docs pages themselves
        statuses = [400, 401, 403, 404, 406, 503]
        if self.method in _BODY_METHODS:
            statuses += [413, 415]
        for status in sorted(statuses):
            if str(status) not in responses:
                responses[str(status)] = self._get_response_for_code(ERROR, str(status), direction=direction) | {
                    "description": _ERROR_DESCRIPTIONS[status]
                }
        if "/sse/" in self.path:
            return responses  # streams keep their own limits (TOO_MANY_STREAMS)
        extra = {"429": _RATE_LIMITED}
        if self.method in _WRITE_METHODS:
            extra |= _IDEMPOTENCY_ERRORS
        for status, description in extra.items():
            if status in responses:
                responses[status]["description"] += f"; or {description}"
            else:
                responses[status] = self._get_response_for_code(ERROR, status, direction=direction) | {
                    "description": description
                }
        for status, response in responses.items():
            headers = {name: _integer_header(text) for name, text in RATE_LIMIT_HEADERS.items()}
            if status == "429":
                headers["Retry-After"] = _integer_header("Seconds to wait before the next request.")
            response["headers"] = {**response.get("headers", {}), **headers}
        return responses


# --- authentication ---------------------------------------------------------------------


class TenantJWTScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.TenantJWTAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        definition: dict[str, Any] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        definition["description"] = (
            "A JWT of the realm named by `realmname` (HS256 or RS256/JWKS, Keycloak claims). "
            "Needs one of the roles user, agent, admin, partner. The same-origin dashboard may use "
            "its session cookie instead (CSRF token on writes)."
        )
        return definition


class EventReaderScheme(OpenApiAuthenticationExtension):
    """The event API: a bearer JWT (agent, admin or partner role) or a partner API key in
    either header form; any one of them."""

    target_class = "tenants.authentication.EventReaderAuthentication"
    # Registers the two key schemes; `bearerAuth` is TenantJWTScheme's component.
    name = ["partnerApiKey", "partnerApiKeyAuthorization"]

    def get_security_definition(self, auto_schema: AutoSchema) -> list[dict[str, Any]]:
        return [
            {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "A partner API key (admin or `manage.py create_api_key`), scope `events:read`.",
            },
            {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "The same partner key as `Authorization: ApiKey <key>`.",
            },
        ]

    def get_security_requirement(self, auto_schema: AutoSchema) -> list[dict[str, list[Any]]]:
        return [{"bearerAuth": []}] + [{name: []} for name in self.name]


# --- request bodies: what the strict serializers refuse, said in the schema ----------------

# Not blank once trimmed (DRF's CharField trims, then refuses an empty string).
_NOT_BLANK = r"\S"


class StrictObjectSchema(OpenApiSerializerExtension):
    """core.serializers.StrictObjectSerializer refuses unknown fields:
    `additionalProperties: false`, and the limits its validators add."""

    target_class = "core.serializers.StrictObjectSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        serializer = self.target if isinstance(self.target, serializers.Serializer) else self.target()
        properties = schema.get("properties", {})
        for name, field in serializer.fields.items():
            prop = properties.get(name)
            if prop is None or field.read_only:
                continue
            if isinstance(field, serializers.CharField) and not field.allow_blank and field.trim_whitespace:
                prop.setdefault("pattern", _NOT_BLANK)
        # A list's `top` is capped by a setting in `validate_top`, which drf-spectacular cannot see.
        if isinstance(serializer, ListBodySerializer) and "top" in properties:
            properties["top"]["maximum"] = getattr(settings, serializer.max_top_setting)
        if direction == "request":
            schema["additionalProperties"] = False
        if schema.get("description", "").startswith("Refuses a body"):
            del schema["description"]  # the base class's docstring, not this body's
        return schema


# `notif-<uuid>` or the bare UUID (notifications.serializers.parse_public_id).
_NOTIFICATION_ID = r"^\s*(notif-)?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\s*$"


class MarkReadSchema(OpenApiSerializerExtension):
    """Exactly one of `ids`, `all: true` or `before` (MarkReadSerializer.validate)."""

    target_class = "notifications.serializers.MarkReadSerializer"
    priority = 1

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        # No maxLength: the server trims whitespace before it counts; the pattern bounds it.
        notification_id = {"type": "string", "pattern": _NOTIFICATION_ID}
        ids = {"type": "array", "items": notification_id, "minItems": 1, "maxItems": 1000}

        def only(name: str, schema: dict[str, Any]) -> dict[str, Any]:
            return {"type": "object", "properties": {name: schema}, "required": [name], "additionalProperties": False}

        return {
            "oneOf": [
                only("ids", ids | {"description": "Notification ids (`notif-<uuid>` or the UUID)."}),
                only("all", {"type": "boolean", "enum": [True]}),
                only("before", {"type": "string", "format": "date-time"}),
            ]
        }


class PreferenceSchema(OpenApiSerializerExtension):
    """`notificationTypes` and `channels` name known types only; at least one of the keys."""

    target_class = "notifications.serializers.PreferenceSerializer"
    priority = 1

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        types = {name: {"type": "boolean"} for name in NotificationType.values}
        channels: dict[str, Any] = {}
        for name in NotificationType.values:  # a dict of its own each (no YAML aliases)
            channels[name] = {"type": "string", "enum": ["inApp", "email", "both", "none"]}
        return {
            "type": "object",
            "properties": {
                "notificationTypes": {"type": "object", "properties": types, "additionalProperties": False},
                "channels": {
                    "type": "object",
                    "properties": channels,
                    "additionalProperties": False,
                    "description": "Per type: in the app (default), by email, both, or none (= turned off). "
                    "Applied after notificationTypes when a type is named in both.",
                },
                "emailDigestMinutes": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 10080,
                    "description": "Delay of the email digest of medium and low notifications still unread.",
                },
            },
            # At least one of them (PreferenceSerializer.validate).
            "anyOf": [{"required": [name]} for name in ("notificationTypes", "channels", "emailDigestMinutes")],
            "additionalProperties": False,
        }


# --- fields the views' serializers define themselves ----------------------------------------


class TenantUserFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "ticketing.serializers.TenantUserField"

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        return {
            **build_basic_type(OpenApiTypes.STR),
            "pattern": _NOT_BLANK,
            "description": "A user of the tenant: id or username.",
        }


class ParentTicketFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "ticketing.serializers.ParentTicketField"

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        return {**build_basic_type(OpenApiTypes.UUID), "description": "A ticket id of the same tenant."}


# A ULID (Crockford base32) or a UUID; the leading digit keeps the time well before 9999.
_EVENT_ID = (
    r"^([0-6][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}"
    r"|[0-9a-dA-D][0-9a-fA-F]{7}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12})$"
)


class EventIdFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "events.serializers.EventIdField"

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        return {
            **build_basic_type(OpenApiTypes.STR),
            "pattern": _EVENT_ID,
            "description": "An event id: a ULID, or the same 128 bits as a UUID (of a time before the year 9999).",
        }


# --- the SSE streams ------------------------------------------------------------------------

_STREAM_COMMON = (
    "Everything that can fail is checked before the first byte, so failures are ordinary JSON "
    "errors in the envelope; once `200 text/event-stream` has started, a failure is an `error` "
    "event `{code, message, timestamp}` followed by closing (`TOKEN_EXPIRED`, `SLOW_CONSUMER`, "
    "`SERVER_SHUTDOWN`, `IDLE_TIMEOUT`). Every stream sends `heartbeat {timestamp}` every "
    "`SSE_HEARTBEAT_SECONDS`. Event-log ids are the SSE `id:`; reconnect with `Last-Event-ID`. "
    "At most `SSE_MAX_*_STREAMS_PER_USER` streams per user (429 `TOO_MANY_STREAMS` with "
    "`Retry-After`); 503 `SERVICE_UNAVAILABLE` with `Retry-After` when Redis, the subscription or "
    "the database fails (a database failure with `details.outcome`)."
)

LIST_STREAM_EVENTS = (
    "Events: `connected {connectionId, timestamp}` (with `retry: 3000`); `snapshot {tickets, total, "
    "totalExact, reset?}` (one page as the body asks; `reset: true` when a resume was not "
    'possible); `created` (a Ticket, `reason: "scope"` when it starts matching); `updated` (a '
    "Ticket plus `changes {field: {from, to}}`); `deleted {id, ticketNumber, deletedAt, reason?}`; "
    "`heartbeat {timestamp}`; `error {code, message, timestamp}` before closing."
)
NOTIFICATION_STREAM_EVENTS = (
    "Events: `connected {message, userId, timestamp}`; `count` (NotificationCounts plus `reason`: "
    "`snapshot` at the start, `reset: true` when a resume was not possible; `created`, `read`, "
    "`deleted` with `ids` after changes); `notification` (a Notification, followed by its "
    "`count`); `heartbeat {timestamp}`; `error {code, message, timestamp}` before closing. "
    "A stream that cannot subscribe answers 503 before starting, as the list stream does."
)

TICKET_STREAM_EVENTS = (
    "Events: `connected {connectionId, ticketId, timestamp}` (with `retry: 3000`); `snapshot {ticket, "
    "comments, watchers, approvals, reset?}` (the ticket page's whole state at the stream's log position; "
    "`reset: true` when a resume was not possible); `activity` (an Event exactly as `GET "
    "/v2/system/events` shows it, for every event about the ticket: changes, comments, watchers, "
    "approvals, products, SLA stages, for agents a merge into it, its deletion); `heartbeat {timestamp}`; "
    "`error {code, message, timestamp}` before closing."
)


def _sse_response(events: str) -> OpenApiResponse:
    return OpenApiResponse(response=OpenApiTypes.STR, description=f"A Server-Sent Events stream. {events}")


class TicketListStreamSchema(APIView):
    """Schema stand-in for ticketing.streams.ticket_list_updates (an async Django view)."""

    @extend_schema(
        operation_id="ticket_list_updates",
        summary="The live ticket list (SSE)",
        description=f"{LIST_STREAM_EVENTS}\n\n{_STREAM_COMMON}",
        tags=["ticketing"],
        request=TicketListBodySerializer,
        parameters=[
            OpenApiParameter("type", str, enum=["user", "agent", "template"], required=True),
            OpenApiParameter("module", str, enum=["ticketing"], required=True),
            LAST_EVENT_ID_HEADER,
        ],
        responses={
            (200, "text/event-stream"): _sse_response(LIST_STREAM_EVENTS),
            422: INVALID_FILTER,
            429: OpenApiResponse(ERROR, description="`TOO_MANY_STREAMS` (with `Retry-After`)"),
        },
    )
    def post(self, request: Request) -> Response:  # pragma: no cover - never routed
        raise NotImplementedError


class NotificationStreamSchema(APIView):
    """Schema stand-in for notifications.streams.notification_stream (an async Django view)."""

    @extend_schema(
        operation_id="notification_stream",
        summary="The caller's live notifications (SSE)",
        description=f"{NOTIFICATION_STREAM_EVENTS}\n\n{_STREAM_COMMON}",
        tags=["notifications"],
        parameters=[
            OpenApiParameter("lastEventId", str, description="As the `Last-Event-ID` header."),
            LAST_EVENT_ID_HEADER,
        ],
        responses={
            (200, "text/event-stream"): _sse_response(NOTIFICATION_STREAM_EVENTS),
            429: OpenApiResponse(ERROR, description="`TOO_MANY_STREAMS` (with `Retry-After`)"),
        },
    )
    def get(self, request: Request) -> Response:  # pragma: no cover - never routed
        raise NotImplementedError


class TicketActivityStreamSchema(APIView):
    """Schema stand-in for ticketing.streams.ticket_activity_stream (an async Django view)."""

    @extend_schema(
        operation_id="ticket_activity_stream",
        summary="Everything that happens to one ticket, live (SSE)",
        description=f"{TICKET_STREAM_EVENTS}\n\n{_STREAM_COMMON}",
        tags=["ticketing"],
        parameters=[
            OpenApiParameter("ticket_id", str, OpenApiParameter.PATH, description="The ticket's id (a UUID)."),
            OpenApiParameter("lastEventId", str, description="As the `Last-Event-ID` header."),
            LAST_EVENT_ID_HEADER,
        ],
        responses={
            (200, "text/event-stream"): _sse_response(TICKET_STREAM_EVENTS),
            404: OpenApiResponse(ERROR, description="`TICKET_NOT_FOUND`: no such ticket, or not the caller's to see"),
            429: OpenApiResponse(ERROR, description="`TOO_MANY_STREAMS` (with `Retry-After`)"),
        },
    )
    def get(self, request: Request, ticket_id: str) -> Response:  # pragma: no cover - never routed
        raise NotImplementedError


class ViewerSchema(serializers.Serializer):
    clientId = serializers.CharField(help_text="The viewer's stream (`connectionId`)")
    user = UserRefSchema()
    state = serializers.ChoiceField(choices=["viewing", "typing"])


class PresenceSchema(serializers.Serializer):
    ticketId = serializers.UUIDField()
    viewers = ViewerSchema(many=True)


PRESENCE = ok("Presence", PresenceSchema())


class TicketPresenceSchema(APIView):
    """Schema stand-in for ticketing.streams.ticket_presence (an async Django view)."""

    @extend_schema(
        operation_id="ticket_presence",
        summary="Say you are typing on a ticket you view (presence)",
        description=(
            "`clientId` is the `connectionId` of your open ticket stream (`GET …/ticket/{id}/sse`), "
            "which makes you a viewer. `state: typing` shows you typing to the other viewers for "
            "`PRESENCE_TYPING_SECONDS` (repeat it while typing); `viewing` ends it. Answers the roster; "
            "every viewer's stream gets it as a `presence` frame."
        ),
        tags=["ticketing"],
        request=PresenceWriteSerializer,
        parameters=[OpenApiParameter("ticket_id", str, OpenApiParameter.PATH, description="The ticket's id.")],
        responses={
            200: PRESENCE,
            400: OpenApiResponse(ERROR, description="`INVALID_BODY` / `INVALID_JSON`"),
            404: OpenApiResponse(ERROR, description="`TICKET_NOT_FOUND`, or `VIEWER_NOT_FOUND` (not your stream)"),
        },
    )
    def post(self, request: Request, ticket_id: str) -> Response:  # pragma: no cover - never routed
        raise NotImplementedError


VIEW_COUNT_STREAM_EVENTS = (
    "Events: `connected {connectionId, timestamp}`; `snapshot {views: [{id, name, count, exact}], "
    "timestamp}` (every view the caller sees, counted over the tickets the caller may see); "
    "`counts {views: [{id, count, exact}], timestamp}` (only the views whose count changed); "
    "`heartbeat {timestamp}`; `error {code, message, timestamp}` before closing. Frames carry no "
    "`id:`: a reconnect starts with a fresh `snapshot`. The views are read when the stream opens."
)


class ViewCountStreamSchema(APIView):
    """Schema stand-in for ticketing.view_counts.view_counts_stream (an async Django view)."""

    @extend_schema(
        operation_id="saved_view_counts_stream",
        summary="Live counts of the caller's saved views (SSE)",
        description=f"{VIEW_COUNT_STREAM_EVENTS}\n\n{_STREAM_COMMON}",
        tags=["views"],
        responses={
            (200, "text/event-stream"): _sse_response(VIEW_COUNT_STREAM_EVENTS),
            429: OpenApiResponse(ERROR, description="`TOO_MANY_STREAMS` (with `Retry-After`)"),
        },
    )
    def get(self, request: Request) -> Response:  # pragma: no cover - never routed
        raise NotImplementedError


_STREAMS = (
    ("ticket-list-updates", "POST", TicketListStreamSchema),
    ("notification-stream", "GET", NotificationStreamSchema),
    ("ticket-activity-stream", "GET", TicketActivityStreamSchema),
    ("ticket-presence", "POST", TicketPresenceSchema),
    ("saved-view-counts", "GET", ViewCountStreamSchema),
)
_PER_TICKET = {"ticket-activity-stream", "ticket-presence"}


def add_stream_endpoints(endpoints: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """PREPROCESSING_HOOKS: the streams (and the presence announcement beside them), which
    drf-spectacular skips as non-DRF views."""
    for url_name, method, view in _STREAMS:
        if url_name in _PER_TICKET:
            path = reverse(url_name, kwargs={"ticket_id": "TICKET"}).replace("TICKET", "{ticket_id}")
            regex = "^" + path.lstrip("/").replace("{ticket_id}", "(?P<ticket_id>[^/]+)") + "$"
        else:
            path = reverse(url_name)
            regex = path.lstrip("/")
        endpoints.append((path, regex, method, view.as_view()))
    return endpoints


# --- the description ------------------------------------------------------------------------

DESCRIPTION = """
Multi-tenant tickets, live lists, notifications and the partner event log. Details of every
decision are in docs/api.md.

**Callers.** Every `/api/v2/ticketing/` request carries `Authorization: Bearer <jwt>`,
`x-tenantid` and `realmname` (and optionally `issupportrequest`). The event API
(`/v2/system/events`) also takes a partner API key as `X-API-Key: <key>` or
`Authorization: ApiKey <key>`.

**Envelopes.** Success: `{"success": true, "data", "timestamp"}` (the event API keeps the
spec's `{"query", "result"}`). Every error: `{"success": false, "error": {"code",
"message", "details"}, "timestamp"}` (component `ErrorEnvelope`).

**Live streams (SSE).** `POST /api/v2/ticketing/ticket/sse/list/updates`,
`GET /api/v2/ticketing/ticket/sse/notifications` and `GET /api/v2/ticketing/ticket/{id}/sse`
answer `text/event-stream`; their operations list the event types.

**Partner websocket** `ws://<host>/v2/system/events/ws` (not an HTTP operation, so not listed
below). Authenticates at the handshake with `X-API-Key`, `Authorization: ApiKey <key>`, or
`Bearer` with `x-tenantid` and `realmname` (`?api_key=` for clients that cannot set headers).
Client messages: `{"action": "subscribe", "types": [...], "after_id": "<event id>"}` (answered
`{"action": "subscribed", ...}`; stored events after `after_id`, then live ones, with no gap or
duplicate) and `{"action": "ping"}` (answered `{"action": "pong"}`). Server messages are Events
as in `GET /v2/system/events`. Close codes: 4401 unauthorized, 4403 forbidden, 4404 unknown
tenant or realm, 4400 bad message, 4408 slow consumer, 4410 cursor older than retention, 1012
server restarting (reconnect with `after_id`), 1011 server error.
"""


def describe_api(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """POSTPROCESSING_HOOKS: the long description (settings cannot import this module)."""
    result["info"]["description"] = DESCRIPTION.strip()
    # Every key of the preference body is optional, yet one is needed: the body is required
    # (drf-spectacular only marks a body required when one of its fields is).
    preference = result["paths"].get("/api/v2/ticketing/user/preference", {}).get("put", {})
    if "requestBody" in preference:
        preference["requestBody"]["required"] = True
    return result
