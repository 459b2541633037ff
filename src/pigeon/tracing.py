"""OpenTelemetry traces of pigeon's messages, with opentelemetry-api (``pip install
'pigeon[otel]'``), turned on by ``App(tracing=True)`` (default: ``PIGEON_TRACING``).

Nothing here imports opentelemetry until an App turns tracing on: importing pigeon, or
running an App without it, never loads it, and a Sender or Worker without tracing runs
exactly the code it runs without this module. Spans go to the global tracer provider
(``opentelemetry.trace.set_tracer_provider``, or ``opentelemetry-instrument``), headers
through the global propagator (``OTEL_PROPAGATORS``; W3C trace context and baggage by
default).

Spans follow the OpenTelemetry messaging semantic conventions (development status; the
names of opentelemetry-semantic-conventions 0.5x-0.66):

- ``send {queue}`` (PRODUCER) around each send, bulk send (with
  ``messaging.batch.message_count``) or follow-up: its context is injected into the headers
  of every message it sends (``traceparent``, ``tracestate``, ``baggage``), before they are
  signed (``pigeon.signing`` covers those headers). A bulk send makes no per-message
  ``create`` span: the conventions let the send span be each message's creation context,
  and a span per message would cost a bulk send of 10,000 messages 10,000 spans.
- ``process {task}`` (CONSUMER) around each attempt (``pigeon.worker.tracing``), a new trace
  linked to the message's creation context (``trace_parent="link"``, the default) or its
  child (``trace_parent="child"``); baggage is carried over either way. A retry's attempt
  links to the same creation context (its headers are the message's).
- A durable follow-up (``p.then(task)``) and a join (``Promise.all(...).then(task)``) link
  to their parents' creation contexts (the send spans of the parent message, or of each
  member of a join, as this process sent them): its send span and each of its process
  spans carry those links besides their own creation context, through the header
  ``pigeon-links`` (``signing.LINKS_HEADER``: ``TRACEID-SPANID-FLAGS`` items, at most
  ``LINKS_MOST``, each once). A parent's process spans are one link further: each links
  to (or is a child of) that same send span; the outcome a worker stores carries no span,
  so the attempt that settled the parent cannot be linked directly. A promise that did not
  come from a traced send here (``app.promise(id)``, a send with tracing off) adds none.
- ``settle`` (CLIENT) around each batch of outcomes a worker settles, linking the process
  spans whose outcomes it carries.

``OTEL_SEMCONV_STABILITY_OPT_IN``: pigeon has no older messaging conventions to keep, so it
emits the current ones whatever the variable says; ``messaging/dup`` also sets the
attribute the conventions before 1.26 named (``messaging.operation``: ``publish``,
``process``, ``settle``) for dashboards built on it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import msgspec

from pigeon.errors import ConfigError
from pigeon.message import Delivery, Message, Outcome
from pigeon.signing import LINKS_HEADER

#: ``App(trace_parent=...)``: how a process span relates to its message's creation context.
TraceParent = Literal["link", "child"]

#: The environment variable that is ``App(tracing=...)``'s default.
ENV = "PIGEON_TRACING"
#: ``messaging.system``.
SYSTEM = "pigeon"

# Attribute names (opentelemetry.semconv._incubating.attributes.messaging_attributes).
SYSTEM_ATTR = "messaging.system"
DESTINATION = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
BATCH_COUNT = "messaging.batch.message_count"
OLD_OPERATION = "messaging.operation"  # before 1.26, set with OTEL_SEMCONV_STABILITY_OPT_IN
ERROR_TYPE = "error.type"
# pigeon's own (the conventions name no generic delivery count)
TASK = "pigeon.task"
ATTEMPT = "pigeon.attempt"
RETRIES = "pigeon.retries"
AFTER = "pigeon.after"
OUTCOME = "pigeon.outcome"

#: The most parents a follow-up or join links to (a join's members sent apart): the first ones.
LINKS_MOST = 32
#: The attribute that tells a link to a parent from the link to the creation context.
LINK_KIND = "pigeon.link"

_OLD_NAMES = {"send": "publish", "process": "process", "settle": "settle"}

#: ``pigeon.outcome`` of each outcome state (the names of ``pigeon_messages_total``).
OUTCOMES = {
    "succeeded": "succeeded",
    "failed": "failed",
    "retry": "retried",
    "dead": "dead",
    "cancelled": "cancelled",
}

#: Ends a send span: with the exception that failed the send, or None once it is stored.
EndSend = Callable[[BaseException | None], None]


def enabled(tracing: bool | None) -> bool:
    """``App(tracing=...)``: the value given, else ``PIGEON_TRACING`` (1, true, yes, on)."""
    if tracing is not None:
        return tracing
    return os.environ.get(ENV, "").lower() in ("1", "true", "yes", "on")


class _Envelope(msgspec.Struct):
    """What a process span needs of a stored message (the rest of the body is skipped)."""

    task: str = ""
    queue: str = "default"
    after: str | None = None
    headers: dict[str, str] = {}


_envelope = msgspec.json.Decoder(_Envelope)


class _Otel:
    """The opentelemetry modules pigeon uses, imported once tracing is turned on."""

    def __init__(self) -> None:
        try:
            from opentelemetry import context, propagate, trace
        except ImportError:
            raise ConfigError(
                "tracing needs opentelemetry-api: pip install 'pigeon[otel]'"
            ) from None
        self.context = context
        self.propagate = propagate
        self.trace = trace
        self.status_error = trace.Status(trace.StatusCode.ERROR)


class Tracing:
    """An App's tracing: its send spans, and what its workers' process and settle spans
    need (``pigeon.worker.tracing.WorkerTracing`` adapts it to the worker's Observer)."""

    def __init__(self, trace_parent: TraceParent = "link") -> None:
        if trace_parent not in ("link", "child"):
            raise ConfigError(f"trace_parent must be 'link' or 'child', not {trace_parent!r}")
        self.otel = otel = _Otel()
        self.trace_parent = trace_parent
        # A proxy until the application sets its provider: App() may come first.
        self.tracer = otel.trace.get_tracer("pigeon")
        opt_in = os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
        self.dup = "messaging/dup" in (v.strip() for v in opt_in.split(","))

    def _attributes(self, operation: str, queue: str | None) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            SYSTEM_ATTR: SYSTEM,
            OPERATION_TYPE: operation,
            OPERATION_NAME: operation,
        }
        if queue is not None:
            attributes[DESTINATION] = queue
        if self.dup:
            attributes[OLD_OPERATION] = _OLD_NAMES[operation]
        return attributes

    # sending ----------------------------------------------------------------------------------

    def start_send(
        self, messages: Sequence[Message], bulk: bool, parents: Sequence[Mapping[str, str]] = ()
    ) -> tuple[list[Message], EndSend]:
        """Start the send span of ``messages`` (in the current context) and inject its
        context into their headers; the messages to store, and what ends the span.

        ``parents``: the headers of the messages a follow-up or join runs after, as they
        were sent; the span links to their creation contexts, and so will every process
        span of ``messages`` (``LINKS_HEADER``)."""
        otel = self.otel
        queue = messages[0].queue
        attributes = self._attributes("send", queue)
        if bulk:
            attributes[BATCH_COUNT] = len(messages)
        else:
            attributes[MESSAGE_ID] = messages[0].id
        links = self._parent_links(parents) if parents else None
        span = self.tracer.start_span(
            f"send {queue}", kind=otel.trace.SpanKind.PRODUCER, attributes=attributes, links=links
        )
        carrier: dict[str, str] = {}
        otel.propagate.inject(carrier, context=otel.trace.set_span_in_context(span))
        if links:
            carrier[LINKS_HEADER] = ",".join(_written(link.context) for link in links)
        if carrier:
            replace = msgspec.structs.replace
            messages = [replace(m, headers={**m.headers, **carrier}) for m in messages]

        def end(error: BaseException | None) -> None:
            if error is not None:
                span.record_exception(error)
                span.set_status(otel.trace.Status(otel.trace.StatusCode.ERROR, str(error)))
                span.set_attribute(ERROR_TYPE, type(error).__qualname__)
            span.end()

        return list(messages), end

    def _parent_links(self, parents: Sequence[Mapping[str, str]]) -> list[Any]:
        """Links to the creation contexts that ``parents`` (headers) carry, each once."""
        trace = self.otel.trace
        extract = self.otel.propagate.extract
        seen: set[tuple[int, int]] = set()
        links = []
        for headers in parents:
            context = trace.get_current_span(extract(headers)).get_span_context()
            if context.is_valid and (context.trace_id, context.span_id) not in seen:
                seen.add((context.trace_id, context.span_id))
                links.append(trace.Link(context, {LINK_KIND: "parent"}))
                if len(links) == LINKS_MOST:
                    break
        return links

    def _read_links(self, value: str) -> list[Any]:
        """The parent links of a ``LINKS_HEADER`` value (malformed items are skipped)."""
        trace = self.otel.trace
        links = []
        for item in value.split(",")[:LINKS_MOST]:
            trace_id, _, rest = item.partition("-")
            span_id, _, flags = rest.partition("-")
            try:
                context = trace.SpanContext(
                    int(trace_id, 16),
                    int(span_id, 16),
                    is_remote=True,
                    trace_flags=trace.TraceFlags(int(flags, 16) & 0xFF),
                )
            except ValueError:
                continue
            if context.is_valid:
                links.append(trace.Link(context, {LINK_KIND: "parent"}))
        return links

    # processing (the worker) ------------------------------------------------------------------

    def start_process(self, d: Delivery) -> Any:
        """Start the process span of one attempt at ``d``; the span (not yet current)."""
        otel = self.otel
        trace = otel.trace
        try:
            envelope = _envelope.decode(d.body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            envelope = _Envelope()  # the executor dead-letters it; its span says so
        attributes = self._attributes("process", envelope.queue)
        attributes[MESSAGE_ID] = d.id
        attributes[TASK] = envelope.task
        attributes[ATTEMPT] = d.attempt
        attributes[RETRIES] = d.failures
        if envelope.after is not None:
            attributes[AFTER] = envelope.after
        created = otel.propagate.extract(envelope.headers) if envelope.headers else None
        links = None
        if created is not None and self.trace_parent == "link":
            creation = trace.get_current_span(created).get_span_context()
            if creation.is_valid:
                links = [trace.Link(creation)]
            # a trace of its own, with the creation context's baggage
            created = trace.set_span_in_context(trace.INVALID_SPAN, created)
        elif created is None:
            created = otel.context.Context()  # a root, whatever the worker's own context
        parents = envelope.headers.get(LINKS_HEADER)
        if parents:
            links = [*(links or ()), *self._read_links(parents)]
        return self.tracer.start_span(
            f"process {envelope.task}",
            context=created,
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )

    def attach(self, span: Any) -> object:
        """Make ``span`` current (the task's own spans and sends are its children)."""
        otel = self.otel
        return otel.context.attach(otel.trace.set_span_in_context(span))

    def detach(self, token: object) -> None:
        self.otel.context.detach(token)

    def end_process(self, span: Any, outcome: Outcome) -> None:
        """End a process span with the attempt's outcome (an error recorded on failure)."""
        span.set_attribute(OUTCOME, OUTCOMES[outcome.state])
        error = outcome.error
        if error is not None and outcome.state != "cancelled":
            span.add_event(
                "exception",
                {
                    "exception.type": error.type,
                    "exception.message": error.message,
                    "exception.stacktrace": error.traceback,
                },
            )
            span.set_attribute(ERROR_TYPE, error.type)
            span.set_status(self.otel.trace.Status(self.otel.trace.StatusCode.ERROR, error.type))
        span.end()

    def end_unsettled(self, span: Any, outcome: str, error: BaseException | None = None) -> None:
        """End a process span whose attempt settled nothing: ``interrupted`` (released at a
        stop or a lost lease), ``deferred`` (a limit), ``dead`` (pigeon's own error)."""
        span.set_attribute(OUTCOME, outcome)
        if error is not None:
            span.record_exception(error)
            span.set_attribute(ERROR_TYPE, type(error).__qualname__)
            span.set_status(self.otel.status_error)
        span.end()

    def start_settle(self, outcomes: Sequence[Outcome], processed: list[Any]) -> Any:
        """Start the span of one settle batch, linking the process spans it settles."""
        otel = self.otel
        attributes = self._attributes("settle", None)
        if len(outcomes) > 1:
            attributes[BATCH_COUNT] = len(outcomes)
        else:
            attributes[MESSAGE_ID] = outcomes[0].id
        return self.tracer.start_span(
            "settle",
            context=otel.context.Context(),
            kind=otel.trace.SpanKind.CLIENT,
            attributes=attributes,
            links=[otel.trace.Link(c) for c in processed],
        )

    def settled(self, span: Any, error: BaseException | None) -> None:
        if error is not None:
            span.record_exception(error)
            span.set_status(self.otel.status_error)
        span.end()


def _written(context: Any) -> str:
    """One item of ``LINKS_HEADER``: a span context as ``TRACEID-SPANID-FLAGS`` (hex)."""
    return f"{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
