"""The systems under test: one adapter module per system, each a ``peers.base.System``.

Adapters import their task queue library at the top; the harness imports an adapter only
when its system runs, so a missing library skips that one system with a one-line note.
"""

from __future__ import annotations

import importlib

from peers.base import Broker, System

#: name -> ("module:class", broker), in the order of the results table. The broker is
#: known here so that the harness can tell which servers a run needs without importing.
SYSTEMS: dict[str, tuple[str, Broker]] = {
    "pigeon-memory": ("peers.pigeon_adapter:PigeonMemory", Broker.MEMORY),
    "pigeon-sqlite": ("peers.pigeon_adapter:PigeonSQLite", Broker.SQLITE),
    "pigeon-redis": ("peers.pigeon_adapter:PigeonRedis", Broker.REDIS),
    "pigeon-postgres": ("peers.pigeon_adapter:PigeonPostgres", Broker.POSTGRES),
    "pigeon-nats": ("peers.pigeon_adapter:PigeonNats", Broker.NATS),
    "celery": ("peers.celery_adapter:CelerySystem", Broker.REDIS),
    "dramatiq": ("peers.dramatiq_adapter:DramatiqSystem", Broker.REDIS),
    "arq": ("peers.arq_adapter:ArqSystem", Broker.REDIS),
    "taskiq": ("peers.taskiq_adapter:TaskiqSystem", Broker.REDIS),
    "saq": ("peers.saq_adapter:SaqSystem", Broker.REDIS),
    "huey": ("peers.huey_adapter:HueySystem", Broker.REDIS),
    "rq": ("peers.rq_adapter:RqSystem", Broker.REDIS),
    "procrastinate": ("peers.procrastinate_adapter:ProcrastinateSystem", Broker.POSTGRES),
    "pgqueuer": ("peers.pgqueuer_adapter:PgQueuerSystem", Broker.POSTGRES),
    "taskiq-nats": ("peers.taskiq_nats_adapter:TaskiqNatsSystem", Broker.NATS),
}

#: Names that stand for several systems in ``--systems``.
GROUPS: dict[str, list[str]] = {
    "all": list(SYSTEMS),
    "pigeon": [name for name in SYSTEMS if name.startswith("pigeon-")],
    "peers": [name for name in SYSTEMS if not name.startswith("pigeon-")],
}


class Unavailable(Exception):
    """A system cannot run here: a module it needs does not import (message: one line)."""


def is_pigeon(name: str) -> bool:
    return name.startswith("pigeon-")


def expand(names: list[str]) -> list[str]:
    """System names for ``--systems`` words (groups expanded, order of SYSTEMS, no repeats).

    Raises ValueError naming the unknown word.
    """
    wanted: set[str] = set()
    for word in names:
        if word in GROUPS:
            wanted.update(GROUPS[word])
        elif word in SYSTEMS:
            wanted.add(word)
        else:
            known = ", ".join([*GROUPS, *SYSTEMS])
            raise ValueError(f"unknown system {word!r}; known: {known}")
    return [name for name in SYSTEMS if name in wanted]


def load(name: str) -> System:
    """A fresh ``System`` for ``name``. Raises Unavailable when a module is missing."""
    module_name, cls_name = SYSTEMS[name][0].split(":")
    try:
        module = importlib.import_module(module_name)
        cls: type[System] = getattr(module, cls_name)
        for required in cls.requires:
            importlib.import_module(required)
    except ImportError as exc:
        missing = exc.name or str(exc)
        raise Unavailable(f"module {missing!r} does not import ({exc})") from None
    system = cls()
    assert system.broker is SYSTEMS[name][1], f"{name}: SYSTEMS names the wrong broker"
    return system
