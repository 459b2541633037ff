import uuid

from django.db import models


class Order(models.Model):
    # Named by a UUID, not by its row id: SQLite hands a rolled-back row's id out again.
    ref = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    item = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)


class Fulfilment(models.Model):
    """One row per run of ``tasks.fulfil``: what the example's tests count."""

    order_ref = models.UUIDField(db_index=True)
    # Whether the order was there when the task ran: it runs after the commit, or never.
    found = models.BooleanField()
    ran_at = models.DateTimeField(auto_now_add=True)
