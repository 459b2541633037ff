"""HMAC-SHA256 signatures on messages, with key rotation.

With a secret set (``App(secret=...)`` or ``PIGEON_SECRET``), every message an App stores is
signed, and a worker dead-letters a message that is unsigned or whose signature does not
match before it decodes a single argument. Several keys may be given for rotation: the first
signs, every one verifies. What is signed is everything that decides what runs: the id, the
task name, the encoded arguments and the follow-up/join links, and the trace-context
headers (``SIGNED_HEADERS``, and ``LINKS_HEADER``) when the message carries any
(``pigeon.tracing``), so that a forged trace context cannot be grafted onto a signed
message, nor one stripped from it; a message without them is signed as before.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence

import msgspec

from pigeon.errors import ConfigError
from pigeon.message import Message

HEADER = "pigeon-sig"
#: The headers a signature covers when a message carries any of them (W3C trace context and
#: baggage, which ``pigeon.tracing`` injects before the message is signed).
SIGNED_HEADERS = ("traceparent", "tracestate", "baggage")
#: The header of a follow-up's or a join's links to its parents' creation contexts
#: (``pigeon.tracing``), covered too when present (a message without it signs as before).
LINKS_HEADER = "pigeon-links"

_encode = msgspec.json.Encoder().encode


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


class _Hmac:
    """HMAC-SHA256 with one key, its two padded key blocks hashed once (RFC 2104:
    ``H(K ^ opad || H(K ^ ipad || m))``). ``hmac.new`` sets them up again for every message,
    which costs more than hashing a message of a few hundred bytes; here each message costs
    two ``copy()`` of the prepared states. The same digest as ``hmac.new(key, m, sha256)``."""

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def hexdigest(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


class Signer:
    """Signs with the first key, verifies with any; keys are named by a short hash of them."""

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        raw = [k.encode() if isinstance(k, str) else bytes(k) for k in keys]
        raw = [k for k in raw if k]
        if not raw:
            raise ConfigError("a message secret must not be empty")
        if any(len(k) < 16 for k in raw):
            raise ConfigError(
                "a message secret must be at least 16 bytes long; generate one with"
                " `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        self._sign_id = _key_id(raw[0])
        self._sign_key = _Hmac(raw[0])
        self._keys = {_key_id(k): _Hmac(k) for k in raw}

    @classmethod
    def from_env(cls) -> Signer | None:
        """The signer ``PIGEON_SECRET`` describes (comma-separated keys), or None."""
        value = os.environ.get("PIGEON_SECRET", "")
        return cls(value.split(",")) if value.strip() else None

    def _digest(self, key: _Hmac, m: Message) -> str:
        headers = m.headers
        if headers and not headers.keys().isdisjoint(SIGNED_HEADERS):
            traced = [headers.get(h) for h in SIGNED_HEADERS]
            if LINKS_HEADER in headers:
                traced.append(headers[LINKS_HEADER])
            signed = (m.id, m.task, m.args, m.kwargs, m.after, m.mode, m.join, traced)
            return key.hexdigest(_encode(signed))
        return key.hexdigest(_encode((m.id, m.task, m.args, m.kwargs, m.after, m.mode, m.join)))

    def sign(self, m: Message) -> Message:
        """``m`` with its signature in ``headers``."""
        sig = f"{self._sign_id}.{self._digest(self._sign_key, m)}"
        return msgspec.structs.replace(m, headers={**m.headers, HEADER: sig})

    def check(self, m: Message) -> str | None:
        """Why ``m`` must not run (unsigned, unknown key, bad signature), or None if it may."""
        sig = m.headers.get(HEADER)
        if sig is None:
            return "the message is not signed, and this worker requires signatures"
        key_id, _, digest = sig.partition(".")
        key = self._keys.get(key_id)
        if key is None:
            return f"the message is signed with an unknown key ({key_id})"
        if not hmac.compare_digest(digest, self._digest(key, m)):
            return "the signature does not match the message (forged or tampered with)"
        return None
