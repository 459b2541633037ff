"""The orders app's tasks, found by pigeon's autodiscovery (``tasks.py`` of each app)."""

from orders.models import Fulfilment, Order
from pigeon.integrations.django import get_app

app = get_app()


@app.task(retries=3)
def fulfil(order_ref: str) -> bool:
    """Fulfil an order; sent by ``views.place_order`` in the order's transaction."""
    found: bool = Order.objects.filter(ref=order_ref).exists()
    Fulfilment.objects.create(order_ref=order_ref, found=found)
    return found
