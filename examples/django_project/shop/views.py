"""Sync Django views that enqueue through ebind's blocking API."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from mysite.ebind_app import app

import ebind
from ebind.errors import InvalidName
from shop.tasks import place_order as place_order_task
from shop.tasks import total as total_task


def _prices(request: HttpRequest) -> list[int]:
    raw = request.GET.get("prices", "")
    try:
        return [int(p) for p in raw.split(",") if p]
    except ValueError:
        raise ValueError(f"prices must be comma-separated integers, got {raw!r}") from None


def total(request: HttpRequest) -> JsonResponse:
    """Enqueue, wait for the result, answer with it."""
    try:
        prices = _prices(request)
        discount = int(request.GET.get("discount", "0"))
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    try:
        value = total_task.sync.delay(prices, discount_pct=discount).get(timeout=10)
    except ebind.TaskFailed as exc:
        return JsonResponse({"error": f"{exc.error.kind}: {exc.error.message}"}, status=422)
    return JsonResponse({"total": value})


def place_order(request: HttpRequest) -> JsonResponse:
    """Enqueue and answer at once with the task id (202); the client polls for the result."""
    try:
        prices = _prices(request)
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    res = place_order_task.sync.delay(request.GET.get("customer", "anonymous"), prices)
    return JsonResponse({"task_id": res.id}, status=202)


def order_status(request: HttpRequest, task_id: str) -> JsonResponse:
    """The result of an order placed earlier, by task id (any web process of this client id)."""
    try:
        res = app.sync.future(task_id)
        return JsonResponse({"status": res.get(timeout=float(request.GET.get("wait", "10")))})
    except InvalidName as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    except ebind.TaskTimeout:
        return JsonResponse({"status": "pending"}, status=202)
