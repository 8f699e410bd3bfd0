from django.urls import path

from ticketing import streams, views

urlpatterns = [
    path("ticket", views.TicketCollectionView.as_view(), name="ticket-create"),
    path("ticket/list", views.TicketListView.as_view(), name="ticket-list"),
    path("ticket/sse/list/updates", streams.ticket_list_updates, name="ticket-list-updates"),
    path("ticket/<str:ticket_id>", views.TicketDetailView.as_view(), name="ticket-detail"),
    path("ticket/<str:ticket_id>/comments", views.TicketCommentsView.as_view(), name="ticket-comments"),
    path("ticket/<str:ticket_id>/products", views.TicketProductsView.as_view(), name="ticket-products"),
    path(
        "ticket/<str:ticket_id>/products/<str:sku>",
        views.TicketProductDetailView.as_view(),
        name="ticket-product-detail",
    ),
]
