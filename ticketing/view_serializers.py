"""Saved views: the request body of their CRUD endpoints and their output shape."""

from typing import Any

from rest_framework import serializers

from core.serializers import StrictObjectSerializer
from events.serializers import iso
from ticketing.serializers import SortOrderItemSerializer, sort_order_field, user_ref


class SavedViewWriteSerializer(StrictObjectSerializer):
    """The body of POST / PATCH `views`. The filter is checked by the list's own parser in
    the service (422 INVALID_FILTER, as on the list)."""

    name = serializers.CharField(max_length=200, trim_whitespace=True)
    filter = serializers.JSONField(required=False, allow_null=True)
    sortOrder = sort_order_field(required=False)
    type = serializers.ChoiceField(choices=["template", "agent", "user"], required=False)
    visibility = serializers.ChoiceField(choices=["private", "team", "tenant"], required=False)
    team = serializers.CharField(max_length=100, required=False, allow_blank=True, allow_null=True)

    def validate_sortOrder(self, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        # A PATCH validates partially, and DRF passes that on to the items: hold them whole.
        if value and any("column" not in item for item in value):
            raise serializers.ValidationError("Each item names its column.")
        return value


def saved_view_to_dict(view: Any, *, editable: bool) -> dict[str, Any]:
    return {
        "id": str(view.id),
        "name": view.name,
        "filter": view.filter or {},
        "sortOrder": view.sort_order or [],
        "type": view.list_type,
        "visibility": view.visibility,
        "team": view.team or None,
        "owner": user_ref(view.owner),
        "editable": editable,
        "createdAt": iso(view.created_at),
        "updatedAt": iso(view.updated_at),
    }


class SavedViewSchema(serializers.Serializer):
    """Output shape of a saved view (schema only; views build the dict above)."""

    id = serializers.UUIDField()
    name = serializers.CharField()
    filter = serializers.JSONField(help_text="The list filter, as in POST ticket/list.")
    sortOrder = serializers.ListField(child=SortOrderItemSerializer())
    type = serializers.ChoiceField(choices=["template", "agent", "user"])
    visibility = serializers.ChoiceField(choices=["private", "team", "tenant"])
    team = serializers.CharField(allow_null=True)
    owner = serializers.JSONField(help_text="{id, name}")
    editable = serializers.BooleanField(help_text="Whether the caller may change or delete it.")
    createdAt = serializers.DateTimeField()
    updatedAt = serializers.DateTimeField()

    class Meta:
        ref_name = "SavedView"
