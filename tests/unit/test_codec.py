"""The codec: arguments and results round-trip against the task's type hints, values of the
wrong type are refused at send, messages round-trip, and ids are time-ordered UUIDv7s."""

from __future__ import annotations

import enum
import inspect
import itertools
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pigeon import EncodeError, Failure
from pigeon.codec import TaskCodec, decode_message, encode_message, encode_value
from pigeon.message import JoinSpec, Message, new_id

# -------------------------------------------------------------------------------------------
# Types and functions the tasks below take
# -------------------------------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Item(msgspec.Struct):
    name: str
    quantity: int = 1
    note: str | None = None
    tags: list[str] = []


@dataclass
class Point:
    x: float
    y: float
    label: str | None = None
    history: list[int] = field(default_factory=list)


def scalars(i: int, f: float, s: str, b: bool, n: None, raw: bytes) -> None: ...


def moments(at: datetime, day: date, uid: uuid.UUID, amount: Decimal, colour: Colour) -> None: ...


def naive(at: datetime) -> None: ...


def nested(
    matrix: list[list[int]], index: dict[str, list[float]], pair: tuple[int, str]
) -> None: ...


def records(item: Item, point: Point, items: list[Item], points: dict[str, Point]) -> None: ...


def optional(
    a: int | None, b: str | None = None, c: int = 5, d: list[int] | None = None
) -> None: ...


def keyword_only(a: int, *, b: str, c: float = 1.5) -> None: ...


def variadic(a: int, *rest: int) -> None: ...


def variadic_keywords(a: int, **extra: str) -> None: ...


def positional_only(a: int, /, b: int, c: int = 0) -> None: ...


def everything(a: int, /, b: str, *rest: float, c: bool, d: int = 0, **extra: date) -> None: ...


def untyped(a, b=None):  # type: ignore[no-untyped-def]
    ...


CODECS = {
    fn.__name__: TaskCodec(fn, fn.__name__)
    for fn in (
        scalars,
        moments,
        naive,
        nested,
        records,
        optional,
        keyword_only,
        variadic,
        variadic_keywords,
        positional_only,
        everything,
        untyped,
    )
}

