"""The docs page's view of an OpenAPI document, and the handlers of /api/openapi.json and /api/docs."""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any

import tornado.web
from tornado.web import url

from ..base import ApiHandler, PageHandler
from .generate import PROBLEMS_KEY, TITLE, build_openapi, slug
from .metadata import Response, documented

log = logging.getLogger(__name__)

# the built document lives in its Application's settings: one per app, no module state
SETTINGS_KEY = "openapi_built"
# the tag of the package, not of this module: its docstring describes it in the document
TAGS = ("openapi",)


# --- the docs page's view, derived from the document (so the page and the JSON agree) ---

@dataclasses.dataclass(frozen=True)
class TypePart:
    """A piece of a type label: text, linked to a schema's anchor when it names one."""

    text: str
    anchor: str | None = None


@dataclasses.dataclass(frozen=True)
class FieldRow:
    """One row of a field table: name, type, whether required, description and constraints."""

    name: str
    type: tuple[TypePart, ...]
    required: bool
    description: str
    notes: tuple[str, ...]
    location: str = ""


@dataclasses.dataclass(frozen=True)
class FieldTable:
    """A titled table of fields: a model's properties, a body or an operation's parameters."""

    title: str
    anchor: str | None
    type: tuple[TypePart, ...]
    description: str
    rows: tuple[FieldRow, ...]
    example: str | None = None


@dataclasses.dataclass(frozen=True)
class ResponseRow:
    """One documented status of an operation."""

    status: str
    kind: str
    description: str
    body: tuple[TypePart, ...]
    media_type: str
    headers: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class OperationView:
    """One method of one path, ready to render."""

    method: str
    path: str
    anchor: str
    summary: str
    description: str
    security: str | None
    tables: tuple[FieldTable, ...]
    responses: tuple[ResponseRow, ...]
    response_tables: tuple[FieldTable, ...]


@dataclasses.dataclass(frozen=True)
class PathView:
    """A path and its operations."""

    path: str
    anchor: str
    operations: tuple[OperationView, ...]


@dataclasses.dataclass(frozen=True)
class DocsView:
    """Everything the docs page shows."""

    title: str
    version: str
    openapi: str
    paths: tuple[PathView, ...]
    schemas: tuple[FieldTable, ...]
    problems: tuple[str, ...]


def docs_view(document: Mapping[str, Any]) -> DocsView:
    """Turn an OpenAPI document into the rows and labels the docs page renders."""
    schemas = document.get("components", {}).get("schemas", {})
    paths = tuple(
        PathView(path=path, anchor="path-" + slug(path),
                 operations=tuple(operation_view(path, method, op, schemas)
                                  for method, op in item.items()))
        for path, item in document.get("paths", {}).items())
    info = document.get("info", {})
    return DocsView(title=info.get("title", TITLE), version=info.get("version", ""),
                    openapi=document.get("openapi", ""), paths=paths,
                    schemas=tuple(schema_table(name, schema, schemas)
                                  for name, schema in schemas.items()),
                    problems=tuple(document.get(PROBLEMS_KEY, ())))


def operation_view(path: str, method: str, op: Mapping[str, Any],
                   schemas: Mapping[str, Any]) -> OperationView:
    """One operation as tables: parameters, request body, responses, success bodies."""
    tables = []
    params = op.get("parameters", [])
    if params:
        tables.append(FieldTable(title="Parameters", anchor=None, type=(), description="",
                                 rows=tuple(_parameter_row(param) for param in params)))
    body = op.get("requestBody")
    if body:
        media = next(iter(body["content"].values()))
        tables.append(_body_table("Request body", media, body.get("description", ""), schemas))
    rows, response_tables = [], []
    for status, response in op.get("responses", {}).items():
        content: dict[str, Any] = response.get("content", {})
        no_content: tuple[str, dict[str, Any]] = ("", {})
        media_type, media = next(iter(content.items()), no_content)
        schema = media.get("schema")
        rows.append(ResponseRow(status=status, kind=_status_kind(status),
                                description=response.get("description", ""),
                                body=type_label(schema) if schema is not None else (),
                                media_type=media_type, headers=tuple(response.get("headers", {}))))
        if status.startswith("2") and schema is not None and field_rows(schema, schemas):
            response_tables.append(_body_table(f"{status} response body", media, "", schemas))
    security = next(iter(op["security"][0]), None) if op.get("security") else None
    return OperationView(method=method.upper(), path=path,
                         anchor=op.get("operationId", f"{method}-{slug(path)}"),
                         summary=op.get("summary", ""), description=op.get("description", ""),
                         security=security, tables=tuple(tables), responses=tuple(rows),
                         response_tables=tuple(response_tables))


