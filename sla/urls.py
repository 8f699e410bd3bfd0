from django.urls import path

from sla import views

urlpatterns = [
    path("sla/policy", views.SlaPolicyView.as_view(), name="sla-policies"),
    path("sla/calendars", views.SlaCalendarListView.as_view(), name="sla-calendars"),
    path("sla/calendars/<str:calendar_id>", views.SlaCalendarView.as_view(), name="sla-calendar"),
]
