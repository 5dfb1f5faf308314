"""OpenTelemetry tracing of events, across nodes: off unless ``--trace-endpoint``.

A sampled event (``--trace-sample``: the share of events traced) is one
trace, exported over OTLP/HTTP by the SDK's batch processor (its own
thread; a full queue drops spans, never waits)::

    chat.send                  SERVER    arrival to ack
      parse                              the payload checked
      store.append                       the store's commit
      deliver                            handed to this node's members
      fanout.publish           PRODUCER  queued until Redis took it
        fanout.receive         CONSUMER  on each other node with members
          deliver                        handed to that node's members

Every event gets its root span (``chat.join``, ``chat.history``, ...); the
send's path has the rest. The context crosses nodes in the fan-out envelope
(the W3C ``traceparent``, :mod:`app.fanout.redis`). Spans carry the event,
the transport, a message's seq and an error's code: never a text, a user
name or a room name.

Within a node the current span is a context variable, so the services and
the fan-out need no tracer of their own: :func:`child` and :func:`producer`
nest under whatever is current, and do nothing (one variable read) when
nothing is. OpenTelemetry (the ``tracing`` extra) is imported only when
tracing is on.
"""

from __future__ import annotations

import random
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span

# (the tracing, its current span) while a traced event is handled
_current: ContextVar[tuple[Tracing, Span] | None] = ContextVar("roomcast_span", default=None)
TRACEPARENT = "traceparent"
EXPORT_QUEUE = 8192  # spans waiting for the exporter; past it they are dropped
EXPORT_TIMEOUT = 5.0  # seconds one export may take (at shutdown too)


class Tracing:
    """This node's tracer: what starts traces (:meth:`event`) and continues
    them from another node (:meth:`received`)."""

    def __init__(self, endpoint: str, sample: float, *, node: str,
                 schedule_delay_ms: float = 1000) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter)
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
            from opentelemetry.trace import (
                SpanKind, Status, StatusCode, get_current_span, set_span_in_context)
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator)
        except ImportError as exc:
            raise RuntimeError(f"--trace-endpoint needs OpenTelemetry ({exc}): "
                               "pip install roomcast[tracing]") from None

        self.sample = sample
        # the root's decision is ours (one random draw, before any SDK call);
        # a span from another node follows its parent's
        self.provider = TracerProvider(
            sampler=ParentBased(ALWAYS_ON),
            resource=Resource.create({"service.name": "roomcast",
                                      "service.instance.id": node}),
            shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT),
            max_queue_size=EXPORT_QUEUE,
            schedule_delay_millis=schedule_delay_ms))
        self.tracer = self.provider.get_tracer("roomcast")
        self._kind = SpanKind
        self._in_context = set_span_in_context
        self._status, self._error = Status, StatusCode.ERROR
        self._propagator = TraceContextTextMapPropagator()
        self._parent_of = get_current_span

    # -- traces begun here ----------------------------------------------------------

    def event(self, event: str, transport: str) -> Token[Any] | None:
        """The root span of one event, if it is sampled (None: not traced), made
        current until :meth:`end`."""
        if random.random() >= self.sample:
            return None
        span = self.tracer.start_span(
            f"chat.{event}", kind=self._kind.SERVER,
            attributes={"roomcast.event": event, "roomcast.transport": transport})
        return _current.set((self, span))

    def end(self, token: Token[Any], ack: dict[str, Any]) -> None:
        """The event is acknowledged (``ack``): its span ends, with the error's
        code if it was refused."""
        current = _current.get()
        _current.reset(token)
        if current is None:
            return
        span = current[1]
        if not ack.get("ok"):
            code = str(ack.get("error", {}).get("code", "internal"))
            span.set_attribute("roomcast.error", code)
            span.set_status(self._status(self._error, code))
        elif isinstance(message := ack.get("message"), dict) and "seq" in message:
            span.set_attribute("roomcast.seq", message["seq"])
        span.end()

    # -- traces carried from another node -------------------------------------------

    def received(self, traceparent: str, event: str) -> Token[Any] | None:
        """An event another node traced (its ``traceparent``) arrives here: a
        consumer span, current until :meth:`done`."""
        context = self._propagator.extract({TRACEPARENT: traceparent})
        if not self._parent_of(context).get_span_context().is_valid:
            return None  # (not a trace: nothing begins here from it)
        span = self.tracer.start_span("fanout.receive", context=context,
                                      kind=self._kind.CONSUMER,
                                      attributes={"roomcast.event": event})
        return _current.set((self, span))

    @staticmethod
    def done(token: Token[Any]) -> None:
        current = _current.get()
        _current.reset(token)
        if current is not None:
            current[1].end()

    def _traceparent(self, span: Span) -> str | None:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, self._in_context(span))
        return carrier.get(TRACEPARENT)

    def shutdown(self) -> None:
        """Export what is waiting (blocking: at most the exporter's timeout)."""
        self.provider.shutdown()


class _Child:
    """A span under the current one, current while the ``with`` lasts."""

    __slots__ = ("_name", "_parent", "_token", "_span")

    def __init__(self, name: str, parent: tuple[Tracing, Span]) -> None:
        self._name, self._parent = name, parent

    def __enter__(self) -> None:
        tracing, parent = self._parent
        self._span = tracing.tracer.start_span(self._name,
                                               context=tracing._in_context(parent))
        self._token = _current.set((tracing, self._span))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        _current.reset(self._token)
        if exc is not None:
            self._span.set_attribute("roomcast.error", getattr(exc, "code", kind.__name__
                                                               if kind else "error"))
        self._span.end()


class _Nothing:
    """What :func:`child` is when nothing is traced."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


NOTHING = _Nothing()


def child(name: str) -> _Child | _Nothing:
    """``with child("store.append"):`` a span under the current one, if any
    (and not ended: a timer or task begun during a traced event inherits its
    context, and what it does later is not that event's)."""
    current = _current.get()
    return NOTHING if current is None or not current[1].is_recording() \
        else _Child(name, current)


class Producer:
    """A span begun under the current one and ended later, elsewhere (an
    event queued for Redis, ended once it is published): and the context a
    receiver continues it from."""

    __slots__ = ("span", "traceparent")

    def __init__(self, span: Span, traceparent: str | None) -> None:
        self.span, self.traceparent = span, traceparent

    def end(self, error: str | None = None) -> None:
        if error is not None:
            self.span.set_attribute("roomcast.error", error)
        self.span.end()


def producer(name: str) -> Producer | None:
    """A producer span under the current one, if any (not made current)."""
    current = _current.get()
    if current is None or not current[1].is_recording():
        return None
    tracing, parent = current
    span = tracing.tracer.start_span(name, context=tracing._in_context(parent),
                                     kind=tracing._kind.PRODUCER)
    return Producer(span, tracing._traceparent(span))
