"""One worker process (``pigeon worker -p 1``): a Worker on an event loop of its own,
stopped by SIGTERM or Ctrl-C.

The signals are handled from the moment the command starts until the process exits, not
only while the event loop runs: a SIGTERM that arrives while the app is still being imported,
or after the worker has stopped by itself (``--max-tasks``), asks the process to stop; it
must not kill it with a signal's exit status, which a supervisor would count as a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

from pigeon.app import App
from pigeon.worker.health import HealthConfig, WorkerHealth, serving
from pigeon.worker.loop import UNHEALTHY_AFTER, Worker
from pigeon.worker.observer import Observer

log = logging.getLogger("pigeon.worker")

#: The exit code of a process stopped at once by a second Ctrl-C.
EXIT_INTERRUPTED = 130

_HARD_EXIT_NOTE = (
    b"SIGINT again: exiting now; the running tasks are redelivered when their leases run out\n"
)


class StopSignals:
    """SIGTERM and SIGINT for a worker process, from ``install()`` until it exits.

    The first signal asks the worker to stop (at once if it runs, as soon as it starts if it
    does not yet); a second SIGINT exits the process at once.
    """

    HANDLED = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: Callable[[int], None] | None = None

    def install(self) -> None:
        """Handle the signals from now on (call from the main thread)."""
        for signum in self.HANDLED:
            signal.signal(signum, self._on_signal)

    def attach(self, loop: asyncio.AbstractEventLoop, stop: Callable[[int], None]) -> None:
        """From now on a signal calls ``stop(signum)`` on ``loop`` (at once if one came)."""
        self._loop = loop
        self._stop = stop
        if self.received:
            loop.call_soon(stop, self.received[0])

    def detach(self) -> None:
        self._loop = None
        self._stop = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # This runs between two bytecodes of the main thread, perhaps in the middle of a
        # write to stderr: no logging here, only the loop's thread-safe wake-up.
        self.received.append(signum)
        if signum == signal.SIGINT and self.received.count(signal.SIGINT) > 1:
            os.write(sys.stderr.fileno(), _HARD_EXIT_NOTE)
            os._exit(EXIT_INTERRUPTED)
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            # The loop may be blocked in select(): call_soon_threadsafe wakes it up.
            loop.call_soon_threadsafe(stop, signum)


def run_worker(
    app: App,
    queues: Sequence[str] | None,
    concurrency: int,
    *,
    grace: float,
    max_tasks: int | None = None,
    signals: StopSignals | None = None,
    scheduler: bool = True,
    observer: Observer | None = None,
    health: HealthConfig | None = None,
) -> int:
    """Run one Worker in this process until it stops; returns its exit code.

    Call from the main thread. ``signals`` are the handlers installed when the command
    started (installed here if not given). ``scheduler``: run the App's periodic tasks.
    ``observer``: what sees the worker's starts and outcomes (metrics), if anything.
    ``health``: the probes to answer (``worker/health.py``), from threads of their own.
    """
    if signals is None:
        signals = StopSignals()
        signals.install()

    config = health or HealthConfig()

    async def work() -> int:
        worker = Worker(
            app,
            queues,
            concurrency,
            grace=grace,
            max_tasks=max_tasks,
            scheduler=scheduler,
            observer=observer,
            # Probed, a worker whose broker is down says "not ready" and waits for it: the
            # orchestrator decides. Unprobed, it exits 3 so that something restarts it.
            unhealthy_after=math.inf if config.enabled else UNHEALTHY_AFTER,
        )
        stopping = False

        def stop(signum: int) -> None:
            nonlocal stopping
            name = signal.Signals(signum).name
            if stopping:
                log.info("%s: already stopping", name)
                return
            stopping = True
            hint = " (Ctrl-C again to exit now)" if signum == signal.SIGINT else ""
            log.info(
                "%s: stopping; %d running tasks get %.0fs to finish%s",
                name,
                worker.running,
                grace,
                hint,
            )
            worker.stop()

        loop = asyncio.get_running_loop()
        signals.attach(loop, stop)
        try:
            with serving(config, WorkerHealth(worker, loop, config)):
                return await worker.run()
        finally:
            signals.detach()
            await app.close()

    code = asyncio.run(work())
    exit_if_threads_linger(code)
    return code


def exit_if_threads_linger(code: int, wait: float = 1.0) -> None:
    """Exit now with ``code`` if threads other than daemons are still running.

    A sync task still running in a thread past the grace period would keep the process
    alive at exit (Python joins its worker threads); its message was released already, so
    the process exits without waiting for it.
    """
    deadline = time.monotonic() + wait
    me = threading.current_thread()
    others = [t for t in threading.enumerate() if t is not me and not t.daemon]
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    lingering = [t for t in others if t.is_alive()]
    if lingering:
        log.warning(
            "%d task threads are still running past the grace period; exiting without them"
            " (their messages were released for another worker)",
            len(lingering),
        )
        exit_now(code)


def exit_now(code: int) -> None:
    """Flush what can be flushed and leave the process at once, threads or not."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream
            stream.flush()
    os._exit(code)
