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
    MergeSerializer,
    TicketListBodySerializer,
    WatcherWriteSerializer,
)

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

    class Meta:
        ref_name = "Ticket"


class MergedTicketSchema(TicketSchema):
    mergedInto = serializers.UUIDField()

    class Meta:
        ref_name = "MergedTicket"


class EscalatedTicketSchema(TicketSchema):
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

    class Meta:
        ref_name = "SlaPolicy"


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


TICKET = ok("Ticket", TicketSchema())
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
TICKET_MERGE = {
    "summary": "Merge this ticket into another (watchers of both notified)",
    "request": MergeSerializer,
    "responses": {200: MERGED_TICKET, 409: conflict("`ALREADY_MERGED` or `TARGET_MERGED`")},
}
TICKET_REOPEN = {
    "summary": "Reopen a resolved, closed or cancelled ticket",
    "request": None,
    "responses": {200: TICKET, 409: conflict("`TICKET_NOT_CLOSED`")},
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
    """`notificationTypes` names known types only."""

    target_class = "notifications.serializers.PreferenceSerializer"
    priority = 1

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        types = {name: {"type": "boolean"} for name in NotificationType.values}
        return {
            "type": "object",
            "properties": {"notificationTypes": {"type": "object", "properties": types, "additionalProperties": False}},
            "required": ["notificationTypes"],
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


_STREAMS = (
    ("ticket-list-updates", "POST", TicketListStreamSchema),
    ("notification-stream", "GET", NotificationStreamSchema),
)


def add_stream_endpoints(endpoints: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """PREPROCESSING_HOOKS: the streams, which drf-spectacular skips as non-DRF views."""
    for url_name, method, view in _STREAMS:
        path = reverse(url_name)
        endpoints.append((path, path.lstrip("/"), method, view.as_view()))
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

**Live streams (SSE).** `POST /api/v2/ticketing/ticket/sse/list/updates` and
`GET /api/v2/ticketing/ticket/sse/notifications` answer `text/event-stream`; their operations
list the event types.

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
    return result
