"""msgspec encoding of messages, arguments and results, against the task's type hints.

JSON is the wire format. Every encoder and decoder a task needs is built once, when the
task is registered (``TaskCodec``), so the hot path only calls them. pickle is never used.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeAlias, get_args, get_origin, get_type_hints

import msgspec

from pigeon.errors import ConfigError, EncodeError
from pigeon.message import EMPTY_ARGS, Failure, Message, Result
from pigeon.secret import SECRET_KEY, Secret

_message_encoder = msgspec.json.Encoder()
_message_decoder = msgspec.json.Decoder(Message)


def encode_message(message: Message) -> bytes:
    """The stored form of a message."""
    return _message_encoder.encode(message)


class _StoredResult(msgspec.Struct, frozen=True):
    """How a stored Result is read back.

    msgspec cannot decode ``msgspec.Raw | None`` (Raw may not sit in a union), so ``value``
    is read as Raw with an empty default: absent means no value, while a task that returned
    None keeps its JSON ``null``.
    """

    id: str
    state: Literal["succeeded", "failed", "cancelled", "dead"]
    value: msgspec.Raw = msgspec.Raw(b"")
    error: Failure | None = None
    settled_at: float = 0.0


_result_record_encoder = msgspec.json.Encoder()
_result_record_decoder = msgspec.json.Decoder(_StoredResult)


def encode_result_record(result: Result) -> bytes:
    """The stored form of an outcome (for backends that store bytes)."""
    return _result_record_encoder.encode(result)


def decode_result_record(body: bytes) -> Result:
    """Read back what ``encode_result_record`` stored."""
    s = _result_record_decoder.decode(body)
    return Result(s.id, s.state, s.value if len(s.value) else None, s.error, s.settled_at)


def decode_message(body: bytes) -> Message:
    """Parse a stored message; raises msgspec.DecodeError or ValidationError when it is bad."""
    return _message_decoder.decode(body)


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Secret):
        return {SECRET_KEY: obj.reveal()}
    raise TypeError(f"objects of type {type(obj).__name__} are not supported")


def _dec_hook(kind: Any, obj: Any) -> Any:
    if kind is Secret or get_origin(kind) is Secret:
        inner = get_args(kind)[0] if get_args(kind) else Any
        if isinstance(obj, Secret):  # msgspec.convert of Python values at send
            return Secret(msgspec.convert(obj.reveal(), inner, dec_hook=_dec_hook))
        if isinstance(obj, dict) and set(obj) == {SECRET_KEY}:
            return Secret(msgspec.convert(obj[SECRET_KEY], inner, dec_hook=_dec_hook))
        raise msgspec.ValidationError(f"expected a pigeon.Secret, got {type(obj).__name__}")
    raise TypeError(f"{kind!r} is not a type pigeon can decode")


_json_encoder = msgspec.json.Encoder(decimal_format="string", enc_hook=_enc_hook)


def encode_value(value: Any) -> msgspec.Raw:
    """Encode any msgspec-supported value (a result, a follow-up's argument) as raw JSON."""
    try:
        return msgspec.Raw(_json_encoder.encode(value))
    except (TypeError, ValueError) as exc:
        raise EncodeError(
            f"cannot encode a value of type {type(value).__name__}: {exc}. Use msgspec-supported"
            " types (str, int, float, bool, None, list, dict, tuple, set, datetime, date, UUID,"
            " Decimal, Enum, dataclasses, msgspec Structs)"
        ) from None


_NO_ARGS = EMPTY_ARGS  # the Message default itself: a message without it omits "args"

#: One call of a bulk send (``Task.send_many``): a tuple of positional arguments, or a mapping
#: of keyword arguments.
Call: TypeAlias = tuple[Any, ...] | Mapping[str, Any]


class TaskCodec:
    """Encoders and decoders for one task, built once when the task is registered.

    Arguments are bound to the function's signature at send, encoded as JSON, and validated
    by decoding them against the parameters' type hints, so a send that the worker could not
    decode is refused at once. The worker decodes them the same way.
    """

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.name = name
        self.signature = inspect.signature(fn)
        try:
            hints = get_type_hints(fn)
        except Exception as exc:
            raise ConfigError(f"task {name!r}: cannot resolve its type hints: {exc}") from exc
        fields: list[tuple[str, Any, Any] | tuple[str, Any]] = []
        self.positional: list[str] = []
        self.var_positional: str | None = None
        self.var_keyword: str | None = None
        var_positional_type: Any = Any
        var_keyword_type: Any = Any
        parameters = self.signature.parameters.values()
        # With *args, the parameters before it can only be passed by position.
        has_var_positional = any(p.kind is p.VAR_POSITIONAL for p in parameters)
        for p in parameters:
            hint = hints.get(p.name, Any)
            if p.kind is p.VAR_POSITIONAL:
                self.var_positional = p.name
                var_positional_type = hint
                continue
            if p.kind is p.VAR_KEYWORD:
                self.var_keyword = p.name
                var_keyword_type = hint
                continue
            if p.kind is p.POSITIONAL_ONLY or (
                p.kind is p.POSITIONAL_OR_KEYWORD and has_var_positional
            ):
                self.positional.append(p.name)
            if p.default is p.empty:
                fields.append((p.name, hint))
            else:
                fields.append((p.name, hint, p.default))
        self.params = [f[0] for f in fields]
        self._simple = not (self.positional or self.var_positional or self.var_keyword)
        self._known = frozenset(self.params)
        self._by_position = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
        self._required = [f[0] for f in fields if len(f) == 2]
        # The arguments as the worker decodes them (and as a send checks them). Instances live
        # only while a call is checked or decoded, so they are not tracked by the garbage
        # collector (gc=False): a bulk send makes thousands at once, and tracking them costs
        # a collection or two. The same holds for ``_call`` below.
        struct = msgspec.defstruct(
            f"{name}.arguments",
            fields,
            kw_only=True,
            forbid_unknown_fields=self.var_keyword is None,
            gc=False,
        )
        self._kwargs_decoder = msgspec.json.Decoder(struct, dec_hook=_dec_hook)
        self._struct = struct
        self._structs: Any = list[struct]  # type: ignore[valid-type]
        # The parameters that can be passed by position, as an array: checks a list of
        # tuples of arguments in one call, without a dict per call (encode_many).
        by_position = set(self._by_position)
        positional = msgspec.defstruct(
            f"{name}.positional",
            [f for f in fields if f[0] in by_position],
            array_like=True,
            forbid_unknown_fields=True,  # too many arguments
        )
        self._positional: Any = list[positional]  # type: ignore[valid-type]
        # The same parameters, each UNSET (left out of the JSON) unless given: ``_call(*args)``
        # encodes as the keyword arguments a positional call stands for.
        self._call: Any = msgspec.defstruct(
            f"{name}.call", [(n, Any, msgspec.UNSET) for n in self._by_position], gc=False
        )
        self._varargs_type: Any = list[var_positional_type]
        self._varargs_decoder = msgspec.json.Decoder(self._varargs_type, dec_hook=_dec_hook)
        self._extra_kwargs_type: Any = dict[str, var_keyword_type]
        self._extra_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
        self._extra_value_decoder = msgspec.json.Decoder(var_keyword_type, dec_hook=_dec_hook)
        returns = hints.get("return", Any)
        self.returns = returns
        self._result_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
            returns, dec_hook=_dec_hook
        )

    def encode_args(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[msgspec.Raw, msgspec.Raw]:
        """Bind, encode and validate the arguments of one call; raises EncodeError."""
        if self._simple:
            return self._encode_simple(args, kwargs)
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise EncodeError(f"{self.name}(): {exc}") from None
        arguments = bound.arguments
        extra: tuple[Any, ...] = ()
        extra_kwargs: dict[str, Any] = {}
        if self.var_positional is not None:
            extra = arguments.pop(self.var_positional, ())
        if self.var_keyword is not None:
            extra_kwargs = arguments.pop(self.var_keyword, {})
        try:
            # The Python values must have the parameters' types: JSON alone would let a
            # datetime, UUID, Decimal or bytes pass for a str (they all encode as strings).
            msgspec.convert(arguments, self._struct, dec_hook=_dec_hook)
            msgspec.convert(list(extra), self._varargs_type, dec_hook=_dec_hook)
            msgspec.convert(extra_kwargs, self._extra_kwargs_type, dec_hook=_dec_hook)
        except msgspec.ValidationError as exc:
            raise EncodeError(f"{self.name}(): invalid arguments: {exc}") from None
        arguments.update(extra_kwargs)
        try:
            raw_kwargs = _json_encoder.encode(arguments)
            raw_args = _json_encoder.encode(extra) if extra else b"[]"
        except (TypeError, ValueError) as exc:
            raise EncodeError(f"{self.name}(): cannot encode the arguments: {exc}") from None
        self.decode_args(raw_args, raw_kwargs)  # validation: the worker will decode it this way
        return msgspec.Raw(raw_args), msgspec.Raw(raw_kwargs)

    def _encode_simple(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[msgspec.Raw, msgspec.Raw]:
        """``encode_args`` for the common signature (no *args, **kwargs or positional-only
        parameters): binding by hand costs a fraction of ``inspect.Signature.bind``; missing
        and unknown arguments are caught by the validation against the parameters' struct."""
        names = self._by_position
        if len(args) > len(names):
            raise EncodeError(f"{self.name}(): too many positional arguments")
        arguments = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key in arguments:
                raise EncodeError(f"{self.name}(): multiple values for argument {key!r}")
            if key not in self._known:
                raise EncodeError(f"{self.name}(): got an unexpected keyword argument {key!r}")
            arguments[key] = value
        for key in self._required:
            if key not in arguments:
                raise EncodeError(f"{self.name}(): missing a required argument: {key!r}")
        try:
            # The Python values must have the parameters' types: JSON alone would let a
            # datetime, UUID, Decimal or bytes pass for a str (they all encode as strings).
            msgspec.convert(arguments, self._struct, dec_hook=_dec_hook)
            raw_kwargs = _json_encoder.encode(arguments)
            self._kwargs_decoder.decode(raw_kwargs)  # the worker will decode it this way
        except msgspec.ValidationError as exc:
            raise EncodeError(f"{self.name}(): invalid arguments: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise EncodeError(f"{self.name}(): cannot encode the arguments: {exc}") from None
        return _NO_ARGS, msgspec.Raw(raw_kwargs)

    def encode_many(self, calls: Sequence[Call]) -> tuple[list[msgspec.Raw], list[msgspec.Raw]]:
        """``encode_args`` for many calls at once (a bulk send): the encoded positional and
        keyword arguments, one of each per call. Raises EncodeError naming the first bad call
        by its index (``calls[3]: ...``).

        For the common signature the whole list is encoded and validated in a few msgspec
        calls (the Python values against the parameters' types, all the calls' JSON at
        once as newline-delimited lines, then those lines as the worker decodes them), so
        each call costs about one small struct (a tuple of arguments) and one ``Raw``.
        """
        if not self._simple:
            return self._encode_each(calls)
        try:
            if all(type(call) is tuple for call in calls):
                msgspec.convert(calls, self._positional, dec_hook=_dec_hook)
                make = self._call
                arguments: list[Any] = [make(*c) for c in calls]
            else:
                names = self._by_position
                arguments = []
                for call in calls:
                    if type(call) is tuple and len(call) <= len(names):
                        arguments.append(dict(zip(names, call, strict=False)))
                    elif type(call) is dict:
                        arguments.append(call)
                    else:  # too many arguments, another mapping or not a call
                        return self._encode_each(calls)
                msgspec.convert(arguments, self._structs, dec_hook=_dec_hook)
            # JSON never holds a raw newline, so the lines are the calls' encodings.
            lines = _json_encoder.encode_lines(arguments)
            self._kwargs_decoder.decode_lines(lines)
        except (msgspec.ValidationError, TypeError, ValueError):
            return self._encode_each(calls)  # one by one, to name the call that is wrong
        raws = list(map(msgspec.Raw, lines.split(b"\n")))
        raws.pop()  # after the last newline
        return [_NO_ARGS] * len(raws), raws

    def _encode_each(self, calls: Sequence[Call]) -> tuple[list[msgspec.Raw], list[msgspec.Raw]]:
        raw_args: list[msgspec.Raw] = []
        raw_kwargs: list[msgspec.Raw] = []
        for i, call in enumerate(calls):
            try:
                if isinstance(call, tuple):
                    args, kwargs = call, {}
                elif isinstance(call, Mapping):
                    args, kwargs = (), dict(call)
                else:
                    raise EncodeError(
                        f"{self.name}(): a call is a tuple of positional arguments or a dict of"
                        f" keyword arguments, not {type(call).__name__}; wrap a single"
                        " argument in a tuple: (value,)"
                    )
                encoded = self.encode_args(args, kwargs)
            except EncodeError as exc:
                raise EncodeError(f"calls[{i}]: {exc}") from None
            raw_args.append(encoded[0])
            raw_kwargs.append(encoded[1])
        return raw_args, raw_kwargs

    def decode_args(self, args: bytes, kwargs: bytes) -> tuple[list[Any], dict[str, Any]]:
        """The positional and keyword arguments to call the function with; raises EncodeError."""
        try:
            struct = self._kwargs_decoder.decode(kwargs)
            extra = self._varargs_decoder.decode(args) if args != b"[]" else []
            call_kwargs = {n: getattr(struct, n) for n in self.params if n not in self.positional}
            if self.var_keyword:
                for k, v in self._extra_decoder.decode(kwargs).items():
                    if k not in self.params:
                        call_kwargs[k] = self._extra_value_decoder.decode(v)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise EncodeError(f"{self.name}(): invalid arguments: {exc}") from None
        call_args = [getattr(struct, n) for n in self.positional]
        call_args.extend(extra)
        return call_args, call_kwargs

    def follow_up_kwargs(self, value: bytes | None) -> bytes:
        """The keyword arguments of a follow-up that receives ``value`` as its one argument."""
        if value is None or not self.params:
            return b"{}"
        return b'{"' + self.params[0].encode() + b'":' + value + b"}"

    def encode_result(self, value: Any) -> msgspec.Raw:
        return encode_value(value)

    def decode_result(self, raw: bytes) -> Any:
        """The task's return value, decoded against its return annotation."""
        try:
            return self._result_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise EncodeError(f"{self.name}: cannot decode its result: {exc}") from None
