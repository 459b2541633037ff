"""The App of the periodic end-to-end test: one task ticking every second (URL from
PIGEON_URL). Each run appends ``tick message-id pid time`` to the file named by
PIGEON_E2E_TICKS."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pigeon

app = pigeon.App()


@app.periodic(every=timedelta(seconds=1), name="e2e.tick", queue="ticks", lease=1.0)
def tick() -> None:
    current = pigeon.current()
    assert current.tick is not None
    line = f"{round(current.tick)} {current.id} {os.getpid()} {time.time():.3f}\n"
    with Path(os.environ["PIGEON_E2E_TICKS"]).open("a") as f:
        f.write(line)
