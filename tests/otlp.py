"""An OTLP/HTTP trace receiver, as a collector is one: it decodes each export
(``ExportTraceServiceRequest``, protobuf, from the OpenTelemetry protocol's
own definitions) and keeps the spans, for tests to wait on.

Nothing of the SDK is mocked: the server exports over HTTP with the SDK's
own exporter, and what arrives is read as any collector would read it.
"""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

KINDS = {SpanProto.SPAN_KIND_INTERNAL: "internal", SpanProto.SPAN_KIND_SERVER: "server",
         SpanProto.SPAN_KIND_CLIENT: "client", SpanProto.SPAN_KIND_PRODUCER: "producer",
         SpanProto.SPAN_KIND_CONSUMER: "consumer"}


@dataclass(frozen=True)
class Span:
    name: str
    trace: str
    id: str
    parent: str  # "" for a root
    kind: str
    attributes: dict[str, Any]
    service: dict[str, Any]  # its resource's attributes
    error: bool
    start: int  # ns
    end: int


def _value(value: AnyValue) -> Any:
    field = value.WhichOneof("value")
    return getattr(value, field) if field else None


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.exports = 0
        self.arrived = asyncio.Condition()
        self._server: TestServer | None = None

    async def start(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self.handle)
        self._server = TestServer(app, host="127.0.0.1", port=0)
        await self._server.start_server()
        return self

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("/v1/traces"))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.content_type == "application/x-protobuf", request.content_type
        export = ExportTraceServiceRequest.FromString(body)
        spans = []
        for resource_spans in export.resource_spans:
            service = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    spans.append(Span(
                        span.name, span.trace_id.hex(), span.span_id.hex(),
                        span.parent_span_id.hex(), KINDS[span.kind],
                        {a.key: _value(a.value) for a in span.attributes}, service,
                        span.status.code == span.status.STATUS_CODE_ERROR,
                        span.start_time_unix_nano, span.end_time_unix_nano))
        async with self.arrived:
            self.exports += 1
            self.spans.extend(spans)
            self.arrived.notify_all()
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def wait(self, predicate: Any, timeout: float) -> None:
        """Until ``predicate(spans)`` holds, at most ``timeout`` s."""
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: predicate(self.spans)),
                                   timeout)

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