# -------------------------------------------------------------------------------------------
# Strategies
# -------------------------------------------------------------------------------------------

ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
floats = st.floats(allow_nan=False, allow_infinity=False)
texts = st.text()
offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)
decimals = st.decimals(allow_nan=False, allow_infinity=False)
items = st.builds(
    Item,
    name=texts,
    quantity=ints,
    note=st.none() | texts,
    tags=st.lists(texts, max_size=3),
)
points = st.builds(
    Point,
    x=floats,
    y=floats,
    label=st.none() | texts,
    history=st.lists(ints, max_size=3),
)
json_values = st.recursive(
    st.none() | st.booleans() | ints | floats | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=10,
)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0, -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    if isinstance(a, msgspec.Struct):
        return same(msgspec.structs.asdict(a), msgspec.structs.asdict(b))
    if isinstance(a, Point):
        return same(vars(a), vars(b))
    return bool(a == b)


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Send ``fn(*args, **kwargs)`` through its codec and check the worker's call is the same.

    The arguments are encoded as at send, decoded as on the worker, and bound to the
    function's signature both ways: every parameter must get the same value, of the same type.
    """
    codec = CODECS[fn.__name__]
    raw_args, raw_kwargs = codec.encode_args(args, kwargs)
    call_args, call_kwargs = codec.decode_args(bytes(raw_args), bytes(raw_kwargs))
    signature = inspect.signature(fn)
    sent = signature.bind(*args, **kwargs)
    received = signature.bind(*call_args, **call_kwargs)  # the worker's call is valid...
    sent.apply_defaults()
    received.apply_defaults()
    assert same(received.arguments, sent.arguments), (received.arguments, sent.arguments)


# -------------------------------------------------------------------------------------------
# Arguments round-trip
# -------------------------------------------------------------------------------------------


@given(i=ints, f=floats, s=texts, b=st.booleans(), raw=st.binary())
def test_scalars_round_trip(i: int, f: float, s: str, b: bool, raw: bytes) -> None:
    call(scalars, i, f, s, b, None, raw)
    call(scalars, i=i, f=f, s=s, b=b, n=None, raw=raw)


@given(
    at=aware_datetimes,
    day=st.dates(),
    uid=st.uuids(),
    amount=decimals,
    colour=st.sampled_from(Colour),
)
def test_datetimes_dates_uuids_decimals_and_enums_round_trip(
    at: datetime, day: date, uid: uuid.UUID, amount: Decimal, colour: Colour
) -> None:
    call(moments, at, day, uid, amount, colour)


@given(at=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_naive_datetimes_round_trip_naive(at: datetime) -> None:
    call(naive, at)


@given(
    matrix=st.lists(st.lists(ints, max_size=4), max_size=4),
    index=st.dictionaries(texts, st.lists(floats, max_size=3), max_size=4),
    pair=st.tuples(ints, texts),
)
def test_nested_lists_dicts_and_tuples_round_trip(
    matrix: list[list[int]], index: dict[str, list[float]], pair: tuple[int, str]
) -> None:
    call(nested, matrix, index, pair)


@given(
    item=items,
    point=points,
    many=st.lists(items, max_size=3),
    by_name=st.dictionaries(texts, points, max_size=3),
)
def test_structs_and_dataclasses_round_trip(
    item: Item, point: Point, many: list[Item], by_name: dict[str, Point]
) -> None:
    call(records, item, point, many, by_name)


@given(
    a=st.none() | ints,
    rest=st.fixed_dictionaries(
        {}, optional={"b": st.none() | texts, "c": ints, "d": st.none() | st.lists(ints)}
    ),
)
def test_optional_parameters_and_defaults_round_trip(a: int | None, rest: dict[str, Any]) -> None:
    call(optional, a, **rest)


@given(a=ints, b=texts, c=st.none() | floats)
def test_keyword_only_parameters_round_trip(a: int, b: str, c: float | None) -> None:
    if c is None:
        call(keyword_only, a, b=b)
    else:
        call(keyword_only, a, b=b, c=c)


@given(a=ints, rest=st.lists(ints, max_size=5))
def test_var_positional_arguments_round_trip(a: int, rest: list[int]) -> None:
    call(variadic, a, *rest)


@given(a=ints, extra=st.dictionaries(st.text().filter(lambda k: k != "a"), texts, max_size=4))
def test_var_keyword_arguments_round_trip(a: int, extra: dict[str, str]) -> None:
    call(variadic_keywords, a, **extra)
    call(variadic_keywords, a=a, **extra)


@given(a=ints, b=ints, c=st.none() | ints)
def test_positional_only_parameters_round_trip(a: int, b: int, c: int | None) -> None:
    call(positional_only, a, b) if c is None else call(positional_only, a, b, c=c)


@given(
    a=ints,
    b=texts,
    rest=st.lists(floats, max_size=3),
    c=st.booleans(),
    d=st.none() | ints,
    extra=st.dictionaries(
        st.text().filter(lambda k: k not in {"a", "b", "c", "d"}), st.dates(), max_size=3
    ),
)
def test_every_kind_of_parameter_together_round_trips(
    a: int, b: str, rest: list[float], c: bool, d: int | None, extra: dict[str, date]
) -> None:
    if d is None:
        call(everything, a, b, *rest, c=c, **extra)
    else:
        call(everything, a, b, *rest, c=c, d=d, **extra)


@given(a=json_values, b=json_values)
def test_untyped_parameters_take_json_values(a: Any, b: Any) -> None:
    call(untyped, a, b)


def _named(call: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip("abcd", call, strict=False))


optional_calls = st.lists(
    st.tuples(st.none() | ints, st.none() | texts, ints, st.none() | st.lists(ints, max_size=3))
    .flatmap(lambda full: st.integers(1, 4).map(lambda n: full[:n]))  # trailing ones left out
    .flatmap(
        lambda call: st.sampled_from([call, _named(call), dict(reversed(_named(call).items()))])
    ),
    max_size=20,
)


@given(calls=optional_calls, positional_only=st.booleans())
def test_a_bulk_encode_encodes_each_call_as_one_send_would(
    calls: list[tuple[Any, ...] | dict[str, Any]], positional_only: bool
) -> None:
    # encode_many encodes all the calls at once (as tuples only, or mixed with dicts); each
    # must come out byte for byte as encode_args makes it for that call alone.
    codec = CODECS["optional"]
    if positional_only:
        calls = [c for c in calls if isinstance(c, tuple)]
    raw_args, raw_kwargs = codec.encode_many(calls)
    assert len(raw_args) == len(raw_kwargs) == len(calls)
    for one, args, kwargs in zip(calls, raw_args, raw_kwargs, strict=True):
        alone = codec.encode_args(one, {}) if isinstance(one, tuple) else codec.encode_args((), one)
        assert (bytes(args), bytes(kwargs)) == (bytes(alone[0]), bytes(alone[1]))


@given(calls=st.lists(st.tuples(items, points, st.lists(items, max_size=2)), max_size=8))
def test_a_bulk_encode_of_structs_and_dataclasses_matches_one_by_one(
    calls: list[tuple[Item, Point, list[Item]]],
) -> None:
    codec = CODECS["records"]
    calls_with_points = [(*c, {"p": c[1]}) for c in calls]
    _, raw_kwargs = codec.encode_many(calls_with_points)
    for one, kwargs in zip(calls_with_points, raw_kwargs, strict=True):
        assert bytes(kwargs) == bytes(codec.encode_args(one, {})[1])
        assert codec.decode_args(b"[]", bytes(kwargs))[0] == []


def test_a_bulk_encode_names_the_first_bad_call() -> None:
    codec = CODECS["optional"]
    with pytest.raises(EncodeError, match=r"calls\[2\]: .*invalid arguments"):
        codec.encode_many([(1,), (2, "x"), ("not an int",), (4,)])
    with pytest.raises(EncodeError, match=r"calls\[1\]: .*too many positional"):
        codec.encode_many([(1,), (1, None, 5, None, "extra")])
    assert codec.encode_many([]) == ([], [])


def test_bytes_travel_as_base64_json_and_decode_back_to_bytes() -> None:
    codec = CODECS["scalars"]
    raw_args, raw_kwargs = codec.encode_args((1, 1.0, "", True, None, b"\x00\xff"), {})
    assert msgspec.json.decode(bytes(raw_kwargs))["raw"] == "AP8="
    _, kwargs = codec.decode_args(bytes(raw_args), bytes(raw_kwargs))
    assert kwargs["raw"] == b"\x00\xff"


def test_the_worker_calls_the_function_with_what_it_decodes() -> None:
    codec = CODECS["everything"]
    raw_args, raw_kwargs = codec.encode_args(
        (1, "b", 2.5, 3.5), {"c": True, "when": date(2024, 1, 2)}
    )
    args, kwargs = codec.decode_args(bytes(raw_args), bytes(raw_kwargs))
    seen: list[Any] = []

    def spy(a: int, /, b: str, *rest: float, c: bool, d: int = 0, **extra: date) -> None:
        seen.append((a, b, rest, c, d, extra))

    spy(*args, **kwargs)
    assert seen == [(1, "b", (2.5, 3.5), True, 0, {"when": date(2024, 1, 2)})]


# -------------------------------------------------------------------------------------------
# Values of the wrong type are refused at send
# -------------------------------------------------------------------------------------------

WRONG = [
    (scalars, ("1", 1.0, "s", True, None, b""), {}, "Expected `int`, got `str`"),
    (scalars, (1.5, 1.0, "s", True, None, b""), {}, "Expected `int`, got `float`"),
    (scalars, (True, 1.0, "s", True, None, b""), {}, "Expected `int`, got `bool`"),
    (scalars, (None, 1.0, "s", True, None, b""), {}, "Expected `int`, got `null`"),
    (scalars, (1, "1.0", "s", True, None, b""), {}, "Expected `float`, got `str`"),
    (scalars, (1, math.inf, "s", True, None, b""), {}, "float"),
    (scalars, (1, math.nan, "s", True, None, b""), {}, "float"),
    (scalars, (1, 1.0, 7, True, None, b""), {}, "Expected `str`, got `int`"),
    (scalars, (1, 1.0, "s", 1, None, b""), {}, "Expected `bool`, got `int`"),
    (scalars, (1, 1.0, "s", True, 0, b""), {}, "Expected `null`, got `int`"),
    (scalars, (1, 1.0, "s", True, None, 5), {}, "Expected `bytes`, got `int`"),
    # Values that JSON would turn into strings must not pass for a str.
    (scalars, (1, 1.0, b"bytes", True, None, b""), {}, "Expected `str`, got `bytes`"),
    (scalars, (1, 1.0, datetime.now(UTC), True, None, b""), {}, "Expected `str`"),
    (scalars, (1, 1.0, uuid.uuid4(), True, None, b""), {}, "Expected `str`"),
    (scalars, (1, 1.0, Decimal("1.5"), True, None, b""), {}, "Expected `str`"),
    (scalars, (1, 1.0, object(), True, None, b""), {}, "str"),
    (moments, ("tomorrow", date.today(), uuid.uuid4(), Decimal(1), Colour.RED), {}, "datetime"),
    (
        moments,
        (datetime.now(UTC), datetime.now(), uuid.uuid4(), Decimal(1), Colour.RED),
        {},
        "date",
    ),
    (
        moments,
        (datetime.now(UTC), date.today(), "not-a-uuid", Decimal(1), Colour.RED),
        {},
        "UUID",
    ),
    (
        moments,
        (datetime.now(UTC), date.today(), uuid.uuid4(), "1.5x", Colour.RED),
        {},
        "decimal",
    ),
    (
        moments,
        (datetime.now(UTC), date.today(), uuid.uuid4(), Decimal(1), "blue"),
        {},
        "Colour",
    ),
    (nested, ([[1, "2"]], {}, (1, "a")), {}, "Expected `int`, got `str`"),
    (nested, ([], {"k": ["x"]}, (1, "a")), {}, "Expected `float`, got `str`"),
    (nested, ([], {1: [1.0]}, (1, "a")), {}, "str"),
    (nested, ([], {}, (1, "a", "extra")), {}, "length 2"),
    (records, (Item("a", quantity="many"), Point(0, 0), [], {}), {}, "Expected `int`, got `str`"),
    (records, (Point(0, 0), Point(0, 0), [], {}), {}, "Item"),
    (records, (Item("a"), Point("x", 0), [], {}), {}, "Expected `float`, got `str`"),
    (records, (Item("a"), Point(0, 0), [Item("b"), 3], {}), {}, "Item"),
    (optional, ("1",), {}, "Expected `int | null`, got `str`"),
    (optional, (1,), {"d": [1, None]}, "Expected `int`, got `null`"),
    (keyword_only, (1,), {"b": 2}, "Expected `str`, got `int`"),
    (variadic, (1, 2, "3"), {}, "Expected `int`, got `str`"),
    (variadic_keywords, (1,), {"x": 5}, "Expected `str`, got `int`"),
    (everything, (1, "b", "not a float"), {"c": True}, "Expected `float`, got `str`"),
    (everything, (1, "b"), {"c": True, "when": "someday"}, "date"),
]


@pytest.mark.parametrize(("fn", "args", "kwargs", "complaint"), WRONG)
def test_values_of_the_wrong_type_are_refused(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(EncodeError) as caught:
        CODECS[fn.__name__].encode_args(args, kwargs)
    assert complaint.lower() in str(caught.value).lower()
    assert str(caught.value).startswith(f"{fn.__name__}(")


@pytest.mark.parametrize(
    ("args", "kwargs", "complaint"),
    [
        ((1,), {}, "missing a required argument: 'b'"),
        ((1,), {"c": 1.0}, "missing a required argument: 'b'"),
        ((1, "b"), {}, "too many positional arguments"),
        ((1,), {"b": "b", "z": 1}, "unexpected keyword argument 'z'"),
    ],
)
def test_calls_that_do_not_fit_the_signature_are_refused(
    args: tuple[Any, ...], kwargs: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(EncodeError, match=complaint):
        CODECS["keyword_only"].encode_args(args, kwargs)


@given(value=json_values.filter(lambda v: not isinstance(v, int) or isinstance(v, bool)))
def test_anything_but_an_int_is_refused_for_an_int(value: Any) -> None:
    codec = CODECS["positional_only"]
    with pytest.raises(EncodeError):
        codec.encode_args((value, 1), {})


# -------------------------------------------------------------------------------------------
# Results round-trip against the return annotation
# -------------------------------------------------------------------------------------------


def returns(annotation: Any) -> TaskCodec:
    def fn() -> Any: ...

    fn.__annotations__["return"] = annotation
    return TaskCodec(fn, f"returns {annotation}")


RESULTS: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (int, ints),
    (float, floats),
    (str, texts),
    (bool, st.booleans()),
    (bytes, st.binary()),
    (None, st.none()),
    (datetime, aware_datetimes),
    (date, st.dates()),
    (uuid.UUID, st.uuids()),
    (Decimal, decimals),
    (Colour, st.sampled_from(Colour)),
    (int | None, st.none() | ints),
    (tuple[int, str], st.tuples(ints, texts)),
    (list[Item], st.lists(items, max_size=3)),
    (dict[str, Point], st.dictionaries(texts, points, max_size=3)),
    (Point, points),
    (Any, json_values),
]


@pytest.mark.parametrize(("annotation", "values"), RESULTS, ids=lambda x: str(x)[:30])
@settings(max_examples=40)
@given(data=st.data())
def test_results_round_trip_against_the_return_annotation(
    annotation: Any, values: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    codec = returns(annotation)
    value = data.draw(values)
    assert same(codec.decode_result(bytes(codec.encode_result(value))), value)


def test_a_result_that_does_not_fit_the_annotation_fails_to_decode() -> None:
    with pytest.raises(EncodeError, match="Expected `int`, got `str`"):
        returns(int).decode_result(b'"seven"')
    with pytest.raises(EncodeError, match="cannot decode"):
        returns(int).decode_result(b"{not json")


def test_a_result_that_cannot_be_encoded_is_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="object"):
        returns(Any).encode_result(object())
    with pytest.raises(EncodeError):
        encode_value({1j})


def test_a_failure_record_round_trips() -> None:
    failure = Failure("ValueError", "bad", "Traceback ...", "id-1")
    codec = returns(Failure)
    assert codec.decode_result(bytes(codec.encode_result(failure))) == failure


# -------------------------------------------------------------------------------------------
# Messages
# -------------------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
raw_json = json_values.map(lambda v: msgspec.Raw(msgspec.json.encode(v)))
messages = st.builds(
    Message,
    id=st.uuids().map(str),
    task=texts,
    queue=texts,
    args=st.lists(json_values, max_size=3).map(lambda v: msgspec.Raw(msgspec.json.encode(v))),
    kwargs=st.dictionaries(texts, json_values, max_size=3).map(
        lambda v: msgspec.Raw(msgspec.json.encode(v))
    ),
    priority=st.integers(0, 9),
    delay=finite,
    run_at=st.none() | finite,
    max_attempts=st.integers(1, 100),
    max_deliveries=st.integers(1, 100),
    timeout=st.none() | finite,
    lease=finite,
    key=st.none() | texts,
    expires_at=st.none() | finite,
    result_ttl=finite,
    after=st.none() | st.uuids().map(str),
    mode=st.none() | st.sampled_from(["then", "catch", "finally"]),
    join=st.none()
    | st.builds(
        JoinSpec,
        members=st.lists(st.uuids().map(str), max_size=4),
        mode=st.sampled_from(["all", "any", "race", "all_settled"]),
    ),
    headers=st.dictionaries(texts, texts, max_size=3),
    created_at=finite,
    expires=st.none() | finite,
)


@given(message=messages)
def test_messages_round_trip(message: Message) -> None:
    decoded = decode_message(encode_message(message))
    assert decoded == message
    assert bytes(decoded.args) == bytes(message.args)
    assert bytes(decoded.kwargs) == bytes(message.kwargs)


@given(value=raw_json)
def test_raw_arguments_are_stored_verbatim(value: msgspec.Raw) -> None:
    message = Message(id=new_id(), task="t", kwargs=value)
    assert bytes(decode_message(encode_message(message)).kwargs) == bytes(value)


def test_a_minimal_message_encodes_only_what_differs_from_the_defaults() -> None:
    message = Message(id="01", task="t")
    assert encode_message(message) == b'{"id":"01","task":"t"}'
    assert decode_message(b'{"id":"01","task":"t"}') == message


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"task":"t"}',
        b'{"id":1,"task":"t"}',
        b'{"id":"1","task":"t","priority":"high"}',
    ],
)
def test_a_bad_message_fails_to_decode(body: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        decode_message(body)


# -------------------------------------------------------------------------------------------
# Ids
# -------------------------------------------------------------------------------------------


def test_ids_are_strictly_increasing_uuid7s_within_a_process() -> None:
    before = time.time()
    ids = [new_id() for _ in range(100_000)]
    after = time.time()
    assert all(a < b for a, b in itertools.pairwise(ids))
    parsed = [uuid.UUID(i) for i in ids]
    assert {u.version for u in parsed} == {7}
    assert {u.variant for u in parsed} == {uuid.RFC_4122}
    assert all(str(u) == i for u, i in zip(parsed, ids, strict=True))
    # the first 48 bits are the Unix time in milliseconds (ids may borrow a few ms ahead)
    first_ms, last_ms = parsed[0].int >> 80, parsed[-1].int >> 80
    assert int(before * 1000) - 1 <= first_ms <= last_ms <= int(after * 1000) + 1000


def test_ids_differ_in_their_random_bits() -> None:
    ids = {new_id()[-12:] for _ in range(1000)}
    assert len(ids) == 1000