def schema_table(name: str, schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> FieldTable:
    """The field table of one component schema."""
    return FieldTable(title=name, anchor=_schema_anchor(name),
                      type=(TypePart(schema.get("type", "any")),),
                      description=schema.get("description", ""), rows=field_rows(schema, schemas))


def _parameter_row(param: Mapping[str, Any]) -> FieldRow:
    schema = param.get("schema", {})
    example = (f"example: {_compact(param['example'])}",) if "example" in param else ()
    return FieldRow(name=param["name"], type=type_label(schema),
                    required=bool(param.get("required")),
                    description=param.get("description", ""), location=param["in"],
                    notes=schema_notes(schema) + example)


def _body_table(title: str, media: Mapping[str, Any], description: str,
                schemas: Mapping[str, Any]) -> FieldTable:
    schema = media.get("schema", {})
    example = media.get("example")
    return FieldTable(title=title, anchor=None, type=type_label(schema),
                      description=description or _resolve(schema, schemas).get("description", ""),
                      rows=field_rows(schema, schemas),
                      example=_compact(example) if example is not None else None)


def field_rows(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> tuple[FieldRow, ...]:
    """One row per property of an object schema (none for anything else)."""
    schema = _resolve(schema, schemas)
    required = set(schema.get("required", ()))
    return tuple(FieldRow(name=name, type=type_label(prop), required=name in required,
                          description=prop.get("description", ""), notes=schema_notes(prop))
                 for name, prop in schema.get("properties", {}).items())


def type_label(schema: Mapping[str, Any]) -> tuple[TypePart, ...]:
    """A short, human type for a JSON Schema: 'integer', 'array of MessageOut', 'string or null'."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return (TypePart(name, _schema_anchor(name)),)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            parts: list[TypePart] = []
            for index, option in enumerate(schema[key]):
                if index:
                    parts.append(TypePart(" or "))
                parts.extend(type_label(option))
            return tuple(parts)
    kind = schema.get("type")
    if isinstance(kind, list):
        return (TypePart(" or ".join(kind)),)
    if kind == "array":
        return (TypePart("array of "), *type_label(schema.get("items", {})))
    if kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
        return (TypePart("object of "), *type_label(schema["additionalProperties"]))
    if "const" in schema:
        return (TypePart(_compact(schema["const"])),)
    if kind:
        return (TypePart(kind + (f" ({schema['format']})" if "format" in schema else "")),)
    return (TypePart("any JSON"),)


def schema_notes(schema: Mapping[str, Any]) -> tuple[str, ...]:
    """Constraints of a schema in words: allowed values, bounds, lengths, pattern, default."""
    notes = []
    if "enum" in schema:
        notes.append("one of: " + ", ".join(_compact(value) for value in schema["enum"]))
    for key, word in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
                      ("exclusiveMaximum", "<")):
        if key in schema:
            notes.append(f"{word} {schema[key]}")
    for key, text in (("minLength", "at least {} characters"),
                      ("maxLength", "at most {} characters"),
                      ("minItems", "at least {} items"), ("maxItems", "at most {} items")):
        if key in schema:
            notes.append(text.format(schema[key]))
    if "pattern" in schema:
        notes.append(f"matches {schema['pattern']}")
    if "default" in schema:
        notes.append(f"default: {_compact(schema['default'])}")
    return tuple(notes)


def _resolve(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = set()
    while "$ref" in schema and schema["$ref"] not in seen:
        seen.add(schema["$ref"])
        schema = schemas.get(schema["$ref"].rsplit("/", 1)[-1], {})
    return schema


def _schema_anchor(name: str) -> str:
    return "schema-" + slug(name)


def _status_kind(status: str) -> str:
    return {"2": "ok", "3": "redirect", "4": "client", "5": "server"}.get(status[:1], "other")


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- the handlers, and the document they serve, built once per Application ---

@dataclasses.dataclass(frozen=True)
class Built:
    """One Application's document, built once: as JSON bytes and as the page's view."""

    json: bytes
    view: DocsView


def built_for(application: tornado.web.Application) -> Built:
    """The OpenAPI document of this Application, built on first use and kept in its settings."""
    built = application.settings.get(SETTINGS_KEY)
    if built is None:
        document = build_openapi(application)
        for problem in document.get(PROBLEMS_KEY, ()):
            log.warning("OpenAPI: %s", problem)
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        built = Built(json=body, view=docs_view(document))
        application.settings[SETTINGS_KEY] = built
    return built


class OpenApiHandler(ApiHandler):
    """GET /api/openapi.json: this server's OpenAPI 3.1 document."""

    @documented("This OpenAPI 3.1 document", tags=TAGS,
                description="Generated once per server from the route table and the request and "
                            "response models; revalidate (Cache-Control: no-cache) for changes.",
                responses={200: Response("the OpenAPI document",
                                         body={"type": "object",
                                               "required": ["openapi", "info", "paths"]})})
    async def get(self) -> None:
        built = built_for(self.application)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(built.json)


class ApiDocsHandler(PageHandler):
    """GET /api/docs: the OpenAPI document as a readable page, rendered here (no JavaScript)."""

    @documented("This documentation as an HTML page", tags=TAGS,
                responses={200: Response("the API documentation page", body={"type": "string"},
                                         media_type="text/html")})
    async def get(self) -> None:
        built = built_for(self.application)
        self.set_header("Cache-Control", "no-cache")
        self.render("api_docs.html", docs=built.view)


default_handlers = [
    url(r"/api/openapi.json", OpenApiHandler, name="api-openapi"),
    url(r"/api/docs", ApiDocsHandler, name="api-docs"),
]
