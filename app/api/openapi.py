"""The OpenAPI 3.1 document of ``/api/v1/``, made from the endpoints' own rows.

Every path, parameter, body and reply comes from :data:`app.api.routes.ENDPOINTS`
and the pydantic models the handlers validate with (their JSON Schema is
OpenAPI 3.1's dialect), so the document says what the server does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from . import models as m
from .keys import SCOPES

if TYPE_CHECKING:
    from .routes import Endpoint

REF = "#/components/schemas/{model}"
VERSION = "1.0.0"


def _parameters(model: type[BaseModel] | None, where: str) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = model.model_json_schema(ref_template=REF, by_alias=True)
    required = set(schema.get("required", ()))
    return [{"name": name, "in": where, "required": where == "path" or name in required,
             "schema": {k: v for k, v in field.items() if k not in ("title", "description")},
             **({"description": field["description"]} if "description" in field else {})}
            for name, field in schema["properties"].items()]


def _errors(endpoint: Endpoint) -> dict[str, Any]:
    failed = {"description": "refused: the error's code says why",
              "content": {"application/json": {"schema": {"$ref": REF.format(model="Failed")}}}}
    codes = ["400", "401", "403", "404", "429", "503", "500"]
    if endpoint.body_model is not None:
        codes.append("413")
    responses = {code: failed for code in sorted(codes)}
    responses["429"] = {**failed, "headers": {"Retry-After": {
        "description": "seconds to wait", "schema": {"type": "integer"}}}}
    return responses


def document(endpoints: Sequence[Endpoint], prefix: str) -> dict[str, Any]:
    """The OpenAPI document of ``endpoints`` under ``prefix``."""
    models = {m.Failed} | {e.reply for e in endpoints} | {
        e.body_model for e in endpoints if e.body_model is not None}
    _, top = models_json_schema([(model, "validation" if model in {
        e.body_model for e in endpoints} else "serialization") for model in models],
        ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "operationId": endpoint.name,
            "summary": endpoint.summary,
            "description": f"Needs a key with the {endpoint.scope} scope.",
            "security": [{"apiKey": [endpoint.scope]}],
            "parameters": _parameters(endpoint.path_model, "path")
            + _parameters(endpoint.query_model, "query")
            + _parameters(endpoint.header_model, "header"),
            "responses": {str(endpoint.status): {
                "description": "done",
                "content": {"application/json": {
                    "schema": {"$ref": REF.format(model=endpoint.reply.__name__)}}}},
                **_errors(endpoint)},
        }
        if endpoint.body_model is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": REF.format(model=endpoint.body_model.__name__)}}}}
        paths.setdefault(prefix + endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Roomcast HTTP API", "version": VERSION,
                 "description": "The chat for backends: the same services, limits and "
                                "error codes as the Socket.IO events (docs/api.md)."},
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {"apiKey": {
                "type": "http", "scheme": "bearer",
                "description": "an API key; scopes: " + "; ".join(
                    f"{name}: {what}" for name, what in SCOPES.items())}},
        },
    }
