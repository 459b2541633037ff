import uuid

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from orders.models import Order
from orders.tasks import fulfil


class OrderRejected(Exception):
    """Raised inside the order's transaction: the order and its send are rolled back."""

    def __init__(self, ref: uuid.UUID) -> None:
        super().__init__(f"order {ref} rejected")
        self.ref = ref


def place_order(item: str, *, reject: bool = False) -> Order:
    """Store an order and send its fulfilment, in one transaction: the task runs only if the
    order commits (and then finds it). ``reject`` raises OrderRejected after the send."""
    with transaction.atomic():
        order: Order = Order.objects.create(item=item)
        fulfil.send(str(order.ref))
        if reject:
            raise OrderRejected(order.ref)
    return order


@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    order = place_order(request.POST.get("item", "a book"))
    return JsonResponse({"ref": str(order.ref)}, status=201)
