from django.urls import path, register_converter

from ticketing import streams, view_api, view_counts, views
from ticketing.serializers import SKU


class SkuConverter:
    """A product's SKU in its URL: any SKU a product can have, `/` included."""

    regex = SKU

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(SkuConverter, "sku")

urlpatterns = [
    path("ticket", views.TicketCollectionView.as_view(), name="ticket-create"),
    path("ticket/list", views.TicketListView.as_view(), name="ticket-list"),
    path("ticket/sse/list/updates", streams.ticket_list_updates, name="ticket-list-updates"),
    path("views", view_api.SavedViewCollectionView.as_view(), name="saved-views"),
    path("views/counts/stream", view_counts.view_counts_stream, name="saved-view-counts"),
    path("views/<str:view_id>", view_api.SavedViewDetailView.as_view(), name="saved-view"),
    path("ticket/<str:ticket_id>", views.TicketDetailView.as_view(), name="ticket-detail"),
    path("ticket/<str:ticket_id>/sse", streams.ticket_activity_stream, name="ticket-activity-stream"),
    path("ticket/<str:ticket_id>/presence", streams.ticket_presence, name="ticket-presence"),
    path("ticket/<str:ticket_id>/comments", views.TicketCommentsView.as_view(), name="ticket-comments"),
    path("ticket/<str:ticket_id>/watchers", views.TicketWatchersView.as_view(), name="ticket-watchers"),
    path("ticket/<str:ticket_id>/watchers/<str:user>", views.TicketWatcherView.as_view(), name="ticket-watcher"),
    path("ticket/<str:ticket_id>/approvals", views.TicketApprovalsView.as_view(), name="ticket-approvals"),
    path(
        "ticket/<str:ticket_id>/approvals/<str:approval_id>/approve",
        views.ApprovalDecisionView.as_view(decision="approve"),
        name="approval-approve",
    ),
    path(
        "ticket/<str:ticket_id>/approvals/<str:approval_id>/reject",
        views.ApprovalDecisionView.as_view(decision="reject"),
        name="approval-reject",
    ),
    path("ticket/<str:ticket_id>/merge", views.TicketMergeView.as_view(), name="ticket-merge"),
    path("ticket/<str:ticket_id>/escalate", views.TicketEscalateView.as_view(), name="ticket-escalate"),
    path("ticket/<str:ticket_id>/reopen", views.TicketReopenView.as_view(), name="ticket-reopen"),
    path("ticket/<str:ticket_id>/products", views.TicketProductsView.as_view(), name="ticket-products"),
    path(
        "ticket/<str:ticket_id>/products/<sku:sku>",
        views.TicketProductDetailView.as_view(),
        name="ticket-product-detail",
    ),
]
