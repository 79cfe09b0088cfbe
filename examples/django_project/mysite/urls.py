from __future__ import annotations

from django.urls import path
from shop import views

urlpatterns = [
    path("total/", views.total),
    path("orders/", views.place_order),
    path("orders/<str:task_id>/", views.order_status),
]
