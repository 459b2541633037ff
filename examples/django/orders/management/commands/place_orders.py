"""``manage.py place_orders N [--reject 0.3]``: place N orders, a share of them rejected
(rolled back), and print which committed and which did not, as JSON."""

import json
import random
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from orders.views import OrderRejected, place_order


class Command(BaseCommand):
    help = "Place N orders, rolling back a share of them; print the refs of each kind (JSON)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("count", type=int)
        parser.add_argument("--reject", type=float, default=0.3, help="share rolled back")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: Any, count: int, reject: float, seed: int, **options: Any) -> None:
        rejected = set(random.Random(seed).sample(range(count), round(count * reject)))
        committed: list[str] = []
        rolled_back: list[str] = []
        for i in range(count):
            try:
                committed.append(str(place_order(f"item {i}", reject=i in rejected).ref))
            except OrderRejected as exc:
                rolled_back.append(str(exc.ref))
        self.stdout.write(json.dumps({"committed": committed, "rolled_back": rolled_back}))
