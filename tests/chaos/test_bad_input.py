"""Bad input written straight into the backend: every message gets a dead letter with the
reason, the worker keeps running, and the good messages around them all succeed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pigeon
from pigeon.message import Message, new_id
from pigeon.worker import Worker
from tests.servers import BACKEND_URLS, cleanup, make_url, require_server, scheme_of

GOOD_ARGS = msgspec.Raw(b'{"a":1,"b":2}')

#: Bytes that are not JSON at all, truncated JSON, and JSON of the wrong shape or types.
raw_bytes = st.one_of(
    st.binary(min_size=1, max_size=40),
    st.sampled_from([b'{"a":', b'{"a":1,"b"', b"[", b'"', b"\xff\xfe", b"nul"]),
    st.sampled_from([b'{"a":"x","b":2}', b"{}", b'{"a":1}', b'{"a":1,"b":2,"c":3}', b"[1,2]"]),
    st.sampled_from([b"null", b"true", b"1e999", b'{"a":1.5,"b":2}', b'{"a":[1],"b":2}']),
)

bad_message = st.one_of(
    st.builds(lambda kw: ("add", msgspec.Raw(b"[]"), msgspec.Raw(kw)), raw_bytes),
    st.builds(lambda a: ("add", msgspec.Raw(a), GOOD_ARGS), raw_bytes),
    # No NUL in names: the App refuses such a task name at registration (PostgreSQL text
    # cannot hold one), so no sender can produce it (tests/unit/test_task_options.py).
    st.builds(
        lambda name: (name, msgspec.Raw(b"[]"), GOOD_ARGS),
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30
        ),
    ),
)

REASONS = ("UndecodableMessage", "InvalidArguments", "TaskNotFound")


def is_valid_call(task: str, args: bytes, kwargs: bytes) -> bool:
    """Whether a fuzzed message happens to be a good call of add(a: int, b: int)."""
    try:
        if task != "add":
            return False
        pigeon.App("memory://").task(name="add")(_add).codec.decode_args(args, kwargs)
    except pigeon.PigeonError:
        return False
    return True


async def _add(a: int, b: int) -> int:
    return a + b


async def run_batch(url: str, bad: list[tuple[str, msgspec.Raw, msgspec.Raw]]) -> None:
    app = pigeon.App(url)
    app.task(name="add")(_add)
    messages = [Message(id=new_id(), task=t, args=a, kwargs=k) for t, a, k in bad]
    good = [Message(id=new_id(), task="add", kwargs=GOOD_ARGS) for _ in range(5)]
    backend = await app.open()
    await backend.enqueue([*messages, *good])  # straight into storage, no send-side checks
    worker = Worker(app, concurrency=8)
    running = asyncio.create_task(worker.run())
    try:
        ids = [m.id for m in [*messages, *good]]
        async with asyncio.timeout(30):
            while len(found := await backend.results(ids)) < len(ids):
                await asyncio.sleep(0.01)
        assert not running.done(), "the worker must keep running"
        for m in good:
            assert found[m.id].state == "succeeded"
        letters = {d.id: d.reason for d in await backend.dead_letters(limit=1000)}
        for m in messages:
            if is_valid_call(m.task, bytes(m.args), bytes(m.kwargs)):
                continue
            assert found[m.id].state == "dead", m
            assert letters[m.id].startswith(REASONS), letters[m.id]
    finally:
        worker.stop()
        assert await running == 0
        await app.close()


@pytest.mark.parametrize("template", BACKEND_URLS, ids=scheme_of)
def test_malformed_messages_are_dead_lettered_and_the_worker_keeps_going(
    template: str, tmp_path: Path
) -> None:
    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(bad_message, min_size=1, max_size=15))
    def run(bad: list[tuple[str, msgspec.Raw, msgspec.Raw]]) -> None:
        home = tmp_path / new_id()
        home.mkdir()
        url = make_url(template, home)
        require_server(url)
        try:
            asyncio.run(run_batch(url, bad))
        finally:
            asyncio.run(cleanup(url))

    run()
