from django.urls import path

from sla import views

urlpatterns = [
    path("sla/policy", views.SlaPolicyView.as_view(), name="sla-policies"),
]
