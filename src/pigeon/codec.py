"""msgspec encoding of messages, arguments and results, against the task's type hints.

JSON is the wire format. Every encoder and decoder a task needs is built once, when the
task is registered (``TaskCodec``), so the hot path only calls them. pickle is never used.
"""

from __future__ import annotations

import msgspec

from pigeon.message import Message

_message_encoder = msgspec.json.Encoder()
_message_decoder = msgspec.json.Decoder(Message)


def encode_message(message: Message) -> bytes:
    """The stored form of a message."""
    return _message_encoder.encode(message)


def decode_message(body: bytes) -> Message:
    """Parse a stored message; raises msgspec.DecodeError or ValidationError when it is bad."""
    return _message_decoder.decode(body)
